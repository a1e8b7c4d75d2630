// Package waitfor is how jetserve's tests wait for something to happen:
// a condition polled until it holds, with a bounded deadline, never a
// fixed sleep. On the deadline the test fails naming what it waited for
// and, for NoError, the last error.
package waitfor

import (
	"testing"
	"time"
)

// Interval is how often True and NoError check their condition.
const Interval = 10 * time.Millisecond

// True polls cond every Interval until it returns true and returns how
// long that took; after timeout the test fails with what.
func True(tb testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	tb.Helper()
	return Poll(tb, timeout, Interval, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

// NoError polls cond every Interval until it returns nil and returns how
// long that took; after timeout the test fails with what and the last
// error.
func NoError(tb testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	return Poll(tb, timeout, Interval, what, cond)
}

// Poll is NoError with its own interval (processes polled over HTTP
// want a longer one).
func Poll(tb testing.TB, timeout, interval time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			if err == errNotYet {
				tb.Fatalf("timed out after %v waiting for %s", timeout, what)
			} else {
				tb.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
			}
			return time.Since(start)
		}
		<-t.C
	}
}

type notYet struct{}

func (notYet) Error() string { return "not yet" }

var errNotYet error = notYet{}
