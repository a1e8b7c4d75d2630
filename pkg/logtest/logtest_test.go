package logtest_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/jetserve/jetserve/pkg/logtest"
)

// Concurrent writers lose nothing and readers see whole writes (run with
// -race).
func TestBufferConcurrent(t *testing.T) {
	var b logtest.Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, err := b.Write([]byte("line\n")); err != nil {
					t.Error(err)
				}
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := strings.Count(b.String(), "line\n"); got != 800 {
		t.Errorf("lines = %d, want 800", got)
	}
	cp := b.Bytes()
	cp[0] = 'X'
	if strings.HasPrefix(b.String(), "X") {
		t.Error("Bytes() shares the buffer's memory, want a copy")
	}
}
