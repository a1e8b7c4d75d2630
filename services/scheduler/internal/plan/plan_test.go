package plan

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

func cfg(t testing.TB, yaml string) config.ServeConfig {
	t.Helper()
	c, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config.Parse: %v", err)
	}
	return c
}

const oneApp = `
applications:
- name: app
  route_prefix: /app
  ingress: d
  deployments:
  - name: d
    handler: h
    num_replicas: %d
    user_config: {"k": %d}
    max_ongoing_requests: %d
`

func app(t testing.TB, replicas, userConfig, maxOngoing int) config.ServeConfig {
	return cfg(t, fmt.Sprintf(oneApp, replicas, userConfig, maxOngoing))
}

type env struct {
	t       testing.TB
	st      State
	in      Input
	n       int
	now     time.Time
	lastRes Result
}

func newEnv(t testing.TB, c config.ServeConfig, workers ...protocol.WorkerInfo) *env {
	e := &env{t: t, st: NewState(), now: time.Unix(1000, 0)}
	e.in = Input{Config: c, Workers: map[string]protocol.WorkerInfo{}, Records: map[string]protocol.ReplicaInfo{}, StartTimeout: time.Minute}
	for _, w := range workers {
		e.in.Workers[w.ID] = w
	}
	e.in.NewID = func(app, dep, ver string) string {
		e.n++
		return fmt.Sprintf("%s-%s-%s-%d", app, dep, ver[:6], e.n)
	}
	return e
}

func (e *env) step() Result {
	e.now = e.now.Add(time.Second)
	e.in.Now = e.now
	var res Result
	e.st, res = Step(e.st, e.in)
	e.in.Replace = nil
	e.lastRes = res
	return res
}

// run marks every assigned replica RUNNING on its worker.
func (e *env) runAll() {
	for _, r := range e.st.Replicas {
		if r.WorkerID != "" {
			e.in.Records[r.Spec.ID] = protocol.ReplicaInfo{ID: r.Spec.ID, App: r.Spec.App, Deployment: r.Spec.Deployment,
				WorkerID: r.WorkerID, Version: r.Spec.Version, State: protocol.ReplicaRunning, ConfigVersion: r.Spec.ConfigVersion()}
		}
	}
	for id := range e.in.Records {
		if _, ok := e.st.Replicas[id]; !ok {
			delete(e.in.Records, id) // the worker finished draining it
		}
	}
}

func (e *env) running() (n int, versions map[string]int) {
	versions = map[string]int{}
	for _, r := range e.st.Replicas {
		if e.in.Running(r) {
			n++
			versions[r.Spec.Version]++
		}
	}
	return n, versions
}

func ids(res Result, worker string) []string {
	var out []string
	for _, s := range res.Assignments[worker].Replicas {
		out = append(out, s.ID)
	}
	sort.Strings(out)
	return out
}

func TestStepScaleAndPlace(t *testing.T) {
	e := newEnv(t, app(t, 3, 1, 5), worker("w1", 8, 0), worker("w2", 8, 0))
	res := e.step()
	if got := len(res.Assignments["w1"].Replicas) + len(res.Assignments["w2"].Replicas); got != 3 {
		t.Fatalf("assigned replicas = %d, want 3", got)
	}
	if a, b := len(res.Assignments["w1"].Replicas), len(res.Assignments["w2"].Replicas); a < 1 || b < 1 {
		t.Errorf("replicas per worker = %d, %d; want spread over both", a, b)
	}
	e.runAll()
	s := BuildStatus(&e.st, e.in, res, "me", nil)
	if got := s.Applications["app"].Status; got != protocol.AppRunning {
		t.Errorf("app status = %s, want RUNNING (%+v)", got, s.Applications["app"])
	}
	// Scale down to 1.
	e.in.Config = app(t, 1, 1, 5)
	res = e.step()
	if got := len(res.Assignments["w1"].Replicas) + len(res.Assignments["w2"].Replicas); got != 1 {
		t.Errorf("after scale down assigned = %d, want 1", got)
	}
	// Scale to 0 keeps the app but runs nothing.
	e.in.Config = app(t, 0, 1, 5)
	res = e.step()
	if got := len(res.Assignments["w1"].Replicas) + len(res.Assignments["w2"].Replicas); got != 0 {
		t.Errorf("after scale to zero assigned = %d, want 0", got)
	}
}

func TestStepUserConfigInPlace(t *testing.T) {
	e := newEnv(t, app(t, 2, 1, 5), worker("w1", 8, 0))
	before := ids(e.step(), "w1")
	e.runAll()
	e.in.Config = app(t, 2, 2, 5)
	res := e.step()
	after := ids(res, "w1")
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Errorf("replica IDs after user_config change = %v, want unchanged %v", after, before)
	}
	for _, s := range res.Assignments["w1"].Replicas {
		if string(s.UserConfig) != `{"k":2}` {
			t.Errorf("replica %s user_config = %s, want {\"k\":2}", s.ID, s.UserConfig)
		}
	}
}

