package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/workflowtest"
	"github.com/rs/zerolog"
)

// jsBackend is the workflow contract's view of the fleet's backend: runs
// are jobs of a Runner, journals in JetStream.
type jsBackend struct {
	e   *testEnv
	app string
}

func (b jsBackend) Start(ctx context.Context, wf, id string, in any) error {
	args, err := serve.ArgsOf(in)
	if err == nil {
		_, _, err = b.e.q.SubmitTo(ctx, b.app, wf, id, args)
	}
	return err
}

func (b jsBackend) Get(ctx context.Context, wf, id string) (workflowtest.RunState, error) {
	rec, err := b.e.q.Status(ctx, b.app, wf, id)
	return workflowtest.RunState{Status: string(rec.Status), Result: rec.Result, Error: rec.Error,
		Suspensions: rec.Suspensions, Waiting: rec.Waiting}, err
}

func (b jsBackend) Signal(ctx context.Context, wf, id, name, key string, payload any) (bool, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return false, err
	}
	return b.e.q.Signal(ctx, b.app, wf, id, name, key, raw)
}

func (b jsBackend) Cancel(ctx context.Context, wf, id string) error {
	_, err := b.e.q.Cancel(ctx, b.app, wf, id)
	return err
}

func (b jsBackend) History(ctx context.Context, wf, id string) ([]serve.JournalEntry, error) {
	return b.e.q.History(ctx, b.app, wf, id)
}

// startWorkflows runs a Runner of the deployment's methods (its async
// methods and workflows, from reg) until the test ends.
func startWorkflows(t *testing.T, e *testEnv, reg *serve.Registry, app config.Application, replica string) func() {
	t.Helper()
	d := app.Deployments[0]
	ctor, _ := reg.Lookup(d.Handler)
	h, err := ctor(context.Background(), serve.Init{App: app.Name, Deployment: d.Name})
	if err != nil {
		t.Fatal(err)
	}
	var ms []config.AsyncMethod
	for _, m := range reg.AsyncMethods(d.Handler) {
		ms = append(ms, method(m.Name, func(c *config.AsyncMethod) { c.Workflow, c.MaxAttempts = m.Workflow, max(m.MaxAttempts, 3) }))
	}
	js := e.js
	r := NewRunner(e.nc, js, e.names, RunnerConfig{
		App: app.Name, Deployment: d.Name, Worker: "w-" + replica, Replica: replica, Slots: 50, Methods: ms,
		Handler: serve.WorkflowJobs(h, reg.Workflows(d.Handler), serve.Handles(directCaller{h}, app.Name)),
		Log:     zerolog.New(zerolog.NewTestWriter(t)),
	})
	return runRunner(t, r)
}

// directCaller calls the one deployment of the test in-process (no
// router runs here).
type directCaller struct{ h serve.Handler }

func (c directCaller) Call(ctx context.Context, _, _ string, req *serve.Request) (*serve.Response, error) {
	return c.h.ServeRequest(ctx, req)
}

func TestJetStreamKeepsTheWorkflowContract(t *testing.T) {
	workflowtest.Run(t, func(t *testing.T, reg *serve.Registry, app config.Application) workflowtest.Backend {
		e := newEnv(t)
		startWorkflows(t, e, reg, app, "r1")
		// The runner creates the streams: wait for them before submitting.
		ctx := ctxT(t)
		for _, m := range reg.AsyncMethods(app.Deployments[0].Handler) {
			for {
				if _, err := e.q.open(ctx, app.Name, m.Name); err == nil {
					break
				} else if !errors.Is(err, ErrUnknownMethod) {
					t.Fatal(err)
				}
				if ctx.Err() != nil {
					t.Fatal(ctx.Err())
				}
			}
		}
		return jsBackend{e: e, app: app.Name}
	})
}

