package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/router"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	app = "text"
	dep = "echo"
)

// env is one embedded JetStream server with the shared buckets.
type env struct {
	t testing.TB
	*natstest.Fleet
}

func newEnv(t testing.TB) *env {
	t.Helper()
	return &env{t: t, Fleet: natstest.NewFleet(t)}
}

// putConfig stores a serve config with one deployment.
func (e *env) putConfig(maxQueued int, timeout time.Duration) {
	e.t.Helper()
	sc := config.ServeConfig{Applications: []config.Application{{
		Name: app, RoutePrefix: "/" + app, Ingress: dep,
		Deployments: []config.Deployment{{Name: dep, Handler: "echo", MaxOngoingRequests: 1,
			MaxQueuedRequests: maxQueued, RequestTimeout: config.Duration(timeout)}},
	}}}
	natstest.PutConfig(e.t, e.Buckets, sc)
}

// startRouter runs a router on its own connection until the test ends.
func (e *env) startRouter(mod func(*router.Config)) *prometheus.Registry {
	e.t.Helper()
	cfg := router.DefaultConfig()
	cfg.OpsAddr = ""
	cfg.DrainTimeout = time.Second
	cfg.StatsInterval = 100 * time.Millisecond
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		e.t.Fatal(err)
	}
	nc := natstest.Conn(e.t, e.NS)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- router.Run(ctx, cfg, service.Deps{NC: nc, Log: zerolog.Nop(), Metrics: reg}) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("router.Run() = %v, want nil", err)
		}
	})
	return reg
}

// replica is a fake replica: a plain subscriber on its call subject plus
// its record in the Replicas bucket.
type replica struct {
	id    string
	calls atomic.Int64
	sub   *nats.Subscription
}

// addReplica starts a fake replica answering with handle (nil: echo) and
// registers it RUNNING; subscribe=false leaves it without a subscriber.
func (e *env) addReplica(id string, maxOngoing int, subscribe bool, handle func(m *nats.Msg) *nats.Msg) *replica {
	e.t.Helper()
	r := &replica{id: id}
	if handle == nil {
		handle = func(m *nats.Msg) *nats.Msg {
			resp := wire.EncodeResponse(&serve.Response{Status: 200, Body: m.Data,
				Header: http.Header{"Content-Type": {"text/plain"}}})
			resp.Header.Set(protocol.HdrReplica, id)
			resp.Header.Set(protocol.HdrAttempt, m.Header.Get(protocol.HdrAttempt))
			return resp
		}
	}
	if subscribe {
		nc := natstest.Conn(e.t, e.NS)
		sub, err := nc.Subscribe(e.Names.ReplicaSubject(id)+".call", func(m *nats.Msg) {
			if wire.IsProbe(m) { // still working on everything asked about
				_ = nc.PublishMsg(wire.ProbeAnswer(m, func(string) bool { return true }))
				return
			}
			r.calls.Add(1)
			go func() {
				if out := handle(m); out != nil {
					out.Subject = m.Reply
					_ = nc.PublishMsg(out)
				}
			}()
		})
		if err != nil {
			e.t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			e.t.Fatal(err)
		}
		r.sub = sub
	}
	e.putReplica(id, maxOngoing, protocol.ReplicaRunning)
	return r
}

func (e *env) putReplica(id string, maxOngoing int, state protocol.ReplicaState) {
	e.t.Helper()
	info := protocol.ReplicaInfo{ID: id, App: app, Deployment: dep, WorkerID: "w1", State: state,
		MaxOngoingRequests: maxOngoing, Subject: e.Names.ReplicaSubject(id), Heartbeat: time.Now()}
	natstest.PutReplica(e.t, e.Buckets, info)
}

func (e *env) call(timeout time.Duration, body string) (*serve.Response, error) {
	c := wire.NewCaller(e.NC, e.Names)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Call(ctx, app, dep, &serve.Request{Method: "POST", Path: "/", Body: []byte(body)})
}

// waitServing polls until a request is answered 200 (the router is
// subscribed and knows a replica).
func (e *env) waitServing() {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := e.call(200*time.Millisecond, "ping")
		if err == nil && resp.Status == 200 {
			return
		}
	}
	e.t.Fatal("router never served a request")
}

// waitQueued waits until some router reports n queued requests.
func (e *env) waitQueued(n int) {
	e.t.Helper()
	ch := make(chan *nats.Msg, 64)
	sub, err := e.NC.ChanSubscribe(e.Names.RouterStatsSubject(), ch)
	if err != nil {
		e.t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			var st protocol.RouterStats
			if err := json.Unmarshal(m.Data, &st); err != nil {
				e.t.Fatal(err)
			}
			if st.Queued[app+"/"+dep] == n {
				return
			}
		case <-timeout:
			e.t.Fatalf("router never reported %d queued", n)
		}
	}
}

