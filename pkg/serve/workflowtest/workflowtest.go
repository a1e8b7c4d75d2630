// Package workflowtest is the contract every backend of durable
// workflows keeps: the in-process one (serve.Local, an in-memory journal)
// and the fleet's (package jobs: a JetStream journal, runs as jobs). Run
// gives a backend an application with one deployment holding the suite's
// workflows and an async method, and checks through the backend: steps
// journaled in order, per-step retries with a stable idempotency key, a
// fan-out (Go/Gather) and Select, a submitted job awaited while the run is
// suspended, a durable Sleep, signals deduplicated by their key, child
// workflows, compensations run once each in reverse order on failure and
// on cancel, bad input failing the run with a clear error, and the
// non-determinism error and Patched branches of changed code.
package workflowtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
)

// App, Deployment and Handler name what Run deploys.
const (
	App        = "wft"
	Deployment = "Flows"
	Handler    = "wft.flows"
	// Train is the suite's plain async method: it blocks until the test
	// releases it.
	Train = "train"
)

// RunState is one run's state as a backend reports it.
type RunState struct {
	Status      string // QUEUED, RUNNING, SUSPENDED, SUCCEEDED, FAILED, CANCELLED
	Result      json.RawMessage
	Error       string
	Suspensions int
	Waiting     []string
}

// Backend runs the application given to Start.
type Backend interface {
	Start(ctx context.Context, workflow, id string, in any) error
	Get(ctx context.Context, workflow, id string) (RunState, error)
	Signal(ctx context.Context, workflow, id, name, key string, payload any) (sent bool, err error)
	Cancel(ctx context.Context, workflow, id string) error
	History(ctx context.Context, workflow, id string) ([]serve.JournalEntry, error)
}

// Start deploys app (its deployment registered in reg) on a backend;
// everything stops when t ends.
type Start func(t *testing.T, reg *serve.Registry, app config.Application) Backend

// Counters are what the suite's steps did (runs per key).
type counters struct {
	mu   sync.Mutex
	n    map[string]int
	keys map[string][]string
	log  []string
}

func (c *counters) hit(name, key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[name]++
	c.keys[name] = append(c.keys[name], key)
	c.log = append(c.log, name)
	return c.n[name]
}

func (c *counters) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

type suite struct {
	c       *counters
	release chan struct{} // closed: train jobs return
	version atomic.Int32  // the "code version" of the changing workflow
}

// Trip is the saga's input.
type Trip struct {
	ID         string `json:"id"`
	FailFlight bool   `json:"fail_flight"`
}

type trainer struct{ s *suite }

// ServeRequest answers a call with the request's method and body size
// (what wf.Call journals).
func (tr trainer) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	tr.s.c.hit("serve/"+serve.MethodName(req), req.RequestID)
	return serve.JSON(map[string]any{"method": serve.MethodName(req), "bytes": len(req.Body)})
}

