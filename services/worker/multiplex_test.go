package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

// muxLoads counts model loads per deployment.
type muxLoads struct{ m sync.Map } // deployment → *atomic.Int32

func (l *muxLoads) inc(dep string) {
	v, _ := l.m.LoadOrStore(dep, new(atomic.Int32))
	v.(*atomic.Int32).Add(1)
}

func (l *muxLoads) get(dep string) int {
	v, ok := l.m.Load(dep)
	if !ok {
		return 0
	}
	return int(v.(*atomic.Int32).Load())
}

// registerMux adds "mux": a multiplexed deployment whose model load takes
// 20 ms. It serves the model named by the serve_multiplexed_model_id
// header or, when the header is absent, by ?model= — an id the router
// cannot see, for the model-blind contrast.
func registerMux(t *testing.T, reg *serve.Registry, loads *muxLoads) {
	t.Helper()
	err := reg.Register("mux", func(_ context.Context, init serve.Init) (serve.Handler, error) {
		m := serve.NewMultiplexer(init, func(ctx context.Context, id string) (string, error) {
			loads.inc(init.Deployment)
			select {
			case <-time.After(20 * time.Millisecond): // reading weights
			case <-ctx.Done():
				return "", ctx.Err()
			}
			return "weights-of-" + id, nil
		})
		return serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
			id := serve.ModelID(req)
			if id == "" {
				id = req.Query.Get("model")
			}
			w, release, err := m.Get(ctx, id)
			if err != nil {
				return nil, err
			}
			defer release()
			return &serve.Response{Body: []byte(init.ReplicaID + " " + w)}, nil
		}), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startRouter runs the routing library as the router service does, on
// its own connection, until the test ends.
func startRouter(t *testing.T, f *fleet, nc *nats.Conn) *routing.Router {
	t.Helper()
	m, err := routing.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r := routing.New(routing.Options{NC: nc, Names: f.names, Log: zerolog.Nop(), Metrics: m})
	if err := r.Start(true); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- r.Follow(ctx, routing.FollowOptions{Buckets: f.b, ID: "test-router", Log: zerolog.Nop(), Loaded: loaded})
	}()
	t.Cleanup(func() {
		dctx, dcancel := context.WithTimeout(context.Background(), time.Second)
		defer dcancel()
		r.Drain(dctx)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Follow = %v", err)
		}
	})
	select {
	case <-loaded:
	case <-time.After(waitLimit):
		t.Fatal("router did not load the replicas and the config")
	}
	return r
}

