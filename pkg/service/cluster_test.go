package service

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// TestOpenConcurrentlyOnACluster: a whole fleet starting at once on a
// fresh 3-node cluster — every instance ensuring the same R3 buckets at
// the same time — is ready within seconds, not after a stalled attempt.
func TestOpenConcurrentlyOnACluster(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	names, _ := protocol.NewNames("")
	const instances = 12
	var wg sync.WaitGroup
	took := make([]time.Duration, instances)
	errs := make([]error, instances)
	start := time.Now()
	for i := range instances {
		nc := natstest.ReconnectingConn(t, nodes[i%3].ClientURL())
		js := natstest.JetStream(t, nc)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			_, errs[i] = openBuckets(ctx, zerolog.New(zerolog.NewTestWriter(t)).With().Int("i", i).Logger(), js, names, 3, true)
			took[i] = time.Since(start)
		}()
	}
	wg.Wait()
	for i := range instances {
		if errs[i] != nil {
			t.Errorf("instance %d: %v", i, errs[i])
		}
	}
	t.Logf("ready after %v", took)
	for i, d := range took {
		if d > 5*time.Second {
			t.Errorf("instance %d ready after %v, want within seconds", i, d.Round(time.Millisecond))
		}
	}
}
