package control

import (
	"github.com/jetserve/jetserve/services/autoscaler/internal/signals"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the autoscaler's Prometheus collectors (Ray Serve's
// autoscaling metric names, prefixed jetserve_).
type Metrics struct {
	IsLeader prometheus.Gauge
	// Desired is what the policy asks for now (before the delays),
	// Target the decision in force, Current the RUNNING replicas.
	Desired, Target, Current *prometheus.GaugeVec
	// TotalRequests is the smoothed ongoing+queued load decided on;
	// Ongoing and Queued the instantaneous parts.
	TotalRequests, Ongoing, Queued *prometheus.GaugeVec
	// JobBacklog is the async jobs queued or running (consumer
	// num_pending + num_ack_pending); OldestJobAge the age of the oldest.
	JobBacklog, OldestJobAge *prometheus.GaugeVec
	Decisions                *prometheus.CounterVec
	DesiredWorkers           prometheus.Gauge
}

// NewMetrics registers the collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	labels := []string{"application", "deployment"}
	gv := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	m := &Metrics{
		IsLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetserve_autoscaler_is_leader",
			Help: "1 while this autoscaler instance holds the leader lease."}),
		Desired: gv("jetserve_autoscaling_desired_replicas",
			"Replicas the autoscaling policy asks for now, before the upscale/downscale delay."),
		Target: gv("jetserve_autoscaling_target_replicas",
			"Replicas the autoscaler decided (in force; the scheduler's target)."),
		Current: gv("jetserve_autoscaling_current_replicas", "RUNNING replicas as the autoscaler sees them."),
		TotalRequests: gv("jetserve_autoscaling_total_requests",
			"Ongoing plus queued requests averaged over look_back_period: the load decided on."),
		Ongoing: gv("jetserve_autoscaling_ongoing_requests", "Requests replicas are working on (latest reports)."),
		Queued:  gv("jetserve_autoscaling_queued_requests", "Requests waiting at routers (latest reports)."),
		JobBacklog: gv("jetserve_autoscaling_job_backlog",
			"Async jobs queued or running (num_pending + num_ack_pending of the deployment's job consumers, latest poll)."),
		OldestJobAge: gv("jetserve_autoscaling_oldest_job_age_seconds",
			"Age of the deployment's oldest async job queued or running (0 when none)."),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetserve_autoscaling_decisions_total",
			Help: "Scaling decisions written, by reason."}, []string{"application", "deployment", "reason"}),
		DesiredWorkers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetserve_autoscaler_desired_workers",
			Help: "Workers the fleet should have: live ones plus enough for replicas pending for lack of capacity (for external scalers such as KEDA)."}),
	}
	reg.MustRegister(m.IsLeader, m.Desired, m.Target, m.Current, m.TotalRequests, m.Ongoing, m.Queued,
		m.JobBacklog, m.OldestJobAge, m.Decisions, m.DesiredWorkers)
	return m
}

func (m *Metrics) observe(app, dep string, desired, target, current int, load float64, s signals.Sample) {
	m.Desired.WithLabelValues(app, dep).Set(float64(desired))
	m.Target.WithLabelValues(app, dep).Set(float64(target))
	m.Current.WithLabelValues(app, dep).Set(float64(current))
	m.TotalRequests.WithLabelValues(app, dep).Set(load)
	m.Ongoing.WithLabelValues(app, dep).Set(float64(s.Ongoing))
	m.Queued.WithLabelValues(app, dep).Set(float64(s.Queued))
	m.JobBacklog.WithLabelValues(app, dep).Set(float64(s.Backlog))
	m.OldestJobAge.WithLabelValues(app, dep).Set(s.OldestJob.Seconds())
}

func (m *Metrics) gauges() []*prometheus.GaugeVec {
	return []*prometheus.GaugeVec{m.Desired, m.Target, m.Current, m.TotalRequests, m.Ongoing, m.Queued, m.JobBacklog, m.OldestJobAge}
}

func (m *Metrics) forget(app, dep string) {
	for _, g := range m.gauges() {
		g.DeleteLabelValues(app, dep)
	}
}

// leaderEnded clears what only a leader knows.
func (m *Metrics) leaderEnded() {
	m.IsLeader.Set(0)
	for _, g := range m.gauges() {
		g.Reset()
	}
	m.DesiredWorkers.Set(0)
}
