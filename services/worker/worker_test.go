package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/jetserve/jetserve/services/worker/internal/replica"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild()) // a process-runtime child (process_test.go)
	}
	goleak.VerifyTestMain(m)
}

const (
	testApp   = "app"
	waitLimit = 10 * time.Second
	workerID  = "w1"
)

// deployments is the test registry's shared state: what constructors and
// handlers saw, and gates that hold slow requests.
type deployments struct {
	reg          *serve.Registry
	constructs   sync.Map // handler name → *atomic.Int32
	reconfigured atomic.Int32
	closed       atomic.Int32
	started      chan string   // a slow request began (its body), or a blocking job (its id)
	release      chan struct{} // closed to let slow requests finish
	failFirst    atomic.Int32  // "flaky" constructor failures left
}

func (d *deployments) count(name string) *atomic.Int32 {
	v, _ := d.constructs.LoadOrStore(name, new(atomic.Int32))
	return v.(*atomic.Int32)
}

type greetConfig struct {
	Greeting string `json:"greeting"`
	Healthy  *bool  `json:"healthy,omitempty"`
}

// slowEcho is how long echo takes to answer "slow".
const slowEcho = 40 * time.Millisecond

// echo answers "<greeting>:<body>" (after slowEcho for "slow") and
// supports Reconfigure, health and Close.
type echo struct {
	d   *deployments
	mu  sync.Mutex
	cfg greetConfig // guarded by mu
}

func (e *echo) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	e.mu.Lock()
	g := e.cfg.Greeting
	e.mu.Unlock()
	switch string(req.Body) {
	case "fail":
		return nil, serve.Errorf(http.StatusTeapot, "asked to fail")
	case "slow":
		time.Sleep(slowEcho)
	}
	return &serve.Response{Status: http.StatusOK, Body: []byte(g + ":" + string(req.Body))}, nil
}

func (e *echo) Reconfigure(_ context.Context, uc json.RawMessage) error {
	var c greetConfig
	if err := json.Unmarshal(uc, &c); err != nil {
		return err
	}
	e.mu.Lock()
	e.cfg = c
	e.mu.Unlock()
	e.d.reconfigured.Add(1)
	return nil
}

func (e *echo) CheckHealth(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg.Healthy != nil && !*e.cfg.Healthy {
		return errors.New("configured unhealthy")
	}
	return nil
}

func (e *echo) Close(context.Context) error { e.d.closed.Add(1); return nil }

// plain has no Reconfigure: a user_config change restarts it.
type plain struct{ greeting string }

func (p plain) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return &serve.Response{Body: []byte(p.greeting)}, nil
}

// streamer streams three chunks.
type streamer struct{}

func (streamer) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return &serve.Response{Body: []byte("not streamed")}, nil
}

func (streamer) ServeStream(_ context.Context, _ *serve.Request, w serve.StreamWriter) error {
	if err := w.WriteHead(http.StatusOK, http.Header{"Content-Type": {"text/plain"}}); err != nil {
		return err
	}
	for i := 1; i <= 3; i++ {
		if err := w.Write([]byte("chunk" + strconv.Itoa(i))); err != nil {
			return err
		}
	}
	return nil
}

func newDeployments(t testing.TB) *deployments {
	t.Helper()
	d := &deployments{reg: serve.NewRegistry(), started: make(chan string, 16), release: make(chan struct{})}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(d.reg.Register("echo", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		d.count("echo").Add(1)
		e := &echo{d: d}
		if err := in.DecodeUserConfig(&e.cfg); err != nil {
			return nil, err
		}
		return e, nil
	}))
	must(d.reg.Register("plain", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		d.count("plain").Add(1)
		var c greetConfig
		if err := in.DecodeUserConfig(&c); err != nil {
			return nil, err
		}
		return plain{greeting: c.Greeting}, nil
	}))
	must(d.reg.Register("slow", func(context.Context, serve.Init) (serve.Handler, error) {
		d.count("slow").Add(1)
		return serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
			d.started <- string(req.Body)
			select {
			case <-d.release:
				return &serve.Response{Body: []byte("done:" + string(req.Body))}, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}), nil
	}))
	must(d.reg.Register("streamer", func(context.Context, serve.Init) (serve.Handler, error) {
		return streamer{}, nil
	}))
	must(d.reg.Register("flaky", func(context.Context, serve.Init) (serve.Handler, error) {
		d.count("flaky").Add(1)
		if d.failFirst.Add(-1) >= 0 {
			return nil, errors.New("model weights not ready")
		}
		return plain{greeting: "flaky ok"}, nil
	}))
	must(d.reg.Register("jobber", func(context.Context, serve.Init) (serve.Handler, error) {
		return &jobber{d: d}, nil
	}, serve.WithAsync(config.AsyncMethod{Name: "square", MaxRunning: 4, LeaseTimeout: config.Duration(2 * time.Second)})))
	must(d.reg.Register("chain", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		return chainTo(in.Handle("echo-dep")), nil
	}))
	return d
}

