package jobs

import (
	"time"

	"github.com/jetserve/jetserve/pkg/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Job metric names (labels application and method; the duration histogram
// adds outcome). Grafana's dashboard (deploy/grafana) and its test use
// them: rename one there too.
const (
	MetricSubmitted    = "jetserve_jobs_submitted_total"
	MetricStarted      = "jetserve_jobs_started_total"
	MetricSucceeded    = "jetserve_jobs_succeeded_total"
	MetricFailed       = "jetserve_jobs_failed_total"
	MetricRetried      = "jetserve_jobs_retried_total"
	MetricDeadLettered = "jetserve_jobs_dead_lettered_total"
	MetricDuration     = "jetserve_job_duration_seconds"
	MetricQueueWait    = "jetserve_job_queue_wait_seconds"
	MetricQueued       = "jetserve_jobs_queued"
	MetricRunning      = "jetserve_jobs_running"
	MetricOldestAge    = "jetserve_jobs_oldest_age_seconds"
	// Workflows (labels application and method, the workflow's name).
	MetricSuspended    = "jetserve_workflow_suspensions_total"
	MetricStepDuration = "jetserve_workflow_step_duration_seconds"
)

// Outcomes of an attempt, the outcome label of MetricDuration.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
	OutcomeRetried   = "retried"
	OutcomeCancelled = "cancelled"
	// OutcomeSuspended: a workflow run's attempt that ended awaiting an
	// event.
	OutcomeSuspended = "suspended"
)

var outcomes = []string{OutcomeSucceeded, OutcomeFailed, OutcomeRetried, OutcomeCancelled, OutcomeSuspended}

// StepBuckets are the buckets of the workflow step histogram, in seconds:
// 100 µs to 10 minutes.
var StepBuckets = []float64{0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600}

// DurationBuckets are the buckets of the job duration and queue-wait
// histograms, in seconds: 10 ms to 6 hours.
var DurationBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600}

// Metrics are the job counters and histograms, per application and
// method. Queues count submissions (WithMetrics), Runners everything else
// (RunnerConfig.Metrics); one Metrics serves every Queue and Runner of a
// process. A nil *Metrics counts nothing.
type Metrics struct {
	submitted, started, succeeded, failed, retried, deadLettered, suspended *prometheus.CounterVec
	duration, queueWait, step                                               *prometheus.HistogramVec
}

var methodLabels = []string{"application", "method"}

// NewMetrics creates the job collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, methodLabels)
	}
	m := &Metrics{
		submitted:    counter(MetricSubmitted, "Jobs stored by Submit (a repeated id is not counted)."),
		started:      counter(MetricStarted, "Job attempts started by runners (a retry or a redelivery is another attempt)."),
		succeeded:    counter(MetricSucceeded, "Jobs that ended SUCCEEDED."),
		failed:       counter(MetricFailed, "Jobs that ended FAILED (a 4xx error at once, or attempts exhausted)."),
		retried:      counter(MetricRetried, "Failed attempts that were retried after their backoff."),
		deadLettered: counter(MetricDeadLettered, "Failed jobs written to the dead-letter stream."),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricDuration,
			Help:    "Run time of one job attempt, in seconds, by outcome (succeeded, failed, retried, cancelled).",
			Buckets: DurationBuckets,
		}, append(methodLabels[:2:2], "outcome")),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricQueueWait,
			Help:    "Time from a job's message being stored to its first attempt starting, in seconds.",
			Buckets: DurationBuckets,
		}, methodLabels),
		suspended: counter(MetricSuspended, "Workflow run attempts that ended suspended, awaiting an event (no slot held)."),
		step: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricStepDuration,
			Help:    "Run time of a journaled workflow step (its attempts and backoff included), in seconds, by kind (step, undo).",
			Buckets: StepBuckets,
		}, append(methodLabels[:2:2], "kind")),
	}
	if err := metrics.Register(reg, "job", m.submitted, m.started, m.succeeded, m.failed, m.retried,
		m.deadLettered, m.duration, m.queueWait, m.suspended, m.step); err != nil {
		return nil, err
	}
	return m, nil
}

