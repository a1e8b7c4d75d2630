package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/workflowtest"
)

// runs counts how often each step's side effect ran.
type runs struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *runs) step(name string) serve.StepFunc {
	return func(serve.StepContext) (any, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.n[name]++
		return name, nil
	}
}

func (c *runs) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

func crashLocal(t *testing.T, defs ...*serve.WorkflowDef) *serve.Local {
	t.Helper()
	reg := serve.NewRegistry()
	register(t, reg, "flows", func(context.Context, serve.Init) (serve.Handler, error) { return closer{}, nil },
		serve.WithWorkflows(defs...))
	return newLocal(t, reg, config.Deployment{Name: "Flows", Handler: "flows"})
}

func waitRun(t *testing.T, l *serve.Local, wf, id string) serve.JobRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec, err := l.WaitJob(ctx, wf, id)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestWorkflowCrashAtEachStepBoundary: a crash just after a step was
// journaled never runs it again; a crash inside a step (its result not
// journaled) runs that step alone again.
func TestWorkflowCrashAtEachStepBoundary(t *testing.T) {
	c := &runs{n: map[string]int{}}
	three := serve.NewWorkflow("three", func(wf serve.Workflow, _ struct{}) (string, error) {
		out := ""
		for _, s := range []string{"a", "b", "c"} {
			var v string
			if err := wf.Step(s, c.step(wf.RunID()+"/"+s)).Decode(&v); err != nil {
				return "", err
			}
			out += v
		}
		return out, nil
	})
	l := crashLocal(t, three)
	ctx := context.Background()
	for _, tc := range []struct {
		step  string
		after bool
		twice string // the step run twice, "" none
	}{
		{"a", true, ""}, {"b", true, ""}, {"c", true, ""},
		{"a", false, "a"}, {"b", false, "b"}, {"c", false, "c"},
	} {
		id := fmt.Sprintf("crash-%s-%v", tc.step, tc.after)
		l.CrashWorkflowAt(tc.step, tc.after)
		if _, _, err := l.SubmitJob(ctx, "three", id, nil); err != nil {
			t.Fatal(err)
		}
		rec := waitRun(t, l, "three", id)
		if rec.Status != serve.JobSucceeded || rec.Attempts != 2 {
			t.Errorf("%s: run = %s after %d attempts, want SUCCEEDED after 2", id, rec.Status, rec.Attempts)
		}
		for _, s := range []string{"a", "b", "c"} {
			want := 1
			if s == tc.twice {
				want = 2
			}
			if n := c.count(id + "/" + s); n != want {
				t.Errorf("%s: step %s ran %d times, want %d", id, s, n, want)
			}
		}
	}
}

// TestWorkflowCrashDuringFanOutRerunsOnlyUnfinishedBranches: of 10
// branches, the one whose worker crashed before its result was journaled
// runs again; the others, journaled, do not.
func TestWorkflowCrashDuringFanOutRerunsOnlyUnfinishedBranches(t *testing.T) {
	c := &runs{n: map[string]int{}}
	fan := serve.NewWorkflow("fan", func(wf serve.Workflow, _ struct{}) (int, error) {
		fs := make([]*serve.Future, 10)
		for i := range fs {
			fs[i] = wf.Go(fmt.Sprint("b", i), c.step(fmt.Sprint("b", i)))
		}
		return len(fs), wf.Gather(fs...)
	})
	l := crashLocal(t, fan)
	l.CrashWorkflowAt("b3", false)
	if _, _, err := l.SubmitJob(context.Background(), "fan", "f", nil); err != nil {
		t.Fatal(err)
	}
	if rec := waitRun(t, l, "fan", "f"); rec.Status != serve.JobSucceeded || rec.Attempts != 2 {
		t.Fatalf("run = %s after %d attempts, want SUCCEEDED after 2", rec.Status, rec.Attempts)
	}
	for i := range 10 {
		want := 1
		if i == 3 {
			want = 2
		}
		if n := c.count(fmt.Sprint("b", i)); n != want {
			t.Errorf("branch b%d ran %d times, want %d", i, n, want)
		}
	}
}

