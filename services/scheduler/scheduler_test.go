package scheduler_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type instance struct {
	id     string
	cancel context.CancelFunc
	done   chan error
	url    string
	once   sync.Once
	reg    *prometheus.Registry
}

func (i *instance) stop(t testing.TB) {
	t.Helper()
	i.once.Do(func() { i.stopOnce(t) })
}

func (i *instance) stopOnce(t testing.TB) {
	t.Helper()
	i.cancel()
	select {
	case err := <-i.done:
		if err != nil {
			t.Errorf("Run(%s) = %v, want nil", i.id, err)
		}
	case <-time.After(15 * time.Second):
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("Run(%s) did not return after cancel\n%s", i.id, buf[:n])
	}
}

func start(t testing.TB, ns *server.Server, id string) *instance {
	t.Helper()
	return startWith(t, ns, id, nil)
}

// startWith is start with the config changed by mod.
func startWith(t testing.TB, ns *server.Server, id string, mod func(*scheduler.Config)) *instance {
	t.Helper()
	cfg := scheduler.DefaultConfig()
	cfg.ID = id
	cfg.NATS.URL = ns.ClientURL()
	cfg.OpsAddr = ""
	cfg.AdminAddr = "127.0.0.1:0"
	cfg.ReconcileInterval = 100 * time.Millisecond
	addr := make(chan net.Addr, 1)
	cfg.AdminReady = func(a net.Addr) { addr <- a }
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{id: id, cancel: cancel, done: make(chan error, 1), reg: prometheus.NewRegistry()}
	nc := natstest.Conn(t, ns)
	go func() {
		inst.done <- scheduler.Run(ctx, cfg, service.Deps{NC: nc, Log: zerolog.New(io.Discard), Metrics: inst.reg})
	}()
	select {
	case a := <-addr:
		inst.url = "http://" + a.String()
	case err := <-inst.done:
		t.Fatalf("Run(%s) = %v before serving", id, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("Run(%s): admin API not listening", id)
	}
	t.Cleanup(func() { inst.stop(t) })
	return inst
}

func buckets(t testing.TB, ns *server.Server) *fleetstate.Buckets {
	t.Helper()
	return natstest.FleetOn(t, ns, nil).Buckets
}

func put(t testing.TB, url, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url+"/api/serve/applications", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT = %d %s, want 200", resp.StatusCode, b)
	}
}

