package jobs

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const testApp, testDep = "app", "dep"

type testEnv struct {
	ns    *server.Server
	nc    *nats.Conn
	js    jetstream.JetStream
	names Names
	q     *Queue
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	ns := natstest.Server(t)
	return envOn(t, ns)
}

func envOn(t testing.TB, ns *server.Server) *testEnv {
	t.Helper()
	nc := natstest.Conn(t, ns)
	js := natstest.JetStream(t, nc)
	pn, err := protocol.NewNames("t")
	if err != nil {
		t.Fatal(err)
	}
	names := Names{Names: pn}
	// A publish the embedded server does not answer within the default
	// 2 s is a loaded machine here, not an election: tests that are about
	// SubmitWait build their own Queue (submit_test.go).
	return &testEnv{ns: ns, nc: nc, js: js, names: names, q: NewQueue(js, names, zerolog.Nop(), SubmitWait(10*time.Second))}
}

// method is a test method config: short lease and backoff.
func method(name string, mod ...func(*config.AsyncMethod)) config.AsyncMethod {
	m := config.AsyncMethod{
		Name:         name,
		MaxQueued:    1000,
		MaxRunning:   100,
		MaxAttempts:  3,
		Backoff:      []config.Duration{config.Duration(50 * time.Millisecond)},
		LeaseTimeout: config.Duration(time.Second),
		Retention:    config.Duration(time.Hour),
		Timeout:      config.Duration(time.Minute),
	}
	for _, f := range mod {
		f(&m)
	}
	m.ApplyDefaults()
	return m
}

func prio(p int) func(*config.AsyncMethod) { return func(m *config.AsyncMethod) { m.Priority = &p } }

type handlerFunc func(ctx serve.JobContext, job *serve.Job) (any, error)

func (f handlerFunc) RunJob(ctx serve.JobContext, job *serve.Job) (any, error) { return f(ctx, job) }

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startRunner runs a Runner until the test ends (or stop is called).
func startRunner(t testing.TB, e *testEnv, nc *nats.Conn, slots int, h serve.JobHandler, replica string, ms ...config.AsyncMethod) (r *Runner, stop func()) {
	t.Helper()
	return startRunnerWith(t, e, nc, nil, slots, h, replica, ms...)
}

// startRunnerWith is startRunner with test knobs set (knobs may be nil).
func startRunnerWith(t testing.TB, e *testEnv, nc *nats.Conn, knobs func(*Runner), slots int, h serve.JobHandler, replica string, ms ...config.AsyncMethod) (r *Runner, stop func()) {
	t.Helper()
	js := natstest.JetStream(t, nc)
	r = NewRunner(nc, js, e.names, RunnerConfig{
		App: testApp, Deployment: testDep, Worker: "w-" + replica, Replica: replica,
		Slots: slots, Methods: ms, Handler: h, Log: zerolog.Nop(),
	})
	if knobs != nil {
		knobs(r)
	}
	return r, runRunner(t, r)
}

func runRunner(t testing.TB, r *Runner) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			r.Abort()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Runner.Run() = %v, want nil", err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("Runner.Run did not return")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// recv waits (at most 20 s) for a value on ch.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func waitStatus(t testing.TB, q *Queue, m string, id string, want Status, d time.Duration) Record {
	t.Helper()
	var rec Record
	var err error
	waitfor.True(t, d, "job "+id+" "+string(want), func() bool {
		rec, err = q.Status(context.Background(), testApp, m, id)
		return err == nil && rec.Status == want
	})
	return rec
}

func mustSubmit(t testing.TB, q *Queue, m config.AsyncMethod, id string, args serve.Args) Record {
	t.Helper()
	rec, created, err := q.Submit(ctxT(t), testApp, testDep, m, id, args)
	if err != nil || !created {
		t.Fatalf("Submit(%q) = %+v, %v, %v; want created", id, rec, created, err)
	}
	return rec
}

func raw(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}

// counter counts runs per job id.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func newCounter() *counter { return &counter{n: map[string]int{}} }

func (c *counter) add(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[id]++
	return c.n[id]
}

func (c *counter) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

func (c *counter) total() (ids, runs int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.n {
		ids++
		runs += v
	}
	return ids, runs
}
