package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StartTimeout bounds how long one process may take to become healthy.
const StartTimeout = 30 * time.Second

// Options say how many of each service a fleet runs.
type Options struct {
	Ingresses   int  // default 1
	Routers     int  // default 1
	Workers     int  // default 1
	Schedulers  int  // default 1
	Autoscaler  bool // one autoscaler (Autoscalers says how many)
	Autoscalers int
	// WorkerCPU is the CPU each worker advertises (resources.cpu); default
	// 8, so rolling updates have room for old and new replicas at once.
	WorkerCPU float64
	// LogLevel of every service; default "info".
	LogLevel string
	// SchedulerEnv is extra environment for every scheduler (options such
	// as JETSERVE_REBALANCE).
	SchedulerEnv map[string]string
	// NATSNodes > 1 runs NATS as a JetStream cluster of that many
	// nats-server processes (StartCluster) instead of one stock server;
	// every service then gets every node's URL and nats.replicas = 3 (or
	// NATSNodes, if smaller).
	NATSNodes int
	// Cluster, when set, is a running cluster (StartCluster) the fleet
	// uses instead of starting NATS.
	Cluster *Cluster
	// WorkerEnv[i], when present, is extra environment of the i-th
	// worker started (by Start or AddWorker…): labels, a config file declaring GPUs…
	WorkerEnv []map[string]string
	// Env is extra environment of every service.
	Env map[string]string
	// IngressEnv is extra environment of every ingress (options only the
	// ingress has, such as JETSERVE_MAX_BODY_BYTES).
	IngressEnv map[string]string
}