func status(t testing.TB, url string) protocol.Status {
	t.Helper()
	resp, err := http.Get(url + "/api/serve/applications")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s protocol.Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func leaseHolder(b *fleetstate.Buckets) string {
	ent, err := b.Leases.Get(context.Background(), scheduler.LeaseKey)
	if err != nil {
		return ""
	}
	return string(ent.Value())
}

func TestConfig(t *testing.T) {
	cfg := scheduler.DefaultConfig()
	if err := service.Load(&cfg, "scheduler", []string{"--reconcile_interval", "250ms", "--id", "s1"},
		[]string{"JETSERVE_ADMIN_ADDR=127.0.0.1:9999"}, io.Discard); err != nil {
		t.Fatalf("Load = %v", err)
	}
	if cfg.ReconcileInterval != 250*time.Millisecond || cfg.ID != "s1" || cfg.AdminAddr != "127.0.0.1:9999" || cfg.OpsAddr != ":9103" {
		t.Errorf("Load = %+v, want reconcile_interval 250ms, id s1, admin_addr :9999, ops_addr :9103", cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
	bad := cfg
	bad.ReconcileInterval = 0
	bad.AdminAddr = ""
	err := bad.Validate()
	if err == nil || !strings.Contains(err.Error(), "reconcile_interval") || !strings.Contains(err.Error(), "admin_addr") {
		t.Errorf("Validate() = %v, want errors naming reconcile_interval and admin_addr", err)
	}

	// Rebalancing: on by default; both options load and are validated.
	if !cfg.Rebalance || cfg.RebalanceCooldown != 10*time.Second {
		t.Errorf("defaults: rebalance %v, rebalance_cooldown %s; want true, 10s", cfg.Rebalance, cfg.RebalanceCooldown)
	}
	cfg = scheduler.DefaultConfig()
	if err := service.Load(&cfg, "scheduler", nil, []string{"JETSERVE_REBALANCE=false", "JETSERVE_REBALANCE_COOLDOWN=2s"}, io.Discard); err != nil {
		t.Fatalf("Load = %v", err)
	}
	if cfg.Rebalance || cfg.RebalanceCooldown != 2*time.Second {
		t.Errorf("Load: rebalance %v, rebalance_cooldown %s; want false, 2s", cfg.Rebalance, cfg.RebalanceCooldown)
	}
	cfg.RebalanceCooldown = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "rebalance_cooldown") {
		t.Errorf("Validate(rebalance_cooldown 0) = %v, want an error naming rebalance_cooldown", err)
	}
}

func TestLeaderElection(t *testing.T) {
	ns := natstest.Server(t)
	b := buckets(t, ns)
	s1 := start(t, ns, "s1")
	s2 := start(t, ns, "s2")
	eventually(t, 10*time.Second, func() (bool, string) {
		h := leaseHolder(b)
		return h == "s1" || h == "s2", "lease holder " + h
	})
	leader, standby := s1, s2
	if leaseHolder(b) == "s2" {
		leader, standby = s2, s1
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		s := status(t, standby.url) // any instance serves the API
		return s.Leader == leader.id, "status leader " + s.Leader
	})
	leader.stop(t)
	stopped := time.Now()
	eventually(t, 5*time.Second, func() (bool, string) {
		h := leaseHolder(b)
		return h == standby.id, "lease holder " + h
	})
	eventually(t, 5*time.Second, func() (bool, string) {
		s := status(t, standby.url)
		return s.Leader == standby.id, "status leader " + s.Leader
	})
	t.Logf("standby took over %s after the leader stopped", time.Since(stopped))
}

func appConfig(replicas, maxOngoing int, extra string) string {
	return fmt.Sprintf(`
applications:
- name: app
  route_prefix: /app
  ingress: front
  deployments:
  - name: front
    handler: echo
    num_replicas: %d
    max_ongoing_requests: %d
    resources: {cpu: 1}
%s`, replicas, maxOngoing, extra)
}

func TestReconcileAssignmentsAndWorkerLost(t *testing.T) {
	ctx := context.Background()
	ns, b, f := startFleet(t, 0)
	f.addWorker(ctx, protocol.WorkerInfo{ID: "w1", CPU: 4, MemoryBytes: 8 << 30})
	f.addWorker(ctx, protocol.WorkerInfo{ID: "w2", CPU: 4, MemoryBytes: 8 << 30})
	f.addWorker(ctx, protocol.WorkerInfo{ID: "gpu", CPU: 4, MemoryBytes: 8 << 30, Handlers: []string{"llm"},
		GPUs: []protocol.GPU{{Index: 0, Type: "h100"}}})
	s := start(t, ns, "s1")
	put(t, s.url, appConfig(2, 5, `  - name: llm
    handler: llm
    num_replicas: 4
    resources: {cpu: 0.5, gpu: 0.3, labels: {gpu.type: h100}}
`))

	eventually(t, 10*time.Second, func() (bool, string) {
		a1, a2, g := assignment(t, b, "w1"), assignment(t, b, "w2"), assignment(t, b, "gpu")
		return len(a1.Replicas) == 1 && len(a2.Replicas) == 1 && len(g.Replicas) == 3,
			fmt.Sprintf("assignments w1=%d w2=%d gpu=%d", len(a1.Replicas), len(a2.Replicas), len(g.Replicas))
	})
	a := assignment(t, b, "gpu")
	if a.Epoch == 0 {
		t.Errorf("assignment epoch = 0, want the lease epoch")
	}
	for _, r := range a.Replicas {
		if len(r.GPUIndices) != 1 || r.GPUIndices[0] != 0 || r.GPU != 0.3 {
			t.Errorf("replica %s gpu = %v on %v, want 0.3 on [0]", r.ID, r.GPU, r.GPUIndices)
		}
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		st := status(t, s.url)
		app := st.Applications["app"]
		llm := app.Deployments["llm"]
		pending := 0
		for _, r := range llm.Replicas {
			if r.State == protocol.ReplicaPending && r.Reason != nil && r.Reason.Code == protocol.ReasonNoRoom &&
				r.Message == "no worker has 0.3 GPU free with gpu.type=h100" {
				pending++
			}
		}
		return app.Deployments["front"].Status == protocol.DeploymentHealthy && pending == 1 && app.Status == protocol.AppDeploying,
			fmt.Sprintf("status %+v", app)
	})
	st := status(t, s.url)
	if len(st.Workers) != 3 || st.Workers[0].ID != "gpu" || st.Workers[0].GPUUsed[0] < 0.89 {
		t.Errorf("worker status = %+v, want gpu worker with 0.9 GPU used", st.Workers)
	}

	// w1 dies: its replica is placed on w2 under a new ID.
	lost := assignment(t, b, "w1").Replicas[0].ID
	f.killWorker(ctx, "w1")
	eventually(t, 10*time.Second, func() (bool, string) {
		a2 := assignment(t, b, "w2")
		for _, r := range a2.Replicas {
			if r.ID == lost {
				return false, "lost replica kept its ID"
			}
		}
		_, err := b.Assignments.Get(ctx, protocol.AssignmentKey("w1"))
		return len(a2.Replicas) == 2 && err != nil, fmt.Sprintf("w2 has %d replicas; w1 assignment err %v", len(a2.Replicas), err)
	})
	if got := labelled(s.reg, "jetserve_replica_replacements_total", "reason", string(protocol.ReasonWorkerLost)); got != 1 {
		t.Errorf("replacements{reason=worker_lost} = %v, want 1", got)
	}

	// Deleting the app empties every assignment; status says DELETING then drops it.
	req, _ := http.NewRequest(http.MethodDelete, s.url+"/api/serve/applications/app", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE app = %d, want 200", resp.StatusCode)
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		n := len(assignment(t, b, "w2").Replicas) + len(assignment(t, b, "gpu").Replicas)
		_, present := status(t, s.url).Applications["app"]
		return n == 0 && !present, fmt.Sprintf("%d replicas still assigned; app in status %v", n, present)
	})
}

