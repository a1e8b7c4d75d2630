package plan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// tightApp is the app of oneAppWith: n replicas of cpu each, with extra
// deployment fields.
func tightApp(n int, cpu float64, maxOngoing int, extra string) string {
	return oneAppWith(fmt.Sprintf("num_replicas: %d\n    max_ongoing_requests: %d\n    resources: {cpu: %v}\n    %s", n, maxOngoing, cpu, extra))
}

// rollout runs passes until the deployment runs only newVer, bringing up
// every assigned replica after each pass; check sees each pass. It fails
// the test if the update is not done within 50 passes.
func (e *env) rollout(newVer string, check func(pass int, s protocol.DeploymentStatus)) {
	e.t.Helper()
	target := e.in.Target("app", e.in.Config.Applications[0].Deployments[0])
	for pass := 0; pass < 50; pass++ {
		e.step()
		s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil).Applications["app"].Deployments["d"]
		if _, vers := e.running(); vers[newVer] == target && len(vers) == 1 && len(e.st.Replicas) == target {
			if s.Status != protocol.DeploymentHealthy || s.Rollout != nil {
				e.t.Errorf("status after the update = %s (rollout %+v), want HEALTHY and no rollout", s.Status, s.Rollout)
			}
			return
		}
		check(pass, s)
		e.runAll()
	}
	n, vers := e.running()
	e.t.Fatalf("rolling update not done after 50 passes: %d running %v; replicas %s", n, vers, e.describe())
}

func (e *env) describe() string {
	var b strings.Builder
	for _, r := range sortedReplicas(e.st.Replicas) {
		fmt.Fprintf(&b, "%s@%s(running %v, %s) ", r.Spec.ID, r.WorkerID, e.in.Running(r), r.Reason)
	}
	return b.String()
}

// TestRollingUpdateWithoutSpareCapacity is issue 11 #5: the workers have
// exactly the CPU of the running replicas, so a surge replica fits
// nowhere. Before, the update stayed UPDATING forever; now old replicas
// drain one at a time and new ones take their room, never more than
// max_unavailable (25% of 4 = 1) below the target.
func TestRollingUpdateWithoutSpareCapacity(t *testing.T) {
	e := newEnv(t, cfg(t, tightApp(4, 0.5, 5, "")), worker("w1", 1, 0), worker("w2", 1, 0))
	e.step()
	e.runAll()
	if n, _ := e.running(); n != 4 {
		t.Fatalf("running before the update = %d, want 4 (%s)", n, e.describe())
	}
	e.in.Config = cfg(t, tightApp(4, 0.5, 7, ""))
	newVer := Version(e.in.Config.Applications[0].Deployments[0])
	sawReplace := false
	e.rollout(newVer, func(pass int, s protocol.DeploymentStatus) {
		if n, vers := e.running(); n < 3 {
			t.Fatalf("pass %d: running = %d (%v), want >= target - max_unavailable = 3", pass, n, vers)
		}
		if s.Status != protocol.DeploymentUpdating || s.Rollout == nil {
			t.Fatalf("pass %d: status %s rollout %+v, want UPDATING with a rollout", pass, s.Status, s.Rollout)
		}
		if s.Rollout.Strategy == protocol.RolloutReplace {
			sawReplace = true
			const reason = "no worker has 0.5 CPU free"
			if s.Rollout.Reason != reason || s.Rollout.MaxUnavailable != 1 {
				t.Errorf("pass %d: rollout = %+v, want reason %q, max_unavailable 1", pass, s.Rollout, reason)
			}
			if !strings.Contains(s.Message, "replace one at a time") || !strings.Contains(s.Message, reason) {
				t.Errorf("pass %d: message %q, want the strategy and its reason", pass, s.Message)
			}
		}
		for _, w := range []string{"w1", "w2"} {
			if u := e.lastRes.Cluster.Usage(w); u.CPU > 1+eps {
				t.Fatalf("pass %d: %s has %v CPU assigned, more than its 1", pass, w, u.CPU)
			}
		}
	})
	if !sawReplace {
		t.Errorf("the update never said it replaces one at a time")
	}
}

// updateWithoutRoom runs one replica on a worker with room for exactly
// one and changes its version (not yet stepped); it returns the new one.
func updateWithoutRoom(t *testing.T) (*env, string) {
	e := newEnv(t, cfg(t, tightApp(1, 0.1, 5, "")), worker("w1", 0.1, 0))
	e.step()
	e.runAll()
	e.in.Config = cfg(t, tightApp(1, 0.1, 6, ""))
	return e, Version(e.in.Config.Applications[0].Deployments[0])
}

