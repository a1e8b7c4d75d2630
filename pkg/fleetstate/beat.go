package fleetstate

import (
	"context"
	"time"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/nats-io/nats.go"
)

// firstRetry is the wait before a failed heartbeat is tried again.
const firstRetry = 250 * time.Millisecond

// Beat calls put every interval until ctx ends; at once when nc
// reconnects (a restarted server may have expired the record); and, after
// a failed put, again from 250 ms later (doubling up to interval) rather
// than a whole interval later. Each put gets interval to finish.
//
// A heartbeat that waits out a long timeout or a whole interval after a
// failure outlives its record: during a JetStream leader election (4-9 s
// on a loaded cluster) puts fail, the new leader expires every record
// older than its TTL, and the record is missing until the next put that
// succeeds. Retrying early bounds that gap to a fraction of a second; the
// waits run from each put's start, so puts during an outage are at most
// interval apart even when each waits out its timeout. (The followers of
// those records hold an expiry that ends a silence of the bucket for two
// intervals: kvfollow.Options.Refreshed.)
func Beat(ctx context.Context, nc *nats.Conn, interval time.Duration, put func(context.Context) error) {
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	b := backoff.New(firstRetry, interval)
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-reconnected:
			t.Stop()
		}
		started := time.Now()
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := put(pctx)
		cancel()
		next := interval
		if err != nil && ctx.Err() == nil {
			next = b.Next()
		} else {
			b.Reset()
		}
		// From the put's start: one that waited out its timeout (a leader
		// elected meanwhile may not have heard it) is tried again at once,
		// not a backoff later.
		t.Reset(max(next-time.Since(started), 0))
	}
}