func (o Options) withDefaults() Options {
	one := func(n *int) {
		if *n == 0 {
			*n = 1
		}
	}
	one(&o.Ingresses)
	one(&o.Routers)
	one(&o.Workers)
	one(&o.Schedulers)
	if o.WorkerCPU == 0 {
		o.WorkerCPU = 8
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	return o
}

// Service is one running jetserve service process. Its servers listen on
// port 0; their addresses are read back from its log ("ops listening",
// "ingress listening", "admin API listening"), never chosen by the test.
type Service struct {
	*Proc
	Kind string // binary name, e.g. jetserve-worker
	// ID is the id option given to workers and schedulers ("" for others).
	ID string

	tb    testing.TB
	mu    sync.Mutex
	addrs map[string]string // guarded by mu: log message → address

	bin string            // the binary's path
	env map[string]string // its environment, for Restart
}

// addr returns the address s logged with msg, waiting for the line.
func (s *Service) addr(msg string) string {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.addrs[msg]; ok {
		return a
	}
	a := s.LoggedAddr(s.tb, msg, StartTimeout)
	s.addrs[msg] = a
	return a
}

// OpsAddr is the address of the ops server (/metrics, /healthz).
func (s *Service) OpsAddr() string { return s.addr("ops listening") }

// OpsURL is the base URL of the ops server.
func (s *Service) OpsURL() string { return "http://" + s.OpsAddr() }

// URL is the ingress's public base URL.
func (s *Service) URL() string { return "http://" + s.addr("ingress listening") }

// AdminURL is the scheduler's admin API base URL.
func (s *Service) AdminURL() string { return "http://" + s.addr("admin API listening") }

// NATS is the standalone nats-server process.
type NATS struct {
	*Proc
	URL        string
	MonitorURL string
	StoreDir   string
}

// Fleet is a running jetserve: nats-server and every service, each its
// own process.
type Fleet struct {
	tb   testing.TB
	bins *Binaries
	opt  Options

	// NATS is the one nats-server, nil when Cluster runs instead.
	NATS *NATS
	// Cluster is the NATS cluster when Options.NATSNodes > 1.
	Cluster     *Cluster
	Ingresses   []*Service
	Routers     []*Service
	Workers     []*Service
	Schedulers  []*Service
	Autoscalers []*Service

	mu      sync.Mutex
	stopped map[*Proc]bool // guarded by mu; processes a test stopped on purpose
	seq     map[string]int // guarded by mu; per-kind counter for ids
}

// Start starts nats-server and the services of opt, and waits until every
// process is healthy and the leading scheduler reports every worker.
func Start(tb testing.TB, bins *Binaries, opt Options) *Fleet {
	tb.Helper()
	opt = opt.withDefaults()
	f := &Fleet{tb: tb, bins: bins, opt: opt, stopped: map[*Proc]bool{}, seq: map[string]int{}}
	switch {
	case opt.Cluster != nil:
		f.Cluster = opt.Cluster
	case opt.NATSNodes > 1:
		f.Cluster = StartCluster(tb, bins, opt.NATSNodes)
	default:
		f.NATS = StartNATS(tb, bins)
	}
	var started []*Service
	for range opt.Schedulers {
		started = append(started, f.AddScheduler(false))
	}
	for i := range opt.Workers {
		var env map[string]string
		if i < len(opt.WorkerEnv) {
			env = opt.WorkerEnv[i]
		}
		started = append(started, f.AddWorkerWith(Worker, env, false))
	}
	for range opt.Routers {
		started = append(started, f.AddRouter(false))
	}
	for range opt.Ingresses {
		started = append(started, f.AddIngress(false))
	}
	autoscalers := opt.Autoscalers
	if opt.Autoscaler && autoscalers == 0 {
		autoscalers = 1
	}
	for range autoscalers {
		started = append(started, f.AddAutoscaler(false))
	}
	for _, s := range started {
		f.WaitHealthy(s)
	}
	f.WaitWorkers(len(f.Workers))
	return f
}

// StartNATS starts a standalone nats-server with JetStream (store in a
// temp dir) on free ports and waits until its monitor answers /healthz.
func StartNATS(tb testing.TB, bins *Binaries) *NATS {
	tb.Helper()
	path := bins.Path(tb, NATSServer)
	store := filepath.Join(tb.TempDir(), "jetstream")
	portsDir := tb.TempDir()
	p := StartProc(tb, "nats-server", path, []string{
		"-js", "-sd", store, "-a", "127.0.0.1", "-p", "-1", "-m", "-1", "--ports_file_dir", portsDir, "-n", "e2e",
	}, nil)
	url, mon := natsPorts(tb, p, portsDir)
	n := &NATS{Proc: p, URL: url, MonitorURL: mon, StoreDir: store}
	Eventually(tb, StartTimeout, "nats-server healthy", func() error {
		if p.Exited() {
			tb.Fatalf("e2e: nats-server exited: %v\n%s", p.ExitErr(), p.Tail(30))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := Do(ctx, http.MethodGet, n.MonitorURL+"/healthz", nil, nil)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("monitor /healthz: %v", r)
		}
		return nil
	})
	return n
}

// RestartNATS kills the standalone nats-server (kill -9: nothing is
// flushed beyond what JetStream synced) and starts it again on the same
// client port with the same store; the services reconnect on their own.
func (f *Fleet) RestartNATS() {
	f.tb.Helper()
	n := f.NATS
	if n == nil {
		f.tb.Fatal("e2e: RestartNATS: no standalone nats-server (a cluster runs)")
	}
	old := n.Proc
	f.Kill(old)
	u, err := url.Parse(n.URL)
	if err != nil {
		f.tb.Fatalf("e2e: nats url %q: %v", n.URL, err)
	}
	portsDir := f.tb.TempDir()
	p := StartProc(f.tb, "nats-server", f.bins.Path(f.tb, NATSServer), []string{
		"-js", "-sd", n.StoreDir, "-a", "127.0.0.1", "-p", u.Port(), "-m", "-1", "--ports_file_dir", portsDir, "-n", "e2e",
	}, nil)
	_, mon := natsPorts(f.tb, p, portsDir)
	f.mu.Lock()
	n.Proc, n.MonitorURL = p, mon
	delete(f.stopped, old)
	f.mu.Unlock()
	Eventually(f.tb, StartTimeout, "nats-server healthy after its restart", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := Do(ctx, http.MethodGet, mon+"/healthz?js-enabled-only=true", nil, nil)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("monitor /healthz: %v", r)
		}
		return nil
	})
}

