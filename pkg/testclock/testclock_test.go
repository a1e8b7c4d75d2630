package testclock_test

import (
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/testclock"
)

func TestClockReadsWhatItWasSetTo(t *testing.T) {
	start := time.Unix(1_000_000, 0)
	c := testclock.New(start)
	if got := c.Now(); !got.Equal(start) {
		t.Fatalf("New(%v).Now() = %v, want %v", start, got, start)
	}
	c.Add(90 * time.Second)
	c.Add(-30 * time.Second)
	if got, want := c.Now(), start.Add(time.Minute); !got.Equal(want) {
		t.Fatalf("Now() after Add(90s), Add(-30s) = %v, want %v", got, want)
	}
}
