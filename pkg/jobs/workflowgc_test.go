package jobs

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRunOutlivesRetention: with a retention of one second, a run that
// sleeps and then awaits a signal for several times that long is still
// there — its record, its journal (its first step is not run again) —
// and completes on the signal; once it ended it is kept for the
// retention, then its record, journal and inbox are gone.
func TestRunOutlivesRetention(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const retention = time.Second
	var stepRuns atomic.Int32
	wf := serve.NewWorkflow("long", func(wf serve.Workflow, _ struct{}) (string, error) {
		if err := wf.Step("first", func(serve.StepContext) (any, error) { stepRuns.Add(1); return "done", nil }).Err(); err != nil {
			return "", err
		}
		if err := wf.Sleep(3 * retention); err != nil {
			return "", err
		}
		var by string
		if err := wf.Await("go", &by); err != nil {
			return "", err
		}
		return "signalled by " + by, nil
	})
	m := method("long", func(c *config.AsyncMethod) { c.Workflow, c.Retention = true, config.Duration(retention) })
	startRunner(t, e, e.nc, 1, serve.WorkflowJobs(nil, []*serve.WorkflowDef{wf}), "r1", m)
	if _, _, err := e.q.Submit(ctx, testApp, testDep, m, "run1", nil); err != nil {
		t.Fatal(err)
	}
	// It sleeps three times its retention, then awaits the signal.
	waitfor.True(t, 30*time.Second, "run1 awaiting the signal after its sleep", func() bool {
		rec, _ := e.q.Status(ctx, testApp, "long", "run1")
		return rec.Status == Suspended && len(rec.Waiting) == 1 && rec.Waiting[0] == serve.SignalEventKey("go")
	})
	// Suspended a while longer than the retention, since its last change.
	time.Sleep(3 * retention)
	if _, err := e.q.Status(ctx, testApp, "long", "run1"); err != nil {
		t.Fatalf("Status of a run suspended longer than its retention = %v; want it kept", err)
	}
	if sent, err := e.q.Signal(ctx, testApp, "long", "run1", "go", "k1", raw("ann")); err != nil || !sent {
		t.Fatalf("Signal = %v, %v; want sent", sent, err)
	}
	rec := waitStatus(t, e.q, "long", "run1", Succeeded, 30*time.Second)
	if string(rec.Result) != `"signalled by ann"` {
		t.Errorf("result = %s, want \"signalled by ann\"", rec.Result)
	}
	if n := stepRuns.Load(); n != 1 {
		t.Errorf("the first step ran %d times, want once (its journal was kept)", n)
	}
	h, err := e.q.History(ctx, testApp, "long", "run1")
	if err != nil || len(h) == 0 {
		t.Fatalf("History right after the end = %d entries, %v; want the journal (kept for the retention)", len(h), err)
	}
	ended := time.Now()

	// Gone after the retention: the record, then (its removal is a
	// schedule with one-second resolution) the journal and the inbox.
	s, err := e.js.Stream(ctx, e.names.WorkflowStream(testApp, "long"))
	if err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 30*time.Second, "run1's record, journal and inbox removed", func() bool {
		_, err := e.q.Status(ctx, testApp, "long", "run1")
		if !errors.Is(err, ErrNotFound) {
			return false
		}
		_, err = s.GetLastMsgForSubject(ctx, e.names.WorkflowSubject(testApp, "long", "run1", ">"))
		return errors.Is(err, jetstream.ErrMsgNotFound)
	})
	gone := time.Since(ended)
	if gone < retention {
		t.Errorf("run1 was removed %s after it ended, before its retention (%s)", gone, retention)
	}
	t.Logf("run1 removed %s after it ended (retention %s)", gone.Round(10*time.Millisecond), retention)
}

// TestCancelledSleeperLeavesNothing: a run cancelled while it sleeps ends
// with its timer pending; when the timer fires, after the run's
// retention, its message is removed too: nothing of the run is left.
func TestCancelledSleeperLeavesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const retention = time.Second
	wf := serve.NewWorkflow("nap", func(wf serve.Workflow, _ struct{}) (string, error) {
		return "", wf.Sleep(4 * retention)
	})
	m := method("nap", func(c *config.AsyncMethod) { c.Workflow, c.Retention = true, config.Duration(retention) })
	startRunner(t, e, e.nc, 1, serve.WorkflowJobs(nil, []*serve.WorkflowDef{wf}), "r1", m)
	if _, _, err := e.q.Submit(ctx, testApp, testDep, m, "run1", nil); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e.q, "nap", "run1", Suspended, 30*time.Second)
	if _, err := e.q.Cancel(ctx, testApp, "nap", "run1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e.q, "nap", "run1", Cancelled, 30*time.Second)
	s, err := e.js.Stream(ctx, e.names.WorkflowStream(testApp, "nap"))
	if err != nil {
		t.Fatal(err)
	}
	fired := time.Now().Add(4 * retention)
	waitfor.True(t, 30*time.Second, "nothing of run1 left after its timer fired", func() bool {
		if time.Now().Before(fired) {
			return false
		}
		_, err := s.GetLastMsgForSubject(ctx, e.names.WorkflowSubject(testApp, "nap", "run1", ">"))
		return errors.Is(err, jetstream.ErrMsgNotFound)
	})
}