// NATSURL is what the services get as nats.url: the one server's URL,
// or every cluster node's.
func (f *Fleet) NATSURL() string {
	if f.Cluster != nil {
		return f.Cluster.URLs()
	}
	return f.NATS.URL
}

// natsPorts reads the client and monitoring URLs nats-server wrote to its
// ports file (it listens on random ports).
func natsPorts(tb testing.TB, p *Proc, dir string) (client, monitor string) {
	tb.Helper()
	Eventually(tb, StartTimeout, "nats-server's ports file", func() error {
		if p.Exited() {
			tb.Fatalf("e2e: nats-server exited: %v\n%s", p.ExitErr(), p.Tail(30))
		}
		files, err := filepath.Glob(filepath.Join(dir, "*.ports"))
		if err != nil || len(files) == 0 {
			return fmt.Errorf("no ports file in %s yet", dir)
		}
		b, err := os.ReadFile(files[0])
		if err != nil {
			return err
		}
		var ports struct {
			Nats       []string `json:"nats"`
			Monitoring []string `json:"monitoring"`
		}
		if err := json.Unmarshal(b, &ports); err != nil || len(ports.Nats) == 0 || len(ports.Monitoring) == 0 {
			return fmt.Errorf("ports file %s: %q", files[0], b)
		}
		client, monitor = ports.Nats[0], ports.Monitoring[0]
		return nil
	})
	return client, monitor
}

func (f *Fleet) nextID(kind string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq[kind]++
	return f.seq[kind]
}

func (f *Fleet) start(kind, short string, withID bool, extra map[string]string, wait bool) *Service {
	f.tb.Helper()
	n := f.nextID(short) // by short name: workers from different binaries get distinct ids
	s := &Service{Kind: kind, tb: f.tb, addrs: map[string]string{}}
	env := map[string]string{
		"JETSERVE_NATS_URL":   f.NATSURL(),
		"JETSERVE_OPS_ADDR":   "127.0.0.1:0",
		"JETSERVE_LOG_FORMAT": "console",
		"JETSERVE_LOG_LEVEL":  f.opt.LogLevel,
	}
	if f.Cluster != nil {
		env["JETSERVE_NATS_REPLICAS"] = fmt.Sprint(min(len(f.Cluster.Nodes), 3))
	}
	maps.Copy(env, f.opt.Env)
	name := fmt.Sprintf("%s-%d", short, n)
	if withID {
		s.ID = name
		env["JETSERVE_ID"] = name
	}
	maps.Copy(env, extra)
	s.bin, s.env = f.bins.Path(f.tb, kind), env
	s.Proc = StartProc(f.tb, name, s.bin, nil, env)
	if wait {
		f.WaitHealthy(s)
	}
	return s
}

// AddWorker starts one more worker (id "worker-N"); wait: until healthy.
func (f *Fleet) AddWorker(wait bool) *Service {
	f.tb.Helper()
	return f.AddWorkerFrom(Worker, wait)
}

// AddWorkerFrom starts one more worker from the binary named binary (a
// worker.Main with other deployments, e.g. QuickstartWorker).
func (f *Fleet) AddWorkerFrom(binary string, wait bool) *Service {
	f.tb.Helper()
	return f.AddWorkerWith(binary, nil, wait)
}

// AddWorkerWith is AddWorkerFrom with extra environment (labels, a config
// file…), which wins over the defaults.
func (f *Fleet) AddWorkerWith(binary string, extra map[string]string, wait bool) *Service {
	f.tb.Helper()
	env := map[string]string{
		"JETSERVE_RESOURCES_CPU": fmt.Sprint(f.opt.WorkerCPU),
		"JETSERVE_GPU_DETECT":    "off",
	}
	if i := len(f.Workers); i < len(f.opt.WorkerEnv) {
		maps.Copy(env, f.opt.WorkerEnv[i])
	}
	maps.Copy(env, extra)
	s := f.start(binary, "worker", true, env, wait)
	f.Workers = append(f.Workers, s)
	return s
}

