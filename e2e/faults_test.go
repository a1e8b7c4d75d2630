package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// sample is one request of a recorder's traffic.
type sample struct {
	method     string
	start, end time.Time
	status     int
	code       string // the X-Jetserve-Error header
	err        error
}

// recorder sends requests from several goroutines and keeps every one's
// timing and answer. It owns its goroutines; stop waits for them.
type recorder struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples []sample // guarded by mu
}

// record starts n goroutines per method, each sending method url in a loop,
// every request bounded by perRequest.
func record(t *testing.T, url string, methods []string, n int, perRequest time.Duration) *recorder {
	ctx, cancel := context.WithCancel(context.Background())
	rec := &recorder{cancel: cancel}
	for _, m := range methods {
		for range n {
			rec.wg.Add(1)
			go func() {
				defer rec.wg.Done()
				for ctx.Err() == nil {
					rctx, rcancel := context.WithTimeout(context.Background(), perRequest)
					s := sample{method: m, start: time.Now()}
					r, err := fleet.Do(rctx, m, url, echoBody, http.Header{"Content-Type": {"application/json"}})
					rcancel()
					s.end, s.err, s.status, s.code = time.Now(), err, r.Status, r.Header.Get("X-Jetserve-Error")
					rec.mu.Lock()
					rec.samples = append(rec.samples, s)
					rec.mu.Unlock()
				}
			}()
		}
	}
	t.Cleanup(rec.stop)
	return rec
}

func (rec *recorder) stop() {
	rec.cancel()
	rec.wg.Wait()
}

func (rec *recorder) all() []sample {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]sample(nil), rec.samples...)
}

// TestWorkerKilledInFlightAnsweredFast kills -9 the worker running every
// replica of a deployment while clients hold slow requests at it (POSTs,
// not safe to retry, and GETs, idempotent). Every request in flight at the
// kill is answered long before the 60 s request timeout: the POSTs with
// 503 replica_lost within seconds, the GETs retried and answered 200 once
// a replica runs again; no request fails otherwise, none is answered 504.
func TestWorkerKilledInFlightAnsweredFast(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 1})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "echo", handler: handlerEcho, replicas: 2, maxOngoing: 8}
	victim := onOneWorker(t, f, d)

	rec := record(t, f.URL()+"/echo/?delay_ms=2000", []string{http.MethodPost, http.MethodGet}, 3, 55*time.Second)
	f.Eventually(requestTimeout, "slow requests answered", func() error {
		if n := len(rec.all()); n < 6 {
			return errorf("%d answered", n)
		}
		return nil
	})
	time.Sleep(time.Second) // let every client have a request in flight, mid-delay
	t.Logf("killing %s, which runs both replicas, with requests in flight", victim.ID)
	f.Kill(victim.Proc)
	killed := time.Now()
	f.Eventually(recoverTimeout, "calls succeed again", func() error { return echoes(f, "/echo/", 1) })
	f.Eventually(recoverTimeout, "every request in flight at the kill answered", func() error {
		for _, s := range rec.all() {
			if s.start.Before(killed) && s.end.After(killed) && s.method == http.MethodGet && s.status == http.StatusOK {
				return nil // at least the GETs' retries came back
			}
		}
		return errorf("no GET in flight at the kill answered yet")
	})
	time.Sleep(3 * time.Second) // a few more rounds after the recovery
	rec.stop()

	var inFlight, lost, retried int
	var bad []string
	byOutcome := map[string]int{}
	for _, s := range rec.all() {
		outcome := fmt.Sprintf("%s %d %s", s.method, s.status, s.code)
		if s.err != nil {
			outcome = s.method + " transport error"
		}
		byOutcome[outcome]++
		took := s.end.Sub(s.start)
		at := s.start.Before(killed) && s.end.After(killed)
		switch {
		case s.err != nil:
			bad = append(bad, fmt.Sprintf("%s after %v: %v", s.method, took.Round(time.Millisecond), s.err))
		case s.status == http.StatusGatewayTimeout || took > 30*time.Second:
			bad = append(bad, fmt.Sprintf("%s waited %v: %d %s", s.method, took.Round(time.Millisecond), s.status, s.code))
		case s.status == http.StatusServiceUnavailable && s.code == string(protocol.ErrReplicaLost):
			lost++
			if s.method != http.MethodPost {
				bad = append(bad, fmt.Sprintf("%s answered replica_lost: idempotent, it should have been retried", s.method))
			}
			if after := s.end.Sub(killed); after > 5*time.Second {
				bad = append(bad, fmt.Sprintf("POST answered replica_lost %v after the kill, want within ~2 s", after.Round(time.Millisecond)))
			}
		case s.status != http.StatusOK:
			bad = append(bad, fmt.Sprintf("%s: %d %s", s.method, s.status, s.code))
		case at && s.method == http.MethodGet:
			retried++
		}
		if at {
			inFlight++
		}
	}
	keys := slices.Sorted(maps.Keys(byOutcome))
	var summary []string
	for _, k := range keys {
		summary = append(summary, fmt.Sprintf("%s: %d", k, byOutcome[k]))
	}
	t.Logf("outcomes: %s; %d in flight at the kill (%d POSTs lost, %d GETs retried)", strings.Join(summary, ", "), inFlight, lost, retried)
	if len(bad) > 0 {
		t.Errorf("%d requests failed otherwise or waited: %s", len(bad), strings.Join(bad[:min(len(bad), 10)], "; "))
	}
	if lost == 0 || retried == 0 {
		t.Errorf("in flight at the kill: %d POSTs answered replica_lost, %d GETs retried; want some of each", lost, retried)
	}
}

