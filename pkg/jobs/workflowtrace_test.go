package jobs

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/waitfor"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestWorkflowSpans: with a tracer, a run's attempts and the steps they
// run are spans: the parent's first attempt has its step and its child
// workflow's span, under which the child run's attempt (and its step)
// runs; the parent's second attempt, after the child ended, replays both
// without a span and says how it ended and what it replayed.
func TestWorkflowSpans(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(ctx) })
	type word struct{ S string }
	kid := serve.NewWorkflow("kid", func(wf serve.Workflow, in word) (string, error) {
		var out string
		err := wf.Step("k1", func(serve.StepContext) (any, error) { return in.S + "!", nil }).Decode(&out)
		return out, err
	})
	parent := serve.NewWorkflow("parent", func(wf serve.Workflow, _ struct{}) (string, error) {
		if err := wf.Step("s1", func(serve.StepContext) (any, error) { return 1, nil }).Err(); err != nil {
			return "", err
		}
		var out string
		err := wf.Child("kid", word{"hi"}).Get(&out)
		return out, err
	})
	wfm := func(name string) config.AsyncMethod {
		return method(name, func(c *config.AsyncMethod) { c.Workflow = true })
	}
	startRunnerWith(t, e, e.nc, func(r *Runner) { r.cfg.Tracer = tracing.Tracer(tp) }, 4,
		serve.WorkflowJobs(nil, []*serve.WorkflowDef{parent, kid}), "r1", wfm("parent"), wfm("kid"))
	if _, _, err := e.q.Submit(ctx, testApp, testDep, wfm("parent"), "p1", nil); err != nil {
		t.Fatal(err)
	}
	if got := waitStatus(t, e.q, "parent", "p1", Succeeded, 30*time.Second); string(got.Result) != `"hi!"` {
		t.Fatalf("result = %s, want \"hi!\"", got.Result)
	}

	// A span is described as "name outcome (its parent's name)".
	var got []string
	waitfor.True(t, 10*time.Second, "the six spans ended", func() bool {
		got = got[:0]
		spans := rec.Ended()
		names := map[string]string{}
		for _, s := range spans {
			names[s.SpanContext().SpanID().String()] = s.Name()
		}
		for _, s := range spans {
			attrs := map[string]string{}
			for _, kv := range s.Attributes() {
				attrs[string(kv.Key)] = kv.Value.Emit()
			}
			d := fmt.Sprintf("%s %s (%s)", s.Name(), attrs["jetserve.outcome"], names[s.Parent().SpanID().String()])
			if s.Name() == "job app/parent" {
				d += " replayed " + attrs["jetserve.workflow.replayed"]
			}
			if strings.HasPrefix(s.Name(), "step ") || strings.HasPrefix(s.Name(), "child ") {
				d += " at " + attrs["jetserve.step.position"] + " of " + attrs["jetserve.request_id"]
			}
			got = append(got, d)
		}
		slices.Sort(got)
		return len(got) >= 6
	})
	want := []string{ // sorted
		"child kid ok (job app/parent) at 1 of p1",
		"job app/kid succeeded (child kid)",      // the child run is traced under the Child span
		"job app/parent succeeded () replayed 2", // the step and the Child
		"job app/parent suspended () replayed 0",
		"step k1 ok (job app/kid) at 0 of p1-1",
		"step s1 ok (job app/parent) at 0 of p1",
	}
	if !slices.Equal(got, want) {
		t.Errorf("spans:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
