package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func (e *env) perWorker() map[string]int {
	m := map[string]int{}
	for _, r := range e.st.Replicas {
		m[r.WorkerID]++
	}
	return m
}

// rebalancing returns an env with 4 replicas all on w1, then w2 joined
// (issue 11 #8: they stayed 4+0).
func rebalancing(t *testing.T, cooldown time.Duration) *env {
	t.Helper()
	e := newEnv(t, app(t, 4, 1, 5), worker("w1", 8, 0))
	e.in.Rebalance, e.in.RebalanceCooldown = true, cooldown
	e.step()
	e.runAll()
	e.in.Workers["w2"] = worker("w2", 8, 0)
	return e
}

func TestRebalanceWhenAWorkerJoins(t *testing.T) {
	e := rebalancing(t, 5*time.Second) // step() advances the clock 1 s
	moves := 0
	var spread map[string]int
	for pass := 0; pass < 40; pass++ {
		res := e.step()
		for _, ev := range res.Events {
			if ev.Action == "add" && ev.Reason.Code == protocol.ReasonRebalanceStart {
				moves++
				if pass < 5 {
					t.Errorf("pass %d: a replica moved to w2 before it was live for the cooldown", pass)
				}
			}
		}
		if n, _ := e.running(); n < 4 {
			t.Fatalf("pass %d: running = %d, want >= 4 (a move starts the new replica first)", pass, n)
		}
		if len(e.st.Replicas) > 5 {
			t.Fatalf("pass %d: %d replicas, want at most target+1 (one move at a time)", pass, len(e.st.Replicas))
		}
		s := BuildStatus(&e.st, e.in, res, "me", nil).Applications["app"].Deployments["d"]
		if s.Status != protocol.DeploymentHealthy {
			t.Errorf("pass %d: status %s (%s), want HEALTHY while rebalancing", pass, s.Status, s.Message)
		}
		if len(e.st.Replicas) == 5 && !strings.Contains(s.Message, "rebalancing: starting") {
			t.Errorf("pass %d: message %q, want it to say what moves", pass, s.Message)
		}
		e.runAll()
		spread = e.perWorker()
	}
	if spread["w1"] != 2 || spread["w2"] != 2 {
		t.Errorf("replicas per worker = %v, want 2+2", spread)
	}
	if moves != 2 {
		t.Errorf("moves = %d, want 2 (4+0 → 3+1 → 2+2, then none)", moves)
	}
}

func TestRebalanceCooldownSpacesMoves(t *testing.T) {
	e := rebalancing(t, 10*time.Second)
	var starts []time.Time
	for range 60 {
		for _, ev := range e.step().Events {
			if ev.Action == "add" && ev.Reason.Code == protocol.ReasonRebalanceStart {
				starts = append(starts, e.now)
			}
		}
		e.runAll()
	}
	if len(starts) != 2 {
		t.Fatalf("moves at %v, want 2", starts)
	}
	if gap := starts[1].Sub(starts[0]); gap < 10*time.Second {
		t.Errorf("second move %v after the first, want >= the 10s cooldown", gap)
	}
}

func TestRebalanceLeavesAlone(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *env)
	}{
		{"off", func(e *env) { e.in.Rebalance = false }},
		{"new worker has no room", func(e *env) { e.in.Workers["w2"] = worker("w2", 0.5, 0) }},
		{"new worker lacks the handler", func(e *env) {
			w := worker("w2", 8, 0)
			w.Handlers = []string{"other"}
			e.in.Workers["w2"] = w
		}},
		{"new worker draining", func(e *env) {
			w := worker("w2", 8, 0)
			w.Draining = true
			e.in.Workers["w2"] = w
		}},
		{"a difference of one", func(e *env) {
			e.in.Config = app(e.t, 1, 1, 5) // scale 4 → 1 first: 1+0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := rebalancing(t, time.Second)
			tt.setup(e)
			for pass := range 20 {
				for _, ev := range e.step().Events {
					if c := ev.Reason.Code; c == protocol.ReasonRebalanceStart || c == protocol.ReasonRebalanceMoved || c == protocol.ReasonRebalanceCancelled {
						t.Fatalf("pass %d: %+v, want no rebalancing", pass, ev)
					}
				}
				e.runAll()
			}
		})
	}
}

// A move whose new replica has not run yet is cancelled when the
// deployment's version changes; the rolling update takes over.
func TestRebalanceCancelledByUpdate(t *testing.T) {
	e := rebalancing(t, time.Second)
	var moving string
	for range 5 {
		e.step()
		for _, r := range e.st.Replicas {
			if r.Moves != "" {
				moving = r.Spec.ID
			}
		}
		if moving != "" {
			break
		}
		e.runAll()
	}
	if moving == "" {
		t.Fatalf("no move started: %s", e.describe())
	}
	e.in.Config = app(t, 4, 1, 7)
	res := e.step()
	if _, ok := e.st.Replicas[moving]; ok {
		t.Errorf("moving replica %s kept after the version changed", moving)
	}
	found := false
	for _, ev := range res.Events {
		found = found || (ev.ReplicaID == moving && ev.Reason.Code == protocol.ReasonRebalanceCancelled)
	}
	if !found {
		t.Errorf("events %+v: want %s removed with reason rebalance cancelled", res.Events, moving)
	}
	e.runAll()
	e.rolloutTo(t, Version(e.in.Config.Applications[0].Deployments[0]))
}

// rolloutTo finishes an update of the 4-replica app.
func (e *env) rolloutTo(t *testing.T, ver string) {
	t.Helper()
	for range 50 {
		e.step()
		e.runAll()
		if _, vers := e.running(); vers[ver] == 4 && len(vers) == 1 && len(e.st.Replicas) == 4 {
			return
		}
	}
	t.Fatalf("update to %s not done: %s", ver, e.describe())
}

// The source of a move is lost (its worker died) before the new replica
// runs: the new one stays as an ordinary replica, and the count is right.
func TestRebalanceSourceLost(t *testing.T) {
	e := rebalancing(t, time.Second)
	var src string
	for range 5 {
		e.step()
		for _, r := range e.st.Replicas {
			if r.Moves != "" {
				src = r.Moves
			}
		}
		if src != "" {
			break
		}
		e.runAll()
	}
	if src == "" {
		t.Fatalf("no move started")
	}
	e.in.Replace = map[string]protocol.Reason{src: {Code: protocol.ReasonHealthCheck, Failures: 3, Detail: "timeout"}}
	e.step()
	e.runAll()
	for range 3 {
		e.step()
		e.runAll()
	}
	if n, _ := e.running(); n != 4 || len(e.st.Replicas) != 4 {
		t.Errorf("running %d of %d replicas, want 4 of 4: %s", n, len(e.st.Replicas), e.describe())
	}
	for _, r := range e.st.Replicas {
		if r.Moves != "" {
			t.Errorf("replica %s still marked as moving %s", r.Spec.ID, r.Moves)
		}
	}
}