// AddScheduler starts one more scheduler (id "scheduler-N").
func (f *Fleet) AddScheduler(wait bool) *Service {
	f.tb.Helper()
	env := map[string]string{"JETSERVE_ADMIN_ADDR": "127.0.0.1:0"}
	maps.Copy(env, f.opt.SchedulerEnv)
	s := f.start(Scheduler, "scheduler", true, env, wait)
	f.Schedulers = append(f.Schedulers, s)
	return s
}

// AddRouter starts one more router.
func (f *Fleet) AddRouter(wait bool) *Service {
	f.tb.Helper()
	s := f.start(Router, "router", false, nil, wait)
	f.Routers = append(f.Routers, s)
	return s
}

// AddIngress starts one more ingress.
func (f *Fleet) AddIngress(wait bool) *Service {
	f.tb.Helper()
	extra := map[string]string{"JETSERVE_HTTP_ADDR": "127.0.0.1:0"}
	for k, v := range f.opt.IngressEnv {
		extra[k] = v
	}
	s := f.start(Ingress, "ingress", false, extra, wait)
	f.Ingresses = append(f.Ingresses, s)
	return s
}

// AddAutoscaler starts an autoscaler.
func (f *Fleet) AddAutoscaler(wait bool) *Service {
	f.tb.Helper()
	s := f.start(Autoscaler, "autoscaler", false, nil, wait)
	f.Autoscalers = append(f.Autoscalers, s)
	return s
}

// WaitHealthy waits until s's ops /healthz answers 200 (and, for an
// ingress, its HTTP port answers at all; for a scheduler, its admin API
// answers GET /api/serve/applications with anything but a transport
// error).
func (f *Fleet) WaitHealthy(s *Service) {
	f.tb.Helper()
	f.Eventually(StartTimeout, s.Name+" healthy", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := Do(ctx, http.MethodGet, s.OpsURL()+"/healthz", nil, nil)
		if err != nil {
			return fmt.Errorf("ops: %w", err)
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("ops /healthz: %v", r)
		}
		switch s.Kind {
		case Ingress:
			if _, err := Do(ctx, http.MethodGet, s.URL()+"/-/healthz", nil, nil); err != nil {
				return fmt.Errorf("http: %w", err)
			}
		case Scheduler:
			if _, err := Do(ctx, http.MethodGet, s.AdminURL()+"/api/serve/applications", nil, nil); err != nil {
				return fmt.Errorf("admin: %w", err)
			}
		}
		return nil
	})
}

// Kill SIGKILLs s (kill -9) and waits until it is gone.
func (f *Fleet) Kill(p *Proc) {
	f.tb.Helper()
	f.mu.Lock()
	f.stopped[p] = true
	f.mu.Unlock()
	p.Kill(f.tb)
}

// Restart starts s again after the test stopped it — the same binary,
// id, addresses and environment — and waits until it is healthy. A
// process's Proc changes; f.Live lists s again once it is healthy (as a
// load balancer's readiness check would).
func (f *Fleet) Restart(s *Service) {
	f.tb.Helper()
	if !s.Exited() {
		f.tb.Fatalf("e2e: restart %s: it still runs (pid %d)", s.Name, s.Pid())
	}
	old := s.Proc
	// The new process listens where the old one did (its ports were
	// picked at :0 and are free again), so clients and load generators
	// that hold its URL keep working.
	env := maps.Clone(s.env)
	for msg, key := range map[string]string{"ops listening": "JETSERVE_OPS_ADDR",
		"ingress listening": "JETSERVE_HTTP_ADDR", "admin API listening": "JETSERVE_ADMIN_ADDR"} {
		if _, ok := env[key]; ok {
			env[key] = s.addr(msg)
		}
	}
	p := StartProc(f.tb, old.Name, s.bin, nil, env)
	f.mu.Lock()
	s.Proc = p
	f.stopped[p] = true // not live until healthy
	delete(f.stopped, old)
	f.mu.Unlock()
	f.WaitHealthy(s)
	f.mu.Lock()
	delete(f.stopped, p)
	f.mu.Unlock()
}

