package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/composetest"
	"github.com/rs/zerolog"
)

// TestLocalKeepsTheCompositionContract runs the composition contract on
// the in-process backend (the fleet runs it in services/worker).
func TestLocalKeepsTheCompositionContract(t *testing.T) {
	composetest.Run(t, func(t *testing.T, reg *serve.Registry, app config.Application) serve.StreamCaller {
		l, err := serve.NewLocal(context.Background(), reg, app, zerolog.New(zerolog.NewTestWriter(t)))
		if err != nil {
			t.Fatalf("NewLocal = %v", err)
		}
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		return l
	})
}

func register(t *testing.T, reg *serve.Registry, name string, ctor serve.Constructor, opts ...serve.RegisterOption) {
	t.Helper()
	if err := reg.Register(name, ctor, opts...); err != nil {
		t.Fatal(err)
	}
}

func newLocal(t *testing.T, reg *serve.Registry, deps ...config.Deployment) *serve.Local {
	t.Helper()
	l, err := serve.NewLocal(context.Background(), reg, config.Application{Name: "a", RoutePrefix: "/a", Ingress: deps[0].Name, Deployments: deps},
		zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatalf("NewLocal = %v", err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// TestNewLocalRefusesAHandleToAnUnknownDeployment: a constructor that
// takes a handle to a name that is not a deployment of the app fails
// NewLocal with an error naming it and the deployments there are.
func TestNewLocalRefusesAHandleToAnUnknownDeployment(t *testing.T) {
	reg := serve.NewRegistry()
	closed := make(chan struct{}, 1)
	register(t, reg, "typo", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		in.Handle("Bee")
		return closer{closed}, nil
	})
	register(t, reg, "ok", func(context.Context, serve.Init) (serve.Handler, error) { return closer{}, nil })
	app := config.Application{Name: "a", RoutePrefix: "/a", Ingress: "A", Deployments: []config.Deployment{
		{Name: "A", Handler: "typo"}, {Name: "B", Handler: "ok"}}}
	_, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), `"Bee"`) || !strings.Contains(err.Error(), "A, B") || !strings.Contains(err.Error(), "construct A") {
		t.Fatalf("NewLocal(handle to Bee) = %v, want an error naming Bee, the deployments A, B and A's construction", err)
	}
	select {
	case <-closed:
	default:
		t.Error("the instance built with the bad handle was not closed")
	}
}

type closer struct{ closed chan struct{} }

func (closer) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return &serve.Response{Body: []byte("ok")}, nil
}

func (c closer) Close(context.Context) error {
	if c.closed != nil {
		c.closed <- struct{}{}
	}
	return nil
}

// reconf counts constructions and applies {"greeting"} in place.
type reconf struct {
	mu       sync.Mutex
	greeting string // guarded by mu
}

func (r *reconf) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return &serve.Response{Body: []byte(r.greeting)}, nil
}

func (r *reconf) Reconfigure(_ context.Context, uc json.RawMessage) error {
	var c struct{ Greeting string }
	if err := json.Unmarshal(uc, &c); err != nil || c.Greeting == "" {
		return errors.New("greeting: required")
	}
	r.mu.Lock()
	r.greeting = c.Greeting
	r.mu.Unlock()
	return nil
}

