package autoscaler

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

const method = "train"

// jobsConfig is the deployment with one async method, autoscaled by ac.
func (e *env) putJobsConfig(ac config.AutoscalingConfig) {
	e.t.Helper()
	sc := config.ServeConfig{Applications: []config.Application{{Name: app, RoutePrefix: "/a", Ingress: dep,
		Deployments: []config.Deployment{{Name: dep, Handler: "echo", AutoscalingConfig: &ac,
			AsyncMethods: []config.AsyncMethod{{Name: method}}}}}}}
	natstest.ApplyConfig(e.t, e.Buckets, sc)
}

func (e *env) jobs() (jetstream.JetStream, jobs.Names, *jobs.Queue) {
	e.t.Helper()
	js, err := jetstream.New(e.NC)
	if err != nil {
		e.t.Fatal(err)
	}
	names := jobs.Names{Names: e.Names}
	return js, names, jobs.NewQueue(js, names, zerolog.Nop())
}

func asyncMethod() config.AsyncMethod {
	m := config.AsyncMethod{Name: method}
	m.ApplyDefaults()
	return m
}

// submit queues jobs with the given ids ("" = generated).
func submit(t *testing.T, q *jobs.Queue, ids ...string) {
	t.Helper()
	ctx := context.Background()
	if err := q.Ensure(ctx, app, dep, asyncMethod()); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, _, err := q.Submit(ctx, app, dep, asyncMethod(), id, nil); err != nil {
			t.Fatalf("Submit(%q): %v", id, err)
		}
	}
}