// fleet is an embedded JetStream with one worker running.
type fleet struct {
	kv
	nc      *nats.Conn
	names   protocol.Names
	d       *deployments
	metrics *prometheus.Registry
	cancel  context.CancelFunc
	done    chan error
	stopped bool
}

func startFleet(t testing.TB, mutate func(*worker.Config)) *fleet {
	t.Helper()
	tf := natstest.NewFleet(t)
	ns, nc, names, b := tf.NS, tf.NC, tf.Names, tf.Buckets
	wnc := natstest.Conn(t, ns)
	cfg := testConfig(ns, workerID)
	cfg.Resources.GPUs = []worker.GPU{{Index: 0, Type: "h100", Memory: "80Gi"}}
	cfg.Labels = "zone=a, gpu.type=h100"
	if mutate != nil {
		mutate(&cfg)
	}
	f := &fleet{kv: kv{t: t, b: b}, nc: nc, names: names, d: newDeployments(t), metrics: prometheus.NewRegistry(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	deps := service.Deps{NC: wnc, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), Metrics: f.metrics}
	go func() { f.done <- worker.Run(ctx, cfg, deps, f.d.reg) }()
	t.Cleanup(func() { f.stop() })
	return f
}

// stop cancels the worker and waits for Run to return (releasing slow
// requests so the drain can finish).
func (f *fleet) stop() error {
	f.t.Helper()
	if f.stopped {
		return nil
	}
	f.stopped = true
	f.cancel()
	select {
	case <-f.d.release:
	default:
		close(f.d.release)
	}
	select {
	case err := <-f.done:
		return err
	case <-time.After(30 * time.Second):
		f.t.Fatalf("worker.Run did not return after cancel")
		return nil
	}
}

func (f *fleet) assign(specs ...protocol.ReplicaSpec) {
	f.t.Helper()
	f.assignEpoch(1, specs...)
}

func (f *fleet) assignEpoch(epoch uint64, specs ...protocol.ReplicaSpec) {
	f.t.Helper()
	f.leaseUpTo(epoch)
	f.writeAssignment(epoch, specs...)
}

// writeAssignment writes the worker's assignment as is.
func (f *fleet) writeAssignment(epoch uint64, specs ...protocol.ReplicaSpec) {
	f.t.Helper()
	f.putAssignment(workerID, epoch, specs...)
}

func spec(id, dep, handler string, maxOngoing int, userConfig string) protocol.ReplicaSpec {
	s := protocol.ReplicaSpec{
		ID: id, App: testApp, Deployment: dep, Handler: handler, Version: "v1",
		MaxOngoingRequests: maxOngoing, CPU: 1, GracefulShutdownTimeout: config.Duration(10 * time.Second),
	}
	if userConfig != "" {
		s.UserConfig = json.RawMessage(userConfig)
	}
	return s
}

// call sends body to the replica's .call endpoint directly.
func (f *fleet) call(id, body string) (*nats.Msg, error) {
	m := wire.EncodeRequest(f.names.ReplicaSubject(id)+".call", &serve.Request{Method: "POST", Path: "/", Body: []byte(body), RequestID: "req-" + body})
	m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(time.Now().Add(waitLimit).UnixMilli(), 10))
	return f.nc.RequestMsg(m, waitLimit)
}