func (tr trainer) RunJob(ctx serve.JobContext, job *serve.Job) (any, error) {
	select {
	case <-tr.s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var in struct {
		Epochs int `json:"epochs"`
	}
	if err := job.Args.Decode(&in); err != nil {
		return nil, err
	}
	return map[string]int{"accuracy": 90 + in.Epochs}, nil
}

func (s *suite) step(name string, res any) serve.StepFunc {
	return func(sc serve.StepContext) (any, error) {
		s.c.hit(name, sc.IdempotencyKey())
		return res, nil
	}
}

func (s *suite) workflows() []*serve.WorkflowDef {
	return []*serve.WorkflowDef{
		serve.NewWorkflow("three", func(wf serve.Workflow, in struct{ N int }) (int, error) {
			sum := in.N
			for _, name := range []string{"a", "b", "c"} {
				var v int
				if err := wf.Step(name, func(sc serve.StepContext) (any, error) {
					s.c.hit(wf.RunID()+"/"+name, sc.IdempotencyKey())
					return 1, nil
				}).Decode(&v); err != nil {
					return 0, err
				}
				sum += v
			}
			return sum, nil
		}),
		serve.NewWorkflow("retry", func(wf serve.Workflow, _ struct{}) (string, error) {
			var v string
			err := wf.Step("flaky", func(sc serve.StepContext) (any, error) {
				if s.c.hit("flaky", sc.IdempotencyKey()) < 3 {
					return nil, errors.New("flaky: not yet")
				}
				return "ok", nil
			}, serve.Retries(5, time.Millisecond)).Decode(&v)
			if err != nil {
				return "", err
			}
			err = wf.Step("broken", func(sc serve.StepContext) (any, error) {
				s.c.hit("broken", sc.IdempotencyKey())
				return nil, errors.New("broken for good")
			}, serve.Retries(2, time.Millisecond)).Err()
			return v + "; " + fmt.Sprint(err), nil
		}),
		serve.NewWorkflow("fanout", func(wf serve.Workflow, in struct{ N int }) (int, error) {
			fs := make([]*serve.Future, in.N)
			for i := range fs {
				name := fmt.Sprintf("branch-%d", i)
				fs[i] = wf.Go(name, func(sc serve.StepContext) (any, error) {
					s.c.hit(wf.RunID()+"/"+name, sc.IdempotencyKey())
					return i, nil
				})
			}
			if err := wf.Gather(fs...); err != nil {
				return 0, err
			}
			sum := 0
			for _, f := range fs {
				var v int
				if err := f.Get(&v); err != nil {
					return 0, err
				}
				sum += v
			}
			slow := wf.Go("slow", func(sc serve.StepContext) (any, error) {
				select {
				case <-time.After(time.Second):
				case <-sc.Done():
				}
				return "slow", nil
			})
			fast := wf.Go("fast", s.step("fast", "fast"))
			if i := wf.Select(slow, fast); i != 1 {
				return 0, fmt.Errorf("Select = %d, want 1 (fast)", i)
			}
			return sum, nil
		}),
		serve.NewWorkflow("pipeline", func(wf serve.Workflow, in struct{ Epochs int }) (string, error) {
			if err := wf.Step("prepare", s.step("prepare", "data")).Err(); err != nil {
				return "", err
			}
			var res struct{ Accuracy int }
			if err := wf.Submit(Train, map[string]int{"epochs": in.Epochs}).Get(&res); err != nil {
				return "", err
			}
			if err := wf.Step("deploy", s.step("deploy", "ok")).Err(); err != nil {
				return "", err
			}
			return fmt.Sprintf("deployed at %d", res.Accuracy), nil
		}),
		serve.NewWorkflow("caller", func(wf serve.Workflow, _ struct{}) (string, error) {
			var out struct {
				Method string
				Bytes  int
			}
			if err := wf.Call(wf.Handle(Deployment), "ping", map[string]int{"x": 1}).Decode(&out); err != nil {
				return "", err
			}
			return fmt.Sprintf("%s %d", out.Method, out.Bytes), nil
		}),
		serve.NewWorkflow("sleeper", func(wf serve.Workflow, in struct{ MS int }) (string, error) {
			if err := wf.Sleep(time.Duration(in.MS) * time.Millisecond); err != nil {
				return "", err
			}
			return "woke", wf.Step("after", s.step("after", 1)).Err()
		}),
		serve.NewWorkflow("approval", func(wf serve.Workflow, _ struct{}) (string, error) {
			var ok struct{ By string }
			if err := wf.Await("approve", &ok); err != nil {
				return "", err
			}
			return "approved by " + ok.By, nil
		}),
		serve.NewWorkflow("parent", func(wf serve.Workflow, in struct{ N int }) (int, error) {
			var v int
			if err := wf.Child("three", map[string]int{"N": in.N}).Get(&v); err != nil {
				return 0, err
			}
			return v * 10, nil
		}),
		serve.NewWorkflow("trip", func(wf serve.Workflow, in Trip) (string, error) {
			book := func(what string) error {
				if err := wf.Step("book-"+what, s.step(in.ID+"/book-"+what, what)).Err(); err != nil {
					return err
				}
				wf.OnFailure("cancel-"+what, s.step(in.ID+"/cancel-"+what, "cancelled"))
				return nil
			}
			if err := book("hotel"); err != nil {
				return "", err
			}
			if err := book("car"); err != nil {
				return "", err
			}
			err := wf.Step("book-flight", func(sc serve.StepContext) (any, error) {
				s.c.hit(in.ID+"/book-flight", sc.IdempotencyKey())
				if in.FailFlight {
					return nil, serve.Errorf(409, "no seat on the flight")
				}
				return "flight", nil
			}).Err()
			if err != nil {
				return "", fmt.Errorf("book flight: %w", err)
			}
			wf.OnFailure("cancel-flight", s.step(in.ID+"/cancel-flight", "cancelled"))
			var go_ struct{}
			if err := wf.Await("confirm", &go_); err != nil {
				return "", err
			}
			return "booked", nil
		}),
		serve.NewWorkflow("changing", func(wf serve.Workflow, _ struct{}) (string, error) {
			v := s.version.Load()
			first := "first"
			if v == 1 {
				first = "renamed"
			}
			if err := wf.Step(first, s.step("first", 1)).Err(); err != nil {
				return "", err
			}
			if v == 2 && wf.Patched("extra-step") {
				if err := wf.Step("extra", s.step("extra", 1)).Err(); err != nil {
					return "", err
				}
			}
			var x struct{}
			if err := wf.Await("go", &x); err != nil {
				return "", err
			}
			return "done", nil
		}),
	}
}

// Run checks the contract on the backend start returns.
func Run(t *testing.T, start Start) {
	s := &suite{c: &counters{n: map[string]int{}, keys: map[string][]string{}}, release: make(chan struct{})}
	reg := serve.NewRegistry()
	if err := reg.Register(Handler, func(context.Context, serve.Init) (serve.Handler, error) { return trainer{s}, nil },
		serve.WithAsync(config.AsyncMethod{Name: Train}), serve.WithWorkflows(s.workflows()...)); err != nil {
		t.Fatal(err)
	}
	app := config.Application{Name: App, RoutePrefix: "/" + App, Ingress: Deployment,
		Deployments: []config.Deployment{{Name: Deployment, Handler: Handler}}}
	b := start(t, reg, app)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("three steps journaled in order", func(t *testing.T) {
		mustStart(t, b, "three", "t1", map[string]int{"N": 1})
		r := wait(ctx, t, b, "three", "t1", "SUCCEEDED")
		if string(r.Result) != "4" {
			t.Errorf("result = %s, want 4", r.Result)
		}
		h := history(ctx, t, b, "three", "t1")
		if got := names(h); got != "step a,step b,step c" {
			t.Errorf("history = %s, want steps a, b, c", got)
		}
		for _, e := range h {
			if e.Attempts != 1 || e.Finished.Before(e.Started) || string(e.Result) != "1" {
				t.Errorf("entry %+v: want 1 attempt, result 1, timings", e)
			}
			if n := s.c.get("t1/" + e.Name); n != 1 {
				t.Errorf("step %s ran %d times, want 1", e.Name, n)
			}
		}
		// A repeated start is the same run: nothing runs again.
		mustStart(t, b, "three", "t1", map[string]int{"N": 7})
		if r := wait(ctx, t, b, "three", "t1", "SUCCEEDED"); string(r.Result) != "4" || s.c.get("t1/a") != 1 {
			t.Errorf("restart of t1 = %s (a ran %d times), want the first run's 4, a once", r.Result, s.c.get("t1/a"))
		}
	})

	t.Run("step retries keep their idempotency key", func(t *testing.T) {
		mustStart(t, b, "retry", "r1", nil)
		r := wait(ctx, t, b, "retry", "r1", "SUCCEEDED")
		if want := `"ok; broken for good"`; string(r.Result) != want {
			t.Errorf("result = %s, want %s", r.Result, want)
		}
		h := history(ctx, t, b, "retry", "r1")
		if len(h) != 2 || h[0].Attempts != 3 || h[1].Attempts != 2 || h[1].Error != "broken for good" {
			t.Errorf("history = %+v; want flaky after 3 attempts, broken failed after 2", h)
		}
		s.c.mu.Lock()
		keys := s.c.keys["flaky"]
		s.c.mu.Unlock()
		if len(keys) != 3 || keys[0] != keys[2] || keys[0] != "r1-0" {
			t.Errorf("flaky's idempotency keys = %v, want r1-0 three times", keys)
		}
	})

	t.Run("a call to a deployment is journaled", func(t *testing.T) {
		mustStart(t, b, "caller", "call1", nil)
		if r := wait(ctx, t, b, "caller", "call1", "SUCCEEDED"); string(r.Result) != `"ping 7"` {
			t.Errorf("result = %s, want \"ping 7\"", r.Result)
		}
		h := history(ctx, t, b, "caller", "call1")
		if len(h) != 1 || h[0].Name != Deployment+".ping" || h[0].InputSize != 7 {
			t.Errorf("history = %+v, want one call of %s.ping with its input size", h, Deployment)
		}
		s.c.mu.Lock()
		keys := s.c.keys["serve/ping"]
		s.c.mu.Unlock()
		if len(keys) != 1 || keys[0] != "call1-0" {
			t.Errorf("the deployment was called %d times with request ids %v, want once with call1-0", len(keys), keys)
		}
	})

	t.Run("fan-out with Go, Gather and Select", func(t *testing.T) {
		mustStart(t, b, "fanout", "f1", map[string]int{"N": 20})
		r := wait(ctx, t, b, "fanout", "f1", "SUCCEEDED")
		if string(r.Result) != "190" {
			t.Errorf("result = %s, want 190", r.Result)
		}
		h := history(ctx, t, b, "fanout", "f1")
		if len(h) < 22 {
			t.Errorf("history has %d entries, want 20 branches, fast and a select", len(h))
		}
		for i := range 20 {
			if n := s.c.get(fmt.Sprintf("f1/branch-%d", i)); n != 1 {
				t.Errorf("branch %d ran %d times, want 1", i, n)
			}
		}
	})

	t.Run("a submitted job is awaited suspended", func(t *testing.T) {
		mustStart(t, b, "pipeline", "p1", map[string]int{"Epochs": 5})
		r := wait(ctx, t, b, "pipeline", "p1", "SUSPENDED")
		if len(r.Waiting) != 1 || !strings.HasPrefix(r.Waiting[0], "job:p1-") {
			t.Errorf("waiting = %v, want the training job", r.Waiting)
		}
		close(s.release)
		r = wait(ctx, t, b, "pipeline", "p1", "SUCCEEDED")
		if string(r.Result) != `"deployed at 95"` || r.Suspensions < 1 {
			t.Errorf("run = %+v, want deployed at 95 after a suspension", r)
		}
		if s.c.get("prepare") != 1 || s.c.get("deploy") != 1 {
			t.Errorf("prepare ran %d, deploy %d times; want once each", s.c.get("prepare"), s.c.get("deploy"))
		}
		h := history(ctx, t, b, "pipeline", "p1")
		if got := names(h); got != "step prepare,submit train,result train,step deploy" {
			t.Errorf("history = %s", got)
		}
	})

	t.Run("sleep holds no slot", func(t *testing.T) {
		began := time.Now()
		mustStart(t, b, "sleeper", "s1", map[string]int{"MS": 300})
		r := wait(ctx, t, b, "sleeper", "s1", "SUCCEEDED")
		if d := time.Since(began); d < 300*time.Millisecond {
			t.Errorf("slept %s, want ≥ 300ms", d)
		}
		if string(r.Result) != `"woke"` || r.Suspensions < 1 {
			t.Errorf("run = %+v, want woke after a suspension", r)
		}
		if _, err := startErr(ctx, b, "sleeper", "s2", map[string]any{"MS": "soon"}); err != nil {
			t.Fatal(err)
		}
		if r := wait(ctx, t, b, "sleeper", "s2", "FAILED"); !strings.Contains(r.Error, "arguments") {
			t.Errorf("bad input: run = %+v, want FAILED naming the arguments", r)
		}
	})

	t.Run("signals are deduplicated by key", func(t *testing.T) {
		mustStart(t, b, "approval", "a1", nil)
		wait(ctx, t, b, "approval", "a1", "SUSPENDED")
		if sent, err := b.Signal(ctx, "approval", "a1", "approve", "k1", map[string]string{"By": "ann"}); err != nil || !sent {
			t.Fatalf("Signal = %v, %v; want sent", sent, err)
		}
		if sent, err := b.Signal(ctx, "approval", "a1", "approve", "k1", map[string]string{"By": "bob"}); err != nil || sent {
			t.Errorf("Signal(same key) = %v, %v; want not sent", sent, err)
		}
		r := wait(ctx, t, b, "approval", "a1", "SUCCEEDED")
		if string(r.Result) != `"approved by ann"` {
			t.Errorf("result = %s, want approved by ann", r.Result)
		}
		// A retry of the delivered signal after the run ended is not an
		// error (the second one above may have come after the end too).
		if sent, err := b.Signal(ctx, "approval", "a1", "approve", "k1", map[string]string{"By": "bob"}); err != nil || sent {
			t.Errorf("Signal(same key) to the finished run = %v, %v; want not sent, no error", sent, err)
		}
		if _, err := b.Signal(ctx, "approval", "a1", "approve", "k2", nil); err == nil {
			t.Errorf("Signal to a finished run = nil, want an error")
		}
		if _, err := b.Signal(ctx, "approval", "nope", "approve", "", nil); err == nil {
			t.Errorf("Signal to an unknown run = nil, want an error")
		}
	})

	t.Run("child workflow", func(t *testing.T) {
		mustStart(t, b, "parent", "c1", map[string]int{"N": 2})
		if r := wait(ctx, t, b, "parent", "c1", "SUCCEEDED"); string(r.Result) != "50" {
			t.Errorf("result = %s, want 50", r.Result)
		}
	})

	t.Run("compensations run once each in reverse", func(t *testing.T) {
		mustStart(t, b, "trip", "fail1", Trip{ID: "fail1", FailFlight: true})
		r := wait(ctx, t, b, "trip", "fail1", "FAILED")
		if !strings.Contains(r.Error, "no seat") {
			t.Errorf("error = %q, want the flight's", r.Error)
		}
		for _, k := range []string{"book-hotel", "book-car", "book-flight", "cancel-car", "cancel-hotel"} {
			if n := s.c.get("fail1/" + k); n != 1 {
				t.Errorf("%s ran %d times, want 1", k, n)
			}
		}
		h := history(ctx, t, b, "trip", "fail1")
		if got := names(h); !strings.HasSuffix(got, "undo cancel-car,undo cancel-hotel") {
			t.Errorf("history = %s, want the car then the hotel cancelled", got)
		}
	})

	t.Run("cancel of a suspended run compensates", func(t *testing.T) {
		mustStart(t, b, "trip", "cx", Trip{ID: "cx"})
		wait(ctx, t, b, "trip", "cx", "SUSPENDED")
		if err := b.Cancel(ctx, "trip", "cx"); err != nil {
			t.Fatal(err)
		}
		wait(ctx, t, b, "trip", "cx", "CANCELLED")
		for _, k := range []string{"cancel-flight", "cancel-car", "cancel-hotel"} {
			if n := s.c.get("cx/" + k); n != 1 {
				t.Errorf("%s ran %d times, want 1", k, n)
			}
		}
	})

	t.Run("changed code: non-determinism and Patched", func(t *testing.T) {
		s.version.Store(0)
		mustStart(t, b, "changing", "v-old", nil)
		mustStart(t, b, "changing", "v-patch", nil)
		wait(ctx, t, b, "changing", "v-old", "SUSPENDED")
		wait(ctx, t, b, "changing", "v-patch", "SUSPENDED")

		s.version.Store(1) // renames its first step
		if _, err := b.Signal(ctx, "changing", "v-old", "go", "", nil); err != nil {
			t.Fatal(err)
		}
		r := wait(ctx, t, b, "changing", "v-old", "FAILED")
		if !strings.Contains(r.Error, `step "first"`) || !strings.Contains(r.Error, `step "renamed"`) {
			t.Errorf("error = %q, want it to name the journaled and the requested step", r.Error)
		}

		s.version.Store(2) // adds a patched step
		if _, err := b.Signal(ctx, "changing", "v-patch", "go", "", nil); err != nil {
			t.Fatal(err)
		}
		wait(ctx, t, b, "changing", "v-patch", "SUCCEEDED")
		if n := s.c.get("extra"); n != 0 {
			t.Errorf("the old run took the patched branch (%d)", n)
		}
		mustStart(t, b, "changing", "v-new", nil)
		wait(ctx, t, b, "changing", "v-new", "SUSPENDED")
		if n := s.c.get("extra"); n != 1 {
			t.Errorf("a new run ran the patched step %d times, want 1", n)
		}
		_ = b.Cancel(ctx, "changing", "v-new")
	})
}

func mustStart(t *testing.T, b Backend, wf, id string, in any) {
	t.Helper()
	if _, err := startErr(context.Background(), b, wf, id, in); err != nil {
		t.Fatalf("Start(%s, %s) = %v", wf, id, err)
	}
}

func startErr(ctx context.Context, b Backend, wf, id string, in any) (string, error) {
	return id, b.Start(ctx, wf, id, in)
}

// wait polls the run until it is in status (or terminal in another).
func wait(ctx context.Context, t *testing.T, b Backend, wf, id, status string) RunState {
	t.Helper()
	for {
		r, err := b.Get(ctx, wf, id)
		if err == nil && r.Status == status {
			return r
		}
		terminal := r.Status == "SUCCEEDED" || r.Status == "FAILED" || r.Status == "CANCELLED"
		if err == nil && terminal {
			t.Fatalf("run %s/%s = %+v, want %s", wf, id, r, status)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("run %s/%s = %+v, %v; want %s", wf, id, r, err, status)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func history(ctx context.Context, t *testing.T, b Backend, wf, id string) []serve.JournalEntry {
	t.Helper()
	h, err := b.History(ctx, wf, id)
	if err != nil {
		t.Fatalf("History(%s) = %v", id, err)
	}
	return h
}

func names(h []serve.JournalEntry) string {
	s := make([]string, len(h))
	for i, e := range h {
		s[i] = e.Kind + " " + e.Name
	}
	return strings.Join(s, ",")
}

// ReplayJournal checks workflow d, as the code is now, against the
// journal recorded in the JSON file path (an array of journal entries:
// the history endpoint's "entries", or Local.WorkflowHistory, saved): it
// fails t with the non-determinism error naming the journaled and the
// requested step when the code no longer replays the recorded run. in is
// the run's input.
func ReplayJournal(t testing.TB, d *serve.WorkflowDef, in any, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read journal: %v", err)
	}
	var journal []serve.JournalEntry
	if err := json.Unmarshal(b, &journal); err != nil {
		t.Fatalf("decode journal %s: %v", path, err)
	}
	if err := Replay(d, in, journal); err != nil {
		t.Errorf("replay of %s: %v", path, err)
	}
}

// Replay runs d with input in against journal; nil when it replays.
func Replay(d *serve.WorkflowDef, in any, journal []serve.JournalEntry) error {
	args, err := serve.ArgsOf(in)
	if err != nil {
		return fmt.Errorf("input: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return serve.ReplayWorkflow(ctx, d, args, journal)
}
