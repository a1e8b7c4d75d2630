package metrics_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegisterAndCollect(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := metrics.Counters("test_requests_total", "Requests.", "app")
	g := metrics.Gauges("test_queued", "Queued.", "app")
	h := metrics.Histograms("test_latency_seconds", "Latency.", []float64{0.1, 1}, "app")
	if err := metrics.Register(reg, "test", c, g, h); err != nil {
		t.Fatalf("Register = %v", err)
	}
	c.WithLabelValues("a").Add(2)
	g.WithLabelValues("a").Set(3)
	h.WithLabelValues("a").Observe(0.5)
	if got := testutil.ToFloat64(c.WithLabelValues("a")); got != 2 {
		t.Errorf("counter = %v, want 2", got)
	}
	if got := testutil.ToFloat64(g.WithLabelValues("a")); got != 3 {
		t.Errorf("gauge = %v, want 3", got)
	}
	want := `
# HELP test_latency_seconds Latency.
# TYPE test_latency_seconds histogram
test_latency_seconds_bucket{app="a",le="0.1"} 0
test_latency_seconds_bucket{app="a",le="1"} 1
test_latency_seconds_bucket{app="a",le="+Inf"} 1
test_latency_seconds_sum{app="a"} 0.5
test_latency_seconds_count{app="a"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "test_latency_seconds"); err != nil {
		t.Errorf("histogram: %v", err)
	}
}

// A name registered twice is refused, saying what was being registered;
// the collectors before it stay registered.
func TestRegisterRefusesADuplicate(t *testing.T) {
	reg := prometheus.NewRegistry()
	first := metrics.Counters("test_total", "First.")
	err := metrics.Register(reg, "test", first, metrics.Counters("test_total", "First."))
	if err == nil || !strings.Contains(err.Error(), "register test metrics") {
		t.Fatalf("Register(the same name twice) = %v, want a register test metrics error", err)
	}
	var are prometheus.AlreadyRegisteredError
	if err := reg.Register(first); !errors.As(err, &are) {
		t.Errorf("Register(the first collector again) = %v, want AlreadyRegisteredError (it stays registered)", err)
	}
}
