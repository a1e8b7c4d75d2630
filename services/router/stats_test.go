package router_test

import (
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/services/router"
	"github.com/nats-io/nats.go"
)

// TestStatsPromptAtZeroReplicas: a request queued for a deployment with no
// replica is in the router's stats within 50 ms — not at the next
// stats_interval tick — so the autoscaler starts a replica at once.
func TestStatsPromptAtZeroReplicas(t *testing.T) {
	e := newEnv(t)
	e.putConfig(-1, 5*time.Second)
	stats := make(chan *nats.Msg, 64)
	sub, err := e.NC.ChanSubscribe(e.Names.RouterStatsSubject(), stats)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	e.startRouter(func(c *router.Config) { c.StatsInterval = time.Hour })

	var sent atomic.Int64 // unix nanos of the latest attempt
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			sent.Store(time.Now().UnixNano())
			_, err := e.call(time.Second, "cold")
			var se *serve.Error
			if !errors.As(err, &se) || se.Code != protocol.ErrUnavailable {
				return // held, then answered 503 no_replicas or timed out: it reached a router
			}
		}
	}()
	defer func() { <-done }()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-stats:
			var st protocol.RouterStats
			if err := json.Unmarshal(m.Data, &st); err != nil {
				t.Fatal(err)
			}
			if st.Queued[app+"/"+dep] < 1 {
				continue
			}
			took := time.Since(time.Unix(0, sent.Load()))
			t.Logf("queued request in router stats after %v", took)
			if took > 50*time.Millisecond {
				t.Fatalf("router stats showed the queued request after %v, want <= 50ms", took)
			}
			return
		case <-timeout:
			t.Fatal("router never reported the queued request")
		}
	}
}
