package plan

import (
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// byVersion returns the replicas of version ver.
func (e *env) byVersion(ver string) []*Replica {
	var out []*Replica
	for _, r := range sortedReplicas(e.st.Replicas) {
		if r.Spec.Version == ver {
			out = append(out, r)
		}
	}
	return out
}

// rollTo changes max_ongoing_requests (a new version) and runs passes,
// bringing up what was assigned, until target replicas of the new
// version run; it returns the new version.
func (e *env) rollTo(yaml string, target int) string {
	e.t.Helper()
	e.in.Config = cfg(e.t, yaml)
	ver := Version(e.in.Config.Applications[0].Deployments[0])
	for pass := 0; pass < 50; pass++ {
		e.step()
		e.runAll()
		if _, vers := e.running(); vers[ver] == target {
			e.step() // the pass that sees them all running retires the old ones
			e.runAll()
			return ver
		}
	}
	e.t.Fatalf("version %s never reached %d running replicas: %s", ver, target, e.describe())
	return ver
}

// TestRolloutKeepsAReplicaForPinnedRuns: after a rolling update, one
// replica of the old version — beyond the target — stays while workflow
// runs are pinned to that version, marked pinned_only in its assignment
// (no requests, only those runs); the deployment is HEALTHY at its new
// version meanwhile, and the replica goes once the runs ended.
func TestRolloutKeepsAReplicaForPinnedRuns(t *testing.T) {
	e := newEnv(t, app(t, 2, 1, 5), worker("w1", 32, 0))
	e.step()
	e.runAll()
	oldVer := Version(e.in.Config.Applications[0].Deployments[0])
	e.in.Pinned = map[string]map[string]int{"app/d": {oldVer: 3}}
	newVer := e.rollTo(tightApp(2, 1, 7, ""), 2)

	old := e.byVersion(oldVer)
	if len(old) != 1 || !old[0].Spec.PinnedOnly || !e.in.Running(old[0]) {
		t.Fatalf("old-version replicas after the update = %s, want one, RUNNING, pinned_only", e.describe())
	}
	if n := len(e.byVersion(newVer)); n != 2 {
		t.Fatalf("new-version replicas = %d, want the target 2 (the kept one is beyond it)", n)
	}
	var assigned *protocol.ReplicaSpec
	for _, s := range e.lastRes.Assignments["w1"].Replicas {
		if s.ID == old[0].Spec.ID {
			assigned = &s
		}
	}
	if assigned == nil || !assigned.PinnedOnly {
		t.Fatalf("w1's assignment holds the kept replica as %+v, want pinned_only", assigned)
	}
	s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil).Applications["app"].Deployments["d"]
	if s.Status != protocol.DeploymentHealthy || s.Rollout != nil || !strings.Contains(s.Message, "kept for the workflow runs pinned") {
		t.Fatalf("status with a kept replica = %s %q (rollout %+v), want HEALTHY saying one is kept", s.Status, s.Message, s.Rollout)
	}

	// The runs ended (or their pin passed): the kept replica goes.
	e.in.Pinned["app/d"] = map[string]int{}
	e.step()
	if old := e.byVersion(oldVer); len(old) != 0 {
		t.Fatalf("old-version replicas once no run is pinned = %s, want none", e.describe())
	}
	if got := e.st.Removed[old[0].Spec.ID]; got.Code != protocol.ReasonRollingUpdate {
		t.Errorf("the kept replica was removed for %v, want %s", got, protocol.ReasonRollingUpdate)
	}
}

// TestRolloutKeepsUntilPinnedRunsAreCounted: a deployment whose runs are
// not counted yet keeps one replica of each old version; with versions
// not tracked (nil) none is kept.
func TestRolloutKeepsUntilPinnedRunsAreCounted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pinned map[string]map[string]int
		want   int
	}{
		{"not counted yet", map[string]map[string]int{}, 1},
		{"counted, none", map[string]map[string]int{"app/d": {}}, 0},
		{"not tracked", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, app(t, 3, 1, 5), worker("w1", 32, 0))
			e.step()
			e.runAll()
			oldVer := Version(e.in.Config.Applications[0].Deployments[0])
			e.in.Pinned = tc.pinned
			e.rollTo(tightApp(3, 1, 7, ""), 3)
			if got := len(e.byVersion(oldVer)); got != tc.want {
				t.Fatalf("old-version replicas after the update = %d (%s), want %d", got, e.describe(), tc.want)
			}
		})
	}
}

