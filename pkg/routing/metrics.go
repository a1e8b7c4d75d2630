package routing

import (
	"github.com/jetserve/jetserve/pkg/metrics"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the router's Prometheus collectors.
type Metrics struct {
	requests    *prometheus.CounterVec
	queued      *prometheus.GaugeVec
	fulfillment *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	rejections  *prometheus.CounterVec
	lost        *prometheus.CounterVec
}

// fulfillmentBuckets are the buckets of the fulfillment time, in seconds:
// 50 µs to 30 s.
var fulfillmentBuckets = []float64{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: metrics.Counters("jetserve_num_router_requests_total",
			"Requests received by the router, per deployment.", "application", "deployment"),
		queued: metrics.Gauges("jetserve_deployment_queued_queries",
			"Requests waiting at this router for a replica with room.", "application", "deployment"),
		fulfillment: metrics.Histograms("jetserve_request_router_fulfillment_time_seconds",
			"Time from a request's arrival at the router to its first dispatch to a replica, in seconds.", fulfillmentBuckets, "application", "deployment"),
		retries: metrics.Counters("jetserve_router_retries_total",
			"Requests re-sent to another replica, by reason (replica_full, draining, no_responders, replica_lost).", "application", "deployment", "reason"),
		rejections: metrics.Counters("jetserve_router_rejections_total",
			"Requests the router answered with an error itself, by error code.", "application", "deployment", "code"),
		lost: metrics.Counters("jetserve_router_replicas_lost_total",
			"Replicas this router found gone while they held its requests, by how (no_responders, unanswered_probes).", "application", "deployment", "how"),
	}
	if err := metrics.Register(reg, "router", m.requests, m.queued, m.fulfillment, m.retries, m.rejections, m.lost); err != nil {
		return nil, err
	}
	return m, nil
}

// depMetrics are one deployment's curried collectors, so the hot path does
// no label lookups.
type depMetrics struct {
	requests    prometheus.Counter
	queued      prometheus.Gauge
	fulfillment prometheus.Observer
	retryVec    *prometheus.CounterVec
	rejectVec   *prometheus.CounterVec
	lostVec     *prometheus.CounterVec
	app, dep    string
}

func (m *Metrics) forDeployment(app, dep string) depMetrics {
	return depMetrics{
		requests:    m.requests.WithLabelValues(app, dep),
		queued:      m.queued.WithLabelValues(app, dep),
		fulfillment: m.fulfillment.WithLabelValues(app, dep),
		retryVec:    m.retries,
		rejectVec:   m.rejections,
		lostVec:     m.lost,
		app:         app,
		dep:         dep,
	}
}

func (d depMetrics) retries(why retryReason) prometheus.Counter {
	return d.retryVec.WithLabelValues(d.app, d.dep, why.String())
}

func (d depMetrics) rejections(code protocol.ErrorCode) prometheus.Counter {
	return d.rejectVec.WithLabelValues(d.app, d.dep, string(code))
}

func (d depMetrics) lost(how string) prometheus.Counter {
	return d.lostVec.WithLabelValues(d.app, d.dep, how)
}