// TestStepAsyncMethodsInPlace is issue 11 #6: a change of async_methods
// reaches the running replicas' specs (same ids, same version: the worker
// replaces their job runners in place) and the status says UPDATING until
// every replica's record carries the new config version.
func TestStepAsyncMethodsInPlace(t *testing.T) {
	withAsync := func(maxQueued int) config.ServeConfig {
		return cfg(t, oneAppWith(fmt.Sprintf("num_replicas: 2\n    async_methods: [{name: train, max_queued: %d}]", maxQueued)))
	}
	e := newEnv(t, withAsync(10), worker("w1", 8, 0))
	before := ids(e.step(), "w1")
	e.runAll()
	oldVersion := e.st.Replicas[before[0]].Spec.ConfigVersion()
	e.in.Config = withAsync(3)
	res := e.step()
	if after := ids(res, "w1"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("replica ids after an async_methods change = %v, want unchanged %v", after, before)
	}
	for _, s := range res.Assignments["w1"].Replicas {
		if len(s.AsyncMethods) != 1 || s.AsyncMethods[0].MaxQueued != 3 {
			t.Errorf("replica %s async_methods = %+v, want train with max_queued 3", s.ID, s.AsyncMethods)
		}
		if s.ConfigVersion() == oldVersion {
			t.Errorf("replica %s config version unchanged by the async_methods change", s.ID)
		}
	}
	ds := BuildStatus(&e.st, e.in, res, "me", nil).Applications["app"].Deployments["d"]
	if ds.Status != protocol.DeploymentUpdating || !strings.Contains(ds.Message, "reconfiguring in place") || !strings.Contains(ds.Message, "0/2") {
		t.Errorf("status before the worker applied it = %s %q, want UPDATING, reconfiguring in place, 0/2", ds.Status, ds.Message)
	}
	e.runAll() // the worker applied it: records carry the new config version
	ds = BuildStatus(&e.st, e.in, e.step(), "me", nil).Applications["app"].Deployments["d"]
	if ds.Status != protocol.DeploymentHealthy {
		t.Errorf("status after = %s %q, want HEALTHY", ds.Status, ds.Message)
	}
}

func TestStepRollingUpdate(t *testing.T) {
	const target = 5
	e := newEnv(t, app(t, target, 1, 5), worker("w1", 32, 0), worker("w2", 32, 0))
	e.step()
	e.runAll()
	oldVer := Version(e.in.Config.Applications[0].Deployments[0])
	e.in.Config = app(t, target, 1, 7) // max_ongoing_requests: a restart
	newVer := Version(e.in.Config.Applications[0].Deployments[0])
	if oldVer == newVer {
		t.Fatalf("Version did not change with max_ongoing_requests")
	}
	for pass := 0; pass < 50; pass++ {
		e.step()
		n, vers := e.running()
		if n < target {
			t.Fatalf("pass %d: running = %d (%v), want >= %d", pass, n, vers, target)
		}
		if len(e.st.Replicas) > target+1 {
			t.Fatalf("pass %d: replicas = %d, want <= target+surge = %d", pass, len(e.st.Replicas), target+1)
		}
		if vers[newVer] == target && vers[oldVer] == 0 && len(e.st.Replicas) == target {
			s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil)
			if got := s.Applications["app"].Deployments["d"].Status; got != protocol.DeploymentHealthy {
				t.Errorf("deployment status after update = %s, want HEALTHY", got)
			}
			return
		}
		// Mid-update the deployment says UPDATING.
		s := BuildStatus(&e.st, e.in, e.lastRes, "me", nil)
		if got := s.Applications["app"].Deployments["d"].Status; got != protocol.DeploymentUpdating {
			t.Errorf("pass %d: deployment status = %s, want UPDATING", pass, got)
		}
		e.runAll() // new replicas come up; removed ones finish draining
	}
	t.Fatalf("rolling update did not finish: %d replicas", len(e.st.Replicas))
}

func TestStepWorkerLost(t *testing.T) {
	e := newEnv(t, app(t, 2, 1, 5), worker("w1", 8, 0), worker("w2", 8, 0))
	res := e.step()
	lost := ids(res, "w1")
	e.runAll()
	delete(e.in.Workers, "w1")
	res = e.step()
	if _, ok := res.Assignments["w1"]; ok {
		t.Errorf("assignment for lost worker w1 still written")
	}
	got := ids(res, "w2")
	if len(got) != 2 {
		t.Fatalf("w2 replicas = %v, want 2", got)
	}
	for _, id := range got {
		if id == lost[0] {
			t.Errorf("replica %s from lost worker kept its ID", id)
		}
	}
}

