package jobs

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// TestMetricsCountOutcomes runs one job of each outcome through a real
// Queue and Runner and checks every counter and histogram of the method.
func TestMetricsCountOutcomes(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	met, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	q := NewQueue(e.js, e.names, zerolog.Nop(), WithMetrics(met))
	m := method("work")
	runs := newCounter()
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		n := runs.add(job.ID)
		switch job.ID {
		case "flaky":
			if n == 1 {
				return nil, errors.New("first attempt fails")
			}
		case "broken":
			return nil, errors.New("always fails")
		case "invalid":
			return nil, serve.Errorf(http.StatusBadRequest, "bad input")
		}
		return "ok", nil
	})
	r := NewRunner(e.nc, e.js, e.names, RunnerConfig{App: testApp, Deployment: testDep, Worker: "w", Replica: "r",
		Slots: 4, Methods: []config.AsyncMethod{m}, Handler: h, Log: zerolog.Nop(), Metrics: met})
	runRunner(t, r)

	for _, id := range []string{"ok", "flaky", "broken", "invalid"} {
		mustSubmit(t, q, m, id, nil)
	}
	// A repeated id is not a submission.
	if _, created, err := q.Submit(ctxT(t), testApp, testDep, m, "ok", nil); err != nil || created {
		t.Fatalf("Submit(repeated id) = created %v, %v; want not created", created, err)
	}
	waitStatus(t, q, "work", "ok", Succeeded, 20*time.Second)
	waitStatus(t, q, "work", "flaky", Succeeded, 20*time.Second)
	waitStatus(t, q, "work", "broken", Failed, 20*time.Second)
	waitStatus(t, q, "work", "invalid", Failed, 20*time.Second)

	want := map[string]float64{
		MetricSubmitted:    4,
		MetricStarted:      1 + 2 + 3 + 1,
		MetricSucceeded:    2,
		MetricFailed:       2,
		MetricRetried:      1 + 2, // flaky once, broken twice
		MetricDeadLettered: 1,     // broken; a 4xx is not dead-lettered
	}
	vecs := map[string]*prometheus.CounterVec{MetricSubmitted: met.submitted, MetricStarted: met.started,
		MetricSucceeded: met.succeeded, MetricFailed: met.failed, MetricRetried: met.retried, MetricDeadLettered: met.deadLettered}
	waitfor.True(t, 10*time.Second, "every counter", func() bool {
		for name, v := range want {
			if testutil.ToFloat64(vecs[name].WithLabelValues(testApp, "work")) != v {
				return false
			}
		}
		return true
	})
	for name, v := range want {
		if got := testutil.ToFloat64(vecs[name].WithLabelValues(testApp, "work")); got != v {
			t.Errorf("%s{application=%q,method=work} = %v, want %v", name, testApp, got, v)
		}
	}
	// Duration: one observation per attempt, by outcome; queue wait: one
	// per first delivery.
	for outcome, n := range map[string]int{OutcomeSucceeded: 2, OutcomeFailed: 2, OutcomeRetried: 3, OutcomeCancelled: 0} {
		if got := histCount(t, reg, MetricDuration, outcome); got != n {
			t.Errorf("%s{outcome=%s} count = %d, want %d", MetricDuration, outcome, got, n)
		}
	}
	if got := histCount(t, reg, MetricQueueWait, ""); got != 4 {
		t.Errorf("%s count = %d, want 4", MetricQueueWait, got)
	}
	// Every series of the method exists from the start, so a dashboard
	// shows zeros rather than nothing.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP jetserve_jobs_dead_lettered_total Failed jobs written to the dead-letter stream.