func TestRollingUpdate(t *testing.T) {
	ctx := context.Background()
	ns, b, f := startFleet(t, 300*time.Millisecond)
	for i := range 3 {
		f.addWorker(ctx, protocol.WorkerInfo{ID: fmt.Sprintf("w%d", i), CPU: 4, MemoryBytes: 8 << 30})
	}
	s := start(t, ns, "s1")
	const target = 5
	put(t, s.url, appConfig(target, 5, ""))
	ids := func() (map[string]bool, string) {
		out := map[string]bool{}
		ver := ""
		for i := range 3 {
			for _, r := range assignment(t, b, fmt.Sprintf("w%d", i)).Replicas {
				out[r.ID] = true
				ver = r.Version
			}
		}
		return out, ver
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		a := status(t, s.url).Applications["app"]
		return a.Status == protocol.AppRunning, fmt.Sprintf("app %+v", a)
	})
	oldIDs, oldVer := ids()
	f.setFloor("app/front", target)

	// user_config only: same replicas, reconfigured in place.
	put(t, s.url, appConfig(target, 5, "    user_config: {threshold: 0.5}\n"))
	eventually(t, 10*time.Second, func() (bool, string) {
		for i := range 3 {
			for _, r := range assignment(t, b, fmt.Sprintf("w%d", i)).Replicas {
				if string(r.UserConfig) != `{"threshold":0.5}` {
					return false, fmt.Sprintf("replica %s user_config %s", r.ID, r.UserConfig)
				}
			}
		}
		return true, ""
	})
	if now, _ := ids(); len(now) != target || !sameKeys(now, oldIDs) {
		t.Fatalf("replicas after user_config change = %v, want unchanged %v", now, oldIDs)
	}

	// max_ongoing_requests: a rolling restart, never below target RUNNING.
	put(t, s.url, appConfig(target, 9, "    user_config: {threshold: 0.5}\n"))
	eventually(t, 30*time.Second, func() (bool, string) {
		if v := f.violated(); v != "" {
			t.Fatalf("rolling update dropped capacity: %s", v)
		}
		now, ver := ids()
		for id := range now {
			if oldIDs[id] {
				return false, "old replica " + id + " still assigned"
			}
		}
		a := status(t, s.url).Applications["app"]
		return len(now) == target && ver != oldVer && a.Status == protocol.AppRunning,
			fmt.Sprintf("%d replicas, version %s, app %s", len(now), ver, a.Status)
	})
	if v := f.violated(); v != "" {
		t.Fatalf("rolling update dropped capacity: %s", v)
	}
}