// TestMultiplexedRoutingLoadsEachModelAboutOnce sends a few hundred
// requests for 6 models with random ids through a real router to 3 real
// replicas that keep 2 models each: model-aware routing loads each model
// about once. The same traffic with ids the router cannot see (in the
// query instead of the header) shows what model-blind routing costs.
func TestMultiplexedRoutingLoadsEachModelAboutOnce(t *testing.T) {
	f := startFleet(t, nil)
	var loads muxLoads
	registerMux(t, f.d.reg, &loads)
	startRouter(t, f, f.nc)
	loadReports := make(chan *nats.Msg, 1024)
	sub, err := f.nc.ChanSubscribe(f.names.LoadSubject(testApp, "aware"), loadReports)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck

	var specs []protocol.ReplicaSpec
	for _, dep := range []string{"aware", "blind"} {
		for i := range 3 {
			s := spec(fmt.Sprintf("%s-%d", dep, i), dep, "mux", 16, "")
			s.MaxModelsPerReplica = 2
			specs = append(specs, s)
		}
	}
	f.assign(specs...)
	for _, s := range specs {
		f.waitState(s, protocol.ReplicaRunning)
	}

	const requests, concurrency = 300, 4
	models := []string{"m0", "m1", "m2", "m3", "m4", "m5"}
	caller := wire.NewCaller(f.nc, f.names)
	run := func(dep string, inHeader bool) map[string]map[string]bool { // replica → models it served
		served := map[string]map[string]bool{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		var next atomic.Int32
		for range concurrency {
			wg.Go(func() {
				for next.Add(1) <= requests {
					id := models[rand.IntN(len(models))]
					req := &serve.Request{Method: "POST", Path: "/"}
					if inHeader {
						serve.SetModelID(req, id)
					} else {
						req.Query = url.Values{"model": {id}}
					}
					ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
					resp, err := serve.NewHandle(caller, testApp, dep).Call(ctx, req)
					cancel()
					if err != nil {
						t.Errorf("call %s model %s: %v", dep, id, err)
						return
					}
					replica, w, _ := strings.Cut(string(resp.Body), " ")
					if w != "weights-of-"+id {
						t.Errorf("call %s model %s answered %q", dep, id, resp.Body)
					}
					mu.Lock()
					if served[replica] == nil {
						served[replica] = map[string]bool{}
					}
					served[replica][id] = true
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return served
	}
	aware := run("aware", true)
	blind := run("blind", false)
	awareLoads, blindLoads := loads.get("aware"), loads.get("blind")
	t.Logf("%d requests, 6 models, 3 replicas × max_models_per_replica 2: model-aware routing loaded %d models, model-blind routing %d",
		requests, awareLoads, blindLoads)
	fmt.Printf("multiplexing: %d requests over 6 models on 3 replicas (2 models each): %d loads with model-aware routing, %d model-blind\n",
		requests, awareLoads, blindLoads)
	if awareLoads < len(models) || awareLoads > 9 {
		t.Errorf("model-aware routing loaded %d models, want 6..9", awareLoads)
	}
	if blindLoads < 2*awareLoads {
		t.Errorf("model-blind routing loaded %d models, want far more than model-aware routing's %d (else the test shows nothing)", blindLoads, awareLoads)
	}
	for replica, ids := range aware {
		if len(ids) > 3 {
			t.Errorf("model-aware: replica %s served %d different models, want about 2", replica, len(ids))
		}
	}
	if len(blind) != 3 {
		t.Errorf("model-blind traffic reached %d replicas, want 3", len(blind))
	}

	// The replicas report the models they hold with their load reports.
	holding := map[string][]string{}
	deadline := time.After(waitLimit)
	for len(holding) < 3 || !allHoldTwo(holding) {
		select {
		case m := <-loadReports:
			var rep protocol.LoadReport
			if err := json.Unmarshal(m.Data, &rep); err != nil {
				t.Fatal(err)
			}
			holding[rep.ReplicaID] = rep.Models
		case <-deadline:
			t.Fatalf("load reports = %v, want 3 replicas holding 2 models each", holding)
		}
	}
	var all []string
	for _, ids := range holding {
		all = append(all, ids...)
	}
	slices.Sort(all)
	if len(slices.Compact(all)) < 5 {
		t.Errorf("models held across the replicas = %v, want (nearly) all 6, each once", all)
	}

	// The worker's metrics count the same loads.
	if got := metricSum(t, f.metrics, "jetserve_multiplexed_model_loads_total", "aware"); got != float64(awareLoads) {
		t.Errorf("jetserve_multiplexed_model_loads_total{deployment=aware} = %v, want %d", got, awareLoads)
	}
	if got := metricSum(t, f.metrics, "jetserve_num_multiplexed_models", "aware"); got != 6 {
		t.Errorf("jetserve_num_multiplexed_models{deployment=aware} summed = %v, want 6", got)
	}
}

func allHoldTwo(h map[string][]string) bool {
	for _, ids := range h {
		if len(ids) != 2 {
			return false
		}
	}
	return true
}

// metricSum adds the values of a counter or gauge over the series of one
// deployment.
func metricSum(t *testing.T, reg *prometheus.Registry, name, deployment string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelValue(m, "deployment") == deployment {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func labelValue(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
}
