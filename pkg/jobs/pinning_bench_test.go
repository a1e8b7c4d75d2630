package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// BenchmarkPinnedResume is the cost of pinning when a run is woken: two
// runners pull a workflow's runs, each run suspends on await and is
// signalled, and the time from the signal to the run's end is measured.
// same_version: both runners of one version (a woken run runs on
// whichever pulls it); two_versions: one of each (the runs pinned to a
// version are handed back by the other runner until theirs takes them).
// The ratio is two_versions / same_version at p50, in one run.
func BenchmarkPinnedResume(b *testing.B) {
	ns := natstest.Server(b)
	drives := 0
	var handedBack atomic.Int64
	drive := func(b *testing.B, versions [2]string) []time.Duration {
		drives++
		handedBack.Store(0)
		e := envOn(b, ns)
		done := make(chan string, 64)
		for i, v := range versions {
			nc := natstest.Conn(b, ns)
			js, _ := jetstream.New(nc)
			for _, m := range versionedMethods() {
				if err := e.q.Ensure(context.Background(), testApp, testDep, m); err != nil {
					b.Fatal(err)
				}
			}
			r := NewRunner(nc, js, e.names, RunnerConfig{App: testApp, Deployment: testDep, Replica: fmt.Sprint("r", i), Slots: 8,
				Methods: versionedMethods(), Handler: serve.WorkflowJobs(nil, versionedWorkflows(v)), Log: zerolog.Nop(), Version: v})
			r.onDone = func(id string, _ Status) { done <- id }
			r.onHandBack = func(string) { handedBack.Add(1) }
			stop := runRunner(b, r)
			defer stop()
			// Open once it subscribed to its methods' cancels and unpins
			// (stopped while it opens, a runner fails its test).
			waitfor.True(b, 20*time.Second, "runner open", func() bool { return nc.NumSubscriptions() >= 4 })
		}
		ctx := context.Background()
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			id := fmt.Sprintf("%s-%s-%d-%d", versions[0], versions[1], drives, i)
			if _, _, err := e.q.SubmitTo(ctx, testApp, "greet", id, nil); err != nil {
				b.Fatal(err)
			}
			for {
				rec, err := e.q.Status(ctx, testApp, "greet", id)
				if err == nil && rec.Status == Suspended {
					break
				}
				time.Sleep(200 * time.Microsecond)
			}
			start := time.Now()
			if _, err := e.q.Signal(ctx, testApp, "greet", id, "go", "", json.RawMessage(`{}`)); err != nil {
				b.Fatal(err)
			}
			for got := range done {
				if got == id {
					break
				}
			}
			lat = append(lat, time.Since(start))
		}
		return lat
	}
	var same, two time.Duration
	for _, tc := range []struct {
		name     string
		versions [2]string
		p50      *time.Duration
	}{{"same_version", [2]string{"v1", "v1"}, &same}, {"two_versions", [2]string{"v1", "v2"}, &two}} {
		b.Run(tc.name, func(b *testing.B) {
			lat := drive(b, tc.versions)
			*tc.p50 = percentile(lat, 0.5)
			b.ReportMetric(ms(*tc.p50), "p50_ms")
			b.ReportMetric(ms(percentile(lat, 0.99)), "p99_ms")
			b.ReportMetric(float64(handedBack.Load())/float64(b.N), "handbacks/run")
		})
	}
	if same > 0 {
		b.ReportMetric(float64(two)/float64(same), "two/same_p50")
	}
}