// Term SIGTERMs p and waits up to timeout for it to exit; it returns the
// exit error (nil = exit status 0).
func (f *Fleet) Term(p *Proc, timeout time.Duration) error {
	f.tb.Helper()
	f.mu.Lock()
	f.stopped[p] = true
	f.mu.Unlock()
	return p.Term(f.tb, timeout)
}

// procs are the processes expected to run: the services and the NATS
// server or the cluster's nodes that are up.
func (f *Fleet) procs() []*Proc {
	var ps []*Proc
	if f.NATS != nil {
		ps = append(ps, f.NATS.Proc)
	}
	if f.Cluster != nil {
		for _, n := range f.Cluster.Nodes {
			if n.Up() {
				ps = append(ps, n.Proc())
			}
		}
	}
	for _, group := range [][]*Service{f.Ingresses, f.Routers, f.Workers, f.Schedulers, f.Autoscalers} {
		for _, s := range group {
			ps = append(ps, s.Proc)
		}
	}
	return ps
}

// CheckAlive fails the test at once if a process the test did not stop
// has exited: waiting any longer would only hide the crash.
func (f *Fleet) CheckAlive() {
	f.tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.procs() {
		if !f.stopped[p] && p.Exited() {
			f.tb.Fatalf("e2e: %s exited unexpectedly (%v); last lines:\n%s", p.Name, p.ExitErr(), p.Tail(40))
		}
	}
}

// Eventually is the package Eventually that also fails fast when a
// process of the fleet died unexpectedly.
func (f *Fleet) Eventually(timeout time.Duration, what string, cond func() error) time.Duration {
	f.tb.Helper()
	return Eventually(f.tb, timeout, what, func() error {
		f.CheckAlive()
		return cond()
	})
}

// Live returns the services of group that the test has not stopped.
func (f *Fleet) Live(group []*Service) []*Service {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*Service
	for _, s := range group {
		if !f.stopped[s.Proc] {
			out = append(out, s)
		}
	}
	return out
}

// URL is the base URL of the first live ingress.
func (f *Fleet) URL() string {
	f.tb.Helper()
	live := f.Live(f.Ingresses)
	if len(live) == 0 {
		f.tb.Fatalf("e2e: no live ingress")
	}
	return live[0].URL()
}

// AdminURL is the admin API of the first live scheduler.
func (f *Fleet) AdminURL() string {
	f.tb.Helper()
	live := f.Live(f.Schedulers)
	if len(live) == 0 {
		f.tb.Fatalf("e2e: no live scheduler")
	}
	return live[0].AdminURL()
}

// Scheduler returns the scheduler whose id is id (or whose id id
// contains, for a leader field that decorates the id), nil if none.
func (f *Fleet) Scheduler(id string) *Service {
	for _, s := range f.Schedulers {
		if s.ID == id {
			return s
		}
	}
	for _, s := range f.Schedulers {
		if id != "" && strings.Contains(id, s.ID) {
			return s
		}
	}
	return nil
}