// TestRollingUpdateSingleReplicaNoRoom: a deployment of one replica on a
// worker with room for exactly one swaps it (the new one is placed in the
// same pass the old one is told to drain).
func TestRollingUpdateSingleReplicaNoRoom(t *testing.T) {
	e, newVer := updateWithoutRoom(t)
	e.step()
	s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil).Applications["app"].Deployments["d"]
	if s.Rollout == nil || s.Rollout.Strategy != protocol.RolloutReplace || s.Rollout.Reason != "no worker has 0.1 CPU free" {
		t.Fatalf("rollout = %+v, want replace because no worker has 0.1 CPU free", s.Rollout)
	}
	got := ids(e.lastRes, "w1")
	if len(got) != 1 || e.st.Replicas[got[0]].Spec.Version != newVer {
		t.Fatalf("w1 runs %v, want only the new version's replica (the old one drains)", got)
	}
	var starting bool
	for _, r := range s.Replicas {
		starting = starting || (r.State == protocol.ReplicaStarting && r.Version == newVer)
	}
	if !starting {
		t.Errorf("replicas %+v: want the new one STARTING (placed), not PENDING", s.Replicas)
	}
	e.rollout(newVer, func(int, protocol.DeploymentStatus) {})
}

// TestRollingUpdateMaxUnavailable: with room for nothing, max_unavailable
// 2 of 8 swaps two at a time; 0 never drains and says the update waits.
func TestRollingUpdateMaxUnavailable(t *testing.T) {
	t.Run("2", func(t *testing.T) {
		e := newEnv(t, cfg(t, tightApp(8, 1, 5, "max_unavailable: 2")), worker("w1", 4, 0), worker("w2", 4, 0))
		e.step()
		e.runAll()
		e.in.Config = cfg(t, tightApp(8, 1, 6, "max_unavailable: 2"))
		newVer := Version(e.in.Config.Applications[0].Deployments[0])
		minRunning := 8
		e.rollout(newVer, func(pass int, s protocol.DeploymentStatus) {
			n, _ := e.running()
			minRunning = min(minRunning, n)
			if n < 6 {
				t.Fatalf("pass %d: running = %d, want >= 6", pass, n)
			}
		})
		if minRunning != 6 {
			t.Errorf("fewest running during the update = %d, want 6 (two swaps at once)", minRunning)
		}
	})
	t.Run("0", func(t *testing.T) {
		e := newEnv(t, cfg(t, tightApp(2, 1, 5, "max_unavailable: 0")), worker("w1", 2, 0))
		e.step()
		e.runAll()
		e.in.Config = cfg(t, tightApp(2, 1, 6, "max_unavailable: 0"))
		for range 5 {
			e.step()
			e.runAll()
		}
		if n, vers := e.running(); n != 2 || len(vers) != 1 {
			t.Fatalf("running %d %v, want the 2 old replicas untouched", n, vers)
		}
		s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil).Applications["app"].Deployments["d"]
		want := "no worker has 1 CPU free; max_unavailable is 0, so the update waits for room"
		if s.Status != protocol.DeploymentUpdating || s.Rollout == nil || s.Rollout.Reason != want {
			t.Errorf("status %s rollout %+v, want UPDATING with reason %q", s.Status, s.Rollout, want)
		}
		// Room appears (a worker joins): the update surges on it.
		e.in.Workers["w2"] = worker("w2", 2, 0)
		e.rollout(Version(e.in.Config.Applications[0].Deployments[0]), func(pass int, s protocol.DeploymentStatus) {
			if n, _ := e.running(); n < 2 {
				t.Fatalf("pass %d: running %d, want >= 2", pass, n)
			}
		})
	})
}

// TestRollingUpdateDrainsOnlyWhenItHelps: a new version that needs more
// than an old replica frees, or that no worker can run at all, drains
// nothing.
func TestRollingUpdateDrainsOnlyWhenItHelps(t *testing.T) {
	t.Run("too big", func(t *testing.T) {
		e := newEnv(t, cfg(t, tightApp(2, 1, 5, "max_unavailable: 1")), worker("w1", 2, 0))
		e.step()
		e.runAll()
		e.in.Config = cfg(t, tightApp(2, 3, 5, "max_unavailable: 1")) // 3 CPU: never fits on w1
		for range 3 {
			e.step()
			e.runAll()
		}
		if n, _ := e.running(); n != 2 {
			t.Errorf("running = %d, want the 2 old replicas kept (%s)", n, e.describe())
		}
	})
	t.Run("no handler", func(t *testing.T) {
		e := newEnv(t, cfg(t, tightApp(1, 1, 5, "")), worker("w1", 1, 0))
		e.step()
		e.runAll()
		c := cfg(t, tightApp(1, 1, 5, ""))
		c.Applications[0].Deployments[0].Handler = "other"
		e.in.Config = c
		for range 3 {
			e.step()
			e.runAll()
		}
		if n, _ := e.running(); n != 1 {
			t.Errorf("running = %d, want the old replica kept (%s)", n, e.describe())
		}
		s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil).Applications["app"].Deployments["d"]
		if s.Rollout == nil || s.Rollout.Strategy != protocol.RolloutSurge {
			t.Errorf("rollout = %+v, want surge (draining cannot help)", s.Rollout)
		}
	})
}