// TestJobBurstScalesUp: a burst of n jobs (no runner: they stay queued)
// asks for ceil(n / target_backlog_per_replica) replicas within bounds —
// at once from zero, after the delay from a running count — and the
// backlog shows in the decision and the metrics.
func TestJobBurstScalesUp(t *testing.T) {
	tests := []struct {
		name             string
		n                int
		target           float64
		minimum, initial int
		want             int
		// reasons the last decision may give: from zero the first job
		// cold-starts at once and the rest of the burst, seen by the next
		// poll, scales up.
		reasons []protocol.ScaleReason
	}{
		{"from zero", 7, 2, 0, 0, 4, []protocol.ScaleReason{protocol.ScaleColdStart, protocol.ScaleUp}},
		{"clamped to max_replicas", 20, 2, 0, 0, 6, []protocol.ScaleReason{protocol.ScaleColdStart, protocol.ScaleUp}},
		{"upscale from one", 9, 3, 1, 1, 3, []protocol.ScaleReason{protocol.ScaleUp}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.putJobsConfig(fast(func(ac *config.AutoscalingConfig) {
				ac.TargetBacklogPerReplica, ac.MinReplicas, ac.InitialReplicas = tc.target, intp(tc.minimum), intp(tc.initial)
			}))
			inst := e.start("as-1")
			e.waitDesired(tc.initial, 10*time.Second)
			_, _, q := e.jobs()
			ids := make([]string, tc.n)
			submit(t, q, ids...)
			d := e.waitDesired(tc.want, 5*time.Second)
			// The poll may see the burst before its last submits (a
			// clamped decision is reached early); the gauge below must
			// reach the whole burst.
			if !slices.Contains(tc.reasons, d.Reason) || d.Backlog <= 0 || d.Backlog > tc.n {
				t.Errorf("decision = %+v, want a reason in %v with a backlog of at most %d", d, tc.reasons, tc.n)
			}
			deadline := time.Now().Add(5 * time.Second)
			for value(inst.reg, "jetserve_autoscaling_job_backlog", "deployment", dep) != float64(tc.n) ||
				value(inst.reg, "jetserve_autoscaling_oldest_job_age_seconds", "deployment", dep) <= 0 {
				if time.Now().After(deadline) {
					t.Fatalf("jetserve_autoscaling_job_backlog = %v, oldest_job_age_seconds = %v; want %d and > 0",
						value(inst.reg, "jetserve_autoscaling_job_backlog", "deployment", dep),
						value(inst.reg, "jetserve_autoscaling_oldest_job_age_seconds", "deployment", dep), tc.n)
				}
				time.Sleep(10 * time.Millisecond) // poll interval
			}
			// Steady backlog: no further change.
			until := time.Now().Add(500 * time.Millisecond)
			for time.Now().Before(until) {
				if d, _ := e.decision(); d.Desired != tc.want {
					t.Fatalf("decision = %+v under a steady backlog, want %d kept", d, tc.want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// TestJobAtZeroStartsAReplica: with a metrics_interval far longer than
// the reaction measured, a job submitted to a deployment at zero gets a
// replica at once (the leader's job-subject wake-up, confirmed by
// consumer info).
func TestJobAtZeroStartsAReplica(t *testing.T) {
	e := newEnv(t)
	e.putJobsConfig(fast(func(ac *config.AutoscalingConfig) {
		ac.MetricsInterval, ac.LookBackPeriod = config.Duration(5*time.Second), config.Duration(10*time.Second)
	}))
	_, _, q := e.jobs()
	submit(t, q) // the stream exists, empty, as after an earlier cycle
	e.start("as-1")
	e.waitDesired(0, 10*time.Second)
	start := time.Now()
	submit(t, q, "")
	d := e.waitDesired(1, 5*time.Second)
	took := time.Since(start)
	t.Logf("job at zero → decision after %v: %+v", took, d)
	if d.Reason != protocol.ScaleColdStart || d.Backlog != 1 {
		t.Errorf("decision = %+v, want reason cold_start with backlog 1", d)
	}
	if took > time.Second {
		t.Errorf("cold start for a job took %v, want well under 1s (metrics_interval is 5s)", took)
	}
}

type jobHandler func(ctx serve.JobContext, job *serve.Job) (any, error)

func (f jobHandler) RunJob(ctx serve.JobContext, job *serve.Job) (any, error) { return f(ctx, job) }

// TestJobsDrainToZero: a burst raises the count; a runner drains it and
// the count comes down, but never to zero while a job still runs; once
// it is done the deployment goes to zero after the delays.
func TestJobsDrainToZero(t *testing.T) {
	e := newEnv(t)
	e.putJobsConfig(fast(nil)) // target_backlog_per_replica 1, max 6, to-zero delay 300ms
	e.start("as-1")
	e.waitDesired(0, 10*time.Second)
	js, names, q := e.jobs()
	submit(t, q, "j1", "j2", "j3", "j4", "slow")
	e.waitDesired(5, 5*time.Second)

	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	started := make(chan struct{})
	var startOnce sync.Once
	r := jobs.NewRunner(natstest.Conn(t, e.NS), js, names, jobs.RunnerConfig{App: app, Deployment: dep, Worker: "w1",
		Replica: "r1", Slots: 2, Methods: []config.AsyncMethod{asyncMethod()}, Log: zerolog.Nop(),
		Handler: jobHandler(func(ctx serve.JobContext, job *serve.Job) (any, error) {
			if job.ID != "slow" {
				return "ok", nil
			}
			startOnce.Do(func() { close(started) })
			select {
			case <-release:
				return "done", nil
			case <-ctx.Done():
				return nil, fmt.Errorf("slow job: %w", ctx.Err())
			}
		})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		free()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Runner.Run() = %v, want nil", err)
		}
	})

	<-started
	d := e.waitDesired(1, 5*time.Second)
	if d.Reason != protocol.ScaleDown {
		t.Errorf("decision with one job running = %+v, want reason downscale", d)
	}
	deadline := time.Now().Add(1500 * time.Millisecond) // 5× the to-zero delay
	for time.Now().Before(deadline) {
		if d, _ := e.decision(); d.Desired != 1 || d.Backlog != 1 {
			t.Fatalf("decision = %+v while a job runs, want desired 1, backlog 1", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	free()
	d = e.waitDesired(0, 5*time.Second)
	if d.Reason != protocol.ScaleToZero || d.Backlog != 0 {
		t.Errorf("last decision = %+v, want reason scale_to_zero with no backlog", d)
	}
	rec, err := q.Status(context.Background(), app, method, "slow")
	if err != nil || rec.Status != jobs.Succeeded {
		t.Errorf("Status(slow) = %+v, %v; want SUCCEEDED", rec.Status, err)
	}
}