// TestKeptReplicaGivesWayWithoutRoom: rollouts need no spare capacity. A
// worker with room for two replicas runs the new version and the kept
// old one; the next update has no room for a surge replica, and the kept
// replica is drained first (it serves no requests: no availability is
// lost), in the same pass; a first update with no room at all drains the
// only old replica and keeps none (the scheduler then unpins its runs).
func TestKeptReplicaGivesWayWithoutRoom(t *testing.T) {
	e := newEnv(t, cfg(t, tightApp(1, 0.1, 5, "")), worker("w1", 0.2, 0))
	e.step()
	e.runAll()
	v1 := Version(e.in.Config.Applications[0].Deployments[0])
	e.in.Pinned = map[string]map[string]int{"app/d": {v1: 1}}
	v2 := e.rollTo(tightApp(1, 0.1, 6, ""), 1)
	if kept := e.byVersion(v1); len(kept) != 1 || !kept[0].Spec.PinnedOnly {
		t.Fatalf("after the first update: %s, want v1 kept pinned_only beside v2", e.describe())
	}
	keptID := e.byVersion(v1)[0].Spec.ID
	e.in.Pinned["app/d"][v2] = 1
	e.in.Config = cfg(t, tightApp(1, 0.1, 7, ""))
	v3 := Version(e.in.Config.Applications[0].Deployments[0])
	e.step()
	if got := e.st.Removed[keptID]; got.Code != protocol.ReasonMakeRoom {
		t.Fatalf("kept v1 replica: removed for %v, want drained to make room (%s): %s", got, protocol.ReasonMakeRoom, e.describe())
	}
	if n := len(e.byVersion(v2)); n != 1 {
		t.Fatalf("v2 replicas = %d, want its one kept serving while v3 starts: %s", n, e.describe())
	}
	if placed := e.byVersion(v3); len(placed) != 1 || placed[0].WorkerID != "w1" {
		t.Fatalf("v3 replica: %s, want placed on w1 in the room the kept one freed", e.describe())
	}

	// No room at all: the only replica gives way, none is kept.
	e = newEnv(t, cfg(t, tightApp(1, 0.1, 5, "")), worker("w1", 0.1, 0))
	e.step()
	e.runAll()
	v1 = Version(e.in.Config.Applications[0].Deployments[0])
	e.in.Pinned = map[string]map[string]int{"app/d": {v1: 1}}
	e.rollTo(tightApp(1, 0.1, 6, ""), 1)
	if old := e.byVersion(v1); len(old) != 0 {
		t.Fatalf("with room for one replica only: %s, want no v1 replica kept (the rollout does not wait)", e.describe())
	}
}

// TestRollbackReusesTheKeptReplica: rolling back to the version a
// replica was kept for makes it an ordinary replica again (it serves
// requests and counts toward the target).
func TestRollbackReusesTheKeptReplica(t *testing.T) {
	e := newEnv(t, app(t, 1, 1, 5), worker("w1", 32, 0))
	e.step()
	e.runAll()
	v1 := Version(e.in.Config.Applications[0].Deployments[0])
	e.in.Pinned = map[string]map[string]int{"app/d": {v1: 1}}
	e.rollTo(tightApp(1, 1, 7, ""), 1)
	kept := e.byVersion(v1)
	if len(kept) != 1 || !kept[0].Spec.PinnedOnly {
		t.Fatalf("after the update: %s, want v1 kept pinned_only", e.describe())
	}
	e.in.Config = app(t, 1, 1, 5) // back to v1
	e.step()
	e.runAll()
	e.step()
	back := e.byVersion(v1)
	if len(back) != 1 || back[0].Spec.ID != kept[0].Spec.ID || back[0].Spec.PinnedOnly {
		t.Fatalf("after the rollback: %s, want the kept replica serving again (not pinned_only), no other v1 replica", e.describe())
	}
}

// keptAfterUpdate runs e's deployment (one replica of 1 CPU), pins runs
// to its version v1 and rolls it to v2; it returns both versions and the
// v1 replica kept pinned_only.
func (e *env) keptAfterUpdate(runs int) (v1, v2 string, kept *Replica) {
	e.t.Helper()
	e.step()
	e.runAll()
	v1 = Version(e.in.Config.Applications[0].Deployments[0])
	e.in.Pinned = map[string]map[string]int{"app/d": {v1: runs}}
	v2 = e.rollTo(tightApp(1, 1, 7, ""), 1)
	old := e.byVersion(v1)
	if len(old) != 1 || !old[0].Spec.PinnedOnly || !e.in.Running(old[0]) {
		e.t.Fatalf("after the update: %s, want v1 kept pinned_only", e.describe())
	}
	return v1, v2, old[0]
}

// loseWorker makes worker id vanish with the records of its replicas.
func (e *env) loseWorker(id string) {
	delete(e.in.Workers, id)
	for rid, rec := range e.in.Records {
		if rec.WorkerID == id {
			delete(e.in.Records, rid)
		}
	}
}