// TestLocalReconfigure: a Reconfigurer gets the new user_config in place
// (an error leaves it as it was); a handler without Reconfigure is built
// anew with it and the old instance closed.
func TestLocalReconfigure(t *testing.T) {
	reg := serve.NewRegistry()
	var built atomic.Int32
	register(t, reg, "inplace", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		var c struct{ Greeting string }
		if err := in.DecodeUserConfig(&c); err != nil {
			return nil, err
		}
		return &reconf{greeting: c.Greeting}, nil
	})
	closed := make(chan struct{}, 4)
	register(t, reg, "rebuilt", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		built.Add(1)
		var c struct{ Greeting string }
		if err := in.DecodeUserConfig(&c); err != nil {
			return nil, err
		}
		return greeter{c.Greeting, closed}, nil
	})
	l := newLocal(t, reg, config.Deployment{Name: "In", Handler: "inplace", UserConfig: json.RawMessage(`{"greeting":"hi"}`)},
		config.Deployment{Name: "Re", Handler: "rebuilt", UserConfig: json.RawMessage(`{"greeting":"hi"}`)})
	ctx := context.Background()
	body := func(dep string) string {
		t.Helper()
		resp, err := l.Handle(dep).Call(ctx, &serve.Request{})
		if err != nil {
			t.Fatalf("Call(%s) = %v", dep, err)
		}
		return string(resp.Body)
	}
	if err := l.Reconfigure(ctx, "In", json.RawMessage(`{"greeting":"hello"}`)); err != nil || body("In") != "hello" {
		t.Fatalf("Reconfigure(In) = %v, then %q; want nil, hello", err, body("In"))
	}
	if err := l.Reconfigure(ctx, "In", json.RawMessage(`{}`)); err == nil || !strings.Contains(err.Error(), "greeting") || body("In") != "hello" {
		t.Fatalf("Reconfigure(In, bad) = %v, then %q; want an error naming greeting, hello kept", err, body("In"))
	}
	if err := l.Reconfigure(ctx, "Re", json.RawMessage(`{"greeting":"bonjour"}`)); err != nil || body("Re") != "bonjour" || built.Load() != 2 {
		t.Fatalf("Reconfigure(Re) = %v, then %q, %d constructions; want nil, bonjour, 2", err, body("Re"), built.Load())
	}
	select {
	case <-closed:
	default:
		t.Error("the instance Reconfigure replaced was not closed")
	}
	if err := l.Handle("Nope").Err(); serve.AsError(err).Status != http.StatusNotFound || l.Handle("In").Err() != nil {
		t.Errorf("Handle(Nope).Err() = %v, Handle(In).Err() = %v; want 404 and nil", err, l.Handle("In").Err())
	}
	if err := l.Reconfigure(ctx, "Nope", nil); serve.AsError(err).Status != http.StatusNotFound {
		t.Errorf("Reconfigure(Nope) = %v, want 404", err)
	}
}

type greeter struct {
	greeting string
	closed   chan struct{}
}

func (g greeter) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return &serve.Response{Body: []byte(g.greeting)}, nil
}

func (g greeter) Close(context.Context) error { g.closed <- struct{}{}; return nil }

type health struct{ err error }

func (h health) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return &serve.Response{}, nil
}

func (h health) CheckHealth(ctx context.Context) error {
	if h.err == errSlow {
		<-ctx.Done()
		return ctx.Err()
	}
	return h.err
}

var errSlow = errors.New("slow")

// TestLocalCheckHealth: a deployment without a health check is healthy;
// one with one answers its result, bounded by health_check_timeout.
func TestLocalCheckHealth(t *testing.T) {
	reg := serve.NewRegistry()
	for name, err := range map[string]error{"good": nil, "bad": errors.New("disk full"), "slow": errSlow} {
		register(t, reg, name, func(context.Context, serve.Init) (serve.Handler, error) { return health{err}, nil })
	}
	register(t, reg, "none", func(context.Context, serve.Init) (serve.Handler, error) { return closer{}, nil })
	l := newLocal(t, reg, config.Deployment{Name: "Good", Handler: "good"}, config.Deployment{Name: "Bad", Handler: "bad"},
		config.Deployment{Name: "Slow", Handler: "slow", HealthCheckTimeout: config.Duration(50 * time.Millisecond)},
		config.Deployment{Name: "None", Handler: "none"})
	ctx := context.Background()
	if err := l.CheckHealth(ctx, "Good"); err != nil {
		t.Errorf("CheckHealth(Good) = %v", err)
	}
	if err := l.CheckHealth(ctx, "None"); err != nil {
		t.Errorf("CheckHealth(None) = %v", err)
	}
	if err := l.CheckHealth(ctx, "Bad"); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("CheckHealth(Bad) = %v, want disk full", err)
	}
	if err := l.CheckHealth(ctx, "Slow"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CheckHealth(Slow) = %v, want the 50ms health_check_timeout exceeded", err)
	}
}

// trainer is a job handler: "epochs" steps, a checkpoint and progress
// after each; it fails attempt 1 after "crash_after" steps (resumed from
// the checkpoint by attempt 2); "block" waits for cancel; "bad" is a 400.
type trainer struct{ started chan string }

func (trainer) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return &serve.Response{}, nil
}

func (tr trainer) RunJob(ctx serve.JobContext, job *serve.Job) (any, error) {
	var a struct {
		Epochs     int  `json:"epochs"`
		CrashAfter int  `json:"crash_after"`
		Block      bool `json:"block"`
		Bad        bool `json:"bad"`
	}
	if err := job.Args.Decode(&a); err != nil {
		return nil, err
	}
	if a.Bad {
		return nil, serve.Errorf(http.StatusBadRequest, "bad arguments")
	}
	if a.Block {
		tr.started <- job.ID
		<-ctx.Done()
		return nil, ctx.Err()
	}
	from := 0
	if b, ok, err := ctx.LastCheckpoint(); err != nil {
		return nil, err
	} else if ok {
		if err := json.Unmarshal(b, &from); err != nil {
			return nil, err
		}
	}
	resumed := from
	for e := from; e < a.Epochs; e++ {
		if job.Attempt == 1 && a.CrashAfter > 0 && e == a.CrashAfter {
			return nil, errors.New("worker crashed")
		}
		b, _ := json.Marshal(e + 1)
		if err := ctx.Checkpoint(b); err != nil {
			return nil, err
		}
		if err := ctx.Progress(float64(e+1)/float64(a.Epochs), "epoch"); err != nil {
			return nil, err
		}
	}
	return map[string]int{"epochs": a.Epochs, "resumed_from": resumed, "attempt": job.Attempt}, nil
}

