package jobs

import (
	"encoding/json"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/rs/zerolog"
)

// versionedWorkflows are the code of one deployment version: "greet"
// (pinned, the default) and "auto" (auto_upgrade), each journaling the
// code that started it, awaiting the signal "go", and returning
// "<started on>/<finished on>".
func versionedWorkflows(code string) []*serve.WorkflowDef {
	run := func(wf serve.Workflow, _ struct{}) (string, error) {
		var started string
		if err := wf.Step("start", func(serve.StepContext) (any, error) { return code, nil }).Decode(&started); err != nil {
			return "", err
		}
		if err := wf.Await("go", nil); err != nil {
			return "", err
		}
		return started + "/" + code, nil
	}
	return []*serve.WorkflowDef{serve.NewWorkflow("greet", run), serve.NewWorkflow("auto", run, serve.AutoUpgrade())}
}

// versionedMethods are the methods of versionedWorkflows, as
// serve.EffectiveAsync makes them.
func versionedMethods() []config.AsyncMethod {
	wf := func(versioning string) func(*config.AsyncMethod) {
		return func(m *config.AsyncMethod) { m.Workflow, m.MaxAttempts, m.Versioning = true, 10, versioning }
	}
	return []config.AsyncMethod{method("greet", wf("")), method("auto", wf(config.VersioningAutoUpgrade))}
}

// startVersion runs a replica of deployment version version (its code
// says code) until stop.
func startVersion(t *testing.T, e *testEnv, replica, version, code string, pinnedOnly bool) (stop func()) {
	t.Helper()
	return startVersionWith(t, e, replica, version, code, pinnedOnly, nil)
}

// startVersionWith is startVersion with test knobs set (knobs may be nil).
func startVersionWith(t *testing.T, e *testEnv, replica, version, code string, pinnedOnly bool, knobs func(*Runner)) (stop func()) {
	t.Helper()
	for _, m := range versionedMethods() { // before a run is started: the runner ensures them too
		if err := e.q.Ensure(ctxT(t), testApp, testDep, m); err != nil {
			t.Fatal(err)
		}
	}
	r := NewRunner(e.nc, e.js, e.names, RunnerConfig{
		App: testApp, Deployment: testDep, Worker: "w-" + replica, Replica: replica, Slots: 4,
		Methods: versionedMethods(), Handler: serve.WorkflowJobs(nil, versionedWorkflows(code)),
		Log: zerolog.New(zerolog.NewTestWriter(t)), Version: version, PinnedOnly: pinnedOnly,
	})
	if knobs != nil {
		knobs(r)
	}
	return runRunner(t, r)
}

func startRun(t *testing.T, e *testEnv, wf, id string) {
	t.Helper()
	if _, _, err := e.q.SubmitTo(ctxT(t), testApp, wf, id, nil); err != nil {
		t.Fatalf("SubmitTo(%s, %s) = %v", wf, id, err)
	}
}

func signalGo(t *testing.T, e *testEnv, wf, id string) {
	t.Helper()
	if _, err := e.q.Signal(ctxT(t), testApp, wf, id, "go", "", json.RawMessage(`{}`)); err != nil {
		t.Fatalf("Signal(%s, %s) = %v", wf, id, err)
	}
}

// wantResult waits for a run to succeed with want.
func wantResult(t *testing.T, e *testEnv, wf, id, want string) Record {
	t.Helper()
	rec := waitStatus(t, e.q, wf, id, Succeeded, 20*time.Second)
	var got string
	if err := json.Unmarshal(rec.Result, &got); err != nil || got != want {
		t.Fatalf("run %s of %s: result %s (err %v), want %q (started on/finished on)", id, wf, rec.Result, err, want)
	}
	return rec
}

// TestRunsArePinnedToTheirVersion is a rolling update as the runners see
// it: runs started on v1 (a pinned and an auto_upgrade one) suspend; the
// v1 replica becomes pinned-only and a v2 replica starts; a new run runs
// on v2; signalled, the pinned run completes on v1's code and the
// auto_upgrade one replays on v2's.
func TestRunsArePinnedToTheirVersion(t *testing.T) {
	e := newEnv(t)
	stopV1 := startVersion(t, e, "r1", "v1", "code1", false)
	startRun(t, e, "greet", "p1")
	startRun(t, e, "auto", "a1")
	p1 := waitStatus(t, e.q, "greet", "p1", Suspended, 20*time.Second)
	a1 := waitStatus(t, e.q, "auto", "a1", Suspended, 20*time.Second)
	if p1.Version != "v1" || p1.PinnedTo(time.Now()) != "v1" || p1.PinnedUntil.Sub(p1.StartedAt) != config.DefaultPinnedFor.D() {
		t.Fatalf("pinned run on v1: version %q, pinned until %s (started %s), want v1 for %s",
			p1.Version, p1.PinnedUntil, p1.StartedAt, config.DefaultPinnedFor.D())
	}
	if a1.Version != "v1" || a1.PinnedTo(time.Now()) != "" {
		t.Fatalf("auto_upgrade run on v1: version %q, pinned to %q, want v1 and not pinned", a1.Version, a1.PinnedTo(time.Now()))
	}

	// The rollout: v2 runs, v1 is kept for its pinned runs only.
	stopV1()
	startVersion(t, e, "r1", "v1", "code1", true)
	startVersion(t, e, "r2", "v2", "code2", false)
	startRun(t, e, "greet", "p2")
	if p2 := waitStatus(t, e.q, "greet", "p2", Suspended, 20*time.Second); p2.Version != "v2" {
		t.Fatalf("a run started during the rollout: version %q, want v2 (the pinned-only replica takes no new run)", p2.Version)
	}
	signalGo(t, e, "greet", "p1")
	signalGo(t, e, "auto", "a1")
	signalGo(t, e, "greet", "p2")
	if rec := wantResult(t, e, "greet", "p1", "code1/code1"); rec.Replica != "r1" || rec.Version != "v1" {
		t.Fatalf("pinned run p1 ended on %s (version %q), want r1 (v1)", rec.Replica, rec.Version)
	}
	if rec := wantResult(t, e, "auto", "a1", "code1/code2"); rec.Replica != "r2" || rec.Version != "v2" {
		t.Fatalf("auto_upgrade run a1 ended on %s (version %q), want r2 (v2)", rec.Replica, rec.Version)
	}
	wantResult(t, e, "greet", "p2", "code2/code2")
}

