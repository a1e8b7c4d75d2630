package autoscaler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	app = "a"
	dep = "d"
)

// env is an embedded JetStream with the shared buckets and fake replicas
// and routers that push load the way the real ones do.
type env struct {
	t testing.TB
	*natstest.Fleet

	mu       sync.Mutex
	replicas map[string]int // replica ID → ongoing; guarded by mu
	queued   int            // at the one fake router; guarded by mu
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, Fleet: natstest.NewFleet(t), replicas: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go e.push(ctx, done)
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// push publishes every fake replica's LoadReport and the router's stats
// every 50 ms, as replicas (≤ 1 s) and routers (on change) would.
func (e *env) push(ctx context.Context, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		e.mu.Lock()
		for id, n := range e.replicas {
			b, _ := json.Marshal(protocol.LoadReport{ReplicaID: id, App: app, Deployment: dep, Ongoing: n, Max: 100, At: time.Now()})
			_ = e.NC.Publish(e.Names.LoadSubject(app, dep), b)
		}
		b, _ := json.Marshal(protocol.RouterStats{RouterID: "router-1", Queued: map[string]int{app + "/" + dep: e.queued}, At: time.Now()})
		_ = e.NC.Publish(e.Names.RouterStatsSubject(), b)
		e.mu.Unlock()
	}
}

// setReplicas makes n RUNNING replicas with ongoing requests each.
func (e *env) setReplicas(n, ongoing int) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for id := range e.replicas {
		_ = e.Buckets.Replicas.Delete(context.Background(), protocol.ReplicaKey(app, dep, "w1", id))
		delete(e.replicas, id)
	}
	for i := range n {
		id := fmt.Sprintf("r%d", i)
		e.replicas[id] = ongoing
		natstest.PutReplica(e.t, e.Buckets, protocol.ReplicaInfo{ID: id, App: app, Deployment: dep, WorkerID: "w1", State: protocol.ReplicaRunning, Heartbeat: time.Now()})
	}
}

func (e *env) setQueued(n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.queued = n
}

func (e *env) putConfig(ac config.AutoscalingConfig) {
	e.t.Helper()
	sc := config.ServeConfig{Applications: []config.Application{{Name: app, RoutePrefix: "/a", Ingress: dep,
		Deployments: []config.Deployment{{Name: dep, Handler: "echo", AutoscalingConfig: &ac}}}}}
	natstest.ApplyConfig(e.t, e.Buckets, sc)
}

// decision reads the deployment's decision (ok false when there is none).
func (e *env) decision() (protocol.ScaleDecision, bool) {
	ent, err := e.Buckets.Scale.Get(context.Background(), protocol.ScaleKey(app, dep))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return protocol.ScaleDecision{}, false
	}
	if err != nil {
		e.t.Fatalf("get decision: %v", err)
	}
	var d protocol.ScaleDecision
	if err := json.Unmarshal(ent.Value(), &d); err != nil {
		e.t.Fatal(err)
	}
	return d, true
}

