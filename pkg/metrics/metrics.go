// Package metrics is what jetserve's Prometheus collectors share: vectors
// declared in one line each and registered together, every component on
// the registry it is handed (never the global one). It holds no state.
package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Counters is a counter vector named name, with help and labels.
func Counters(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// Gauges is a gauge vector named name, with help and labels.
func Gauges(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

// Histograms is a histogram vector named name, with help, buckets and
// labels.
func Histograms(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}

// Register registers every collector of cs on reg, in order, and stops at
// the first that reg refuses (a name already registered, another
// collector's help for the same name): its error says what was being
// registered ("register <what> metrics: ...").
func Register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register %s metrics: %w", what, err)
		}
	}
	return nil
}
