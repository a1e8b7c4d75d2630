package signals

import (
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestSyncSample(t *testing.T) {
	t0 := time.Now()
	var mu sync.Mutex
	var kicked []string
	s := NewSync(3*time.Second, func(app, dep string) {
		mu.Lock()
		defer mu.Unlock()
		kicked = append(kicked, app+"/"+dep)
	})
	s.OnLoad(protocol.LoadReport{ReplicaID: "r1", App: "a", Deployment: "d", Ongoing: 3}, t0)
	s.OnLoad(protocol.LoadReport{ReplicaID: "r2", App: "a", Deployment: "d", Ongoing: 2}, t0)
	s.OnLoad(protocol.LoadReport{ReplicaID: "r3", App: "a", Deployment: "other", Ongoing: 7}, t0)
	s.OnLoad(protocol.LoadReport{ReplicaID: "r1", App: "a", Deployment: "d", Ongoing: 4}, t0) // newer report wins
	s.OnRouterStats(protocol.RouterStats{RouterID: "x", Queued: map[string]int{"a/d": 5, "a/other": 0}}, t0)
	s.OnRouterStats(protocol.RouterStats{RouterID: "y", Queued: map[string]int{"a/d": 1}}, t0)

	if got, want := s.Sample("a", "d", t0), (Sample{Ongoing: 6, Queued: 6}); got != want {
		t.Fatalf("Sample(a, d) = %+v, want %+v", got, want)
	}
	mu.Lock()
	if len(kicked) != 2 || kicked[0] != "a/d" {
		t.Errorf("onQueued calls = %v, want a/d twice", kicked)
	}
	mu.Unlock()

	s.Forget("r2")
	if got, want := s.Sample("a", "d", t0), (Sample{Ongoing: 4, Queued: 6}); got != want {
		t.Fatalf("Sample after Forget(r2) = %+v, want %+v", got, want)
	}
	s.OnLoad(protocol.LoadReport{ReplicaID: "r1", App: "a", Deployment: "d", Ongoing: 1}, t0.Add(3*time.Second))
	if got, want := s.Sample("a", "d", t0.Add(4*time.Second)), (Sample{Ongoing: 1}); got != want {
		t.Fatalf("Sample with stale routers = %+v, want %+v", got, want)
	}
}