func TestStepReplaceAndPendingReason(t *testing.T) {
	e := newEnv(t, app(t, 1, 1, 5), worker("w1", 8, 0), worker("w2", 8, 0))
	res := e.step()
	var first string
	var firstWorker string
	for w := range res.Assignments {
		if l := ids(res, w); len(l) == 1 {
			first, firstWorker = l[0], w
		}
	}
	e.runAll()
	e.in.Replace = map[string]protocol.Reason{first: {Code: protocol.ReasonHealthCheck, Failures: 3, Detail: "timeout"}}
	res = e.step()
	other := map[string]string{"w1": "w2", "w2": "w1"}[firstWorker]
	if got := ids(res, other); len(got) != 1 || got[0] == first {
		t.Errorf("after replace, %s has %v, want one new replica (not %s)", other, got, first)
	}

	// A deployment that fits nowhere stays PENDING with the reason.
	e = newEnv(t, cfg(t, `
applications:
- name: app
  route_prefix: /
  ingress: d
  deployments:
  - name: d
    handler: h
    resources: {gpu: 1, labels: {gpu.type: h100}}
`), worker("w1", 8, 0, "h100"))
	e.in.Workers["w1"] = worker("w1", 8, 0, "h100")
	res = e.step()
	if got := ids(res, "w1"); len(got) != 1 {
		t.Fatalf("w1 replicas = %v, want 1", got)
	}
	e.in.Config.Applications[0].Deployments[0].NumReplicas = ptr(2)
	res = e.step()
	s := BuildStatus(&e.st, e.in, res, "me", nil)
	ds := s.Applications["app"].Deployments["d"]
	var pending []protocol.ReplicaStatus
	for _, r := range ds.Replicas {
		if r.State == protocol.ReplicaPending {
			pending = append(pending, r)
		}
	}
	const want = "no worker has 1 GPU free with gpu.type=h100"
	if len(pending) != 1 || pending[0].Message != want {
		t.Errorf("pending replicas = %+v, want one with message %q", pending, want)
	}
}

func TestStepStuckAndVanished(t *testing.T) {
	e := newEnv(t, app(t, 1, 1, 5), worker("w1", 8, 0))
	first := ids(e.step(), "w1")[0]
	// The worker never reports it: replaced after StartTimeout.
	e.now = e.now.Add(2 * time.Minute)
	second := ids(e.step(), "w1")
	if len(second) != 1 || second[0] == first {
		t.Fatalf("stuck replica not replaced: %v", second)
	}
	e.runAll()
	e.step()
	// Its record vanishes while the worker lives: kept for VanishGrace
	// (the next heartbeat may put it back: a record that expired while its
	// bucket elected a leader), then replaced.
	rec := e.in.Records[second[0]]
	delete(e.in.Records, second[0])
	if got := ids(e.step(), "w1"); !slices.Equal(got, second) {
		t.Fatalf("replica replaced the moment its record vanished: %v, want %v until %v passed", got, second, VanishGrace)
	}
	e.now = e.now.Add(VanishGrace / 2)
	e.in.Records[second[0]] = rec // back: the grace starts over at the next vanishing
	e.step()
	delete(e.in.Records, second[0])
	e.step()
	e.now = e.now.Add(VanishGrace - 2*time.Second) // each step adds a second
	if got := ids(e.step(), "w1"); !slices.Equal(got, second) {
		t.Fatalf("replica replaced %v after its record vanished again: %v, want %v", VanishGrace-time.Second, got, second)
	}
	third := ids(e.step(), "w1")
	if len(third) != 1 || third[0] == second[0] {
		t.Errorf("vanished replica not replaced after %v: %v", VanishGrace, third)
	}
}

func TestStepDeleteApp(t *testing.T) {
	e := newEnv(t, app(t, 2, 1, 5), worker("w1", 8, 0))
	e.step()
	e.runAll()
	e.in.Config = config.ServeConfig{}
	res := e.step()
	if got := ids(res, "w1"); len(got) != 0 {
		t.Errorf("replicas of deleted app still assigned: %v", got)
	}
	s := BuildStatus(&e.st, e.in, res, "me", nil)
	if got := s.Applications["app"].Status; got != protocol.AppDeleting {
		t.Errorf("deleted app status = %q, want DELETING", got)
	}
	e.runAll() // drained
	s = BuildStatus(&e.st, e.in, e.step(), "me", nil)
	if _, ok := s.Applications["app"]; ok {
		t.Errorf("app still in status after its replicas stopped")
	}
}