// Worker returns the worker whose id is id, nil if none.
func (f *Fleet) Worker(id string) *Service {
	for _, s := range f.Workers {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// ---- admin API ----

// Deploy PUTs config (YAML or JSON) to the admin API and fails the test
// unless it answers 200.
func (f *Fleet) Deploy(config []byte) {
	f.tb.Helper()
	f.DeployTo(f.AdminURL(), config)
}

// DeployTo is Deploy against one given admin URL.
func (f *Fleet) DeployTo(admin string, config []byte) {
	f.tb.Helper()
	ct := "application/yaml"
	if b := bytes.TrimSpace(config); len(b) > 0 && b[0] == '{' {
		ct = "application/json"
	}
	r := MustDo(f.tb, http.MethodPut, admin+"/api/serve/applications", config, http.Header{"Content-Type": {ct}})
	if r.Status != http.StatusOK {
		f.tb.Fatalf("e2e: PUT %s/api/serve/applications = %v, want 200", admin, r)
	}
}

// Status GETs the fleet status from the first live scheduler.
func (f *Fleet) Status() (protocol.Status, error) {
	return StatusAt(f.AdminURL())
}

// StatusAt GETs the status from one admin API.
func StatusAt(admin string) (protocol.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st protocol.Status
	r, err := Do(ctx, http.MethodGet, admin+"/api/serve/applications", nil, nil)
	if err != nil {
		return st, err
	}
	if r.Status != http.StatusOK {
		return st, fmt.Errorf("GET /api/serve/applications = %v", r)
	}
	if err := json.Unmarshal(r.Body, &st); err != nil {
		return st, fmt.Errorf("GET /api/serve/applications: decode %q: %w", r.Body, err)
	}
	return st, nil
}

// MustStatus is Status failing the test on error.
func (f *Fleet) MustStatus() protocol.Status {
	f.tb.Helper()
	st, err := f.Status()
	if err != nil {
		f.tb.Fatalf("e2e: %v", err)
	}
	return st
}

// WaitWorkers waits until the status has a leader and lists n workers.
func (f *Fleet) WaitWorkers(n int) protocol.Status {
	f.tb.Helper()
	var st protocol.Status
	f.Eventually(StartTimeout, fmt.Sprintf("status shows a leader and %d workers", n), func() error {
		var err error
		st, err = f.Status()
		if err != nil {
			return err
		}
		if st.Leader == "" {
			return fmt.Errorf("no leader yet")
		}
		if len(st.Workers) != n {
			return fmt.Errorf("%d workers: %s", len(st.Workers), workerIDs(st))
		}
		return nil
	})
	return st
}

func workerIDs(st protocol.Status) string {
	ids := make([]string, len(st.Workers))
	for i, w := range st.Workers {
		ids[i] = w.ID
	}
	return "[" + strings.Join(ids, " ") + "]"
}

// WaitApp waits until app is RUNNING with exactly n replicas in all, each
// RUNNING and of its deployment's current version, and check (if not nil)
// accepts the status; it returns that status.
func (f *Fleet) WaitApp(timeout time.Duration, app string, n int, check func(protocol.AppStatus) error) protocol.AppStatus {
	f.tb.Helper()
	var got protocol.AppStatus
	f.Eventually(timeout, fmt.Sprintf("app %q RUNNING with %d running replicas", app, n), func() error {
		st, err := f.Status()
		if err != nil {
			return err
		}
		a, ok := st.Applications[app]
		if !ok {
			return fmt.Errorf("app %q not in status (apps: %v)", app, appNames(st))
		}
		if err := RunningWith(a, n); err != nil {
			return err
		}
		if check != nil {
			if err := check(a); err != nil {
				return err
			}
		}
		got = a
		return nil
	})
	return got
}

// RunningWith reports why a is not RUNNING with exactly n current,
// RUNNING replicas (nil if it is).
func RunningWith(a protocol.AppStatus, n int) error {
	if a.Status != protocol.AppRunning {
		return fmt.Errorf("app %s is %s (%s): %s", a.Name, a.Status, a.Message, Describe(a))
	}
	total := 0
	for _, d := range a.Deployments {
		for _, r := range d.Replicas {
			if r.State != protocol.ReplicaRunning {
				return fmt.Errorf("replica %s is %s: %s", r.ID, r.State, Describe(a))
			}
			if d.Version != "" && r.Version != d.Version {
				return fmt.Errorf("replica %s has version %s, deployment %s: %s", r.ID, r.Version, d.Version, Describe(a))
			}
			total++
		}
	}
	if total != n {
		return fmt.Errorf("%d replicas, want %d: %s", total, n, Describe(a))
	}
	return nil
}

// WaitAppGone waits until app is no longer in the status.
func (f *Fleet) WaitAppGone(timeout time.Duration, app string) {
	f.tb.Helper()
	f.Eventually(timeout, fmt.Sprintf("app %q deleted", app), func() error {
		st, err := f.Status()
		if err != nil {
			return err
		}
		if a, ok := st.Applications[app]; ok {
			return fmt.Errorf("still there: %s %s", a.Status, Describe(a))
		}
		return nil
	})
}

func appNames(st protocol.Status) []string {
	var names []string
	for n := range st.Applications {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Describe is a one-line summary of an app's deployments and replicas.
func Describe(a protocol.AppStatus) string {
	var b strings.Builder
	deps := slices.Sorted(maps.Keys(a.Deployments))
	for _, n := range deps {
		d := a.Deployments[n]
		fmt.Fprintf(&b, "%s(%s v%s target %d:", n, d.Status, d.Version, d.TargetReplicas)
		for _, r := range d.Replicas {
			fmt.Fprintf(&b, " %s=%s@%s/v%s", r.ID, r.State, r.WorkerID, r.Version)
			if r.Message != "" {
				fmt.Fprintf(&b, "[%s]", r.Message)
			}
		}
		if d.Message != "" {
			fmt.Fprintf(&b, " msg=%q", d.Message)
		}
		b.WriteString(") ")
	}
	return strings.TrimSpace(b.String())
}

// ReplicaIDs returns the ids of every replica of a, sorted.
func ReplicaIDs(a protocol.AppStatus) []string {
	var ids []string
	for _, d := range a.Deployments {
		for _, r := range d.Replicas {
			ids = append(ids, r.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// ReplicasByWorker counts a's replicas per worker id.
func ReplicasByWorker(a protocol.AppStatus) map[string]int {
	m := map[string]int{}
	for _, d := range a.Deployments {
		for _, r := range d.Replicas {
			m[r.WorkerID]++
		}
	}
	return m
}

// Call sends one request to the first live ingress.
func (f *Fleet) Call(method, path string, body []byte) (Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var h http.Header
	if body != nil {
		h = http.Header{"Content-Type": {"application/json"}}
	}
	return Do(ctx, method, f.URL()+path, body, h)
}

// MustCall is Call failing the test unless the answer is 200.
func (f *Fleet) MustCall(method, path string, body []byte) Response {
	f.tb.Helper()
	r, err := f.Call(method, path, body)
	if err != nil {
		f.tb.Fatalf("e2e: %s %s: %v", method, path, err)
	}
	if r.Status != http.StatusOK {
		f.tb.Fatalf("e2e: %s %s = %v, want 200", method, path, r)
	}
	return r
}

// Handlers returns, per worker id, the handler names each live worker
// advertises in the workers bucket (what its registry can run).
func (f *Fleet) Handlers() (map[string][]string, error) {
	names, err := protocol.NewNames("")
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(f.NATSURL(), nats.Name("e2e"))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", f.NATSURL(), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, names.BucketWorkers())
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", names.BucketWorkers(), err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", names.BucketWorkers(), err)
	}
	out := map[string][]string{}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // expired meanwhile
		}
		var w protocol.WorkerInfo
		if err := json.Unmarshal(e.Value(), &w); err != nil {
			return nil, fmt.Errorf("worker %s: %w", k, err)
		}
		out[w.ID] = w.Handlers
	}
	return out, nil
}

// RequireHandlers fails the test unless every live worker advertises each
// of names, saying which handlers the workers do have.
func (f *Fleet) RequireHandlers(names ...string) {
	f.tb.Helper()
	if missing, have := f.missingHandlers(names...); len(missing) > 0 {
		f.tb.Fatalf("e2e: worker registry lacks handler(s) %v that this test needs (workers advertise %v); update e2e/handlers_test.go", missing, have)
	}
}

// HasHandlers reports whether every live worker advertises each of names.
func (f *Fleet) HasHandlers(names ...string) bool {
	f.tb.Helper()
	missing, _ := f.missingHandlers(names...)
	return len(missing) == 0
}

func (f *Fleet) missingHandlers(names ...string) (missing []string, have map[string][]string) {
	f.tb.Helper()
	have, err := f.Handlers()
	if err != nil {
		f.tb.Fatalf("e2e: read worker handlers: %v", err)
	}
	if len(have) == 0 {
		f.tb.Fatalf("e2e: no worker in the workers bucket")
	}
	for _, n := range names {
		for _, hs := range have {
			if !slices.Contains(hs, n) {
				missing = append(missing, n)
				break
			}
		}
	}
	return missing, have
}
