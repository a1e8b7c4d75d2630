package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
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
	var args serve.Args
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(raw, &args); err != nil {
			return err
		}
	}
	_, _, err := b.e.q.SubmitTo(ctx, b.app, wf, id, args)
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
		Handler: serve.WorkflowJobs(h, reg.Workflows(d.Handler)), Log: zerolog.New(zerolog.NewTestWriter(t)),
	})
	return runRunner(t, r)
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
