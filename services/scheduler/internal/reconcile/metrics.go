package reconcile

import (
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the scheduler's Prometheus collectors.
type Metrics struct {
	IsLeader           prometheus.Gauge
	AppStatus          *prometheus.GaugeVec
	TargetReplicas     *prometheus.GaugeVec
	Replicas           *prometheus.GaugeVec
	ReconcileDuration  prometheus.Histogram
	HealthCheckFailure *prometheus.CounterVec
	Replacements       *prometheus.CounterVec

	// The label sets last set on the status gauges, so that observeStatus
	// deletes only series that went away (a Reset would leave a scrape
	// between it and the new values with no series at all). Owned by the
	// leader's loop.
	appSeries, targetSeries map[[2]string]bool
}

// NewMetrics registers the collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		IsLeader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetserve_scheduler_is_leader",
			Help: "1 while this scheduler instance holds the leader lease."}),
		AppStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetserve_application_status",
			Help: "1 for the current status of each application."}, []string{"application", "status"}),
		TargetReplicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetserve_deployment_target_replicas",
			Help: "Target number of replicas per deployment."}, []string{"application", "deployment"}),
		Replicas: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "jetserve_replicas",
			Help: "Replicas by state."}, []string{"state"}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "jetserve_scheduler_reconcile_duration_seconds",
			Help: "Duration of one reconcile pass.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		HealthCheckFailure: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetserve_health_check_failures_total",
			Help: "Failed replica health checks."}, []string{"application", "deployment"}),
		Replacements: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetserve_replica_replacements_total",
			Help: "Replicas removed to be replaced, by reason (a protocol.ReasonCode)."}, []string{"application", "deployment", "reason"}),
	}
	reg.MustRegister(m.IsLeader, m.AppStatus, m.TargetReplicas, m.Replicas, m.ReconcileDuration, m.HealthCheckFailure, m.Replacements)
	return m
}

// replaced counts a replica removed to be replaced; its reason code is
// the label (health_check, worker_lost, worker_draining, record_vanished,
// start_failed, start_timeout, not_started).
func (m *Metrics) replaced(ev plan.Event) {
	m.Replacements.WithLabelValues(ev.App, ev.Deployment, string(ev.Reason.Code)).Inc()
}

func (m *Metrics) observeStatus(s protocol.Status) {
	counts := map[protocol.ReplicaState]int{protocol.ReplicaPending: 0, protocol.ReplicaStarting: 0,
		protocol.ReplicaRunning: 0, protocol.ReplicaStopping: 0, protocol.ReplicaFailed: 0}
	apps, targets := map[[2]string]bool{}, map[[2]string]bool{}
	for _, a := range s.Applications {
		m.AppStatus.WithLabelValues(a.Name, string(a.Status)).Set(1)
		apps[[2]string{a.Name, string(a.Status)}] = true
		for _, d := range a.Deployments {
			m.TargetReplicas.WithLabelValues(a.Name, d.Name).Set(float64(d.TargetReplicas))
			targets[[2]string{a.Name, d.Name}] = true
			for _, r := range d.Replicas {
				counts[r.State]++
			}
		}
	}
	for st, n := range counts {
		m.Replicas.WithLabelValues(string(st)).Set(float64(n))
	}
	forgetGone(m.AppStatus, m.appSeries, apps)
	forgetGone(m.TargetReplicas, m.targetSeries, targets)
	m.appSeries, m.targetSeries = apps, targets
}

// forgetGone deletes the series of prev that now does not hold.
func forgetGone(v *prometheus.GaugeVec, prev, now map[[2]string]bool) {
	for k := range prev {
		if !now[k] {
			v.DeleteLabelValues(k[0], k[1])
		}
	}
}
