package plan

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// removals returns the pass's remove events by replica ID.
func removals(res Result) map[string]Event {
	out := map[string]Event{}
	for _, ev := range res.Events {
		if ev.Action == "remove" {
			out[ev.ReplicaID] = ev
		}
	}
	return out
}

// only returns the one replica of the state; it fails the test unless
// there is exactly one.
func (e *env) only() *Replica {
	e.t.Helper()
	if len(e.st.Replicas) != 1 {
		e.t.Fatalf("%d replicas, want 1: %s", len(e.st.Replicas), e.describe())
	}
	for _, r := range e.st.Replicas {
		return r
	}
	return nil
}

// TestReplaceBrokenReasons: each way a replica is lost or broken removes
// it with its typed reason — the code, the values its message is
// rendered from, and a code the metrics count as a replacement — and a
// successor takes its place away from its worker when another fits.
func TestReplaceBrokenReasons(t *testing.T) {
	const timeout = time.Minute
	tests := []struct {
		name    string
		breakIt func(e *env, r *Replica)
		want    protocol.Reason
		msg     string
	}{
		{"failed health checks", func(e *env, r *Replica) {
			e.in.Replace = map[string]protocol.Reason{r.Spec.ID: {Code: protocol.ReasonHealthCheck, Failures: 3, Detail: "timeout"}}
		}, protocol.Reason{Code: protocol.ReasonHealthCheck, Failures: 3, Detail: "timeout"}, "health check failed 3 times: timeout"},
		{"worker lost", func(e *env, r *Replica) { delete(e.in.Workers, r.WorkerID) },
			protocol.Reason{Code: protocol.ReasonWorkerLost, WorkerID: "w1"}, "worker w1 lost"},
		{"worker draining", func(e *env, r *Replica) {
			w := e.in.Workers[r.WorkerID]
			w.Draining = true
			e.in.Workers[r.WorkerID] = w
		}, protocol.Reason{Code: protocol.ReasonWorkerDraining, WorkerID: "w1"}, "worker w1 draining"},
		{"record vanished", func(e *env, r *Replica) {
			delete(e.in.Records, r.Spec.ID)
			e.step() // seen missing; replaced VanishGrace later
			e.now = e.now.Add(VanishGrace)
		},
			protocol.Reason{Code: protocol.ReasonRecordVanished}, "replica record vanished while its worker lives"},
		{"FAILED past its backoff", func(e *env, r *Replica) {
			rec := e.in.Records[r.Spec.ID]
			rec.State, rec.Message = protocol.ReplicaFailed, "exit status 1"
			e.in.Records[r.Spec.ID] = rec
			e.step() // seen FAILED; replaced StartBackoff(1) = 1 s later, at the next pass
		}, protocol.Reason{Code: protocol.ReasonStartFailed, Detail: "exit status 1"}, "FAILED: exit status 1"},
		{"STARTING past the start timeout", func(e *env, r *Replica) {
			rec := e.in.Records[r.Spec.ID]
			rec.State = protocol.ReplicaStarting
			e.in.Records[r.Spec.ID] = rec
			e.now = e.now.Add(timeout)
		}, protocol.Reason{Code: protocol.ReasonStartTimeout, Timeout: config.Duration(timeout)}, "still STARTING after 1m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, app(t, 1, 1, 5), worker("w1", 8, 0)) // the first replica lands on w1
			e.in.StartTimeout = timeout
			e.step()
			e.runAll()
			e.in.Workers["w2"] = worker("w2", 8, 0)
			e.step()
			r := e.only()
			tt.breakIt(e, r)
			res := e.step()
			ev, ok := removals(res)[r.Spec.ID]
			if !ok {
				t.Fatalf("%s not removed; events %+v", r.Spec.ID, res.Events)
			}
			if !reflect.DeepEqual(ev.Reason, tt.want) {
				t.Errorf("removed with %+v, want %+v", ev.Reason, tt.want)
			}
			if got := ev.Reason.String(); got != tt.msg {
				t.Errorf("reason renders %q, want %q", got, tt.msg)
			}
			if !ev.Reason.Code.Replaced() {
				t.Errorf("%s is not a replacement code", ev.Reason.Code)
			}
			next := e.only()
			if next.Spec.ID == r.Spec.ID || next.WorkerID != "w2" {
				t.Errorf("successor %s on %q, want a new replica on w2 (away from w1)", next.Spec.ID, next.WorkerID)
			}
		})
	}

	t.Run("never started", func(t *testing.T) {
		e := newEnv(t, app(t, 1, 1, 5), worker("w1", 8, 0))
		e.in.StartTimeout = timeout
		first := ids(e.step(), "w1")[0]
		e.now = e.now.Add(timeout)
		ev := removals(e.step())[first]
		want := protocol.Reason{Code: protocol.ReasonNotStarted, Timeout: config.Duration(timeout)}
		if !reflect.DeepEqual(ev.Reason, want) || ev.Reason.String() != "worker did not start it within 1m0s" {
			t.Errorf("removed with %+v (%q), want %+v", ev.Reason, ev.Reason, want)
		}
	})
}

