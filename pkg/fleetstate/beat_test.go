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

// TestBeatRetriesSoonAfterAFailure: a failed heartbeat is tried again
// within a fraction of the interval (a record must not outlive its TTL
// because one put failed during an election); after a success the next
// comes an interval later; Beat returns when its context ends.
func TestBeatRetriesSoonAfterAFailure(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	const interval = 3 * time.Second
	var mu sync.Mutex
	var calls []time.Time
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		fleetstate.Beat(ctx, nc, interval, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Error("put without a deadline")
			}
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, time.Now())
			if len(calls) <= 2 {
				return errors.New("no stream leader")
			}
			return nil
		})
	}()
	deadline := time.Now().Add(2*interval + 5*time.Second)
	for {
		mu.Lock()
		n := len(calls)
		mu.Unlock()
		if n >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
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
