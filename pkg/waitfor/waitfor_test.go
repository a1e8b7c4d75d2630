package waitfor

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTrueAndNoError(t *testing.T) {
	var n atomic.Int32
	if d := True(t, 5*time.Second, "the third call", func() bool { return n.Add(1) == 3 }); d <= 0 {
		t.Errorf("True waited %v", d)
	}
	n.Store(0)
	NoError(t, 5*time.Second, "the second call", func() error {
		if n.Add(1) < 2 {
			return errors.New("first")
		}
		return nil
	})
}

// fake records how a test would have failed.
type fake struct {
	testing.TB
	failed string
}

func (f *fake) Helper() {}
func (f *fake) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
}

func TestTimeoutNamesWhatAndTheLastError(t *testing.T) {
	f := &fake{TB: t}
	NoError(f, 30*time.Millisecond, "the moon", func() error { return errors.New("still new") })
	if !strings.Contains(f.failed, "the moon") || !strings.Contains(f.failed, "still new") {
		t.Errorf("failure %q, want what and the last error", f.failed)
	}
	f.failed = ""
	True(f, 30*time.Millisecond, "the tide", func() bool { return false })
	if !strings.Contains(f.failed, "the tide") || strings.Contains(f.failed, "not yet") {
		t.Errorf("failure %q, want what, no internal error", f.failed)
	}
}