// TestUnpinMovesRunsOfALostVersion: a run pinned to a version no replica
// runs any more waits (its message is handed back); PinnedRuns lists it
// and, once unpinned (asked as the scheduler asks: a runner of the
// workflow writes the record), it runs on the current version's code.
func TestUnpinMovesRunsOfALostVersion(t *testing.T) {
	e := newEnv(t)
	stopV1 := startVersion(t, e, "r1", "v1", "code1", false)
	startRun(t, e, "greet", "p1")
	startRun(t, e, "auto", "a1")
	waitStatus(t, e.q, "greet", "p1", Suspended, 20*time.Second)
	waitStatus(t, e.q, "auto", "a1", Suspended, 20*time.Second)
	stopV1()
	var handedBack atomic.Int64
	startVersionWith(t, e, "r2", "v2", "code2", false, func(r *Runner) {
		r.onHandBack = func(id string) {
			if id == "p1" {
				handedBack.Add(1)
			}
		}
	})
	signalGo(t, e, "greet", "p1")

	// Woken, the run is handed back by the v2 runner again and again, and
	// never run there.
	ctx := ctxT(t)
	waitfor.True(t, 20*time.Second, "p1 handed back 3 times", func() bool { return handedBack.Load() >= 3 })
	if rec, err := e.q.Status(ctx, testApp, "greet", "p1"); err != nil || rec.Status != Queued || rec.Attempts != 1 {
		t.Fatalf("p1 pinned to v1 with only v2 running: %s after %d attempts (%v), want QUEUED after 1 (not run on v2)", rec.Status, rec.Attempts, err)
	}
	pinned, err := e.q.PinnedRuns(ctx, testApp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []PinnedRun{{Method: "greet", ID: "p1", Deployment: testDep, Version: "v1"}}
	if !slices.Equal(pinned, want) {
		t.Fatalf("PinnedRuns() = %+v, want %+v (the auto_upgrade run is not pinned)", pinned, want)
	}
	if err := e.q.RequestUnpin(testApp, pinned[0]); err != nil { // the v2 runner unpins it
		t.Fatal(err)
	}
	if rec := wantResult(t, e, "greet", "p1", "code1/code2"); rec.Version != "v2" || rec.PinnedUntil.IsZero() {
		t.Fatalf("unpinned run: version %q pinned until %s, want moved to v2 and pinned there", rec.Version, rec.PinnedUntil)
	}
	if pinned, err := e.q.PinnedRuns(ctx, testApp, time.Now()); err != nil || len(pinned) != 0 {
		t.Fatalf("PinnedRuns() after the run ended = %+v, %v; want none", pinned, err)
	}
}

// TestPinnedToEnds: a pin holds until pinned_for after the claim, never
// for a finished run, and the claim of another version after it re-pins.
func TestPinnedToEnds(t *testing.T) {
	now := time.Now()
	r := Record{ID: "x", Status: Suspended, Version: "v1", PinnedUntil: now.Add(time.Minute)}
	if got := r.PinnedTo(now); got != "v1" {
		t.Errorf("PinnedTo(before the end) = %q, want v1", got)
	}
	if got := r.PinnedTo(now.Add(time.Minute)); got != "" {
		t.Errorf("PinnedTo(at the end) = %q, want none", got)
	}
	done := r
	done.Status = Succeeded
	if got := done.PinnedTo(now); got != "" {
		t.Errorf("PinnedTo() of a finished run = %q, want none", got)
	}
	q := r
	q.Status = Queued
	later := now.Add(2 * time.Minute)
	next, err := q.apply(EventClaim, change{now: later, version: "v2", pinFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if next.Version != "v2" || !next.PinnedUntil.Equal(later.Add(time.Hour)) {
		t.Errorf("claim by v2 after the pin ended: version %q until %s, want v2 until %s", next.Version, next.PinnedUntil, later.Add(time.Hour))
	}
	same, err := q.apply(EventClaim, change{now: now, version: "v1", pinFor: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !same.PinnedUntil.Equal(r.PinnedUntil) {
		t.Errorf("claim by its own version: pinned until %s, want %s kept (a pin is from the run's start)", same.PinnedUntil, r.PinnedUntil)
	}
	auto, err := q.apply(EventClaim, change{now: later, version: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	if auto.Version != "v2" || !auto.PinnedUntil.IsZero() {
		t.Errorf("claim of an auto_upgrade run: version %q until %s, want v2, not pinned", auto.Version, auto.PinnedUntil)
	}
}
