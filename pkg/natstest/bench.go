package natstest

import (
	"runtime"
	"slices"
	"testing"
	"time"
)

// Measure runs do b.N times at concurrency c: at c == 1 sequentially,
// reporting p50-µs and p99-µs; above it with about c goroutines in
// parallel (ns/op is then the inverse throughput).
func Measure(b *testing.B, c int, do func() error) {
	b.Helper()
	b.ReportAllocs()
	if c <= 1 {
		lat := make([]time.Duration, 0, 1024)
		for b.Loop() {
			t0 := time.Now()
			if err := do(); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		return
	}
	b.SetParallelism(max(1, c/max(1, runtime.GOMAXPROCS(0))))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
