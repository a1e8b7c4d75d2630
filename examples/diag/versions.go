package diag

import (
	"context"
	"fmt"

	"github.com/jetserve/jetserve/pkg/serve"
)

// Two builds of one deployment, as two handler names in one binary: a
// deployment switched from HandlerVersionsV1 to HandlerVersionsV2 is a
// new deployment version (a rolling update), whose workflows run other
// code. Both register the workflows WorkflowGreet (pinned, the default)
// and WorkflowGreetAuto (serve.AutoUpgrade). Each journals the code that
// started the run (step "start"), awaits the signal "go" and returns
// {"started_on": …, "finished_on": …}: which code started the run and
// which code finished it. Sync requests answer {"code": …}.
const (
	HandlerVersionsV1 = "diag.VersionsV1"
	HandlerVersionsV2 = "diag.VersionsV2"
	WorkflowGreet     = "greet"
	WorkflowGreetAuto = "greet-auto"
)

// Greeting is the result of the versions' workflows.
type Greeting struct {
	StartedOn  string `json:"started_on"`
	FinishedOn string `json:"finished_on"`
}

// Versioned is the deployment of both versions.
type Versioned struct{ code string }

// ServeRequest answers with the code that runs.
func (v *Versioned) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return serve.JSON(map[string]string{"code": v.code})
}

func registerVersions(reg *serve.Registry) error {
	for handler, code := range map[string]string{HandlerVersionsV1: "v1", HandlerVersionsV2: "v2"} {
		greet := func(wf serve.Workflow, _ struct{}) (Greeting, error) {
			g := Greeting{FinishedOn: code}
			if err := wf.Step("start", func(serve.StepContext) (any, error) { return code, nil }).Decode(&g.StartedOn); err != nil {
				return g, err
			}
			if err := wf.Await("go", nil); err != nil {
				return g, err
			}
			return g, nil
		}
		err := reg.Register(handler, func(context.Context, serve.Init) (serve.Handler, error) { return &Versioned{code: code}, nil },
			serve.WithWorkflows(serve.NewWorkflow(WorkflowGreet, greet), serve.NewWorkflow(WorkflowGreetAuto, greet, serve.AutoUpgrade())))
		if err != nil {
			return fmt.Errorf("register %s: %w", handler, err)
		}
	}
	return nil
}