// TestWorkflowCompensationRunsOnceAcrossACrash: a crash just after an
// undo was journaled does not run it again.
func TestWorkflowCompensationRunsOnceAcrossACrash(t *testing.T) {
	c := &runs{n: map[string]int{}}
	saga := serve.NewWorkflow("saga", func(wf serve.Workflow, _ struct{}) (string, error) {
		for _, s := range []string{"hotel", "car"} {
			if err := wf.Step("book-"+s, c.step("book-"+s)).Err(); err != nil {
				return "", err
			}
			wf.OnFailure("cancel-"+s, c.step("cancel-"+s))
		}
		return "", wf.Step("book-flight", func(serve.StepContext) (any, error) {
			return nil, serve.Errorf(409, "no seat")
		}).Err()
	})
	l := crashLocal(t, saga)
	l.CrashWorkflowAt("cancel-car", true)
	if _, _, err := l.SubmitJob(context.Background(), "saga", "s", nil); err != nil {
		t.Fatal(err)
	}
	if rec := waitRun(t, l, "saga", "s"); rec.Status != serve.JobFailed || !strings.Contains(rec.Error, "no seat") {
		t.Fatalf("run = %s (%s), want FAILED with the flight's error", rec.Status, rec.Error)
	}
	for _, s := range []string{"book-hotel", "book-car", "cancel-car", "cancel-hotel"} {
		if n := c.count(s); n != 1 {
			t.Errorf("%s ran %d times, want 1", s, n)
		}
	}
}

// TestReplayCatchesAChangedWorkflow: a journal recorded from one version
// replays on the same code and is refused, naming both steps, by code
// that reordered its steps; the replay runs no step.
func TestReplayCatchesAChangedWorkflow(t *testing.T) {
	c := &runs{n: map[string]int{}}
	v1 := serve.NewWorkflow("order", func(wf serve.Workflow, _ struct{}) (string, error) {
		if err := wf.Step("reserve", c.step("reserve")).Err(); err != nil {
			return "", err
		}
		return "", wf.Step("charge", c.step("charge")).Err()
	})
	v2 := serve.NewWorkflow("order", func(wf serve.Workflow, _ struct{}) (string, error) {
		if err := wf.Step("charge", c.step("charge")).Err(); err != nil {
			return "", err
		}
		return "", wf.Step("reserve", c.step("reserve")).Err()
	})
	path := filepath.Join("testdata", "order-journal.json")
	workflowtest.ReplayJournal(t, v1, nil, path)
	err := workflowtest.Replay(v2, nil, mustJournal(t, path))
	var nd *serve.NonDeterminismError
	if !errors.As(err, &nd) || !strings.Contains(err.Error(), `step "reserve"`) || !strings.Contains(err.Error(), `step "charge"`) {
		t.Errorf("Replay(v2) = %v, want a NonDeterminismError naming reserve and charge", err)
	}
	if c.count("reserve")+c.count("charge") != 0 {
		t.Errorf("replay ran steps: %v", c.n)
	}
	// A journal that ends early replays up to its end only.
	if err := workflowtest.Replay(v1, nil, mustJournal(t, path)[:1]); err != nil || c.count("charge") != 0 {
		t.Errorf("Replay(v1, first entry) = %v (charge ran %d), want nil, nothing run", err, c.count("charge"))
	}
}

func mustJournal(t *testing.T, path string) []serve.JournalEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var es []serve.JournalEntry
	if err := json.Unmarshal(b, &es); err != nil {
		t.Fatal(err)
	}
	return es
}

// TestWorkflowMethodsFromAPlainGoroutineFail: a wf method called from a
// goroutine the workflow started itself fails the run with an error that
// says to use wf.Go, instead of journaling in a nondeterministic order.
func TestWorkflowMethodsFromAPlainGoroutineFail(t *testing.T) {
	c := &runs{n: map[string]int{}}
	bad := serve.NewWorkflow("bad", func(wf serve.Workflow, _ struct{}) (string, error) {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			wf.Step("inside", c.step("inside"))
		}()
		wg.Wait()
		return "", wf.Step("after", c.step("after")).Err()
	})
	l := crashLocal(t, bad)
	if _, _, err := l.SubmitJob(context.Background(), "bad", "b1", nil); err != nil {
		t.Fatal(err)
	}
	rec := waitRun(t, l, "bad", "b1")
	if rec.Status != serve.JobFailed || !strings.Contains(rec.Error, "use wf.Go") && !strings.Contains(rec.Error, "with wf.Go") {
		t.Errorf("run = %s (%s), want FAILED telling to use wf.Go", rec.Status, rec.Error)
	}
	if c.count("inside")+c.count("after") != 0 {
		t.Errorf("steps ran: %v", c.n)
	}
}