// TestJournalWritesAreFenced: of two attempts that loaded the same
// journal, the second to write fails with ErrJournalFenced, so a step is
// never journaled twice; a store that never loaded cannot write over an
// existing journal either.
func TestJournalWritesAreFenced(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	m := method("wf", func(c *config.AsyncMethod) { c.Workflow = true })
	h, err := e.q.ensure(ctx, testApp, testDep, m)
	if err != nil {
		t.Fatal(err)
	}
	a := &runStore{q: e.q, h: h.wf, met: h.met}
	b := &runStore{q: e.q, h: h.wf, met: h.met}
	for _, s := range []*runStore{a, b} {
		if j, in, err := s.Load(ctx, "run1"); err != nil || len(j)+len(in) != 0 {
			t.Fatalf("Load(fresh run) = %v, %v, %v; want nothing", j, in, err)
		}
	}
	step := serve.JournalEntry{Pos: 0, Kind: serve.KindStep, Name: "a", Result: json.RawMessage(`1`)}
	if err := a.Append(ctx, "run1", step); err != nil {
		t.Fatalf("Append(a) = %v", err)
	}
	if err := b.Append(ctx, "run1", step); !errors.Is(err, serve.ErrJournalFenced) {
		t.Fatalf("Append(b, stale) = %v, want ErrJournalFenced", err)
	}
	step.Pos, step.Name = 1, "b"
	if err := a.Append(ctx, "run1", step); err != nil {
		t.Fatalf("Append(a, second) = %v", err)
	}
	c := &runStore{q: e.q, h: h.wf, met: h.met}
	j, _, err := c.Load(ctx, "run1")
	if err != nil || len(j) != 2 || j[0].Name != "a" || j[1].Name != "b" {
		t.Fatalf("Load = %+v, %v; want a, b", j, err)
	}
	step.Pos, step.Name = 2, "c"
	if err := c.Append(ctx, "run1", step); err != nil {
		t.Fatalf("Append(c, after load) = %v", err)
	}
	if err := b.Append(ctx, "run1", step); !errors.Is(err, serve.ErrJournalFenced) {
		t.Fatalf("Append(b, still stale) = %v, want ErrJournalFenced", err)
	}
}

// TestWorkflowResumesOnAnotherRunnerAfterACrash: a runner stops in the
// middle of a run (its step's result not journaled); another runner
// resumes the run by replaying its journal: the journaled step does not
// run again, and no compensation runs (a stopped worker is no cancel).
func TestWorkflowResumesOnAnotherRunnerAfterACrash(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	c := map[string]int{}
	var mu sync.Mutex
	hit := func(s string) int {
		mu.Lock()
		defer mu.Unlock()
		c[s]++
		return c[s]
	}
	inB := make(chan struct{}, 1)
	wf := serve.NewWorkflow("wf", func(wf serve.Workflow, _ struct{}) (string, error) {
		if err := wf.Step("a", func(serve.StepContext) (any, error) { return hit("a"), nil }).Err(); err != nil {
			return "", err
		}
		wf.OnFailure("undo-a", func(serve.StepContext) (any, error) { return hit("undo-a"), nil })
		err := wf.Step("b", func(s serve.StepContext) (any, error) {
			if hit("b") == 1 {
				inB <- struct{}{}
				<-s.Done() // the first runner stops here
				return nil, s.Err()
			}
			return "b", nil
		}).Err()
		if err != nil {
			return "", err
		}
		return "done", wf.Step("c", func(serve.StepContext) (any, error) { return hit("c"), nil }).Err()
	})
	m := method("wf", func(c *config.AsyncMethod) { c.Workflow = true })
	h := serve.WorkflowJobs(nil, []*serve.WorkflowDef{wf})
	_, stop1 := startRunner(t, e, e.nc, 1, h, "r1", m)
	if _, _, err := e.q.Submit(ctx, testApp, testDep, m, "run1", nil); err != nil {
		t.Fatal(err)
	}
	<-inB
	stop1() // Abort: the attempt's context ends; its message is handed back
	startRunner(t, e, natstest.Conn(t, e.ns), 1, h, "r2", m)
	rec := waitStatus(t, e.q, "wf", "run1", Succeeded, 30*time.Second)
	if string(rec.Result) != `"done"` || !rec.Workflow || rec.Attempts-rec.Suspensions != 2 {
		t.Errorf("record = %+v, want a workflow run done after 2 attempts", rec)
	}
	mu.Lock()
	defer mu.Unlock()
	if c["a"] != 1 || c["b"] != 2 || c["c"] != 1 || c["undo-a"] != 0 {
		t.Errorf("runs = %v; want a once, b twice (its first result was lost), c once, no undo", c)
	}
	hist, err := e.q.History(ctx, testApp, "wf", "run1")
	if err != nil || len(hist) != 3 {
		t.Fatalf("History = %+v, %v; want a, b, c", hist, err)
	}
}