// TestDeploymentsThatCannotRunFailFast deploys, beside a working app,
// deployments no worker can run — a handler no worker has, more CPU than
// any worker has, labels no worker matches — and one at zero replicas
// that scales from zero. A request to each unplaceable one gets 503
// no_replicas within a second naming the reason; the scale-from-zero one
// is held and served; a request over what one NATS message carries (the
// e2e nats-server runs at its default max_payload, 1 MiB) goes through the
// bodies object store and is echoed whole, and the app serves on.
func TestDeploymentsThatCannotRunFailFast(t *testing.T) {
	f := startFleet(t, fleet.Options{Autoscaler: true})
	f.RequireHandlers(handlerEcho)
	ok := deployment{app: "ok", handler: handlerEcho, replicas: 1, maxOngoing: 8}.application()
	noHandler := deployment{app: "nohandler", handler: "e2e.NoSuchHandler", replicas: 1}.application()
	noCPU := deployment{app: "nocpu", handler: handlerEcho, replicas: 1, cpu: 64}.application()
	noLabel := deployment{app: "nolabel", handler: handlerEcho, replicas: 1}.application()
	noLabel.Deployments[0].Resources.Labels = map[string]string{"zone": "mars"}
	zero := autoscaled("zero", 1)
	f.Deploy(serveConfig(t, ok, noHandler, noCPU, noLabel, zero))
	f.WaitApp(deployTimeout, "ok", 1, nil)
	waitReplicas(f, "zero", 0, deployTimeout)

	cases := []struct {
		app    string
		code   protocol.ReasonCode
		reason string
	}{
		{"nohandler", protocol.ReasonNoHandler, `no worker registers handler "e2e.NoSuchHandler"`},
		{"nocpu", protocol.ReasonNoRoom, "no worker has 64 CPU free"},
		{"nolabel", protocol.ReasonNoLabels, `no worker with handler "` + handlerEcho + `" matches labels zone=mars`},
	}
	for _, c := range cases {
		t.Run(c.app, func(t *testing.T) {
			f.Eventually(deployTimeout, c.app+" PENDING with its reason in the status", func() error {
				ds, found, err := deploymentStatus(f, c.app)
				if err != nil || !found {
					return fmt.Errorf("not in the status (%v)", err)
				}
				if len(ds.Replicas) == 0 || ds.Replicas[0].State != protocol.ReplicaPending || ds.Replicas[0].Reason == nil {
					return fmt.Errorf("replicas %+v", ds.Replicas)
				}
				if r := ds.Replicas[0]; r.Reason.Code != c.code || r.Message != c.reason ||
					len(ds.Pending) != 1 || ds.Pending[0].Code != c.code {
					return fmt.Errorf("replica %s %s (%q), deployment pending %+v; want %s (%q)", r.ID, r.Reason.Code, r.Message, ds.Pending, c.code, c.reason)
				}
				return nil
			})
			start := time.Now()
			r, err := f.Call(http.MethodPost, "/"+c.app+"/", echoBody)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("POST /%s/: %v", c.app, err)
			}
			var e errorResponse
			_ = json.Unmarshal(r.Body, &e)
			if r.Status != http.StatusServiceUnavailable || e.Error != string(protocol.ErrNoReplicas) || !strings.Contains(e.Message, c.reason) ||
				r.Header.Get("Retry-After") == "" {
				t.Errorf("POST /%s/ = %v, want 503 no_replicas naming %q, with Retry-After", c.app, r, c.reason)
			}
			if took > time.Second {
				t.Errorf("POST /%s/ answered after %v, want within 1 s", c.app, took.Round(time.Millisecond))
			}
		})
	}
	t.Run("scale from zero", func(t *testing.T) {
		start := time.Now()
		callOnce(t, f, "/zero/")
		t.Logf("served from zero replicas in %v", time.Since(start).Round(time.Millisecond))
	})
	t.Run("over max_payload", func(t *testing.T) {
		big := []byte(`{"text":"` + strings.Repeat("x", 2500*1000) + `"}`)
		start := time.Now()
		r, err := f.Call(http.MethodPost, "/ok/", big)
		if err != nil {
			t.Fatalf("POST 2.5 MB: %v", err)
		}
		if r.Status != http.StatusOK || len(r.Body) != len(big) {
			t.Errorf("POST 2.5 MB = %d, %d bytes back; want 200 and the %d bytes echoed", r.Status, len(r.Body), len(big))
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("POST 2.5 MB answered after %v, want within 5 s", took)
		}
		if err := echoes(f, "/ok/", 20); err != nil {
			t.Errorf("after the large request: %v", err)
		}
	})
}
