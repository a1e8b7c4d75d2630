package serve_test

import (
	"context"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/workflowtest"
	"github.com/rs/zerolog"
)

// localBackend is the workflow contract's view of Local.
type localBackend struct{ l *serve.Local }

func (b localBackend) Start(ctx context.Context, wf, id string, in any) error {
	args, err := serve.ArgsOf(in)
	if err == nil {
		_, _, err = b.l.SubmitJob(ctx, wf, id, args)
	}
	return err
}

func (b localBackend) Get(_ context.Context, wf, id string) (workflowtest.RunState, error) {
	rec, err := b.l.JobStatus(wf, id)
	return workflowtest.RunState{Status: string(rec.Status), Result: rec.Result, Error: rec.Error,
		Suspensions: rec.Suspensions, Waiting: rec.Waiting}, err
}

func (b localBackend) Signal(_ context.Context, wf, id, name, key string, payload any) (bool, error) {
	return b.l.SignalWorkflow(wf, id, name, key, payload)
}

func (b localBackend) Cancel(_ context.Context, wf, id string) error {
	_, err := b.l.CancelJob(wf, id)
	return err
}

func (b localBackend) History(_ context.Context, wf, id string) ([]serve.JournalEntry, error) {
	return b.l.WorkflowHistory(wf, id)
}

func TestLocalKeepsTheWorkflowContract(t *testing.T) {
	workflowtest.Run(t, func(t *testing.T, reg *serve.Registry, app config.Application) workflowtest.Backend {
		l, err := serve.NewLocal(context.Background(), reg, app, zerolog.New(zerolog.NewTestWriter(t)))
		if err != nil {
			t.Fatalf("NewLocal = %v", err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return localBackend{l}
	})
}