// waitDesired polls until the decision says want and returns it.
func (e *env) waitDesired(want int, within time.Duration) protocol.ScaleDecision {
	e.t.Helper()
	deadline := time.Now().Add(within)
	var last protocol.ScaleDecision
	for time.Now().Before(deadline) {
		if d, ok := e.decision(); ok {
			last = d
			if d.Desired == want {
				return d
			}
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	e.t.Fatalf("decision = %+v, want desired %d within %v", last, want, within)
	return last
}

type instance struct {
	id     string
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (i *instance) stop(t testing.TB) {
	t.Helper()
	i.once.Do(func() {
		i.cancel()
		select {
		case err := <-i.done:
			if err != nil {
				t.Errorf("Run(%s) = %v, want nil", i.id, err)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("Run(%s) did not return", i.id)
		}
	})
}

func (i *instance) leading() bool { return value(i.reg, "jetserve_autoscaler_is_leader", "", "") == 1 }

func (e *env) start(id string) *instance {
	e.t.Helper()
	cfg := DefaultConfig()
	cfg.ID = id
	cfg.OpsAddr = ""
	cfg.Interval = 20 * time.Millisecond
	cfg.Warmup = 200 * time.Millisecond
	i := &instance{id: id, reg: prometheus.NewRegistry(), done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	i.cancel = cancel
	nc := natstest.Conn(e.t, e.NS)
	go func() {
		i.done <- Run(ctx, cfg, service.Deps{NC: nc, Log: zerolog.New(zerolog.NewTestWriter(e.t)).Level(zerolog.InfoLevel), Metrics: i.reg})
	}()
	e.t.Cleanup(func() { i.stop(e.t) })
	return i
}

func dur(d time.Duration) *config.Duration { c := config.Duration(d); return &c }
func intp(n int) *int                      { return &n }

// fast is an autoscaling config with short delays and windows.
func fast(mod func(*config.AutoscalingConfig)) config.AutoscalingConfig {
	ac := config.AutoscalingConfig{MinReplicas: intp(0), MaxReplicas: 6, TargetOngoingRequests: 2,
		UpscaleDelay: dur(0), DownscaleDelay: dur(300 * time.Millisecond), DownscaleToZeroDelay: dur(300 * time.Millisecond),
		LookBackPeriod: config.Duration(200 * time.Millisecond), MetricsInterval: config.Duration(20 * time.Millisecond)}
	if mod != nil {
		mod(&ac)
	}
	return ac
}

// TestScaleCycle drives one deployment through a whole cycle with fake
// load: initial 0, cold start on a queued request, up under load, down
// when idle, and back to zero — each step a decision in the Scale bucket.
func TestScaleCycle(t *testing.T) {
	e := newEnv(t)
	e.putConfig(fast(nil))
	inst := e.start("as-1")

	d := e.waitDesired(0, 10*time.Second)
	if d.Reason != protocol.ScaleInitial {
		t.Errorf("first decision = %+v, want reason initial", d)
	}

	start := time.Now()
	e.setQueued(3)
	d = e.waitDesired(2, 5*time.Second)
	took := time.Since(start)
	t.Logf("cold start decision after %v: %+v", took, d)
	if d.Reason != protocol.ScaleColdStart || d.Queued != 3 {
		t.Errorf("cold start decision = %+v, want reason cold_start with 3 queued", d)
	}
	if took > time.Second {
		t.Errorf("cold start decision took %v, want well under 1s", took)
	}

	e.setQueued(0)
	e.setReplicas(2, 5) // 10 ongoing at target 2 → 5
	d = e.waitDesired(5, 5*time.Second)
	if d.Reason != protocol.ScaleUp || d.Target != 2 {
		t.Errorf("upscale decision = %+v, want reason upscale, target 2", d)
	}
	e.setReplicas(5, 100) // far beyond max 6
	e.waitDesired(6, 5*time.Second)
	if got := value(inst.reg, "jetserve_autoscaling_target_replicas", "deployment", dep); got != 6 {
		t.Errorf("jetserve_autoscaling_target_replicas = %v, want 6", got)
	}

	e.setReplicas(6, 1) // 6 ongoing → 3
	d = e.waitDesired(3, 5*time.Second)
	if d.Reason != protocol.ScaleDown {
		t.Errorf("downscale decision = %+v, want reason downscale", d)
	}
	e.setReplicas(1, 0)
	d = e.waitDesired(0, 5*time.Second)
	if d.Reason != protocol.ScaleToZero {
		t.Errorf("last decision = %+v, want reason scale_to_zero", d)
	}
	for _, reason := range []protocol.ScaleReason{protocol.ScaleInitial, protocol.ScaleColdStart, protocol.ScaleUp, protocol.ScaleDown, protocol.ScaleToZero} {
		c := value(inst.reg, "jetserve_autoscaling_decisions_total", "reason", string(reason))
		if c < 1 {
			t.Errorf("jetserve_autoscaling_decisions_total{reason=%q} = %v, want >= 1", reason, c)
		}
	}
}

// TestNeverToZeroWhileBusy: ongoing requests keep one replica however
// long the to-zero delay has passed.
func TestNeverToZeroWhileBusy(t *testing.T) {
	e := newEnv(t)
	e.putConfig(fast(func(ac *config.AutoscalingConfig) { ac.InitialReplicas = intp(1); ac.TargetOngoingRequests = 100 }))
	e.setReplicas(1, 1)
	e.start("as-1")
	e.waitDesired(1, 10*time.Second)
	deadline := time.Now().Add(1500 * time.Millisecond) // 5× the to-zero delay
	for time.Now().Before(deadline) {
		if d, _ := e.decision(); d.Desired != 1 {
			t.Fatalf("decision = %+v while a request is ongoing, want 1", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.setReplicas(1, 0)
	e.waitDesired(0, 5*time.Second)
}

// TestFailoverKeepsDecisions: the leader decides 4 under load; it stops
// and the standby takes over with the load gone but a long downscale
// delay: the decision stays 4 (read back, not reset to initial), and the
// new leader reports it.
func TestFailoverKeepsDecisions(t *testing.T) {
	e := newEnv(t)
	e.putConfig(fast(func(ac *config.AutoscalingConfig) {
		ac.InitialReplicas = intp(1)
		ac.DownscaleDelay, ac.DownscaleToZeroDelay = dur(time.Hour), dur(time.Hour)
	}))
	e.setReplicas(1, 8)
	a := e.start("as-a")
	first := e.waitDesired(4, 10*time.Second)
	b := e.start("as-b")
	if !a.leading() || b.leading() {
		t.Fatalf("leading: as-a %v, as-b %v; want as-a only", a.leading(), b.leading())
	}
	e.setReplicas(4, 0)
	a.stop(t)
	deadline := time.Now().Add(15 * time.Second)
	for !b.leading() {
		if time.Now().After(deadline) {
			t.Fatal("standby never took over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The new leader warms up, then holds 4 through the long delay.
	until := time.Now().Add(time.Second)
	for time.Now().Before(until) {
		d, _ := e.decision()
		if d.Desired != 4 {
			t.Fatalf("after failover decision = %+v, want desired 4 kept (before: %+v)", d, first)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := value(b.reg, "jetserve_autoscaling_target_replicas", "deployment", dep); got != 4 {
		t.Errorf("new leader's jetserve_autoscaling_target_replicas = %v, want 4", got)
	}
	// It still acts: load returns and it scales up.
	e.setReplicas(4, 5)
	d := e.waitDesired(6, 5*time.Second)
	if d.Epoch == first.Epoch {
		t.Errorf("decision epoch %d after failover, want the new leader's (not %d)", d.Epoch, first.Epoch)
	}
}

// TestDropsDecisionOfRemovedDeployment: a deployment no longer autoscaled
// loses its decision, so that a later autoscaling_config starts afresh.
func TestDropsDecisionOfRemovedDeployment(t *testing.T) {
	e := newEnv(t)
	e.putConfig(fast(nil))
	e.start("as-1")
	e.waitDesired(0, 10*time.Second)
	natstest.PutConfig(t, e.Buckets, config.ServeConfig{})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := e.decision(); !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("decision still there after the deployment was removed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunServesHealthAndMetrics(t *testing.T) {
	ns := natstest.Server(t)
	natstest.FleetOn(t, ns, nil) // the scheduler creates the buckets; the autoscaler binds
	cfg := DefaultConfig()
	cfg.OpsAddr = "127.0.0.1:0"
	addrc := make(chan net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, service.Deps{NC: natstest.Conn(t, ns), Log: zerolog.Nop(), OpsReady: func(a net.Addr) { addrc <- a }})
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case <-time.After(10 * time.Second):
		t.Fatal("ops server did not start")
	}
	base := "http://" + addr.String()
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d %q, want 200", code, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := get(t, base+"/metrics")
		if strings.Contains(body, "jetserve_autoscaler_is_leader 1") && strings.Contains(body, "jetserve_autoscaler_desired_workers") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks the leader and desired-workers gauges:\n%s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v, want nil after cancel", err)
	}
}

func TestValidateNamesTheOption(t *testing.T) {
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{"log.level", func(c *Config) { c.Log.Level = "loud" }},
		{"interval", func(c *Config) { c.Interval = 0 }},
		{"id", func(c *Config) { c.ID = "" }},
		{"stale_after", func(c *Config) { c.StaleAfter = -1 }},
		{"warmup", func(c *Config) { c.Warmup = -1 }},
	} {
		t.Run(tc.key, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.mod(&cfg)
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("Validate() = %v, want an error naming %s", err, tc.key)
			}
		})
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// value gathers reg and returns the value of the first series of the
// gauge or counter name whose label equals want (any series when label
// is ""), -1 when there is none.
func value(reg *prometheus.Registry, name, label, want string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == want {
					match = true
				}
			}
			if !match {
				continue
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestDesiredWorkersFollowsPendingCodes: the leader's desired-workers
// gauge follows the status the scheduler writes, counting the PENDING
// replicas whose reason code says more workers would place them — and
// ignoring a message that reads like it under another code.
func TestDesiredWorkersFollowsPendingCodes(t *testing.T) {
	e := newEnv(t)
	i := e.start("as-1")
	putStatus := func(why protocol.Reason, message string, n int) {
		t.Helper()
		ds := protocol.DeploymentStatus{Name: dep}
		for range n {
			r := why
			ds.Replicas = append(ds.Replicas, protocol.ReplicaStatus{ID: "p", State: protocol.ReplicaPending, Message: message, Reason: &r})
		}
		st := protocol.Status{Workers: []protocol.WorkerStatus{{ID: "w1", CPU: 4}, {ID: "w2", CPU: 4}},
			Applications: map[string]protocol.AppStatus{app: {Name: app, Deployments: map[string]protocol.DeploymentStatus{dep: ds}}}}
		b, _ := json.Marshal(st)
		if _, err := e.Buckets.Status.Put(context.Background(), fleetstate.StatusKey, b); err != nil {
			t.Fatal(err)
		}
	}
	gauge := func() float64 { return value(i.reg, "jetserve_autoscaler_desired_workers", "", "") }
	need := &protocol.Need{Handler: "echo", CPU: 2}
	putStatus(protocol.Reason{Code: protocol.ReasonNoRoom, Need: need, Short: []protocol.Resource{protocol.ResourceCPU}}, "", 6)
	waitfor.True(t, 10*time.Second, "desired workers 2+3 for six 2-CPU replicas with no room on 4-CPU workers", func() bool { return gauge() == 5 })
	putStatus(protocol.Reason{Code: protocol.ReasonNoHandler, Need: need}, "no worker has 2 CPU free", 6)
	waitfor.True(t, 10*time.Second, "desired workers back to the 2 live ones under a no_handler code", func() bool { return gauge() == 2 })
}