// TestCancelDuringFanOut: a run cancelled while ten branches run stops
// them (none is journaled), runs its compensation once and ends
// CANCELLED.
func TestCancelDuringFanOut(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	var undos, started atomic.Int32
	allIn := make(chan struct{})
	wf := serve.NewWorkflow("fan", func(wf serve.Workflow, _ struct{}) (int, error) {
		if err := wf.Step("a", func(serve.StepContext) (any, error) { return 1, nil }).Err(); err != nil {
			return 0, err
		}
		wf.OnFailure("undo-a", func(serve.StepContext) (any, error) { return undos.Add(1), nil })
		fs := make([]*serve.Future, 10)
		for i := range fs {
			fs[i] = wf.Go(fmt.Sprint("b", i), func(s serve.StepContext) (any, error) {
				if started.Add(1) == 10 {
					close(allIn)
				}
				<-s.Done()
				return nil, s.Err()
			})
		}
		return 0, wf.Gather(fs...)
	})
	m := method("fan", func(c *config.AsyncMethod) { c.Workflow = true })
	startRunner(t, e, e.nc, 1, serve.WorkflowJobs(nil, []*serve.WorkflowDef{wf}), "r1", m)
	if _, _, err := e.q.Submit(ctx, testApp, testDep, m, "run1", nil); err != nil {
		t.Fatal(err)
	}
	<-allIn
	if _, err := e.q.Cancel(ctx, testApp, "fan", "run1"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e.q, "fan", "run1", Cancelled, 30*time.Second)
	if n := undos.Load(); n != 1 {
		t.Errorf("undo ran %d times, want 1", n)
	}
	h, err := e.q.History(ctx, testApp, "fan", "run1")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range h {
		names = append(names, e.Kind+" "+e.Name)
	}
	if got := strings.Join(names, ","); got != "step a,undo undo-a" {
		t.Errorf("history = %s, want step a then undo-a (no branch journaled)", got)
	}
}

// TestSubmitOfARunThatSuspendsBeforeTheReadIsCreated: Submit reads the
// record of a client-chosen id while its publish is in flight. A run can
// be SUSPENDED already (its Seq cleared) when that read answers; the
// submit is still the one that created it (202 at the API, not the 200 of
// a duplicate). TestWorkflowEndpoints (ingress) failed about 1 in 30 on it.
// And its answer is the submission's, QUEUED, however fast the worker
// (CI's TestOpenAPIEveryEndpoint and TestJobEndpointsE2E saw RUNNING once
// a worker's claim became a write at delivery).
func TestSubmitOfARunThatSuspendsBeforeTheReadIsCreated(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	wf := serve.NewWorkflow("wait", func(wf serve.Workflow, _ struct{}) (string, error) {
		var v string
		err := wf.Await("go", &v)
		return v, err
	})
	m := method("wait", func(c *config.AsyncMethod) { c.Workflow = true })
	startRunner(t, e, e.nc, 1, serve.WorkflowJobs(nil, []*serve.WorkflowDef{wf}), "r1", m)
	seen := make(chan Status, 1)
	e.q.beforeSubmitRead = func(id string) { // not the test's goroutine: no t.Fatal here
		var st Status
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && st != Suspended; time.Sleep(5 * time.Millisecond) {
			if r, err := e.q.Status(context.Background(), testApp, "wait", id); err == nil {
				st = r.Status
			}
		}
		seen <- st
	}
	rec, created, err := e.q.Submit(ctx, testApp, testDep, m, "run1", nil)
	if st := <-seen; st != Suspended {
		t.Fatalf("the run was %q when Submit read its record, want SUSPENDED (the case under test)", st)
	}
	if err != nil || !created || rec.ID != "run1" || rec.Status != Queued {
		t.Fatalf("Submit(run1) = %+v, created %v, %v; want created, answered as submitted (QUEUED)", rec, created, err)
	}
	e.q.beforeSubmitRead = nil
	if again, created, err := e.q.Submit(ctx, testApp, testDep, m, "run1", nil); err != nil || created || again.Status != Suspended {
		t.Fatalf("Submit(run1) again = %+v, created %v, %v; want the SUSPENDED record, not created", again, created, err)
	}
}