func TestRoutesToReplicas(t *testing.T) {
	e := newEnv(t)
	r1 := e.addReplica("r1", 100, true, nil)
	r2 := e.addReplica("r2", 100, true, nil)
	e.startRouter(nil)
	e.waitServing()
	for i := range 100 {
		body := "hello " + strconv.Itoa(i)
		resp, err := e.call(5*time.Second, body)
		if err != nil {
			t.Fatalf("Call(%q) error %v", body, err)
		}
		if resp.Status != 200 || string(resp.Body) != body || resp.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("Call(%q) = %d %q %v, want 200 with the body echoed", body, resp.Status, resp.Body, resp.Header)
		}
	}
	if r1.calls.Load() == 0 || r2.calls.Load() == 0 {
		t.Errorf("calls r1=%d r2=%d, want both > 0", r1.calls.Load(), r2.calls.Load())
	}
}

func TestStoppingReplicaNotRouted(t *testing.T) {
	e := newEnv(t)
	r1 := e.addReplica("r1", 100, true, nil)
	e.addReplica("r2", 100, true, nil)
	e.startRouter(nil)
	e.waitServing()
	e.putReplica("r1", 100, protocol.ReplicaStopping)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		before := r1.calls.Load()
		for range 20 {
			if _, err := e.call(5*time.Second, "x"); err != nil {
				t.Fatal(err)
			}
		}
		if r1.calls.Load() == before {
			return
		}
	}
	t.Fatal("requests still reach the STOPPING replica r1")
}

func TestP2CPrefersLessLoaded(t *testing.T) {
	e := newEnv(t)
	busy := e.addReplica("busy", 5, true, nil)
	idle := e.addReplica("idle", 5, true, nil)
	e.startRouter(nil)
	e.waitServing()
	report := func(id string, ongoing int) {
		b, _ := json.Marshal(protocol.LoadReport{ReplicaID: id, App: app, Deployment: dep, Ongoing: ongoing, Max: 5, At: time.Now()})
		if err := e.NC.Publish(e.Names.LoadSubject(app, dep), b); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		report("busy", 4)
		report("idle", 0)
		if err := e.NC.Flush(); err != nil {
			t.Fatal(err)
		}
		b0, i0 := busy.calls.Load(), idle.calls.Load()
		for range 20 {
			if _, err := e.call(5*time.Second, "x"); err != nil {
				t.Fatal(err)
			}
		}
		if busy.calls.Load() == b0 && idle.calls.Load() == i0+20 {
			return
		}
	}
	t.Fatalf("the replica reporting load 4 kept getting requests (busy=%d idle=%d)", busy.calls.Load(), idle.calls.Load())
}

func TestRetriesOnReplicaFull(t *testing.T) {
	e := newEnv(t)
	full := e.addReplica("full", 100, true, func(*nats.Msg) *nats.Msg {
		return wire.ErrorMsg(503, protocol.ErrReplicaFull, "full")
	})
	e.addReplica("ok", 100, true, nil)
	reg := e.startRouter(nil)
	e.waitServing()
	for range 30 {
		resp, err := e.call(5*time.Second, "x")
		if err != nil || resp.Status != 200 {
			t.Fatalf("Call() = %v, %v, want 200", resp, err)
		}
	}
	if full.calls.Load() == 0 {
		t.Fatal("the full replica was never tried")
	}
	if got := counter(t, reg, "jetserve_router_retries_total"); got == 0 {
		t.Errorf("jetserve_router_retries_total = %v, want > 0", got)
	}
}

func TestRetriesVanishedReplica(t *testing.T) {
	e := newEnv(t)
	e.addReplica("ghost", 100, false, nil)
	ok := e.addReplica("ok", 100, true, nil)
	e.startRouter(nil)
	e.waitServing()
	for range 30 {
		resp, err := e.call(5*time.Second, "x")
		if err != nil || resp.Status != 200 {
			t.Fatalf("Call() = %v, %v, want 200", resp, err)
		}
	}
	if ok.calls.Load() < 30 {
		t.Errorf("ok replica calls = %d, want >= 30", ok.calls.Load())
	}
}

