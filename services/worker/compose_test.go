package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/composetest"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// workers is an embedded JetStream with workers running one registry, and
// a client-side router (the ingress's kind) to call them with.
type workers struct {
	kv
	ns    *server.Server
	nc    *nats.Conn
	names protocol.Names
}

// startWorkers starts one worker per id, each on its own connection,
// stopped (drained) when the test ends.
func startWorkers(t testing.TB, reg *serve.Registry, ids ...string) *workers {
	t.Helper()
	tf := natstest.NewFleet(t)
	w := &workers{kv: kv{t: t, b: tf.Buckets}, ns: tf.NS, nc: tf.NC, names: tf.Names}
	// The assignments below carry epoch 1: a scheduler elected at the
	// leases bucket's first revision.
	w.leaseUpTo(1)
	for _, id := range ids {
		cfg := testConfig(tf.NS, id)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		deps := service.Deps{NC: natstest.Conn(t, tf.NS), Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
			Metrics: prometheus.NewRegistry()}
		go func() { done <- worker.Run(ctx, cfg, deps, reg) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker %s: Run = %v", id, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("worker %s did not stop", id)
			}
		})
	}
	return w
}

// deploy stores app as the applied config and assigns each deployment one
// replica ("<deployment>-1") on the worker on[deployment], then waits
// until every replica runs.
func (w *workers) deploy(app config.Application, reg *serve.Registry, on map[string]string) {
	w.t.Helper()
	w.applyConfig(app)
	byWorker := map[string][]protocol.ReplicaSpec{}
	var all []protocol.ReplicaSpec
	for _, d := range app.Deployments {
		max := d.MaxOngoingRequests
		if max == 0 {
			max = 8
		}
		s := protocol.ReplicaSpec{ID: d.Name + "-1", App: app.Name, Deployment: d.Name, Handler: d.Handler, Version: "v1",
			MaxOngoingRequests: max, CPU: 0.1, UserConfig: d.UserConfig, GracefulShutdownTimeout: config.Duration(5 * time.Second)}
		byWorker[on[d.Name]] = append(byWorker[on[d.Name]], s)
		all = append(all, s)
	}
	for id, specs := range byWorker {
		w.putAssignment(id, 1, specs...)
	}
	for _, s := range all {
		w.waitState(s, protocol.ReplicaRunning)
	}
}

// client returns a caller through a router of its own (as the ingress
// embeds), on its own connection, following the fleet until the test ends.
func (w *workers) client() *routing.Caller {
	w.t.Helper()
	r, err := routing.NewEmbedded(routing.EmbeddedOptions{
		Options:  routing.Options{NC: natstest.Conn(w.t, w.ns), Names: w.names, Log: zerolog.New(zerolog.NewTestWriter(w.t))},
		Registry: prometheus.NewRegistry(), Buckets: w.b, ID: "client",
	})
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	w.t.Cleanup(func() {
		r.Close()
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("Run = %v", err)
		}
	})
	waitfor.NoError(w.t, waitLimit, "client router loaded", r.Ready)
	return r.NewCaller()
}

// TestFleetKeepsTheCompositionContract runs the composition contract on
// real workers: every hop across workers (Front and Back on w1, Mid on
// w2), and every hop within one worker (in-process, no NATS).
func TestFleetKeepsTheCompositionContract(t *testing.T) {
	for _, tc := range []struct {
		name string
		on   map[string]string
	}{
		{"across workers", map[string]string{composetest.Front: "w1", composetest.Mid: "w2", composetest.Back: "w1", composetest.Plain: "w2"}},
		{"within one worker", map[string]string{composetest.Front: "w1", composetest.Mid: "w1", composetest.Back: "w1", composetest.Plain: "w1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			composetest.Run(t, func(t *testing.T, reg *serve.Registry, app config.Application) serve.StreamCaller {
				w := startWorkers(t, reg, "w1", "w2")
				w.deploy(app, reg, tc.on)
				return w.client()
			})
		})
	}
}