// TestKeptReplicaReplacedWhenItsWorkerIsLost: the worker running the
// replica kept for pinned runs dies; while runs are pinned to its
// version, a replica of that version is placed again, pinned_only, on
// another worker (as Temporal's pinned workflows keep a worker of their
// build) — and not once no run is pinned any more.
func TestKeptReplicaReplacedWhenItsWorkerIsLost(t *testing.T) {
	e := newEnv(t, cfg(t, tightApp(1, 1, 5, "")), worker("w1", 1, 0), worker("w2", 1, 0), worker("w3", 1, 0))
	v1, _, kept := e.keptAfterUpdate(2)
	lostOn, lostID := kept.WorkerID, kept.Spec.ID

	e.loseWorker(lostOn)
	res := e.step()
	again := e.byVersion(v1)
	if len(again) != 1 || again[0].Spec.ID == lostID || !again[0].Spec.PinnedOnly || again[0].WorkerID == "" || again[0].WorkerID == lostOn {
		t.Fatalf("after %s was lost: %s, want one new v1 replica, pinned_only, placed on another worker", lostOn, e.describe())
	}
	if got := e.st.Removed[lostID]; got.Code != protocol.ReasonWorkerLost {
		t.Errorf("the lost kept replica was removed for %v, want %s", got, protocol.ReasonWorkerLost)
	}
	added := false
	for _, ev := range res.Events {
		added = added || (ev.Action == "add" && ev.ReplicaID == again[0].Spec.ID && ev.Reason.Code == protocol.ReasonWorkerLost)
	}
	if !added {
		t.Errorf("events %+v, want the new v1 replica added for the worker lost", res.Events)
	}
	var assigned *protocol.ReplicaSpec
	for _, s := range res.Assignments[again[0].WorkerID].Replicas {
		if s.ID == again[0].Spec.ID {
			assigned = &s
		}
	}
	if assigned == nil || !assigned.PinnedOnly || assigned.Version != v1 {
		t.Fatalf("%s's assignment holds the new v1 replica as %+v, want pinned_only of v1", again[0].WorkerID, assigned)
	}
	e.runAll()
	e.step()
	s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil).Applications["app"].Deployments["d"]
	if s.Status != protocol.DeploymentHealthy || !strings.Contains(s.Message, "kept for the workflow runs pinned") {
		t.Fatalf("status after the kept replica was placed again = %s %q, want HEALTHY, one kept", s.Status, s.Message)
	}

	// No run pinned any more: a lost kept replica is not replaced.
	e.in.Pinned["app/d"] = map[string]int{v1: 0}
	e.loseWorker(again[0].WorkerID)
	e.step()
	if old := e.byVersion(v1); len(old) != 0 {
		t.Fatalf("once no run is pinned to v1: %s, want no v1 replica", e.describe())
	}
}

// TestKeptReplicaGivenUpWhenItFitsNowhere: the kept replica's worker is
// lost and the other worker has no room for it; it waits PENDING for
// PinnedPlaceGrace (a worker may come back), then it is given up and the
// deployment's status says so, naming the version and why.
func TestKeptReplicaGivenUpWhenItFitsNowhere(t *testing.T) {
	e := newEnv(t, cfg(t, tightApp(1, 1, 5, "")), worker("w1", 1, 0), worker("w2", 1, 0))
	v1, v2, kept := e.keptAfterUpdate(1)
	e.loseWorker(kept.WorkerID)
	start := e.now
	for e.now.Sub(start) < PinnedPlaceGrace {
		e.step()
		if p := e.byVersion(v1); len(p) != 1 || p[0].WorkerID != "" || p[0].Reason.Code != protocol.ReasonNoRoom && e.now.Sub(start) > time.Second {
			t.Fatalf("%v after the loss: %s, want one v1 replica PENDING for lack of room", e.now.Sub(start), e.describe())
		}
	}
	pendingID := e.byVersion(v1)[0].Spec.ID
	e.step()
	if p := e.byVersion(v1); len(p) != 0 {
		t.Fatalf("%v after the loss: %s, want the v1 replica given up", e.now.Sub(start), e.describe())
	}
	if got := e.st.Removed[pendingID]; got.Code != protocol.ReasonPinnedUnplaced || got.Version != v1 {
		t.Errorf("the pending v1 replica was removed for %+v, want %s of %s", got, protocol.ReasonPinnedUnplaced, v1)
	}
	s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil).Applications["app"].Deployments["d"]
	want := "kept for the workflow runs pinned to version " + v1 + ", it fit on no worker for 30s (no worker has 1 CPU free): the runs are unpinned"
	if s.Status != protocol.DeploymentHealthy || !strings.Contains(s.Message, want) {
		t.Fatalf("status = %s %q, want HEALTHY saying %q", s.Status, s.Message, want)
	}

	// The note stays until the deployment rolls to another version.
	e.step()
	if _, ok := e.st.Unpinned["app/d"]; !ok {
		t.Fatalf("the note went before the next update")
	}
	e.in.Pinned["app/d"] = map[string]int{}
	e.in.Config = cfg(t, tightApp(1, 1, 9, ""))
	e.step()
	if u, ok := e.st.Unpinned["app/d"]; ok {
		t.Fatalf("note %+v kept after the update from %s, want it gone", u, v2)
	}
}
