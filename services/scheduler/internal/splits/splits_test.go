package splits

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/testclock"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func canary(t *testing.T) config.Application {
	t.Helper()
	sc, err := config.Parse([]byte(`applications:
- name: c
  route_prefix: /c
  deployments: [{name: V1, handler: h}, {name: V2, handler: h}, {name: X, handler: h}]
  graph:
    nodes:
      - {name: root, type: sequence, steps: [{deployment: X}, {node: split, data: $response}]}
      - {name: split, type: splitter, steps: [{name: v1, deployment: V1, weight: 95}, {name: v2, deployment: V2, weight: 5}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	return sc.Applications[0]
}

func stats(id string, v1, v2 uint64) protocol.GraphStats {
	return protocol.GraphStats{IngressID: id, WindowSeconds: 60,
		Splits: map[string]map[string]map[string]uint64{"c": {"split": {"v1": v1, "v2": v2}}, "other": {"root": {"a": 7}}}}
}

func TestStatusSumsFreshIngresses(t *testing.T) {
	clk := testclock.New(time.Unix(1_000_000, 0))
	f := New(clk.Now)
	app := canary(t)
	gs := f.Status(app)
	if gs == nil || len(gs.Splitters) != 1 || gs.Splitters[0].Requests != 0 || gs.Splitters[0].Branches[1].Weight != 5 {
		t.Fatalf("Status with no reports = %+v, want split 95/5 with no requests", gs)
	}
	f.Take(stats("ing-1", 570, 30))
	f.Take(stats("ing-2", 380, 20))
	gs = f.Status(app)
	s := gs.Splitters[0]
	want := []protocol.BranchStatus{{Step: "v1", Target: "V1", Weight: 95, Requests: 950, Share: 95}, {Step: "v2", Target: "V2", Weight: 5, Requests: 50, Share: 5}}
	if s.Node != "split" || s.Requests != 1000 || s.WindowSeconds != 60 || s.Branches[0] != want[0] || s.Branches[1] != want[1] {
		t.Fatalf("Status = %+v, want split over 1000 requests %v", s, want)
	}
	// ing-1 goes silent: after Stale its counts no longer count.
	clk.Add(2 * time.Second)
	f.Take(stats("ing-2", 100, 0))
	clk.Add(2 * time.Second)
	if s := f.Status(app).Splitters[0]; s.Requests != 100 || s.Branches[0].Share != 100 {
		t.Errorf("Status after ing-1 went silent = %+v, want ing-2's 100 requests, all to v1", s)
	}
	if gs := f.Status(config.Application{Name: "plain", Ingress: "d"}); gs != nil {
		t.Errorf("Status(no graph) = %+v, want nil", gs)
	}
}

func TestRunFollowsTheSubject(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	f := New(nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx, natstest.Conn(t, ns), "x.graphstats") }()
	b, _ := json.Marshal(stats("ing-1", 9, 1))
	app := canary(t)
	waitfor.True(t, 10*time.Second, "the report counted", func() bool {
		_ = nc.Publish("x.graphstats", b)
		return f.Status(app).Splitters[0].Requests == 10
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}