// runEcho starts a fleet running one echo replica id of echo-dep with
// maxOngoing, and returns it with the deployment's micro service name.
func runEcho(t *testing.T, id string, maxOngoing int) (*fleet, string) {
	t.Helper()
	f := startFleet(t, nil)
	s := spec(id, "echo-dep", "echo", maxOngoing, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	return f, f.names.DeploymentService(testApp, "echo-dep")
}

// stats asks the micro service name for its stats ($SRV.STATS).
func (f *fleet) stats(name string) micro.Stats {
	f.t.Helper()
	reply, err := f.nc.Request("$SRV.STATS."+name, nil, waitLimit)
	if err != nil {
		f.t.Fatalf("$SRV.STATS.%s: %v", name, err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(reply.Data, &stats); err != nil {
		f.t.Fatalf("decode stats %s: %v", reply.Data, err)
	}
	return stats
}

func (f *fleet) mustCall(id, body string) *serve.Response {
	f.t.Helper()
	reply, err := f.call(id, body)
	if err != nil {
		f.t.Fatalf("call %s %q: %v", id, body, err)
	}
	if got := reply.Header.Get(protocol.HdrReplica); got != id {
		f.t.Errorf("reply header %s = %q, want %q", protocol.HdrReplica, got, id)
	}
	return wire.DecodeResponse(reply)
}

func TestWorkerRegisters(t *testing.T) {
	f := startFleet(t, nil)
	var info protocol.WorkerInfo
	waitfor.True(t, waitLimit, "worker record", func() bool {
		e, err := f.b.Workers.Get(context.Background(), protocol.WorkerKey(workerID))
		if err != nil {
			return false
		}
		if err := json.Unmarshal(e.Value(), &info); err != nil {
			t.Fatal(err)
		}
		return true
	})
	if want := f.d.reg.Names(); !slices.Equal(info.Handlers, want) {
		t.Errorf("WorkerInfo.Handlers = %v, want %v", info.Handlers, want)
	}
	if info.CPU != 4 || info.MemoryBytes != 16<<30 {
		t.Errorf("WorkerInfo CPU, memory = %v, %d, want 4, %d", info.CPU, info.MemoryBytes, int64(16<<30))
	}
	if len(info.GPUs) != 1 || info.GPUs[0] != (protocol.GPU{Index: 0, Type: "h100", MemoryBytes: 80 << 30}) {
		t.Errorf("WorkerInfo.GPUs = %+v, want the declared h100", info.GPUs)
	}
	if info.Labels["zone"] != "a" || info.Labels["gpu.type"] != "h100" {
		t.Errorf("WorkerInfo.Labels = %v, want zone=a gpu.type=h100", info.Labels)
	}
	if info.Draining || info.Host == "" || info.StartedAt.IsZero() {
		t.Errorf("WorkerInfo = %+v, want not draining, host and start time set", info)
	}

	if err := f.stop(); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if _, err := f.b.Workers.Get(context.Background(), protocol.WorkerKey(workerID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("worker record after shutdown: Get = %v, want ErrKeyNotFound", err)
	}
}

func TestAssignmentStartsReplica(t *testing.T) {
	f := startFleet(t, nil)
	loads := make(chan *nats.Msg, 64)
	sub, err := f.nc.ChanSubscribe(f.names.LoadSubject(testApp, "echo-dep"), loads)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck

	s := spec("r1", "echo-dep", "echo", 2, `{"greeting":"hi"}`)
	f.assign(s)
	info := f.waitState(s, protocol.ReplicaRunning)
	if info.WorkerID != workerID || info.Subject != f.names.ReplicaSubject("r1") || info.MaxOngoingRequests != 2 || info.Version != "v1" {
		t.Errorf("replica record = %+v", info)
	}

	resp := f.mustCall("r1", "world")
	if resp.Status != http.StatusOK || string(resp.Body) != "hi:world" {
		t.Errorf("call r1 = %d %q, want 200 %q", resp.Status, resp.Body, "hi:world")
	}
	resp = f.mustCall("r1", "fail")
	if resp.Status != http.StatusTeapot {
		t.Errorf("call r1 fail = %d, want %d", resp.Status, http.StatusTeapot)
	}

	select {
	case m := <-loads:
		var rep protocol.LoadReport
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			t.Fatal(err)
		}
		if rep.ReplicaID != "r1" || rep.Max != 2 || rep.App != testApp || rep.Deployment != "echo-dep" {
			t.Errorf("load report = %+v", rep)
		}
	case <-time.After(waitLimit):
		t.Fatal("no load report")
	}
	// Later reports carry the request totals: 2 served, 1 failed, every
	// latency in one of the buckets.
	deadline := time.After(waitLimit)
	for served := false; !served; {
		select {
		case m := <-loads:
			var rep protocol.LoadReport
			if err := json.Unmarshal(m.Data, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Served < 2 {
				continue
			}
			served = true
			var inBuckets uint64
			for _, n := range rep.LatencyBuckets {
				inBuckets += n
			}
			if rep.Served != 2 || rep.Errors != 1 || rep.LatencyMSSum <= 0 || inBuckets != 2 ||
				len(rep.LatencyBuckets) != len(protocol.LatencyBoundsMS)+1 {
				t.Errorf("load report totals = served %d, errors %d, latency sum %v ms, buckets %v; want 2, 1, > 0, 2 in %d buckets",
					rep.Served, rep.Errors, rep.LatencyMSSum, rep.LatencyBuckets, len(protocol.LatencyBoundsMS)+1)
			}
		case <-deadline:
			t.Fatal("no load report with 2 requests served")
		}
	}

	mfs, err := f.metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				got[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				got[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for name, want := range map[string]float64{
		"jetserve_deployment_requests_total":             2,
		"jetserve_deployment_errors_total":               1,
		"jetserve_deployment_processing_latency_seconds": 2,
		"jetserve_replica_starts_total":                  1,
	} {
		if got[name] != want {
			t.Errorf("metric %s = %v, want %v", name, got[name], want)
		}
	}
}

func TestMaxOngoingRequests(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("slow1", "slow-dep", "slow", 1, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)

	first := make(chan *nats.Msg, 1)
	go func() {
		reply, err := f.call("slow1", "a")
		if err != nil {
			t.Errorf("first call: %v", err)
		}
		first <- reply
	}()
	<-f.d.started

	reply, err := f.call("slow1", "b")
	if err != nil {
		t.Fatalf("second call: %v", err)
	}
	if code := wire.ErrorCode(reply); code != protocol.ErrReplicaFull {
		t.Errorf("second call error code = %q, want %q", code, protocol.ErrReplicaFull)
	}
	if st := reply.Header.Get(protocol.HdrStatus); st != "503" {
		t.Errorf("second call status = %s, want 503", st)
	}

	close(f.d.release)
	if resp := wire.DecodeResponse(<-first); string(resp.Body) != "done:a" {
		t.Errorf("first call = %q, want %q", resp.Body, "done:a")
	}
}

// TestNextCallFindsTheSlotFree: a caller's next request, sent the moment
// it has the answer, finds the slot of a replica at max_ongoing_requests
// 1 free, and the stats count the answered request: the replica settles
// a request before its answer goes out (it did after, and a loaded
// machine refused the next request as replica_full now and then).
func TestNextCallFindsTheSlotFree(t *testing.T) {
	f, name := runEcho(t, "one", 1)
	const calls = 300
	for i := range calls {
		reply, err := f.call("one", "x")
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if code := wire.ErrorCode(reply); code != "" {
			t.Fatalf("call %d, right after the previous one's answer = %s %q, want 200", i, code, reply.Data)
		}
	}
	for _, e := range f.stats(name).Endpoints {
		if e.Name == protocol.EndpointCall && e.NumRequests != calls {
			t.Errorf("call endpoint right after the last answer = %d requests, want %d", e.NumRequests, calls)
		}
	}
}

func TestUserConfigReconfiguresInPlace(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("r1", "echo-dep", "echo", 2, `{"greeting":"hello"}`)
	f.assign(s)
	started := f.waitState(s, protocol.ReplicaRunning).StartedAt

	s.UserConfig = json.RawMessage(`{"greeting":"bonjour"}`)
	f.assign(s)
	waitfor.True(t, waitLimit, "Reconfigure called", func() bool { return f.d.reconfigured.Load() == 1 })
	if resp := f.mustCall("r1", "x"); string(resp.Body) != "bonjour:x" {
		t.Errorf("call after reconfigure = %q, want %q", resp.Body, "bonjour:x")
	}
	if n := f.d.count("echo").Load(); n != 1 {
		t.Errorf("echo constructed %d times, want 1 (reconfigured in place)", n)
	}
	if info := f.waitState(s, protocol.ReplicaRunning); !info.StartedAt.Equal(started) {
		t.Errorf("replica start time changed %v → %v: it was restarted", started, info.StartedAt)
	}
}

func TestUserConfigRestartsWithoutReconfigurer(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("p1", "plain-dep", "plain", 2, `{"greeting":"one"}`)
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	if resp := f.mustCall("p1", ""); string(resp.Body) != "one" {
		t.Fatalf("call = %q, want one", resp.Body)
	}
	s.UserConfig = json.RawMessage(`{"greeting":"two"}`)
	f.assign(s)
	waitfor.True(t, waitLimit, "plain constructed again", func() bool { return f.d.count("plain").Load() == 2 })
	waitfor.True(t, waitLimit, "restarted replica answers with the new config", func() bool {
		reply, err := f.call("p1", "")
		return err == nil && string(reply.Data) == "two"
	})
	f.waitState(s, protocol.ReplicaRunning)
}

func TestRemovalDrains(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("slow1", "slow-dep", "slow", 4, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	loads := make(chan *nats.Msg, 64)
	sub, err := f.nc.ChanSubscribe(f.names.LoadSubject(testApp, "slow-dep"), loads)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck

	inflight := make(chan *nats.Msg, 1)
	go func() {
		reply, err := f.call("slow1", "inflight")
		if err != nil {
			t.Errorf("in-flight call: %v", err)
		}
		inflight <- reply
	}()
	<-f.d.started

	f.assign() // removed
	f.waitState(s, protocol.ReplicaStopping)
	waitfor.True(t, waitLimit, "a draining load report", func() bool {
		select {
		case m := <-loads:
			var rep protocol.LoadReport
			return json.Unmarshal(m.Data, &rep) == nil && rep.Draining
		default:
			return false
		}
	})
	reply, err := f.call("slow1", "late")
	if err != nil {
		t.Fatalf("call while draining: %v", err)
	}
	if code := wire.ErrorCode(reply); code != protocol.ErrDraining {
		t.Errorf("call while draining: code %q, want %q", code, protocol.ErrDraining)
	}

	close(f.d.release)
	if resp := wire.DecodeResponse(<-inflight); resp.Status != http.StatusOK || string(resp.Body) != "done:inflight" {
		t.Errorf("in-flight call = %d %q, want 200 done:inflight", resp.Status, resp.Body)
	}
	f.waitGone(s)
	if _, err := f.call("slow1", "after"); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("call after stop: %v, want no responders", err)
	}
}

// A deleted assignment (the scheduler dropped the worker's) stops every
// replica, whatever the epoch of the last one.
func TestAssignmentDeleted(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("e1", "echo-dep", "echo", 4, `{"greeting":"hi"}`)
	f.assignEpoch(5, s)
	f.waitState(s, protocol.ReplicaRunning)
	if err := f.b.Assignments.Delete(context.Background(), protocol.AssignmentKey(workerID)); err != nil {
		t.Fatal(err)
	}
	f.waitGone(s)
}

func TestHealthEndpoint(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("r1", "echo-dep", "echo", 2, `{"greeting":"hi"}`)
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)

	health := func() *nats.Msg {
		t.Helper()
		m := nats.NewMsg(f.names.ReplicaSubject("r1") + ".health")
		m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(time.Now().Add(time.Second).UnixMilli(), 10))
		reply, err := f.nc.RequestMsg(m, waitLimit)
		if err != nil {
			t.Fatalf("health: %v", err)
		}
		return reply
	}
	if r := health(); wire.ErrorCode(r) != "" || r.Header.Get(protocol.HdrStatus) != "200" {
		t.Errorf("health = %v, want 200 without error", r.Header)
	}

	s.UserConfig = json.RawMessage(`{"greeting":"hi","healthy":false}`)
	f.assign(s)
	waitfor.True(t, waitLimit, "Reconfigure called", func() bool { return f.d.reconfigured.Load() == 1 })
	if r := health(); wire.ErrorCode(r) == "" || !strings.Contains(string(r.Data), "configured unhealthy") {
		t.Errorf("health = %v %q, want an error reply", r.Header, r.Data)
	}
}

// forwardRoutes stands in for a router: it relays RouteSubject requests of
// deployment dep to replica id.
func (f *fleet) forwardRoutes(dep, id string) {
	f.t.Helper()
	sub, err := f.nc.Subscribe(f.names.RouteSubject(testApp, dep), func(m *nats.Msg) {
		fwd := nats.NewMsg(f.names.ReplicaSubject(id) + ".call")
		fwd.Header, fwd.Data = m.Header, m.Data
		reply, err := f.nc.RequestMsg(fwd, waitLimit)
		if err != nil {
			_ = m.RespondMsg(wire.EncodeError(err))
			return
		}
		_ = m.RespondMsg(&nats.Msg{Header: reply.Header, Data: reply.Data})
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = sub.Unsubscribe() })
}

type sink struct {
	status int
	chunks []string
}

func (s *sink) Head(status int, _ http.Header) error { s.status = status; return nil }
func (s *sink) Chunk(b []byte) error                 { s.chunks = append(s.chunks, string(b)); return nil }

func TestStreaming(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("s1", "stream-dep", "streamer", 2, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	f.forwardRoutes("stream-dep", "s1")

	var got sink
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := wire.NewCaller(f.nc, f.names).Stream(ctx, testApp, "stream-dep", &serve.Request{Method: "POST", Path: "/"}, &got); err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if want := []string{"chunk1", "chunk2", "chunk3"}; got.status != 200 || !slices.Equal(got.chunks, want) {
		t.Errorf("Stream = %d %v, want 200 %v", got.status, got.chunks, want)
	}
	// Without HdrStream the same replica answers normally.
	if resp := f.mustCall("s1", ""); string(resp.Body) != "not streamed" {
		t.Errorf("plain call to streamer = %q, want %q", resp.Body, "not streamed")
	}
}

// TestHandlesCallThroughRouters: with router: service the handles of a
// worker's replicas go to the route subjects (the router service's; here
// forwardRoutes stands in for it), not straight to the replica.
func TestHandlesCallThroughRouters(t *testing.T) {
	f := startFleet(t, func(c *worker.Config) { c.Router = worker.RouterService })
	e := spec("e1", "echo-dep", "echo", 2, `{"greeting":"hey"}`)
	c := spec("c1", "chain-dep", "chain", 2, "")
	f.assign(e, c)
	f.waitState(e, protocol.ReplicaRunning)
	f.waitState(c, protocol.ReplicaRunning)
	f.forwardRoutes("echo-dep", "e1")
	if resp := f.mustCall("c1", "x"); string(resp.Body) != "chain>hey:x" {
		t.Errorf("chain call = %d %q, want %q", resp.Status, resp.Body, "chain>hey:x")
	}
}

func TestGracefulShutdownLosesNothing(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("slow1", "slow-dep", "slow", 4, "")
	e := spec("r1", "echo-dep", "echo", 2, "")
	f.assign(s, e)
	f.waitState(s, protocol.ReplicaRunning)
	f.waitState(e, protocol.ReplicaRunning)

	const n = 3
	replies := make(chan *nats.Msg, n)
	for i := range n {
		go func() {
			reply, err := f.call("slow1", strconv.Itoa(i))
			if err != nil {
				t.Errorf("in-flight call %d: %v", i, err)
			}
			replies <- reply
		}()
	}
	for range n {
		<-f.d.started
	}

	f.cancel()
	waitfor.True(t, waitLimit, "worker marked draining", func() bool {
		en, err := f.b.Workers.Get(context.Background(), protocol.WorkerKey(workerID))
		if err != nil {
			return false
		}
		var info protocol.WorkerInfo
		return json.Unmarshal(en.Value(), &info) == nil && info.Draining
	})
	f.waitState(s, protocol.ReplicaStopping)
	close(f.d.release)
	for range n {
		if resp := wire.DecodeResponse(<-replies); resp.Status != http.StatusOK || !strings.HasPrefix(string(resp.Body), "done:") {
			t.Errorf("in-flight call = %d %q, want 200 done:…", resp.Status, resp.Body)
		}
	}
	if err := f.stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	for _, sp := range []protocol.ReplicaSpec{s, e} {
		if _, ok := f.record(sp); ok {
			t.Errorf("replica %s record still there after shutdown", sp.ID)
		}
	}
	if _, err := f.b.Workers.Get(context.Background(), protocol.WorkerKey(workerID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("worker record after shutdown: %v, want ErrKeyNotFound", err)
	}
	if n := f.d.closed.Load(); n != 1 {
		t.Errorf("echo Close called %d times, want 1", n)
	}
}

// TestMicroServiceDiscovery: a replica is an instance of its
// deployment's micro service, and the stats of its call endpoint say what
// its handler did: the table's requests, errors and average are the
// handler's (not the admission's, as nats.go's micro timed them), with the
// quantiles in the endpoint's data.
func TestMicroServiceDiscovery(t *testing.T) {
	f, name := runEcho(t, "r1", 4)

	reply, err := f.nc.Request("$SRV.INFO."+name, nil, waitLimit)
	if err != nil {
		t.Fatalf("$SRV.INFO.%s: %v", name, err)
	}
	var info micro.Info
	if err := json.Unmarshal(reply.Data, &info); err != nil {
		t.Fatalf("decode info %s: %v", reply.Data, err)
	}
	if info.Type != micro.InfoResponseType || info.Name != name || info.Version != "0.1.0" {
		t.Errorf("info = %+v, want service %s", info, name)
	}
	if info.Metadata["replica"] != "r1" || info.Metadata["app"] != testApp || info.Metadata["deployment"] != "echo-dep" || info.Metadata["worker"] != workerID {
		t.Errorf("info metadata = %v", info.Metadata)
	}
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
	}
	slices.Sort(subjects)
	want := []string{f.names.ReplicaSubject("r1") + ".call", f.names.ReplicaSubject("r1") + ".health"}
	if !slices.Equal(subjects, want) {
		t.Errorf("endpoint subjects = %v, want %v", subjects, want)
	}

	// Four slow requests at once and one that fails.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if m, err := f.call("r1", "slow"); err != nil || wire.DecodeResponse(m).Status != http.StatusOK {
				t.Errorf("slow call = %v, %v", m, err)
			}
		})
	}
	wg.Wait()
	if _, err := f.call("r1", "fail"); err != nil {
		t.Fatal(err)
	}
	stats := f.stats(name)
	var call *micro.EndpointStats
	for _, e := range stats.Endpoints {
		if e.Name == protocol.EndpointCall {
			call = e
		}
	}
	if call == nil {
		t.Fatalf("stats %+v: no call endpoint", stats)
	}
	var cs protocol.CallStats
	if err := json.Unmarshal(call.Data, &cs); err != nil {
		t.Fatalf("decode call stats %s: %v", call.Data, err)
	}
	slowMS := float64(slowEcho.Milliseconds())
	if cs.Served != 5 || cs.Errors != 1 || cs.MaxOngoing != 4 || cs.Ongoing != 0 {
		t.Errorf("call stats = %+v, want 5 served, 1 error, max 4, none ongoing", cs)
	}
	if cs.AverageMS < 4*slowMS/5 || cs.P95MS < slowMS/2 {
		t.Errorf("call stats = %+v, want an average of at least %v ms and a p95 near %v ms: the handlers' time", cs, 4*slowMS/5, slowMS)
	}
	if call.NumRequests != 5 || call.NumErrors != 1 || call.AverageProcessingTime < 4*slowEcho/5 ||
		call.ProcessingTime < 4*slowEcho {
		t.Errorf("call endpoint = %d requests, %d errors, %s total, %s average; want the handler's 5, 1, at least %s and %s",
			call.NumRequests, call.NumErrors, call.ProcessingTime, call.AverageProcessingTime, 4*slowEcho, 4*slowEcho/5)
	}
	// The total and the mean in Data agree to the nanosecond: the mean is
	// the total over the requests (the total's exactness: replica's
	// TestCallEndpointStats).
	if avg := float64(call.ProcessingTime) / float64(time.Millisecond) / float64(cs.Served); avg != cs.AverageMS {
		t.Errorf("call endpoint total %d ns over %d requests = %v ms, want Data's average %v ms exactly",
			call.ProcessingTime, cs.Served, avg, cs.AverageMS)
	}
	var health *micro.EndpointStats
	for _, e := range stats.Endpoints {
		if e.Name == protocol.EndpointHealth {
			health = e
		}
	}
	if health == nil || health.Subject != f.names.ReplicaSubject("r1")+".health" {
		t.Errorf("stats %+v: want the health endpoint on its subject", stats)
	}
}

func TestConstructorErrorIsReportedAndRetried(t *testing.T) {
	f := startFleet(t, nil)
	// Three failures keep the error in the record for the retries' 0.5 +
	// 1 + 2 s, not one 500 ms window a loaded machine's polls can miss.
	f.d.failFirst.Store(3)
	s := spec("f1", "flaky-dep", "flaky", 1, "")
	f.assign(s)
	waitfor.True(t, waitLimit, "the constructor error in the record", func() bool {
		info, ok := f.record(s)
		return ok && info.State == protocol.ReplicaStarting && strings.Contains(info.Message, "model weights not ready")
	})
	if info := f.waitState(s, protocol.ReplicaRunning); info.Message != "" {
		t.Errorf("running replica message = %q, want none", info.Message)
	}
	if n := f.d.count("flaky").Load(); n != 4 {
		t.Errorf("flaky constructed %d times, want 4 (3 failures, then the one running)", n)
	}
}

func TestUnknownHandlerIsReported(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("u1", "nope-dep", "nope", 1, "")
	f.assign(s)
	waitfor.True(t, waitLimit, "not registered message", func() bool {
		info, ok := f.record(s)
		return ok && strings.Contains(info.Message, "not registered")
	})
	f.assign()
	f.waitGone(s)
}

func TestGracefulTimeoutCancelsRequests(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("slow1", "slow-dep", "slow", 2, "")
	s.GracefulShutdownTimeout = config.Duration(50 * time.Millisecond)
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	inflight := make(chan *nats.Msg, 1)
	go func() {
		reply, err := f.call("slow1", "stuck")
		if err != nil {
			t.Errorf("in-flight call: %v", err)
		}
		inflight <- reply
	}()
	<-f.d.started
	f.assign()
	// Never released: the timeout cancels the request's context.
	if code := wire.ErrorCode(<-inflight); code != protocol.ErrCancelled {
		t.Errorf("request cut by the graceful timeout: code %q, want %q", code, protocol.ErrCancelled)
	}
	f.waitGone(s)
}

func TestMaxOngoingChangedInPlace(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("slow1", "slow-dep", "slow", 1, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	s.MaxOngoingRequests = 2
	f.assign(s)
	waitfor.True(t, waitLimit, "record shows max 2", func() bool {
		info, ok := f.record(s)
		return ok && info.MaxOngoingRequests == 2
	})
	replies := make(chan *nats.Msg, 2)
	for _, b := range []string{"a", "b"} {
		go func() {
			reply, err := f.call("slow1", b)
			if err != nil {
				t.Errorf("call %s: %v", b, err)
			}
			replies <- reply
		}()
	}
	<-f.d.started
	<-f.d.started // both admitted at once
	close(f.d.release)
	for range 2 {
		if r := <-replies; wire.ErrorCode(r) != "" {
			t.Errorf("call failed: %s", r.Data)
		}
	}
	if n := f.d.count("slow").Load(); n != 1 {
		t.Errorf("slow constructed %d times, want 1", n)
	}
}

func TestDetectedGPUsAreAdvertised(t *testing.T) {
	fake := filepath.Join(t.TempDir(), "nvidia-smi")
	script := "#!/bin/sh\nprintf '0, NVIDIA H100 80GB HBM3, 81559\\n1, NVIDIA A10G, 23028\\n'\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, func(c *worker.Config) {
		c.GPUDetect = worker.GPUDetectAuto
		c.NvidiaSMI = fake
	})
	var info protocol.WorkerInfo
	waitfor.True(t, waitLimit, "worker record", func() bool {
		e, err := f.b.Workers.Get(context.Background(), protocol.WorkerKey(workerID))
		return err == nil && json.Unmarshal(e.Value(), &info) == nil
	})
	want := []protocol.GPU{{Index: 0, Type: "h100", MemoryBytes: 81559 << 20}, {Index: 1, Type: "a10g", MemoryBytes: 23028 << 20}}
	if !slices.Equal(info.GPUs, want) {
		t.Errorf("WorkerInfo.GPUs = %+v, want detected %+v", info.GPUs, want)
	}
}