// TestRemovalReasons: replicas removed on purpose carry their reason;
// none of them counts as a replacement.
func TestRemovalReasons(t *testing.T) {
	e := newEnv(t, app(t, 2, 1, 5), worker("w1", 8, 0))
	e.step()
	e.runAll()
	check := func(res Result, want protocol.Reason, n int) {
		t.Helper()
		got := 0
		for _, ev := range removals(res) {
			if !reflect.DeepEqual(ev.Reason, want) {
				t.Errorf("%s removed with %+v, want %+v", ev.ReplicaID, ev.Reason, want)
			}
			if ev.Reason.Code.Replaced() {
				t.Errorf("%s counts as a replacement", ev.Reason.Code)
			}
			got++
		}
		if got != n {
			t.Errorf("%d removed, want %d: %+v", got, n, res.Events)
		}
	}
	e.in.Config = app(t, 1, 1, 5)
	check(e.step(), protocol.Reason{Code: protocol.ReasonScaleDown}, 1)
	e.runAll()

	e.in.Config = app(t, 1, 1, 6) // max_ongoing_requests is in the version
	ver := Version(e.in.Config.Applications[0].Deployments[0])
	e.step()
	e.runAll()
	check(e.step(), protocol.Reason{Code: protocol.ReasonRollingUpdate, Version: ver}, 1)
	e.runAll()

	e.in.Config = config.ServeConfig{}
	check(e.step(), protocol.Reason{Code: protocol.ReasonDeleted}, 1)
}

// TestMakeRoomReason: a rolling update with no room drains an old replica
// with the make_room reason naming the new version.
func TestMakeRoomReason(t *testing.T) {
	e, ver := updateWithoutRoom(t)
	rm := removals(e.step())
	if len(rm) != 1 {
		t.Fatalf("removed %+v, want the old replica", rm)
	}
	for _, ev := range rm {
		want := protocol.Reason{Code: protocol.ReasonMakeRoom, Version: ver}
		if !reflect.DeepEqual(ev.Reason, want) {
			t.Errorf("removed with %+v, want %+v", ev.Reason, want)
		}
	}
}

// TestScaleDownOrder: scaling down removes unplaced replicas first, then
// placed ones not yet running, then the newest running ones.
func TestScaleDownOrder(t *testing.T) {
	e := newEnv(t, app(t, 1, 1, 5), worker("w1", 3, 0))
	e.step()
	e.runAll()
	e.in.Config = app(t, 2, 1, 5)
	e.step()
	e.runAll() // two RUNNING, the older one first
	e.in.Config = app(t, 5, 1, 5)
	e.step() // a third placed (not running), two pending for lack of CPU
	var running, starting, pending []string
	for _, r := range sortedReplicas(e.st.Replicas) {
		switch {
		case r.WorkerID == "":
			pending = append(pending, r.Spec.ID)
		case e.in.Running(r):
			running = append(running, r.Spec.ID)
		default:
			starting = append(starting, r.Spec.ID)
		}
	}
	if len(running) != 2 || len(starting) != 1 || len(pending) != 2 {
		t.Fatalf("running %v, starting %v, pending %v; want 2, 1, 2", running, starting, pending)
	}
	for _, tc := range []struct {
		to   int
		gone []string
	}{
		{3, pending},
		{2, starting},
		{1, running[1:]},
	} {
		e.in.Config = app(t, tc.to, 1, 5)
		rm := removals(e.step())
		if len(rm) != len(tc.gone) {
			t.Fatalf("scale to %d removed %v, want %v", tc.to, rm, tc.gone)
		}
		for _, id := range tc.gone {
			if ev, ok := rm[id]; !ok || ev.Reason.Code != protocol.ReasonScaleDown {
				t.Errorf("scale to %d: %s removed %v (%+v), want scale_down", tc.to, id, ok, ev.Reason)
			}
		}
	}
	if r := e.only(); r.Spec.ID != running[0] {
		t.Errorf("kept %s, want the oldest running %s", r.Spec.ID, running[0])
	}
}