// chainRegistry: "chain" calls the deployment named by its user_config's
// next (and answers "chain>" + its answer), "leaf" answers its body.
func chainRegistry(t testing.TB) *serve.Registry {
	t.Helper()
	reg := serve.NewRegistry()
	if err := reg.Register("chain", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		var c struct{ Next string }
		if err := in.DecodeUserConfig(&c); err != nil {
			return nil, err
		}
		return chainTo(in.Handle(c.Next)), nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("leaf", func(context.Context, serve.Init) (serve.Handler, error) {
		return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
			return &serve.Response{Body: req.Body}, nil
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	return reg
}

func chainApp(next string) config.Application {
	return config.Application{Name: "c", RoutePrefix: "/c", Ingress: "Chain", Deployments: []config.Deployment{
		{Name: "Chain", Handler: "chain", UserConfig: json.RawMessage(`{"next":"` + next + `"}`)},
		{Name: "Leaf", Handler: "leaf"}}}
}

// TestHandleCallWithinAWorkerSkipsNATS: a handle call to a replica of the
// same worker reaches it without a NATS message (a subscriber to its call
// subject sees none); to a replica of another worker it is one request
// on that subject, straight from the calling worker (no router service
// runs here).
func TestHandleCallWithinAWorkerSkipsNATS(t *testing.T) {
	for _, tc := range []struct {
		name     string
		leafOn   string
		wantNATS bool
	}{{"same worker", "w1", false}, {"other worker", "w2", true}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := chainRegistry(t)
			w := startWorkers(t, reg, "w1", "w2")
			app := chainApp("Leaf")
			w.deploy(app, reg, map[string]string{"Chain": "w1", "Leaf": tc.leafOn})
			spy := make(chan *nats.Msg, 16)
			sub, err := w.nc.ChanSubscribe(w.names.ReplicaSubject("Leaf-1")+".call", spy)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe() //nolint:errcheck
			if err := w.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			c := w.client()
			const n = 10
			for i := range n {
				resp, err := c.Call(context.Background(), "c", "Chain", &serve.Request{Method: "POST", Path: "/", Body: []byte(fmt.Sprint(i))})
				if err != nil || string(resp.Body) != fmt.Sprintf("chain>%d", i) {
					t.Fatalf("call %d = %v, %v; want chain>%d", i, resp, err, i)
				}
			}
			if tc.wantNATS { // the spy's copies arrive on their own, maybe after the replies
				waitfor.True(t, waitLimit, "a copy of each call on Leaf's call subject", func() bool { return len(spy) >= n })
			}
			got := len(spy)
			if tc.wantNATS && got != n {
				t.Errorf("requests on Leaf's call subject = %d, want %d (one per call, straight from w1)", got, n)
			}
			if !tc.wantNATS && got != 0 {
				t.Errorf("requests on Leaf's call subject = %d, want 0: a same-worker call must not go through NATS", got)
			}
		})
	}
}

// TestHandleToUnknownDeploymentFailsTheReplica: a constructor taking a
// handle to a name that is not a deployment of its application makes the
// replica FAILED with a message naming it and the deployments there are.
func TestHandleToUnknownDeploymentFailsTheReplica(t *testing.T) {
	reg := chainRegistry(t)
	w := startWorkers(t, reg, "w1")
	app := chainApp("Bee") // a typo for Leaf
	w.applyConfig(app)
	s := protocol.ReplicaSpec{ID: "Chain-1", App: "c", Deployment: "Chain", Handler: "chain", Version: "v1", MaxOngoingRequests: 2,
		CPU: 0.1, UserConfig: app.Deployments[0].UserConfig, GracefulShutdownTimeout: config.Duration(time.Second)}
	w.putAssignment("w1", 1, s)
	info := w.waitState(s, protocol.ReplicaFailed)
	for _, want := range []string{`"Bee"`, `"c"`, "Chain, Leaf"} {
		if !strings.Contains(info.Message, want) {
			t.Errorf("FAILED message %q does not name %s", info.Message, want)
		}
	}
}

// TestHandleOutsideUsesFailsTheReplica: a deployment that declares its
// edges (uses) and whose constructor takes a handle to another deployment
// of the application that they do not list is FAILED, naming both.
func TestHandleOutsideUsesFailsTheReplica(t *testing.T) {
	reg := chainRegistry(t)
	w := startWorkers(t, reg, "w1")
	app := chainApp("Leaf")
	app.Deployments[0].Uses = []string{"Chain"} // Chain calls Leaf, but declares only itself
	w.applyConfig(app)
	s := protocol.ReplicaSpec{ID: "Chain-1", App: "c", Deployment: "Chain", Handler: "chain", Version: "v1", MaxOngoingRequests: 2,
		CPU: 0.1, UserConfig: app.Deployments[0].UserConfig, GracefulShutdownTimeout: config.Duration(time.Second)}
	w.putAssignment("w1", 1, s)
	info := w.waitState(s, protocol.ReplicaFailed)
	for _, want := range []string{`handle to "Leaf"`, "deployment Chain does not declare", "now: Chain"} {
		if !strings.Contains(info.Message, want) {
			t.Errorf("FAILED message %q does not say %s", info.Message, want)
		}
	}
}

// TestHandleToUnknownDeploymentWithoutConfigIsNotFailed: with no applied
// config to tell (replicas assigned by hand), a handle is not judged.
func TestHandleToUnknownDeploymentWithoutConfigIsNotFailed(t *testing.T) {
	reg := chainRegistry(t)
	w := startWorkers(t, reg, "w1")
	s := protocol.ReplicaSpec{ID: "Chain-1", App: "c", Deployment: "Chain", Handler: "chain", Version: "v1", MaxOngoingRequests: 2,
		CPU: 0.1, UserConfig: json.RawMessage(`{"next":"Bee"}`), GracefulShutdownTimeout: config.Duration(time.Second)}
	w.putAssignment("w1", 1, s)
	w.waitState(s, protocol.ReplicaRunning)
	// The call to Bee is refused 404 at once: no config, no such deployment.
	// (The router holds requests for a deployment it knows nothing of only
	// until the config is read; with none applied, nothing exists.)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	start := time.Now()
	resp, err := w.client().Call(ctx, "c", "Chain", &serve.Request{Method: "POST", Path: "/"})
	if err != nil || resp.Status != http.StatusNotFound || time.Since(start) > 5*time.Second {
		t.Fatalf("call through a handle to Bee = %v, %v after %v; want 404 at once", resp, err, time.Since(start))
	}
}