# TYPE jetserve_jobs_dead_lettered_total counter
jetserve_jobs_dead_lettered_total{application="app",method="work"} 1
`), MetricDeadLettered); err != nil {
		t.Error(err)
	}
}

// histCount is the sample count of the histogram series of method "work"
// (with outcome, if not "").
func histCount(t *testing.T, reg *prometheus.Registry, name, outcome string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() != outcome || l.GetName() == "method" && l.GetValue() != "work" {
					continue series
				}
			}
			return int(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("no series of %s (outcome %q)", name, outcome)
	return 0
}

// TestBacklog reads a method's queue with no runner, then after one job
// was dead-lettered, and sets the gauges from it.
func TestBacklog(t *testing.T) {
	e := newEnv(t)
	m := method("work", func(m *config.AsyncMethod) { m.MaxAttempts = 1 })
	if _, err := e.q.Backlog(ctxT(t), testApp, "work"); !errors.Is(err, ErrUnknownMethod) {
		t.Fatalf("Backlog(never ensured) = %v, want ErrUnknownMethod", err)
	}
	before := time.Now()
	mustSubmit(t, e.q, m, "a", nil)
	mustSubmit(t, e.q, m, "b", nil)
	// The consumer's pending count follows the stream's a moment after
	// the publish was acknowledged.
	var b Backlog
	waitfor.NoError(t, 5*time.Second, "2 queued", func() error {
		var err error
		if b, err = e.q.Backlog(ctxT(t), testApp, "work"); err == nil && b.Queued != 2 {
			err = fmt.Errorf("backlog %+v", b)
		}
		return err
	})
	if b.Queued != 2 || b.Running != 0 || b.DeadLettered != 0 {
		t.Errorf("Backlog = %+v, want 2 queued, 0 running, 0 dead-lettered", b)
	}
	if b.Oldest.Before(before.Add(-time.Second)) || b.Oldest.After(time.Now()) {
		t.Errorf("Backlog.Oldest = %v, want the first submit's time (~%v)", b.Oldest, before)
	}

	reg := prometheus.NewRegistry()
	g, err := NewBacklogGauges(reg)
	if err != nil {
		t.Fatal(err)
	}
	g.Set(testApp, "work", b, b.Oldest.Add(90*time.Second))
	if got := testutil.ToFloat64(g.oldest.WithLabelValues(testApp, "work")); got != 90 {
		t.Errorf("%s = %v, want 90", MetricOldestAge, got)
	}
	if got := testutil.ToFloat64(g.queued.WithLabelValues(testApp, "work")); got != 2 {
		t.Errorf("%s = %v, want 2", MetricQueued, got)
	}

	// One attempt allowed: "b" fails, is dead-lettered; "a" succeeds.
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		if job.ID == "b" {
			return nil, errors.New("fails")
		}
		return 1, nil
	})
	startRunner(t, e, e.nc, 2, h, "r", m)
	waitStatus(t, e.q, "work", "b", Failed, 20*time.Second)
	waitStatus(t, e.q, "work", "a", Succeeded, 20*time.Second)
	waitfor.True(t, 10*time.Second, "an empty queue and one dead letter", func() bool {
		b, err = e.q.Backlog(ctxT(t), testApp, "work")
		return err == nil && b.Queued == 0 && b.Running == 0 && b.DeadLettered == 1 && b.Oldest.IsZero()
	})
	g.Set(testApp, "work", b, time.Now())
	if got := testutil.ToFloat64(g.oldest.WithLabelValues(testApp, "work")); got != 0 {
		t.Errorf("%s with an empty queue = %v, want 0", MetricOldestAge, got)
	}
	g.Forget(testApp, "work")
	if n := testutil.CollectAndCount(g.queued); n != 0 {
		t.Errorf("series after Forget = %d, want 0", n)
	}
}

// TestWorkflowRunsGauge: every status has a series (a missing one at 0),
// and Forget drops them.
func TestWorkflowRunsGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	g, err := NewBacklogGauges(reg)
	if err != nil {
		t.Fatal(err)
	}
	g.SetWorkflowRuns(testApp, "book", map[Status]int{Suspended: 3, Succeeded: 2})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP jetserve_workflow_runs Workflow runs by status (queued, running, suspended, succeeded, failed, cancelled) among the records kept (finished ones for the retention), latest poll.
# TYPE jetserve_workflow_runs gauge
jetserve_workflow_runs{application="app",method="book",status="cancelled"} 0
jetserve_workflow_runs{application="app",method="book",status="failed"} 0
jetserve_workflow_runs{application="app",method="book",status="queued"} 0
jetserve_workflow_runs{application="app",method="book",status="running"} 0
jetserve_workflow_runs{application="app",method="book",status="succeeded"} 2
jetserve_workflow_runs{application="app",method="book",status="suspended"} 3
`), MetricWorkflowRuns); err != nil {
		t.Error(err)
	}
	g.Forget(testApp, "book")
	if n := testutil.CollectAndCount(g.runs); n != 0 {
		t.Errorf("%s series after Forget = %d, want 0", MetricWorkflowRuns, n)
	}
}