func TestVersion(t *testing.T) {
	base := app(t, 1, 1, 5).Applications[0].Deployments[0]
	tests := []struct {
		name   string
		change func(d *config.Deployment)
		same   bool
	}{
		{"num_replicas", func(d *config.Deployment) { d.NumReplicas = ptr(9) }, true},
		{"user_config", func(d *config.Deployment) { d.UserConfig = json.RawMessage(`{"x":1}`) }, true},
		{"max_queued_requests", func(d *config.Deployment) { d.MaxQueuedRequests = 10 }, true},
		{"request_timeout", func(d *config.Deployment) { d.RequestTimeout = config.Duration(time.Second) }, true},
		{"async_methods", func(d *config.Deployment) { d.AsyncMethods = []config.AsyncMethod{{Name: "train"}} }, true},
		{"max_unavailable", func(d *config.Deployment) { d.MaxUnavailable = "50%" }, true},
		{"handler", func(d *config.Deployment) { d.Handler = "other" }, false},
		{"resources", func(d *config.Deployment) { d.Resources.GPU = 1 }, false},
		{"max_ongoing_requests", func(d *config.Deployment) { d.MaxOngoingRequests = 1 }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := base
			tt.change(&d)
			if got := Version(d) == Version(base); got != tt.same {
				t.Errorf("Version unchanged after %s = %v, want %v", tt.name, got, tt.same)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestStepCarriesMaxModelsPerReplica(t *testing.T) {
	c := cfg(t, oneAppWith("max_models_per_replica: 4"))
	e := newEnv(t, c, worker("w1", 8, 0))
	res := e.step()
	specs := res.Assignments["w1"].Replicas
	if len(specs) != 1 || specs[0].MaxModelsPerReplica != 4 {
		t.Fatalf("assigned specs = %+v, want one with MaxModelsPerReplica 4", specs)
	}
	// The default (3) travels too, so a replica never guesses it.
	e = newEnv(t, cfg(t, oneAppWith("")), worker("w1", 8, 0))
	if s := e.step().Assignments["w1"].Replicas; len(s) != 1 || s[0].MaxModelsPerReplica != config.DefaultMaxModelsPerReplica {
		t.Fatalf("assigned specs = %+v, want MaxModelsPerReplica %d", s, config.DefaultMaxModelsPerReplica)
	}
}

func oneAppWith(extra string) string {
	return `
applications:
- name: app
  route_prefix: /app
  ingress: d
  deployments:
  - name: d
    handler: h
    ` + extra + "\n"
}

const chainApp = `
applications:
- name: chain
  route_prefix: /chain
  ingress: c1
  deployments:
  - {name: c1, handler: h, uses: [c2]}
  - {name: c2, handler: h, uses: [c3]}
  - {name: c3, handler: h, uses: [c4]}
  - {name: c4, handler: h, uses: [c5]}
  - {name: c5, handler: h}
  - {name: alone, handler: h}
`

const starApp = `
applications:
- name: star
  route_prefix: /star
  ingress: pre
  deployments:
  - {name: combine, handler: h}
  - {name: model_a, handler: h}
  - {name: model_b, handler: h}
  - {name: pre, handler: h, uses: [model_a, model_b, combine]}
`

// A chain whose deployments call each other (uses) lands on one worker
// with Colocate, so that every handle call is in-process; without it the
// most free CPU alternates the deployments between the workers. A
// deployment joined to none still goes where the most CPU is free.
func TestStepColocatesDeploymentsJoinedByUses(t *testing.T) {
	where := func(colocate bool, apps ...string) map[string]string {
		e := newEnv(t, cfg(t, strings.Join(apps, "")), worker("w1", 8, 0), worker("w2", 8, 0))
		e.in.Colocate = colocate
		e.step()
		out := map[string]string{}
		for _, r := range e.st.Replicas {
			out[r.Spec.Deployment] = r.WorkerID
		}
		return out
	}
	on := where(true, chainApp)
	for _, d := range []string{"c2", "c3", "c4", "c5"} {
		if on[d] == "" || on[d] != on["c1"] {
			t.Errorf("colocate: %s on %q, c1 on %q; want the chain on one worker (%v)", d, on[d], on["c1"], on)
		}
	}
	if on["alone"] == on["c1"] {
		t.Errorf("colocate: alone on %q with the chain; want the emptier worker (%v)", on["alone"], on)
	}
	// The star's deployments sort before its ingress by name: they are
	// placed after it all the same, and join it.
	on = where(true, starApp)
	for _, d := range []string{"combine", "model_a", "model_b"} {
		if on[d] == "" || on[d] != on["pre"] {
			t.Errorf("colocate: %s on %q, pre on %q; want the star on one worker (%v)", d, on[d], on["pre"], on)
		}
	}
	off := where(false, chainApp)
	if off["c1"] == off["c2"] {
		t.Errorf("no colocate: c1 and c2 both on %q; want them spread by free CPU (%v)", off["c1"], off)
	}
}