func sameKeys(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func TestHealthCheckReplacement(t *testing.T) {
	ctx := context.Background()
	ns, b, f := startFleet(t, 0)
	f.addWorker(ctx, protocol.WorkerInfo{ID: "w1", CPU: 4, MemoryBytes: 8 << 30})
	f.addWorker(ctx, protocol.WorkerInfo{ID: "w2", CPU: 4, MemoryBytes: 8 << 30})
	s := start(t, ns, "s1")
	put(t, s.url, appConfig(1, 5, "    health_check_period: 100ms\n    health_check_timeout: 200ms\n"))
	var sick, sickWorker string
	eventually(t, 10*time.Second, func() (bool, string) {
		for _, w := range []string{"w1", "w2"} {
			if a := assignment(t, b, w); len(a.Replicas) == 1 {
				sick, sickWorker = a.Replicas[0].ID, w
			}
		}
		a := status(t, s.url).Applications["app"]
		return sick != "" && a.Status == protocol.AppRunning, fmt.Sprintf("app %+v", a)
	})
	f.setUnhealthy(sick)
	other := map[string]string{"w1": "w2", "w2": "w1"}[sickWorker]
	eventually(t, 10*time.Second, func() (bool, string) {
		a := assignment(t, b, other)
		gone := len(assignment(t, b, sickWorker).Replicas) == 0
		return gone && len(a.Replicas) == 1 && a.Replicas[0].ID != sick,
			fmt.Sprintf("%s assigned %d replicas; sick replica gone %v", other, len(a.Replicas), gone)
	})
	for name, min := range map[string]float64{"jetserve_scheduler_is_leader": 1, "jetserve_health_check_failures_total": 3,
		"jetserve_deployment_target_replicas": 1, "jetserve_scheduler_reconcile_duration_seconds": 0} {
		mfs, err := s.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() == name {
				found = true
			}
		}
		if !found {
			t.Errorf("metric %s not registered", name)
		}
		if min > 0 && name != "jetserve_deployment_target_replicas" {
			if got := sumMetric(t, s.reg, name); got < min {
				t.Errorf("metric %s = %v, want >= %v", name, got, min)
			}
		}
	}
	// The replacement is counted under its reason code.
	const replacements = "jetserve_replica_replacements_total"
	if got := labelled(s.reg, replacements, "reason", string(protocol.ReasonHealthCheck)); got != 1 {
		t.Errorf("%s{reason=%q} = %v, want 1", replacements, protocol.ReasonHealthCheck, got)
	}
	if got := sumMetric(t, s.reg, replacements); got != 1 {
		t.Errorf("%s = %v in all, want only the health-check replacement", replacements, got)
	}
}

// series returns the series of the metric name.
func series(reg *prometheus.Registry, name string) []*dto.Metric {
	mfs, _ := reg.Gather()
	i := slices.IndexFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == name })
	if i < 0 {
		return nil
	}
	return mfs[i].GetMetric()
}

// labelled sums the series of the metric name whose label is value (every
// series when label is "").
func labelled(reg *prometheus.Registry, name, label, value string) float64 {
	var sum float64
	for _, m := range series(reg, name) {
		if label == "" || slices.ContainsFunc(m.GetLabel(), func(lp *dto.LabelPair) bool {
			return lp.GetName() == label && lp.GetValue() == value
		}) {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

func TestPendingWithoutWorkers(t *testing.T) {
	ns := natstest.Server(t)
	s := start(t, ns, "s1")
	// With no workers the app stays DEPLOYING and its replica PENDING with
	// the reason.
	put(t, s.url, appConfig(1, 5, ""))
	eventually(t, 10*time.Second, func() (bool, string) {
		a := status(t, s.url).Applications["app"]
		var msg string
		var code protocol.ReasonCode
		if rs := a.Deployments["front"].Replicas; len(rs) == 1 && rs[0].Reason != nil {
			msg, code = rs[0].Message, rs[0].Reason.Code
		}
		return a.Status == protocol.AppDeploying && code == protocol.ReasonNoWorkers && msg == "no live workers",
			fmt.Sprintf("app %+v", a)
	})
	resp, err := http.Get(s.url + "/api/serve/config")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`"name":"front"`)) {
		t.Errorf("GET config = %s, want the applied config", body)
	}
}

// sumMetric sums every series of the metric name.
func sumMetric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return labelled(reg, name, "", "")
}

