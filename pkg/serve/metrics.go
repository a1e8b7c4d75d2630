package serve

import (
	"time"

	"github.com/jetserve/jetserve/pkg/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the SDK's Prometheus collectors (batching and multiplexing),
// in Ray Serve's vocabulary with the jetserve_ prefix. A worker creates one
// Metrics for all its replicas and hands each replica its own series in
// Init.Metrics (ForReplica). Safe for concurrent use.
type Metrics struct {
	batchSize     *prometheus.HistogramVec // application, deployment, replica, batcher
	batchExec     *prometheus.HistogramVec // application, deployment, replica, batcher
	modelLoads    *prometheus.CounterVec   // application, deployment, replica
	modelUnloads  *prometheus.CounterVec   // application, deployment, replica
	modelsLoaded  *prometheus.GaugeVec     // application, deployment, replica
	modelLoadTime *prometheus.HistogramVec // application, deployment, replica
}

var sdkLabels = []string{"application", "deployment", "replica"}

// BatchSizeBuckets are the buckets of jetserve_actual_batch_size.
var BatchSizeBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}

// LatencyBuckets are Ray Serve's default latency buckets (1 ms to 300 s),
// in seconds, the Prometheus base unit.
var LatencyBuckets = []float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 1, 2, 5, 10, 60, 300}

// NewMetrics creates the SDK collectors and registers them on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	batchLabels := append(append([]string(nil), sdkLabels...), "batcher")
	m := &Metrics{
		batchSize: metrics.Histograms("jetserve_actual_batch_size",
			"Requests in each batch a batcher ran (callers that left before it started are not counted).", BatchSizeBuckets, batchLabels...),
		batchExec: metrics.Histograms("jetserve_batch_execution_time_seconds",
			"Time the batch function took for one batch, in seconds.", LatencyBuckets, batchLabels...),
		modelLoads: metrics.Counters("jetserve_multiplexed_model_loads_total",
			"Multiplexed models a replica loaded (successful loads).", sdkLabels...),
		modelUnloads: metrics.Counters("jetserve_multiplexed_model_unloads_total",
			"Multiplexed models a replica evicted (least recently used first).", sdkLabels...),
		modelsLoaded: metrics.Gauges("jetserve_num_multiplexed_models",
			"Multiplexed models a replica holds now.", sdkLabels...),
		modelLoadTime: metrics.Histograms("jetserve_multiplexed_model_load_latency_seconds",
			"Time a multiplexed model took to load, in seconds.", LatencyBuckets, sdkLabels...),
	}
	if err := metrics.Register(reg, "sdk", m.batchSize, m.batchExec, m.modelLoads, m.modelUnloads, m.modelsLoaded, m.modelLoadTime); err != nil {
		return nil, err
	}
	return m, nil
}

// ForReplica returns one replica's series; nil when m is nil. Series
// are created on first use, so a replica that neither batches nor
// multiplexes exports none.
func (m *Metrics) ForReplica(app, deployment, replica string) *ReplicaMetrics {
	if m == nil {
		return nil
	}
	return &ReplicaMetrics{m: m, labels: [3]string{app, deployment, replica}}
}

// Forget drops a stopped replica's series so their number stays bounded.
func (m *Metrics) Forget(app, deployment, replica string) {
	if m == nil {
		return
	}
	match := prometheus.Labels{"application": app, "deployment": deployment, "replica": replica}
	m.batchSize.DeletePartialMatch(match)
	m.batchExec.DeletePartialMatch(match)
	m.modelLoads.DeleteLabelValues(app, deployment, replica)
	m.modelUnloads.DeleteLabelValues(app, deployment, replica)
	m.modelsLoaded.DeleteLabelValues(app, deployment, replica)
	m.modelLoadTime.DeleteLabelValues(app, deployment, replica)
}

// ReplicaMetrics are one replica's SDK series (Init.Metrics). A nil
// *ReplicaMetrics records nothing: the in-process backend has none.
type ReplicaMetrics struct {
	m      *Metrics
	labels [3]string // application, deployment, replica
}

// batchObservers returns the batch size and execution time series of the
// batcher called name; nils when rm is nil.
func (rm *ReplicaMetrics) batchObservers(name string) (size, exec prometheus.Observer) {
	if rm == nil {
		return nil, nil
	}
	l := rm.labels
	return rm.m.batchSize.WithLabelValues(l[0], l[1], l[2], name), rm.m.batchExec.WithLabelValues(l[0], l[1], l[2], name)
}

// modelLoaded records a load that took d.
func (rm *ReplicaMetrics) modelLoaded(d time.Duration) {
	if rm == nil {
		return
	}
	l := rm.labels
	rm.m.modelLoads.WithLabelValues(l[0], l[1], l[2]).Inc()
	rm.m.modelLoadTime.WithLabelValues(l[0], l[1], l[2]).Observe(d.Seconds())
}

// modelUnloaded records an eviction.
func (rm *ReplicaMetrics) modelUnloaded() {
	if rm == nil {
		return
	}
	l := rm.labels
	rm.m.modelUnloads.WithLabelValues(l[0], l[1], l[2]).Inc()
}

// modelsHeld sets the number of models loaded.
func (rm *ReplicaMetrics) modelsHeld(n int) {
	if rm == nil {
		return
	}
	l := rm.labels
	rm.m.modelsLoaded.WithLabelValues(l[0], l[1], l[2]).Set(float64(n))
}