// TestLocalJobs: the in-process runner submits, runs, reports progress,
// retries from the checkpoint, refuses duplicates, bad input and a full
// queue, fails 4xx at once, and cancels queued and running jobs.
func TestLocalJobs(t *testing.T) {
	reg := serve.NewRegistry()
	tr := trainer{started: make(chan string, 4)}
	register(t, reg, "trainer", func(context.Context, serve.Init) (serve.Handler, error) { return tr, nil },
		serve.WithAsync(config.AsyncMethod{Name: "train", MaxRunning: 1, MaxQueued: 2, MaxAttempts: 2,
			Backoff: []config.Duration{config.Duration(10 * time.Millisecond)}, RequiredArgs: []string{"epochs"}}))
	l := newLocal(t, reg, config.Deployment{Name: "Trainer", Handler: "trainer"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := func(kv string) serve.Args {
		var a serve.Args
		if err := json.Unmarshal([]byte(kv), &a); err != nil {
			t.Fatal(err)
		}
		return a
	}

	rec, created, err := l.SubmitJob(ctx, "train", "j1", args(`{"epochs": 5, "crash_after": 3}`))
	if err != nil || !created || rec.ID != "j1" || rec.Deployment != "Trainer" {
		t.Fatalf("SubmitJob(j1) = %+v, %v, %v", rec, created, err)
	}
	rec, err = l.WaitJob(ctx, "train", "j1")
	if err != nil || rec.Status != serve.JobSucceeded || rec.Attempts != 2 || rec.Progress != 1 {
		t.Fatalf("WaitJob(j1) = %+v, %v; want SUCCEEDED after 2 attempts, progress 1", rec, err)
	}
	res, _, err := l.JobResult("train", "j1")
	if err != nil || string(res) != `{"attempt":2,"epochs":5,"resumed_from":3}` {
		t.Fatalf("JobResult(j1) = %s, %v; want attempt 2 resumed from the checkpoint at 3", res, err)
	}
	if again, created, err := l.SubmitJob(ctx, "train", "j1", args(`{"epochs": 1}`)); err != nil || created || again.Attempts != 2 {
		t.Fatalf("SubmitJob(j1 again) = %+v, %v, %v; want the existing job, not created", again, created, err)
	}

	for _, tc := range []struct {
		name, method, id string
		args             string
		status           int
	}{
		{"unknown method", "nope", "", `{"epochs":1}`, http.StatusNotFound},
		{"missing required argument", "train", "", `{}`, http.StatusBadRequest},
		{"malformed id", "train", "a b", `{"epochs":1}`, http.StatusBadRequest},
	} {
		if _, _, err := l.SubmitJob(ctx, tc.method, tc.id, args(tc.args)); serve.AsError(err).Status != tc.status {
			t.Errorf("SubmitJob(%s) = %v, want %d", tc.name, err, tc.status)
		}
	}

	// A 4xx from the handler fails at once, not retried.
	rec, _, _ = l.SubmitJob(ctx, "train", "", args(`{"epochs": 1, "bad": true}`))
	if rec, err = l.WaitJob(ctx, "train", rec.ID); rec.Status != serve.JobFailed || rec.Attempts != 1 || !strings.Contains(rec.Error, "bad arguments") {
		t.Fatalf("WaitJob(bad) = %+v, %v; want FAILED after 1 attempt", rec, err)
	}
	if _, _, err := l.JobResult("train", rec.ID); serve.AsError(err).Status != http.StatusConflict {
		t.Errorf("JobResult(failed) = %v, want 409", err)
	}

	// max_running 1, max_queued 2: one runs, two wait, the fourth is refused.
	if _, _, err := l.SubmitJob(ctx, "train", "run", args(`{"epochs": 1, "block": true}`)); err != nil {
		t.Fatal(err)
	}
	<-tr.started
	for _, id := range []string{"q1", "q2"} {
		if rec, _, err := l.SubmitJob(ctx, "train", id, args(`{"epochs": 1}`)); err != nil || rec.Status != serve.JobQueued {
			t.Fatalf("SubmitJob(%s) = %+v, %v; want QUEUED", id, rec, err)
		}
	}
	if _, _, err := l.SubmitJob(ctx, "train", "q3", args(`{"epochs": 1}`)); serve.AsError(err).Code != protocol.ErrJobQueueFull {
		t.Fatalf("SubmitJob(q3) = %v, want job_queue_full", err)
	}
	if _, _, err := l.JobResult("train", "q1"); !errors.Is(err, serve.ErrJobNotFinished) {
		t.Fatalf("JobResult(queued) = %v, want ErrJobNotFinished", err)
	}
	if rec, err := l.CancelJob("train", "q1"); err != nil || rec.Status != serve.JobCancelled {
		t.Fatalf("CancelJob(queued) = %+v, %v; want CANCELLED at once", rec, err)
	}
	if rec, err := l.CancelJob("train", "run"); err != nil || !rec.CancelRequested {
		t.Fatalf("CancelJob(running) = %+v, %v; want cancel requested", rec, err)
	}
	if rec, err := l.WaitJob(ctx, "train", "run"); rec.Status != serve.JobCancelled {
		t.Fatalf("WaitJob(cancelled running) = %+v, %v; want CANCELLED", rec, err)
	}
	if rec, err := l.WaitJob(ctx, "train", "q2"); rec.Status != serve.JobSucceeded {
		t.Fatalf("WaitJob(q2) = %+v, %v; want SUCCEEDED once the slot freed", rec, err)
	}
}

// TestLocalJobTimeout: an attempt past the method's timeout ends, is
// retried, and the job fails once its attempts are spent, saying that it
// timed out (as the fleet's runner does).
func TestLocalJobTimeout(t *testing.T) {
	reg := serve.NewRegistry()
	tr := trainer{started: make(chan string, 4)}
	register(t, reg, "trainer", func(context.Context, serve.Init) (serve.Handler, error) { return tr, nil },
		serve.WithAsync(config.AsyncMethod{Name: "train", MaxAttempts: 2, Timeout: config.Duration(50 * time.Millisecond),
			Backoff: []config.Duration{config.Duration(10 * time.Millisecond)}}))
	l := newLocal(t, reg, config.Deployment{Name: "Trainer", Handler: "trainer"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var a serve.Args
	if err := json.Unmarshal([]byte(`{"block": true}`), &a); err != nil {
		t.Fatal(err)
	}
	rec, _, err := l.SubmitJob(ctx, "train", "slow", a)
	if err != nil {
		t.Fatal(err)
	}
	rec, err = l.WaitJob(ctx, "train", rec.ID)
	if err != nil || rec.Status != serve.JobFailed || rec.Attempts != 2 || !strings.Contains(rec.Error, "timed out after 50ms") {
		t.Fatalf("WaitJob(slow) = %+v, %v; want FAILED after 2 attempts, timed out after 50ms", rec, err)
	}
}

// TestNewLocalRefusesAsyncWithoutJobHandler: async methods on a handler
// that cannot run them is an error at NewLocal, naming the deployment.
func TestNewLocalRefusesAsyncWithoutJobHandler(t *testing.T) {
	reg := serve.NewRegistry()
	register(t, reg, "nojobs", func(context.Context, serve.Init) (serve.Handler, error) { return closer{}, nil },
		serve.WithAsync(config.AsyncMethod{Name: "train"}))
	_, err := serve.NewLocal(context.Background(), reg, config.Application{Name: "a", RoutePrefix: "/a", Ingress: "N",
		Deployments: []config.Deployment{{Name: "N", Handler: "nojobs"}}}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "JobHandler") || !strings.Contains(err.Error(), "N") {
		t.Fatalf("NewLocal = %v, want an error naming N and JobHandler", err)
	}
}

// TestHandleCallDoesNotModifyTheRequest: Handle.Call fills defaults and
// the model id on a copy.
func TestHandleCallDoesNotModifyTheRequest(t *testing.T) {
	reg := serve.NewRegistry()
	register(t, reg, "echo", func(context.Context, serve.Init) (serve.Handler, error) {
		return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
			return &serve.Response{Body: []byte(req.Method + " " + req.Path + " " + serve.ModelID(req))}, nil
		}), nil
	})
	l := newLocal(t, reg, config.Deployment{Name: "E", Handler: "echo"})
	req := &serve.Request{Header: http.Header{}}
	resp, err := l.Handle("E").WithModel("m1").Call(context.Background(), req)
	if err != nil || string(resp.Body) != "POST / m1" {
		t.Fatalf("Call = %v, %v; want POST / m1", resp, err)
	}
	if req.Method != "" || req.Path != "" || len(req.Header) != 0 {
		t.Fatalf("the caller's request was modified: %+v", req)
	}
}