// TestStaleLeaderAssignmentIgnored: after a leader of epoch 5 assigned a
// replica, a late write from the deposed leader (epoch 3) must not stop it.
func TestStaleLeaderAssignmentIgnored(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("fenced1", "echo-dep", "echo", 2, "")
	f.assignEpoch(5, s)
	f.waitState(s, protocol.ReplicaRunning)
	f.assignEpoch(3) // the stale leader would remove it
	f.assignEpoch(5, s, spec("fenced2", "echo-dep", "echo", 2, ""))
	f.waitState(spec("fenced2", "echo-dep", "echo", 2, ""), protocol.ReplicaRunning)
	if info, ok := f.record(s); !ok || info.State != protocol.ReplicaRunning {
		t.Fatalf("replica after a stale assignment = %+v (present %v), want still RUNNING", info, ok)
	}
	if n := f.d.count("echo").Load(); n != 2 {
		t.Fatalf("echo constructed %d times, want 2 (fenced1 never stopped and restarted)", n)
	}
}

// An assignment whose epoch no scheduler lease ever had (2^60, written by
// whoever could write the bucket) is refused, and the real scheduler's
// next assignment is applied: the forged epoch does not wedge the worker.
func TestForgedEpochRefused(t *testing.T) {
	f := startFleet(t, nil)
	s1 := spec("real1", "echo-dep", "echo", 2, "")
	f.assignEpoch(2, s1)
	f.waitState(s1, protocol.ReplicaRunning)
	f.writeAssignment(1<<60, spec("forged1", "echo-dep", "echo", 2, "")) // drops real1 if obeyed
	s2 := spec("real2", "echo-dep", "echo", 2, "")
	f.assignEpoch(3, s1, s2)
	f.waitState(s2, protocol.ReplicaRunning)
	if info, ok := f.record(s1); !ok || info.State != protocol.ReplicaRunning {
		t.Fatalf("real1 after the forged assignment = %+v (present %v), want still RUNNING", info, ok)
	}
	if _, ok := f.record(spec("forged1", "echo-dep", "echo", 2, "")); ok {
		t.Fatal("the forged assignment's replica runs")
	}
}