// TestPendingReasonsInStatus: a PENDING replica's status carries its
// typed reason with what it asks for; the deployment lists each distinct
// reason once and its message is rendered from them.
func TestPendingReasonsInStatus(t *testing.T) {
	e := newEnv(t, cfg(t, tightApp(3, 2, 5, "")), worker("w1", 3, 0))
	res := e.step()
	ds := BuildStatus(&e.st, e.in, res, "me", nil).Applications["app"].Deployments["d"]
	want := protocol.Reason{Code: protocol.ReasonNoRoom, Need: &protocol.Need{Handler: "h", Runtime: config.RuntimeGo, CPU: 2},
		Short: []protocol.Resource{protocol.ResourceCPU}}
	pending := 0
	for _, r := range ds.Replicas {
		if r.State != protocol.ReplicaPending {
			continue
		}
		pending++
		if r.Reason == nil {
			t.Errorf("pending replica %s has no reason (message %q)", r.ID, r.Message)
		} else if !reflect.DeepEqual(*r.Reason, want) || r.Message != "no worker has 2 CPU free" {
			t.Errorf("pending replica %s: reason %+v (needs %+v), message %q; want %+v (needs %+v)", r.ID, r.Reason, r.Reason.Need, r.Message, want, want.Need)
		}
	}
	if pending != 2 {
		t.Fatalf("%d pending, want 2: %+v", pending, ds.Replicas)
	}
	if !reflect.DeepEqual(ds.Pending, []protocol.Reason{want}) {
		t.Errorf("deployment pending reasons %+v, want the one reason once", ds.Pending)
	}
	if wantMsg := "0/3 replicas running; pending: no worker has 2 CPU free"; ds.Message != wantMsg {
		t.Errorf("deployment message %q, want %q", ds.Message, wantMsg)
	}

	// Placed at last: no reason left.
	e.in.Workers["w2"], e.in.Workers["w3"] = worker("w2", 3, 0), worker("w3", 3, 0)
	res = e.step()
	ds = BuildStatus(&e.st, e.in, res, "me", nil).Applications["app"].Deployments["d"]
	for _, r := range ds.Replicas {
		if r.Reason != nil || r.State == protocol.ReplicaPending {
			t.Errorf("replica %s after placement: %s, reason %+v; want placed with none", r.ID, r.State, r.Reason)
		}
	}
	if ds.Pending != nil {
		t.Errorf("deployment pending reasons %+v after placement, want none", ds.Pending)
	}
}

// TestStoppingReplicaShowsWhyRemoved: a removed replica whose record
// still reports is STOPPING with the reason it was removed, until its
// record leaves; then the reason is forgotten.
func TestStoppingReplicaShowsWhyRemoved(t *testing.T) {
	e := newEnv(t, app(t, 2, 1, 5), worker("w1", 8, 0))
	e.step()
	e.runAll()
	e.in.Config = app(t, 1, 1, 5)
	res := e.step()
	var gone string
	for id := range removals(res) {
		gone = id
	}
	s := BuildStatus(&e.st, e.in, res, "me", nil).Applications["app"].Deployments["d"]
	var stopping *protocol.ReplicaStatus
	for i, r := range s.Replicas {
		if r.ID == gone {
			stopping = &s.Replicas[i]
		}
	}
	if stopping == nil || stopping.State != protocol.ReplicaStopping || stopping.Reason == nil ||
		stopping.Reason.Code != protocol.ReasonScaleDown || stopping.Message != "removed (scale down); draining" {
		t.Fatalf("removed replica %s in the status: %+v, want STOPPING with reason scale_down", gone, stopping)
	}
	e.runAll() // the worker finished draining it: its record is gone
	e.step()
	if why, ok := e.st.Removed[gone]; ok {
		t.Errorf("State.Removed still holds %s (%+v) after its record left", gone, why)
	}
}

// TestFailuresCountAfreshForANewVersion: start failures counted for one
// version are forgotten once the deployment moves to another.
func TestFailuresCountAfreshForANewVersion(t *testing.T) {
	e := newEnv(t, cfg(t, fmt.Sprintf(processApp, 1)), processWorker("w1", 8))
	e.step()
	e.fail("exit status 1")
	e.step()
	k := Key("digits", "model")
	if f := e.st.Failures[k]; f.Count != 1 {
		t.Fatalf("failures %+v, want 1 counted", f)
	}
	e.in.Config.Applications[0].Deployments[0].Env = map[string]string{"NEW": "1"} // a new version
	e.step()
	if f, ok := e.st.Failures[k]; ok {
		t.Errorf("failures %+v kept after the version changed, want them forgotten", f)
	}
}

// TestDrainingWorkerGetsNoReplicas: a draining worker keeps an (empty)
// assignment while its replicas move to the other worker.
func TestDrainingWorkerGetsNoReplicas(t *testing.T) {
	e := newEnv(t, app(t, 2, 1, 5), worker("w1", 8, 0))
	e.step()
	e.runAll()
	w := e.in.Workers["w1"]
	w.Draining = true
	e.in.Workers["w1"], e.in.Workers["w2"] = w, worker("w2", 8, 0)
	res := e.step()
	if a, ok := res.Assignments["w1"]; !ok || len(a.Replicas) != 0 {
		t.Errorf("w1 (draining) assignment %+v (present %v), want present and empty", a, ok)
	}
	if got := ids(res, "w2"); len(got) != 2 {
		t.Errorf("w2 runs %v, want both successors", got)
	}
}
