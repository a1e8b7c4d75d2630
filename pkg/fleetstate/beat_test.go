package fleetstate_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
)

// beat runs fleetstate.Beat on a real connection until put was called
// calls times, or for within, and returns when each call started; put
// gets its call's number (1: the first).
func beat(t *testing.T, interval, within time.Duration, calls int, put func(ctx context.Context, n int) error) []time.Time {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	var mu sync.Mutex
	var starts []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fleetstate.Beat(ctx, nc, interval, func(pctx context.Context) error {
			mu.Lock()
			starts = append(starts, time.Now())
			n := len(starts)
			mu.Unlock()
			return put(pctx, n)
		})
	}()
	deadline := time.Now().Add(within)
	for {
		mu.Lock()
		n := len(starts)
		mu.Unlock()
		if n >= calls || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	return starts // Beat returned: no call appends any more
}

// TestBeatRetriesSoonAfterAFailure: a failed heartbeat is tried again
// within a fraction of the interval (a record must not outlive its TTL
// because one put failed during an election); after a success the next
// comes an interval later; Beat returns when its context ends.
func TestBeatRetriesSoonAfterAFailure(t *testing.T) {
	const interval = 3 * time.Second
	start := time.Now()
	calls := beat(t, interval, 2*interval+5*time.Second, 4, func(ctx context.Context, n int) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("put without a deadline")
		}
		if n <= 2 {
			return errors.New("no stream leader")
		}
		return nil
	})
	if len(calls) < 4 {
		t.Fatalf("%d heartbeats in %v, want 4 (a first, two retries, one an interval after the success)", len(calls), time.Since(start))
	}
	if d := calls[0].Sub(start); d < interval {
		t.Errorf("first heartbeat after %v, want an interval (%v): the caller puts the first record itself", d, interval)
	}
	for i := 1; i <= 2; i++ {
		if d := calls[i].Sub(calls[i-1]); d > interval/2 {
			t.Errorf("retry %d came %v after the failure, want well under the interval (%v)", i, d, interval)
		}
	}
	if d := calls[3].Sub(calls[2]); d < interval {
		t.Errorf("after a success the next heartbeat came %v later, want the interval (%v)", d, interval)
	}
}

// TestBeatRetriesAtOnceAfterATimedOutPut: a put that waited out its
// timeout (a stream electing a leader answers nothing) is tried again at
// once, not a backoff after its end: during an outage the puts stay an
// interval apart at most, so a record expired by the new leader is back
// within an interval of it (the hold kvfollow gives it: two).
func TestBeatRetriesAtOnceAfterATimedOutPut(t *testing.T) {
	const interval = time.Second
	var ends []time.Time // written by Beat's goroutine only, read once beat returned
	starts := beat(t, interval, 10*interval, 4, func(ctx context.Context, n int) error {
		if n > 3 {
			return nil
		}
		if n > 1 { // the first fails at once, two more time out
			<-ctx.Done()
		}
		ends = append(ends, time.Now())
		return errors.New("no response from stream")
	})
	if len(starts) < 4 {
		t.Fatalf("%d heartbeats in %v, want 4", len(starts), 10*interval)
	}
	for i := 2; i <= 3; i++ { // after the puts that timed out
		if gap := starts[i].Sub(ends[i-1]); gap > interval/4 {
			t.Errorf("put %d started %v after put %d timed out, want at once (it waited its %v already)", i+1, gap, i, interval)
		}
	}
}
