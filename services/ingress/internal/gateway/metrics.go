package gateway

import (
	"strconv"
	"time"

	"github.com/jetserve/jetserve/pkg/metrics"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the ingress's Prometheus collectors (Ray Serve's HTTP
// proxy vocabulary, prefixed jetserve_).
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	ongoing  prometheus.Gauge
	errors   *prometheus.CounterVec
}

// latencyBuckets are the buckets of the HTTP latency, in seconds: 250 µs
// to 60 s.
var latencyBuckets = []float64{0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60}

// NewMetrics creates the collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: metrics.Counters("jetserve_num_http_requests_total",
			"HTTP requests answered, by route prefix, method and status.", "route", "method", "status"),
		latency: metrics.Histograms("jetserve_http_request_latency_seconds",
			"HTTP request latency in seconds, by route prefix.", latencyBuckets, "route"),
		ongoing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetserve_num_ongoing_http_requests",
			Help: "HTTP requests in progress.",
		}),
		errors: metrics.Counters("jetserve_num_http_error_requests_total",
			"HTTP requests answered with an error, by error code.", "error_code"),
	}
	if err := metrics.Register(reg, "ingress", m.requests, m.latency, m.ongoing, m.errors); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) observe(route, method string, status int, code protocol.ErrorCode, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
	if code != "" {
		m.errors.WithLabelValues(string(code)).Inc()
	}
}
