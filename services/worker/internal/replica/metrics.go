package replica

import (
	"fmt"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the replica collectors, in Ray Serve's vocabulary with the
// jetserve_ prefix. One Metrics serves every replica of a worker.
type Metrics struct {
	processing *prometheus.GaugeVec     // application, deployment, replica
	requests   *prometheus.CounterVec   // application, deployment, replica
	errors     *prometheus.CounterVec   // application, deployment, replica
	latency    *prometheus.HistogramVec // application, deployment, replica
	starts     *prometheus.CounterVec   // application, deployment
}

var replicaLabels = []string{"application", "deployment", "replica"}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		processing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jetserve_replica_processing_queries",
			Help: "Requests a replica is processing now.",
		}, replicaLabels),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetserve_deployment_requests_total",
			Help: "Requests a replica has processed.",
		}, replicaLabels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetserve_deployment_errors_total",
			Help: "Requests a replica answered with a handler error.",
		}, replicaLabels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jetserve_deployment_processing_latency_seconds",
			Help:    "Time a replica spent processing a request, in seconds.",
			Buckets: serve.LatencyBuckets,
		}, replicaLabels),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetserve_replica_starts_total",
			Help: "Replicas of a deployment this worker has started (constructed successfully).",
		}, []string{"application", "deployment"}),
	}
	for _, c := range []prometheus.Collector{m.processing, m.requests, m.errors, m.latency, m.starts} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register replica metrics: %w", err)
		}
	}
	return m, nil
}

// discardMetrics are collectors no registry exports: a replica started
// without Metrics counts into them.
func discardMetrics() *Metrics {
	m, _ := NewMetrics(prometheus.NewRegistry()) // a fresh registry: no name clashes
	return m
}

// replicaMetrics are one replica's series.
type replicaMetrics struct {
	processing         prometheus.Gauge
	requests, failures prometheus.Counter
	latency            prometheus.Observer
}

// forReplica returns the series of one replica.
func (m *Metrics) forReplica(app, dep, id string) replicaMetrics {
	return replicaMetrics{
		processing: m.processing.WithLabelValues(app, dep, id),
		requests:   m.requests.WithLabelValues(app, dep, id),
		failures:   m.errors.WithLabelValues(app, dep, id),
		latency:    m.latency.WithLabelValues(app, dep, id),
	}
}

// served counts a request the replica answered.
func (rm replicaMetrics) served(failed bool, took time.Duration) {
	rm.requests.Inc()
	if failed {
		rm.failures.Inc()
	}
	rm.latency.Observe(took.Seconds())
}

// forget drops a stopped replica's series so their number stays bounded.
func (m *Metrics) forget(app, dep, id string) {
	m.processing.DeleteLabelValues(app, dep, id)
	m.requests.DeleteLabelValues(app, dep, id)
	m.errors.DeleteLabelValues(app, dep, id)
	m.latency.DeleteLabelValues(app, dep, id)
}