// TestProbeListsHeldRequests: a router's liveness probe on the call
// subject is answered without user code, listing exactly the requests the
// replica still works on.
func TestProbeListsHeldRequests(t *testing.T) {
	f := startFleet(t, nil)
	s := spec("slow1", "slow-dep", "slow", 2, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	subject := f.names.ReplicaSubject("slow1") + ".call"

	replies := make(chan *nats.Msg, 4)
	inbox := f.nc.NewInbox()
	sub, err := f.nc.ChanSubscribe(inbox+".*", replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	m := wire.EncodeRequest(subject, &serve.Request{Method: "POST", Path: "/", Body: []byte("a")})
	m.Reply = inbox + ".req"
	if err := f.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	<-f.d.started
	probe := func() map[string]bool {
		t.Helper()
		a, err := f.nc.RequestMsg(wire.ProbeMsg(subject, "", []string{inbox + ".req", inbox + ".other"}), waitLimit)
		if err != nil {
			t.Fatalf("probe: %v", err)
		}
		return wire.ProbeHeld(a)
	}
	if got := probe(); len(got) != 1 || !got[inbox+".req"] {
		t.Errorf("probe while serving = %v, want only the request in flight", got)
	}
	close(f.d.release)
	select {
	case r := <-replies:
		if resp := wire.DecodeResponse(r); string(resp.Body) != "done:a" {
			t.Errorf("reply = %q, want done:a", resp.Body)
		}
	case <-time.After(waitLimit):
		t.Fatal("no reply")
	}
	// The replica forgets the request just after its reply went out: a
	// probe racing that moment may still see it held (the router then
	// simply waits for the reply it is about to get).
	deadline := time.Now().Add(waitLimit)
	for got := probe(); len(got) != 0; got = probe() {
		if time.Now().After(deadline) {
			t.Fatalf("probe after the reply = %v, want nothing held", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case b := <-f.d.started:
		t.Errorf("the handler ran for a probe (%q)", b)
	default:
	}
}

// A busy replica's load changes with every request. The routers hear it at
// every change (route reports, at most one per LoadCoalesce, without the
// request totals); the control plane — the autoscaler and the dashboard,
// on LoadSubject — at most every StatsCoalesce, with the totals.
func TestLoadReportCadence(t *testing.T) {
	f := startFleet(t, nil)
	full, route := make(chan *nats.Msg, 4096), make(chan *nats.Msg, 4096)
	for subject, ch := range map[string]chan *nats.Msg{
		f.names.LoadSubject(testApp, "echo-dep"): full, f.names.RouteLoadSubject(testApp, "echo-dep"): route} {
		sub, err := f.nc.ChanSubscribe(subject, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe() //nolint:errcheck
	}
	s := spec("r1", "echo-dep", "echo", 8, `{"greeting":"hi"}`)
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	f.mustCall("r1", "warm-up")
	drain := func(ch chan *nats.Msg) {
		for len(ch) > 0 {
			<-ch
		}
	}
	drain(full)
	drain(route)

	const busy = 1500 * time.Millisecond
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 4 {
		wg.Go(func() {
			for time.Since(start) < busy {
				if _, err := f.call("r1", "x"); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if failed.Load() > 0 {
		t.Fatalf("%d calls failed", failed.Load())
	}
	nFull, nRoute := len(full), len(route)
	if most := int(elapsed/replica.StatsCoalesce) + 2; nFull > most || nFull < 2 {
		t.Errorf("full load reports in %v of steady traffic = %d, want 2..%d (one per %v at most)", elapsed, nFull, most, replica.StatsCoalesce)
	}
	if nRoute < 4*nFull {
		t.Errorf("route load reports = %d, full = %d: want the routers to hear the load far more often", nRoute, nFull)
	}
	var rep protocol.LoadReport
	if err := json.Unmarshal((<-route).Data, &rep); err != nil || rep.ReplicaID != "r1" || rep.Served != 0 || rep.LatencyBuckets != nil {
		t.Errorf("route report = %+v, %v: want r1's, without the request totals", rep, err)
	}
	if err := json.Unmarshal((<-full).Data, &rep); err != nil || rep.ReplicaID != "r1" || rep.Served == 0 || rep.LatencyBuckets == nil {
		t.Errorf("full report = %+v, %v: want r1's, with the request totals", rep, err)
	}
}
