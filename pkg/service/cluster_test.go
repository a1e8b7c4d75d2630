package service

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// TestOpenConcurrentlyOnACluster: a whole fleet starting at once on a
// fresh 3-node cluster — every instance ensuring the same R3 buckets at
// the same time — is ready soon after the cluster can answer for every
// bucket (each bucket's Raft group has its leader), not after a stalled
// attempt (a lookup of a bucket whose group had no leader yet was never
// answered, and the attempt waited out its whole 10 s). The cluster's own
// elections are the machine's: seconds under load with -race, so the
// bound counts from the last of them.
func TestOpenConcurrentlyOnACluster(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	names, _ := protocol.NewNames("")
	const instances = 12
	var wg sync.WaitGroup
	took := make([]time.Duration, instances)
	errs := make([]error, instances)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ledc := make(chan time.Duration, 1)
	go func() { ledc <- allLed(ctx, nodes, names, start) }()
	for i := range instances {
		nc := natstest.ReconnectingConn(t, nodes[i%3].ClientURL())
		js := natstest.JetStream(t, nc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = openBuckets(ctx, zerolog.New(zerolog.NewTestWriter(t)).With().Int("i", i).Logger(), js, names, 3, true)
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	led := <-ledc
	for i := range instances {
		if errs[i] != nil {
			t.Errorf("instance %d: %v", i, errs[i])
		}
	}
	t.Logf("every bucket led after %v; instances ready after %v", led, took)
	// A lookup bound (1 s), the retry's wait and one more attempt.
	const slack = 4 * time.Second
	for i, d := range took {
		if d > led+slack {
			t.Errorf("instance %d ready after %v, %v after every bucket had a leader; want within %v of that",
				i, d.Round(time.Millisecond), (d - led).Round(time.Millisecond), slack)
		}
	}
}

// allLed returns how long after start every bucket of the fleet (the
// streams behind them) had a leader on one of nodes, polling until then
// or until ctx ends.
func allLed(ctx context.Context, nodes []*server.Server, names protocol.Names, start time.Time) time.Duration {
	account := nodes[0].GlobalAccount().GetName()
	streams := []string{"OBJ_" + names.BucketBodies()}
	for _, b := range []string{names.BucketApps(), names.BucketWorkers(), names.BucketAssignments(), names.BucketReplicas(),
		names.BucketStatus(), names.BucketLeases(), names.BucketScale(), names.BucketHandlers()} {
		streams = append(streams, "KV_"+b)
	}
	for {
		missing := 0
		for _, s := range streams {
			if !slices.ContainsFunc(nodes, func(ns *server.Server) bool { return ns.JetStreamIsStreamLeader(account, s) }) {
				missing++
			}
		}
		if missing == 0 {
			return time.Since(start)
		}
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