func TestFailoverKeepsReplicas(t *testing.T) {
	ctx := context.Background()
	ns, b, f := startFleet(t, 0)
	f.addWorker(ctx, protocol.WorkerInfo{ID: "w1", CPU: 4, MemoryBytes: 8 << 30})
	s1 := start(t, ns, "s1")
	eventually(t, 10*time.Second, func() (bool, string) { return leaseHolder(b) == "s1", "holder " + leaseHolder(b) })
	s2 := start(t, ns, "s2")
	put(t, s2.url, appConfig(3, 5, ""))
	eventually(t, 10*time.Second, func() (bool, string) {
		a := status(t, s2.url).Applications["app"]
		return a.Status == protocol.AppRunning, fmt.Sprintf("app %+v", a)
	})
	before := assignment(t, b, "w1")
	s1.stop(t)
	eventually(t, 10*time.Second, func() (bool, string) {
		st := status(t, s2.url)
		return st.Leader == "s2" && st.Applications["app"].Status == protocol.AppRunning, "leader " + st.Leader
	})
	after := assignment(t, b, "w1")
	if after.Epoch <= before.Epoch {
		t.Errorf("assignment epoch after failover = %d, want > %d", after.Epoch, before.Epoch)
	}
	if fmt.Sprint(ids(after)) != fmt.Sprint(ids(before)) {
		t.Errorf("replicas after failover = %v, want unchanged %v", ids(after), ids(before))
	}
}

func ids(a protocol.Assignment) []string {
	var out []string
	for _, r := range a.Replicas {
		out = append(out, r.ID)
	}
	return out
}

// TestConfigSeenPromptlyAfterServerRestart: the leader follows its
// buckets with kvfollow, which re-reads them as soon as the connection
// comes back, so a config stored right after NATS restarted is acted on
// within a couple of seconds; a bare KV watcher noticed the new server
// only at its own activity check, seconds later.
func TestConfigSeenPromptlyAfterServerRestart(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.ServerIn(t, dir)
	s := start(t, ns, "s1")
	put(t, s.url, appConfig(1, 5, ""))
	fetch := func() (protocol.Status, error) {
		resp, err := http.Get(s.url + "/api/serve/applications")
		if err != nil {
			return protocol.Status{}, err
		}
		defer resp.Body.Close()
		var st protocol.Status
		if resp.StatusCode != http.StatusOK {
			return st, fmt.Errorf("GET status = %d", resp.StatusCode)
		}
		return st, json.NewDecoder(resp.Body).Decode(&st)
	}
	// pending reports whether app's replica is PENDING for want of workers
	// in the leader's status (not the admin API's placeholder).
	pending := func(app string) (bool, string) {
		st, err := fetch()
		if err != nil {
			return false, err.Error()
		}
		a := st.Applications[app]
		rs := a.Deployments["front"].Replicas
		return st.Leader == "s1" && len(rs) == 1 && rs[0].Reason != nil && rs[0].Reason.Code == protocol.ReasonNoWorkers,
			fmt.Sprintf("status %+v", st)
	}
	eventually(t, 10*time.Second, func() (bool, string) { return pending("app") })

	natstest.Restart(t, ns, dir)
	later := strings.Replace(appConfig(1, 5, ""), "name: app\n", "name: later\n", 1)
	var stored time.Time
	eventually(t, 30*time.Second, func() (bool, string) {
		req, _ := http.NewRequest(http.MethodPut, s.url+"/api/serve/applications", strings.NewReader(later))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		stored = time.Now()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("PUT after the restart = %d", resp.StatusCode)
	})
	eventually(t, 30*time.Second, func() (bool, string) { return pending("later") })
	took := time.Since(stored)
	t.Logf("acted on the config %v after it was stored", took.Round(time.Millisecond))
	if took > 4*time.Second {
		t.Errorf("the leader acted on the config stored after the restart %v later, want within a few seconds", took.Round(time.Millisecond))
	}
}

// An assignment under a key of no worker (the layout before
// protocol.AssignmentKey: the bare worker id), which no worker reads, is
// deleted by the next leader.
func TestLeaderDeletesAssignmentsUnderNoWorkersKey(t *testing.T) {
	ctx := context.Background()
	ns := natstest.Server(t)
	b := buckets(t, ns)
	old, _ := json.Marshal(protocol.Assignment{WorkerID: "w1", Epoch: 1})
	if _, err := b.Assignments.Put(ctx, "w1", old); err != nil {
		t.Fatal(err)
	}
	start(t, ns, "s1")
	eventually(t, 10*time.Second, func() (bool, string) {
		_, err := b.Assignments.Get(ctx, "w1")
		return errors.Is(err, jetstream.ErrKeyNotFound), fmt.Sprintf("the old-layout key: %v", err)
	})
}
