package signals

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type jobsEnv struct {
	t     *testing.T
	js    jetstream.JetStream
	names jobs.Names
	b     *fleetstate.Buckets
	q     *jobs.Queue
	j     *Jobs

	mu     sync.Mutex
	polls  map[string]int // by ScaleKey; guarded by mu
	kicked map[string]int // OnBacklog calls by ScaleKey; guarded by mu
}

func newJobsEnv(t *testing.T) *jobsEnv {
	t.Helper()
	tf := natstest.NewFleet(t)
	nc, pn, js, b := tf.NC, tf.Names, tf.JS, tf.Buckets
	e := &jobsEnv{t: t, js: js, names: jobs.Names{Names: pn}, b: b, polls: map[string]int{}, kicked: map[string]int{}}
	e.q = jobs.NewQueue(js, e.names, zerolog.Nop())
	e.j = NewJobs(JobsOptions{NC: nc, JS: js, Names: e.names, Buckets: b, Log: zerolog.Nop(),
		OnBacklog: func(app, dep string) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.kicked[protocol.ScaleKey(app, dep)]++
		}})
	e.j.onPoll = func(key string, _ int) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.polls[key]++
	}
	return e
}

// run runs the poller until the test ends.
func (e *jobsEnv) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.j.Run(ctx) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

func (e *jobsEnv) putConfig(sc config.ServeConfig) {
	e.t.Helper()
	natstest.ApplyConfig(e.t, e.b, sc)
}

// submit queues n jobs of app's method m for deployment dep.
func (e *jobsEnv) submit(app, dep, m string, n int) {
	e.t.Helper()
	ctx := context.Background()
	am := config.AsyncMethod{Name: m}
	if err := e.q.Ensure(ctx, app, dep, am); err != nil {
		e.t.Fatal(err)
	}
	for range n {
		if _, _, err := e.q.Submit(ctx, app, dep, am, "", nil); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *jobsEnv) count(m map[string]int, key string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return m[key]
}

// waitBacklog polls Sample until the backlog is want.
func (e *jobsEnv) waitBacklog(app, dep string, want int, within time.Duration) Sample {
	e.t.Helper()
	deadline := time.Now().Add(within)
	var s Sample
	for time.Now().Before(deadline) {
		if s = e.j.Sample(app, dep, time.Now()); s.Backlog == want {
			return s
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	e.t.Fatalf("Sample(%s, %s) = %+v, want backlog %d within %v", app, dep, s, want, within)
	return s
}

func autoscaled(interval time.Duration) *config.AutoscalingConfig {
	return &config.AutoscalingConfig{MaxReplicas: 4, MetricsInterval: config.Duration(interval)}
}

// TestJobsBacklog: the backlog of an autoscaled deployment's methods —
// named in its async_methods or declared by its handler's code (the Handlers bucket) —
// is summed, with the oldest job's age; a deployment that is not
// autoscaled is not polled.
func TestJobsBacklog(t *testing.T) {
	e := newJobsEnv(t)
	e.putConfig(config.ServeConfig{Applications: []config.Application{{Name: "a", RoutePrefix: "/a", Ingress: "d",
		Deployments: []config.Deployment{
			{Name: "d", Handler: "h", AutoscalingConfig: autoscaled(20 * time.Millisecond),
				AsyncMethods: []config.AsyncMethod{{Name: "configured"}}},
			{Name: "fixed", Handler: "f", AsyncMethods: []config.AsyncMethod{{Name: "other"}}},
		}}}})
	info, _ := json.Marshal(protocol.HandlerInfo{Handler: "h", Async: []config.AsyncMethod{{Name: "advertised"}}, Worker: "w1"})
	if _, err := e.b.Handlers.Put(context.Background(), protocol.HandlerKey("h"), info); err != nil {
		t.Fatal(err)
	}
	e.submit("a", "d", "configured", 3)
	e.submit("a", "d", "advertised", 2)
	e.submit("a", "fixed", "other", 5)
	e.run()

	s := e.waitBacklog("a", "d", 5, 5*time.Second)
	if s.OldestJob <= 0 || s.OldestJob > time.Minute {
		t.Errorf("Sample(a, d).OldestJob = %v, want the age of the first job submitted", s.OldestJob)
	}
	if got := e.count(e.kicked, "a.d"); got != 1 {
		t.Errorf("OnBacklog(a, d) calls = %d, want 1 (backlog rose from zero once)", got)
	}
	if got := e.j.Sample("a", "fixed", time.Now()); got != (Sample{}) {
		t.Errorf("Sample(a, fixed) = %+v, want zero: not autoscaled", got)
	}
	if got := e.count(e.polls, "a.fixed"); got != 0 {
		t.Errorf("polls of a.fixed = %d, want 0", got)
	}
}

// TestJobsWakeUp: with a metrics_interval far too long to explain it, a
// job submitted to an idle deployment shows in its sample within
// milliseconds (the job-subject subscription wakes the poller, consumer
// info confirms).
func TestJobsWakeUp(t *testing.T) {
	e := newJobsEnv(t)
	e.putConfig(config.ServeConfig{Applications: []config.Application{{Name: "a", RoutePrefix: "/a", Ingress: "d",
		Deployments: []config.Deployment{{Name: "d", Handler: "h", AutoscalingConfig: autoscaled(time.Hour),
			AsyncMethods: []config.AsyncMethod{{Name: "m"}}}}}}})
	e.submit("a", "d", "m", 0) // the stream exists, empty
	e.run()
	deadline := time.Now().Add(5 * time.Second)
	for e.count(e.polls, "a.d") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the deployment was never polled")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	start := time.Now()
	e.submit("a", "d", "m", 1)
	e.waitBacklog("a", "d", 1, 2*time.Second)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("backlog seen after %v, want within milliseconds", took)
	}
	if got := e.count(e.kicked, "a.d"); got != 1 {
		t.Errorf("OnBacklog(a, d) calls = %d, want 1", got)
	}
}

// TestJobsForgetsWhenNotLeading: once Run returns (leadership lost) the
// readings are gone, so a standby reports no stale backlog.
func TestJobsForgetsWhenNotLeading(t *testing.T) {
	e := newJobsEnv(t)
	e.putConfig(config.ServeConfig{Applications: []config.Application{{Name: "a", RoutePrefix: "/a", Ingress: "d",
		Deployments: []config.Deployment{{Name: "d", Handler: "h", AutoscalingConfig: autoscaled(20 * time.Millisecond),
			AsyncMethods: []config.AsyncMethod{{Name: "m"}}}}}}})
	e.submit("a", "d", "m", 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.j.Run(ctx) }()
	e.waitBacklog("a", "d", 2, 5*time.Second)
	cancel()
	<-done
	if got := e.j.Sample("a", "d", time.Now()); got != (Sample{}) {
		t.Fatalf("Sample(a, d) after Run returned = %+v, want zero", got)
	}
}
