package replica

import (
	"fmt"

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

// LatencyBucketsMS are Ray Serve's default latency buckets, in ms.
var LatencyBucketsMS = []float64{1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 1000, 2000, 5000, 10000, 60000, 300000}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		processing: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jetserve_replica_processing_queries",
			Help: "Requests a replica is processing now.",
		}, replicaLabels),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetserve_deployment_request_counter_total",
			Help: "Requests a replica has processed.",
		}, replicaLabels),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jetserve_deployment_error_counter_total",
			Help: "Requests a replica answered with a handler error.",
		}, replicaLabels),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jetserve_deployment_processing_latency_ms",
			Help:    "Time a replica spent processing a request, in milliseconds.",
			Buckets: LatencyBucketsMS,
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

// forget drops a stopped replica's series so their number stays bounded.
func (m *Metrics) forget(app, dep, id string) {
	m.processing.DeleteLabelValues(app, dep, id)
	m.requests.DeleteLabelValues(app, dep, id)
	m.errors.DeleteLabelValues(app, dep, id)
	m.latency.DeleteLabelValues(app, dep, id)
}

// series are one replica's collectors with their labels resolved once, so
// that a request costs no label lookup.
type series struct {
	processing prometheus.Gauge
	requests   prometheus.Counter
	errors     prometheus.Counter
	latency    prometheus.Observer
}

// forReplica resolves a replica's series; nil when m is.
func (m *Metrics) forReplica(app, dep, id string) *series {
	if m == nil {
		return nil
	}
	return &series{
		processing: m.processing.WithLabelValues(app, dep, id),
		requests:   m.requests.WithLabelValues(app, dep, id),
		errors:     m.errors.WithLabelValues(app, dep, id),
		latency:    m.latency.WithLabelValues(app, dep, id),
	}
}
