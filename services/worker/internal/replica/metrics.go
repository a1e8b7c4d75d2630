package replica

import (
	"time"

	"github.com/jetserve/jetserve/pkg/metrics"
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
		processing: metrics.Gauges("jetserve_replica_processing_queries",
			"Requests a replica is processing now.", replicaLabels...),
		requests: metrics.Counters("jetserve_deployment_requests_total",
			"Requests a replica has processed.", replicaLabels...),
		errors: metrics.Counters("jetserve_deployment_errors_total",
			"Requests a replica answered with a handler error.", replicaLabels...),
		latency: metrics.Histograms("jetserve_deployment_processing_latency_seconds",
			"Time a replica spent processing a request, in seconds.", serve.LatencyBuckets, replicaLabels...),
		starts: metrics.Counters("jetserve_replica_starts_total",
			"Replicas of a deployment this worker has started (constructed successfully).", "application", "deployment"),
	}
	if err := metrics.Register(reg, "replica", m.processing, m.requests, m.errors, m.latency, m.starts); err != nil {
		return nil, err
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
