package e2e

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// autoscaled is one app with one diag.Echo deployment that scales between
// 0 and maxReplicas on load, with no upscale delay and short downscale
// delays and windows so that a whole cycle takes seconds.
func autoscaled(name string, maxReplicas int) config.Application {
	d := deployment{app: name, handler: handlerEcho, maxOngoing: 4}.application()
	zero, dl := 0, func(d time.Duration) *config.Duration { c := config.Duration(d); return &c }
	d.Deployments[0].NumReplicas = nil
	d.Deployments[0].AutoscalingConfig = &config.AutoscalingConfig{
		MinReplicas: &zero, MaxReplicas: maxReplicas, TargetOngoingRequests: 1,
		UpscaleDelay: dl(0), DownscaleDelay: dl(time.Second), DownscaleToZeroDelay: dl(2 * time.Second),
		LookBackPeriod: config.Duration(time.Second), MetricsInterval: config.Duration(100 * time.Millisecond),
	}
	return d
}

// deploymentStatus returns app's only deployment's status (ok false while
// the app is not in the status yet).
func deploymentStatus(f *fleet.Fleet, app string) (protocol.DeploymentStatus, bool, error) {
	st, err := f.Status()
	if err != nil {
		return protocol.DeploymentStatus{}, false, err
	}
	ds, ok := st.Applications[app].Deployments[app]
	return ds, ok, nil
}

// waitReplicas waits until app's deployment has exactly n replicas, all
// RUNNING (n = 0: none at all, stopping ones gone too).
func waitReplicas(f *fleet.Fleet, app string, n int, timeout time.Duration) time.Duration {
	return f.Eventually(timeout, fmt.Sprintf("%s at %d running replicas", app, n), func() error {
		ds, ok, err := deploymentStatus(f, app)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("%s not in the status", app)
		case ds.TargetReplicas != n || len(ds.Replicas) != n || ds.CurrentReplicas != n:
			return fmt.Errorf("target %d, current %d, %d replicas listed (%s): %s", ds.TargetReplicas, ds.CurrentReplicas,
				len(ds.Replicas), ds.Status, describeScaling(ds))
		}
		return nil
	})
}

func describeScaling(ds protocol.DeploymentStatus) string {
	s := fmt.Sprintf("%s current %d desired %d target %d", ds.Status, ds.CurrentReplicas, ds.DesiredReplicas, ds.TargetReplicas)
	if a := ds.Autoscaling; a != nil {
		s += fmt.Sprintf(", load %.2f, last %s: %s", a.Load, a.LastReason, a.LastMessage)
	}
	return s
}

// callOnce sends one echo request and fails the test unless it is a 200.
func callOnce(t testing.TB, f *fleet.Fleet, path string) fleet.Response {
	t.Helper()
	r, err := f.Call(http.MethodPost, path, echoBody)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("POST %s = %v, %v; want 200 (a request at zero replicas is held, not failed)", path, r, err)
	}
	return r
}

// TestAutoscaleCycle: a deployment with min_replicas 0 starts at zero; a
// request sent at zero is answered; load raises the replicas; idleness
// brings them back to zero; a request at zero is answered again — and no
// request fails across the cycle.
func TestAutoscaleCycle(t *testing.T) {
	f := startFleet(t, fleet.Options{Autoscaler: true})
	f.RequireHandlers(handlerEcho)
	const app = "auto"
	f.Deploy(serveConfig(t, autoscaled(app, 4)))
	waitReplicas(f, app, 0, deployTimeout)

	start := time.Now()
	callOnce(t, f, "/"+app+"/")
	t.Logf("cold start: first answer %v after the request at zero replicas", time.Since(start))
	ds, _, _ := deploymentStatus(f, app)
	if ds.Autoscaling == nil || ds.Autoscaling.LastReason == "" {
		t.Errorf("status after a cold start lacks the decision: %s", describeScaling(ds))
	}

	// 4 clients, each with one request of 300 ms in flight: ongoing 4 at
	// target 1 per replica asks for 4 replicas.
	tr := fleet.StartTraffic(t, 4, http.MethodPost, f.URL()+"/"+app+"/?delay_ms=300", echoBody, requestTimeout)
	up := f.Eventually(deployTimeout, app+" scaled up under load", func() error {
		ds, _, err := deploymentStatus(f, app)
		if err != nil {
			return err
		}
		if ds.CurrentReplicas < 3 {
			return fmt.Errorf("%s", describeScaling(ds))
		}
		return nil
	})
	t.Logf("scaled to >= 3 running replicas %v after the load started", up)
	tr.WaitOK(t, 20, requestTimeout)
	res := tr.Stop()
	t.Logf("traffic: %s", res)

	down := waitReplicas(f, app, 0, deployTimeout)
	t.Logf("back to zero replicas %v after the load stopped", down)

	start = time.Now()
	callOnce(t, f, "/"+app+"/")
	t.Logf("second cold start: answered after %v", time.Since(start))

	if res.Failed > 0 {
		t.Fatalf("%d requests failed across the scale cycle, want 0: %v", res.Failed, res.Failures)
	}
}

// BenchmarkAutoscale measures, on the whole fleet (every service its own
// process), the cold start from zero replicas to the first answered
// request, and the reaction to a load step: from the step to the first
// answer from a replica added for it. Each iteration is one full cycle
// (cold start, step, back to zero), seconds long; run it with
//
//	go test -run '^$' -bench Autoscale -benchtime 3x ./
func BenchmarkAutoscale(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	f := fleet.Start(b, bins, fleet.Options{Autoscaler: true})
	f.RequireHandlers(handlerEcho)
	const app = "autobench"
	f.Deploy(serveConfig(b, autoscaled(app, 4)))
	var cold, step time.Duration
	failed := int64(0)
	for i := 0; i < b.N; i++ {
		waitReplicas(f, app, 0, deployTimeout)
		start := time.Now()
		first := callOnce(b, f, "/"+app+"/").Header.Get("X-Replica")
		cold += time.Since(start)

		// Load step from one replica: the first answer from another one.
		start = time.Now()
		var once sync.Once
		added := make(chan time.Duration, 1)
		tr := fleet.StartTraffic(b, 6, http.MethodPost, f.URL()+"/"+app+"/?delay_ms=200", echoBody, requestTimeout)
		f.Eventually(deployTimeout, "an added replica answers", func() error {
			r, err := f.Call(http.MethodPost, "/"+app+"/", echoBody)
			if err != nil || r.Status != http.StatusOK {
				return fmt.Errorf("probe: %v %v", r, err)
			}
			if rep := r.Header.Get("X-Replica"); rep != first && rep != "" {
				once.Do(func() { added <- time.Since(start) })
				return nil
			}
			return fmt.Errorf("still answered by %s", first)
		})
		step += <-added
		failed += tr.Stop().Failed
	}
	b.ReportMetric(float64(cold.Milliseconds())/float64(b.N), "coldstart-ms")
	b.ReportMetric(float64(step.Milliseconds())/float64(b.N), "scaleup-ms")
	b.ReportMetric(float64(failed), "failed")
}