// methodMetrics are one method's curried collectors; the zero value (no
// Metrics) counts nothing.
type methodMetrics struct {
	submitted, started, succeeded, failed, retried, deadLettered, suspended prometheus.Counter
	duration                                                                map[string]prometheus.Observer
	queueWait                                                               prometheus.Observer
	step                                                                    prometheus.ObserverVec // curried: label kind
}

// forMethod returns app/method's collectors, creating every series at zero
// so that dashboards and alerts see the method before its first event.
func (m *Metrics) forMethod(app, method string) *methodMetrics {
	if m == nil {
		return &methodMetrics{}
	}
	mm := &methodMetrics{
		submitted:    m.submitted.WithLabelValues(app, method),
		started:      m.started.WithLabelValues(app, method),
		succeeded:    m.succeeded.WithLabelValues(app, method),
		failed:       m.failed.WithLabelValues(app, method),
		retried:      m.retried.WithLabelValues(app, method),
		deadLettered: m.deadLettered.WithLabelValues(app, method),
		duration:     make(map[string]prometheus.Observer, len(outcomes)),
		queueWait:    m.queueWait.WithLabelValues(app, method),
		suspended:    m.suspended.WithLabelValues(app, method),
		step:         m.step.MustCurryWith(prometheus.Labels{"application": app, "method": method}),
	}
	for _, o := range outcomes {
		mm.duration[o] = m.duration.WithLabelValues(app, method, o)
	}
	return mm
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func (mm *methodMetrics) attempt(outcome string, since time.Time) {
	if o := mm.duration[outcome]; o != nil {
		o.Observe(time.Since(since).Seconds())
	}
}

// stepDone observes a journaled step's run time.
func (mm *methodMetrics) stepDone(kind string, d time.Duration) {
	if mm.step != nil {
		mm.step.WithLabelValues(kind).Observe(d.Seconds())
	}
}

func (mm *methodMetrics) waited(since time.Time) {
	if mm.queueWait != nil && !since.IsZero() {
		mm.queueWait.Observe(max(time.Since(since), 0).Seconds())
	}
}

// BacklogGauges are the per-method gauges of jobs queued, running and the
// age of the oldest one still in its work-queue stream. They come from a
// poll of the streams (Queue.Backlog): one poller for the whole fleet (the
// leading scheduler sets them), so workers never call consumer info.
type BacklogGauges struct {
	queued, running, oldest *prometheus.GaugeVec
}

// NewBacklogGauges creates the backlog gauges and registers them on reg.
func NewBacklogGauges(reg prometheus.Registerer) (*BacklogGauges, error) {
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, methodLabels)
	}
	g := &BacklogGauges{
		queued:  gauge(MetricQueued, "Jobs waiting for a runner (the runners consumer's num_pending), latest poll."),
		running: gauge(MetricRunning, "Jobs delivered and not yet acknowledged: running or waiting for a retry (num_ack_pending), latest poll."),
		oldest:  gauge(MetricOldestAge, "Age in seconds of the oldest job queued or running (its work-queue stream's first message), latest poll; 0 when none."),
	}
	if err := metrics.Register(reg, "job backlog", g.queued, g.running, g.oldest); err != nil {
		return nil, err
	}
	return g, nil
}

// Set records one method's backlog as read at now.
func (g *BacklogGauges) Set(app, method string, b Backlog, now time.Time) {
	g.queued.WithLabelValues(app, method).Set(float64(b.Queued))
	g.running.WithLabelValues(app, method).Set(float64(b.Running))
	age := 0.0
	if !b.Oldest.IsZero() {
		age = max(now.Sub(b.Oldest), 0).Seconds()
	}
	g.oldest.WithLabelValues(app, method).Set(age)
}

// Forget drops one method's series (the method is gone, or this process
// stopped polling).
func (g *BacklogGauges) Forget(app, method string) {
	g.queued.DeleteLabelValues(app, method)
	g.running.DeleteLabelValues(app, method)
	g.oldest.DeleteLabelValues(app, method)
}