func TestQueueOverflow(t *testing.T) {
	e := newEnv(t)
	e.putConfig(1, 0)
	release := make(chan struct{})
	got := make(chan struct{}, 8)
	e.addReplica("r1", 1, true, func(m *nats.Msg) *nats.Msg {
		if string(m.Data) == "ping" {
			return wire.EncodeResponse(&serve.Response{Status: 200})
		}
		got <- struct{}{}
		<-release
		return wire.EncodeResponse(&serve.Response{Status: 200, Body: m.Data})
	})
	e.startRouter(nil)
	e.waitServing()

	type result struct {
		resp *serve.Response
		err  error
	}
	results := make(chan result, 2)
	send := func(body string) {
		go func() {
			resp, err := e.call(10*time.Second, body)
			results <- result{resp, err}
		}()
	}
	send("a") // in flight
	<-got
	send("b") // queued
	e.waitQueued(1)
	resp, err := e.call(5*time.Second, "c") // overflow
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 503 || resp.Header.Get(protocol.HdrError) != string(protocol.ErrQueueFull) || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("Call(c) = %d %v, want 503 queue_full with Retry-After: 1", resp.Status, resp.Header)
	}
	close(release)
	for range 2 {
		r := <-results
		if r.err != nil || r.resp.Status != 200 {
			t.Errorf("queued call = %v, %v, want 200", r.resp, r.err)
		}
	}
}

func TestNoReplicasHeldThenServed(t *testing.T) {
	e := newEnv(t)
	e.putConfig(-1, 0)
	e.startRouter(nil)
	type result struct {
		resp *serve.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Retry until a router is subscribed; then the request is held.
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := e.call(10*time.Second, "late")
			var se *serve.Error
			if errors.As(err, &se) && se.Code == protocol.ErrUnavailable && time.Now().Before(deadline) {
				continue
			}
			done <- result{resp, err}
			return
		}
	}()
	e.waitQueued(1)
	e.addReplica("r1", 5, true, nil)
	r := <-done
	if r.err != nil || r.resp.Status != 200 || string(r.resp.Body) != "late" {
		t.Fatalf("held call = %v, %v, want 200 late", r.resp, r.err)
	}
}

func TestNoReplicasUntilDeadline(t *testing.T) {
	e := newEnv(t)
	e.putConfig(-1, 300*time.Millisecond)
	e.startRouter(nil)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		resp, err := e.call(5*time.Second, "x")
		var se *serve.Error
		if errors.As(err, &se) && se.Code == protocol.ErrUnavailable {
			continue // no router yet
		}
		if err != nil {
			t.Fatal(err)
		}
		if resp.Status != 503 || resp.Header.Get(protocol.HdrError) != string(protocol.ErrNoReplicas) {
			t.Fatalf("Call() = %d %v, want 503 no_replicas", resp.Status, resp.Header)
		}
		if el := time.Since(start); el < 250*time.Millisecond {
			t.Fatalf("answered after %v, want the request held until request_timeout 300ms", el)
		}
		return
	}
	t.Fatal("no router")
}

func TestTimeout(t *testing.T) {
	e := newEnv(t)
	e.putConfig(-1, 300*time.Millisecond)
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	e.addReplica("slow", 5, true, func(m *nats.Msg) *nats.Msg {
		if string(m.Data) == "ping" {
			return wire.EncodeResponse(&serve.Response{Status: 200})
		}
		<-hang
		return nil
	})
	e.startRouter(nil)
	e.waitServing()
	resp, err := e.call(5*time.Second, "slow")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != 504 || resp.Header.Get(protocol.HdrError) != string(protocol.ErrTimeout) {
		t.Errorf("Call() = %d %v, want 504 timeout", resp.Status, resp.Header)
	}
}

func TestMultipleRouters(t *testing.T) {
	e := newEnv(t)
	e.addReplica("r1", 100, true, nil)
	e.addReplica("r2", 100, true, nil)
	reg1 := e.startRouter(func(c *router.Config) { c.ID = "a" })
	reg2 := e.startRouter(func(c *router.Config) { c.ID = "b" })
	e.waitServing()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Go(func() {
			for range 25 {
				resp, err := e.call(5*time.Second, "x")
				if err != nil || resp.Status != 200 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d calls failed", failed.Load())
	}
	n1, n2 := counter(t, reg1, "jetserve_num_router_requests_total"), counter(t, reg2, "jetserve_num_router_requests_total")
	if n1 == 0 || n2 == 0 {
		t.Errorf("requests per router = %v, %v, want both > 0", n1, n2)
	}
}

// counter sums every series of a counter family.
func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*router.Config)
		ok   bool
	}{
		{"defaults", func(*router.Config) {}, true},
		{"bad attempts", func(c *router.Config) { c.Retry.MaxAttempts = 0 }, false},
		{"bad stats", func(c *router.Config) { c.StatsInterval = 0 }, false},
		{"negative timeout", func(c *router.Config) { c.DefaultRequestTimeout = -1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := router.DefaultConfig()
			tt.mod(&c)
			if err := c.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
