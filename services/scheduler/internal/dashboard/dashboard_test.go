package dashboard

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type env struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	names   protocol.Names
	buckets *fleetstate.Buckets
	d       *Dashboard
	reg     *prometheus.Registry
	srv     *httptest.Server
}

func start(t *testing.T, o Options) *env {
	t.Helper()
	return startOn(t, natstest.NewFleet(t), o)
}

// startOn is start on a given fleet.
func startOn(t *testing.T, tf *natstest.Fleet, o Options) *env {
	t.Helper()
	nc, js, names, b := tf.NC, tf.JS, tf.Names, tf.Buckets
	reg := prometheus.NewRegistry()
	g, err := jobs.NewBacklogGauges(reg)
	if err != nil {
		t.Fatal(err)
	}
	o.NC, o.JS, o.Names, o.Buckets, o.ID, o.Log, o.Gauges = nc, js, names, b, "sched-1", zerolog.Nop(), g
	d := New(o)
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(rctx) }()
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(func() {
		srv.Close()
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
	return &env{nc: nc, js: js, names: names, buckets: b, d: d, reg: reg, srv: srv}
}

// get fetches the snapshot through the handler.
func (e *env) get(t *testing.T) (Snapshot, int) {
	t.Helper()
	resp, err := http.Get(e.srv.URL + APIPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Snapshot
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
	}
	return s, resp.StatusCode
}

// eventually fetches snapshots until ok holds (20 s at most).
func (e *env) eventually(t *testing.T, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, code := e.get(t)
		if code == http.StatusOK && ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(s, "", " ")
			t.Fatalf("timed out waiting for %s; last snapshot (%d): %s", what, code, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) put(t *testing.T, kv jetstream.KeyValue, key string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if _, err := kv.Put(context.Background(), key, b); err != nil {
		t.Fatal(err)
	}
}

func (e *env) publish(t *testing.T, subj string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := e.nc.Publish(subj, b); err != nil {
		t.Fatal(err)
	}
}

const cfgYAML = `
applications:
  - name: shop
    route_prefix: /shop
    ingress: Front
    deployments:
      - name: Front
        handler: shop.Front
        autoscaling_config: {min_replicas: 1, max_replicas: 4}
      - name: Trainer
        handler: shop.Trainer
        async_methods:
          - name: train
            max_attempts: 1
`

// TestSnapshot feeds a real JetStream with what the fleet writes — config,
// status, load reports, router stats, scale decisions, jobs — and checks
// the document the page reads.
func TestSnapshot(t *testing.T) {
	e := start(t, Options{JobsInterval: 200 * time.Millisecond, Window: time.Minute})
	if _, code := e.get(t); code != http.StatusOK && code != http.StatusServiceUnavailable {
		t.Fatalf("first GET = %d, want 200 or 503 while starting", code)
	}
	e.d.SetLeading(true)
	sc, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, e.buckets.Apps, fleetstate.ConfigKey, sc)
	now := time.Now().UTC()
	e.put(t, e.buckets.Status, fleetstate.StatusKey, protocol.Status{Leader: "sched-1", UpdatedAt: now,
		Workers: []protocol.WorkerStatus{{ID: "w-b", CPU: 4, CPUUsed: 1}, {ID: "w-a", CPU: 2}},
		Applications: map[string]protocol.AppStatus{"shop": {Name: "shop", RoutePrefix: "/shop", Ingress: "Front",
			Status: protocol.AppRunning, Deployments: map[string]protocol.DeploymentStatus{
				"Front": {Name: "Front", Status: protocol.DeploymentHealthy, TargetReplicas: 2, CurrentReplicas: 2,
					Replicas: []protocol.ReplicaStatus{{ID: "f2", State: protocol.ReplicaRunning, WorkerID: "w-b"},
						{ID: "f1", State: protocol.ReplicaRunning, WorkerID: "w-a"}},
					Autoscaling: &protocol.AutoscalingStatus{MinReplicas: 1, MaxReplicas: 4, LastReason: protocol.ScaleUp}},
				"Trainer": {Name: "Trainer", Status: protocol.DeploymentHealthy, TargetReplicas: 1,
					Replicas: []protocol.ReplicaStatus{{ID: "t1", State: protocol.ReplicaStarting, WorkerID: "w-a"}}},
			}}}})
	// Decisions: an old one (before the window: kept as the one in force)
	// and two recent ones.
	key := protocol.ScaleKey("shop", "Front")
	for _, d := range []protocol.ScaleDecision{
		{App: "shop", Deployment: "Front", Desired: 1, Reason: protocol.ScaleInitial, At: now.Add(-10 * time.Minute)},
		{App: "shop", Deployment: "Front", Desired: 1, Reason: protocol.ScaleDown, At: now.Add(-5 * time.Minute)},
		{App: "shop", Deployment: "Front", Desired: 2, Current: 1, Load: 3, Reason: protocol.ScaleUp, At: now.Add(-20 * time.Second)},
	} {
		e.put(t, e.buckets.Scale, key, d)
	}
	// A queued job, and one that failed and was dead-lettered (a runner
	// is what writes those: run one for the failing job).
	q := jobs.NewQueue(e.js, jobs.Names{Names: e.names}, zerolog.Nop())
	train := sc.Applications[0].Deployments[1].AsyncMethods[0]
	if _, _, err := q.Submit(context.Background(), "shop", "Trainer", train, "job-1", nil); err != nil {
		t.Fatal(err)
	}

	// Traffic: a replica reports totals twice, a router its queue.
	buckets := make([]uint64, len(protocol.LatencyBoundsMS)+1)
	e.publish(t, e.names.LoadSubject("shop", "Front"), protocol.LoadReport{ReplicaID: "f1", App: "shop", Deployment: "Front",
		Ongoing: 1, Max: 5, Served: 100, LatencyMSSum: 500, LatencyBuckets: buckets})
	time.Sleep(1100 * time.Millisecond) // one tick apart: the rate needs two points
	buckets[protocol.LatencyBucket(4)] = 40
	buckets[protocol.LatencyBucket(40)] = 10
	e.publish(t, e.names.LoadSubject("shop", "Front"), protocol.LoadReport{ReplicaID: "f1", App: "shop", Deployment: "Front",
		Ongoing: 3, Max: 5, Served: 150, Errors: 5, LatencyMSSum: 500 + 50*6, LatencyBuckets: buckets})
	e.publish(t, e.names.RouterStatsSubject(), protocol.RouterStats{RouterID: "r1", Queued: map[string]int{"shop/Front": 7}})

	s := e.eventually(t, "traffic, decisions and the queued job", func(s Snapshot) bool {
		if len(s.Applications) != 1 || len(s.Jobs) != 1 {
			return false
		}
		f := s.Applications[0].Deployments[0]
		return f.Traffic.RPS > 0 && f.Traffic.Queued == 7 && f.Traffic.Ongoing == 3 && len(f.Decisions) == 2 &&
			s.Jobs[0].Queued == 1
	})
	if s.Leader != "sched-1" || s.Scheduler != "sched-1" || len(s.Workers) != 2 || s.Workers[0].ID != "w-a" {
		t.Errorf("snapshot leader %q, scheduler %q, workers %+v; want sched-1, sched-1, w-a then w-b", s.Leader, s.Scheduler, s.Workers)
	}
	app := s.Applications[0]
	if app.Name != "shop" || len(app.Deployments) != 2 || app.Deployments[0].Name != "Front" || app.Deployments[1].Name != "Trainer" {
		t.Fatalf("applications = %+v", s.Applications)
	}
	front := app.Deployments[0]
	if front.Replicas[0].ID != "f1" || front.Replicas[0].WorkerID != "w-a" {
		t.Errorf("Front replicas = %+v, want f1 on w-a first", front.Replicas)
	}
	tr := front.Traffic
	// 50 requests in about a second; 5 failed; mean (300 ms / 50) 6 ms;
	// 80% took ≤ 5 ms, so p50 is in (2, 5] and p95 in (20, 50].
	if tr.ErrorRate != 0.1 || math.Abs(tr.MeanMS-6) > 1e-9 || tr.P50MS <= 2 || tr.P50MS > 5 || tr.P95MS <= 20 || tr.P95MS > 50 {
		t.Errorf("Front traffic = %+v; want error rate 0.1, mean 6 ms, p50 in (2,5], p95 in (20,50]", tr)
	}
	if tr.RPS < 10 || tr.RPS > 60 {
		t.Errorf("Front rps = %v, want about 50 (50 requests between reports ~1 s apart)", tr.RPS)
	}
	if d := front.Decisions; d[0].Reason != protocol.ScaleDown || d[1].Reason != protocol.ScaleUp || d[1].Desired != 2 {
		t.Errorf("Front decisions = %+v; want the downscale in force at the window's start, then the upscale", d)
	}
	mj := s.Jobs[0]
	if mj.App != "shop" || mj.Deployment != "Trainer" || mj.Method != "train" || mj.Queued != 1 || mj.OldestAgeSeconds <= 0 {
		t.Errorf("jobs = %+v; want shop/train of Trainer with 1 queued and an oldest age", mj)
	}
	// The leader exports the backlog gauges.
	if n, err := testutil.GatherAndCount(e.reg, jobs.MetricQueued); err != nil || n != 1 {
		t.Errorf("%s series = %d, want 1 while leading", jobs.MetricQueued, n)
	}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(`
# HELP jetserve_jobs_queued Jobs waiting for a runner (the runners consumer's num_pending), latest poll.
# TYPE jetserve_jobs_queued gauge
jetserve_jobs_queued{application="shop",method="train"} 1
`), jobs.MetricQueued); err != nil {
		t.Error(err)
	}

	// A job that runs: its record shows up in the recent list, with its
	// progress, and the count of failures once it fails.
	var progressed atomic.Bool
	release := make(chan struct{})
	runner := jobs.NewRunner(e.nc, e.js, jobs.Names{Names: e.names}, jobs.RunnerConfig{App: "shop", Deployment: "Trainer",
		Worker: "w-a", Replica: "t1", Slots: 1, Methods: []config.AsyncMethod{train}, Log: zerolog.Nop(),
		Handler: jobHandler(func(ctx serve.JobContext) (any, error) {
			if err := ctx.Progress(0.5, "half way"); err != nil {
				return nil, err
			}
			progressed.Store(true)
			<-release
			return nil, io.ErrUnexpectedEOF // not a 4xx: dead-lettered (max_attempts 1)
		})})
	rctx, stopRunner := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = runner.Run(rctx) }()
	defer func() { stopRunner(); runner.Abort(); wg.Wait() }()
	s = e.eventually(t, "job-1 RUNNING at 50%", func(s Snapshot) bool {
		return len(s.Jobs) == 1 && len(s.Jobs[0].Recent) == 1 && s.Jobs[0].Recent[0].Status == jobs.Running &&
			s.Jobs[0].Recent[0].Progress == 0.5
	})
	if r := s.Jobs[0].Recent[0]; r.ID != "job-1" || r.Message != "half way" || r.Replica != "t1" {
		t.Errorf("recent job = %+v, want job-1 on t1 saying half way", r)
	}
	close(release)
	e.eventually(t, "job-1 FAILED and dead-lettered", func(s Snapshot) bool {
		m := s.Jobs[0]
		return m.Failed == 1 && m.DeadLettered == 1 && m.Queued == 0 && m.Running == 0 && m.Recent[0].Status == jobs.Failed
	})

	// Losing the lead drops the gauges (the new leader exports them).
	e.d.SetLeading(false)
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := testutil.GatherAndCount(e.reg, jobs.MetricQueued); n != 0; n, _ = testutil.GatherAndCount(e.reg, jobs.MetricQueued) {
		if time.Now().After(deadline) {
			t.Fatal("backlog gauges still exported 10 s after losing the lead")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type jobHandler func(ctx serve.JobContext) (any, error)

func (f jobHandler) RunJob(ctx serve.JobContext, _ *serve.Job) (any, error) { return f(ctx) }

// TestViewersShareOneSnapshot opens the dashboard in five "browsers" at
// once, polling twice as often as the page does, on a non-leading
// instance: the JetStream API sees one backlog poll per interval, not one
// per viewer, and the viewers share snapshots.
func TestViewersShareOneSnapshot(t *testing.T) {
	e := start(t, Options{JobsInterval: time.Second, CacheFor: time.Second, ViewedFor: time.Second})
	sc, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, e.buckets.Apps, fleetstate.ConfigKey, sc)
	q := jobs.NewQueue(e.js, jobs.Names{Names: e.names}, zerolog.Nop())
	if err := q.Ensure(context.Background(), "shop", "Trainer", sc.Applications[0].Deployments[1].AsyncMethods[0]); err != nil {
		t.Fatal(err)
	}
	var infos atomic.Int64
	sub, err := e.nc.Subscribe("$JS.API.CONSUMER.INFO.>", func(*nats.Msg) { infos.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe() //nolint:errcheck
	e.eventually(t, "the method", func(s Snapshot) bool { return len(s.Jobs) == 1 })

	infos.Store(0)
	const span = 3 * time.Second
	start := time.Now()
	var wg sync.WaitGroup
	var generated sync.Map
	for range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < span {
				s, code := e.get(t)
				if code == http.StatusOK {
					generated.Store(s.GeneratedAt, true)
				}
				time.Sleep(time.Second / 4) // 4/s each, 20/s in all
			}
		}()
	}
	wg.Wait()
	distinct := 0
	generated.Range(func(any, any) bool { distinct++; return true })
	// ~60 requests; one snapshot per CacheFor (1 s) is built: about 3-4.
	if distinct > 6 {
		t.Errorf("%d distinct snapshots served over %s to 5 viewers, want about one per second", distinct, span)
	}
	// One backlog poll per second for the one method: 3-4 consumer infos.
	if n := infos.Load(); n == 0 || n > 6 {
		t.Errorf("%d consumer info requests in %s with 5 viewers, want about one per second (1..6)", n, span)
	}

	// Nobody looks and this instance does not lead: once the last view is
	// ViewedFor old, no poll at all.
	time.Sleep(1500 * time.Millisecond) // past ViewedFor (1 s) and the poll in flight
	infos.Store(0)
	time.Sleep(2500 * time.Millisecond) // two poll intervals and more
	if n := infos.Load(); n != 0 {
		t.Errorf("%d consumer info requests with no viewer on a standby, want 0", n)
	}
}

// TestTrafficReplicaRestart: a replica's totals restarting from zero (a
// restart under the same id) add to the deployment, never subtract.
func TestTrafficReplicaRestart(t *testing.T) {
	tr := newTraffic(time.Minute, 3*time.Second)
	t0 := time.Now()
	rep := func(served uint64) protocol.LoadReport {
		return protocol.LoadReport{ReplicaID: "r", App: "a", Deployment: "d", Served: served}
	}
	tr.load(rep(1000), t0) // history before the dashboard started: not counted
	tr.tick(t0)
	tr.load(rep(1010), t0.Add(time.Second))
	tr.tick(t0.Add(time.Second))
	tr.load(rep(4), t0.Add(2*time.Second)) // restarted
	tr.tick(t0.Add(2 * time.Second))
	st := tr.stats()["a/d"]
	if len(st.Series) != 3 || st.Series[1].RPS != 10 || st.Series[2].RPS != 4 || st.RPS != 7 {
		t.Errorf("traffic = rps %v, series %+v; want 10 then 4 per second, 7 on average", st.RPS, st.Series)
	}
}

func TestPage(t *testing.T) {
	e := start(t, Options{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(e.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != PagePath {
		t.Errorf("GET / = %d to %q, want 302 to %s", resp.StatusCode, resp.Header.Get("Location"), PagePath)
	}
	for path, want := range map[string]string{PagePath: "<title>jetserve dashboard</title>", PagePath + "app.js": "/api/dashboard",
		PagePath + "style.css": "svg.chart"} {
		resp, err := http.Get(e.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s = %d, body without %q", path, resp.StatusCode, want)
		}
	}
	if resp, err := http.Get(e.srv.URL + PagePath + "nope.js"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET %snope.js = %v, %v; want 404", PagePath, resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestFollowsAcrossServerRestart: the dashboard follows its buckets with
// kvfollow: after NATS restarts, what is written is shown at once, and
// the decision history the Scale bucket delivers again on the resync is
// not charted twice.
func TestFollowsAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.ServerIn(t, dir)
	e := startOn(t, natstest.FleetOn(t, ns, natstest.ReconnectingConn(t, ns.ClientURL())), Options{})
	sc, err := config.Parse([]byte(cfgYAML))
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, e.buckets.Apps, fleetstate.ConfigKey, sc)
	now := time.Now().UTC()
	status := func(leader string) protocol.Status {
		return protocol.Status{Leader: leader, UpdatedAt: time.Now(), Applications: map[string]protocol.AppStatus{"shop": {
			Name: "shop", Status: protocol.AppRunning, Deployments: map[string]protocol.DeploymentStatus{
				"Front": {Name: "Front", Status: protocol.DeploymentHealthy}}}}}
	}
	key := protocol.ScaleKey("shop", "Front")
	decision := func(n int, ago time.Duration) protocol.ScaleDecision {
		return protocol.ScaleDecision{App: "shop", Deployment: "Front", Desired: n, Reason: protocol.ScaleUp, At: now.Add(-ago)}
	}
	e.put(t, e.buckets.Status, fleetstate.StatusKey, status("before"))
	e.put(t, e.buckets.Scale, key, decision(1, 30*time.Second))
	e.put(t, e.buckets.Scale, key, decision(2, 20*time.Second))
	decisions := func(s Snapshot) []Decision {
		for _, a := range s.Applications {
			for _, d := range a.Deployments {
				if d.Name == "Front" {
					return d.Decisions
				}
			}
		}
		return nil
	}
	e.eventually(t, "the first status and two decisions", func(s Snapshot) bool {
		return s.Leader == "before" && len(decisions(s)) == 2
	})

	natstest.Restart(t, ns, dir)
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := json.Marshal(status("after"))
		if _, err := e.buckets.Status.Put(context.Background(), fleetstate.StatusKey, b); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("put status after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval while NATS comes back
	}
	e.put(t, e.buckets.Scale, key, decision(3, 10*time.Second))
	s := e.eventually(t, "the status and the decision written after the restart", func(s Snapshot) bool {
		return s.Leader == "after" && len(decisions(s)) >= 3
	})
	if got := decisions(s); len(got) != 3 || got[0].Desired != 1 || got[1].Desired != 2 || got[2].Desired != 3 {
		t.Errorf("decisions after the resync = %+v, want 1, 2, 3 once each", got)
	}
}

// follow puts recs in m's records bucket and follows it until the test
// ends; it returns once the follower holds them all.
func follow(t *testing.T, m *method, recs []jobs.Record) {
	t.Helper()
	tf := natstest.NewFleet(t)
	nc, js, names := tf.NC, tf.JS, jobs.Names{Names: tf.Names}
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: names.Records(m.app, m.name)})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		b, _ := json.Marshal(r)
		if _, err := kv.Put(context.Background(), r.ID, b); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.followRecords(ctx, nc, js, names, zerolog.Nop()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("followRecords = %v, want nil", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.watchMu.Lock()
		f := m.recs
		m.watchMu.Unlock()
		if f != nil && len(f.Snapshot()) == len(recs) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the records were never followed")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// TestExpiredRecordsForgotten: a method's records past its retention (the
// bucket's TTL removes them without a marker) are neither counted nor
// kept in the follower's copy.
func TestExpiredRecordsForgotten(t *testing.T) {
	now := time.Now()
	m := &method{app: "shop", name: "train", retention: time.Hour}
	follow(t, m, []jobs.Record{{ID: "old", Status: jobs.Succeeded, UpdatedAt: now.Add(-2 * time.Hour)},
		{ID: "new", Status: jobs.Succeeded, UpdatedAt: now.Add(-time.Minute)}})
	sum := m.summary(now)
	if sum.Succeeded != 1 || len(sum.Recent) != 1 || sum.Recent[0].ID != "new" {
		t.Errorf("summary = %+v, want only the record within the retention", sum)
	}
	if _, ok := m.recs.Get("old"); ok {
		t.Error("the expired record is still in the follower's copy")
	}
}

// TestWorkflowSummary: a workflow's card counts its suspended runs and
// shows what each awaits.
func TestWorkflowSummary(t *testing.T) {
	now := time.Now()
	m := &method{app: "trips", name: "book", retention: time.Hour, workflow: true}
	follow(t, m, []jobs.Record{
		{ID: "a", Status: jobs.Suspended, Waiting: []string{"signal:confirm"}, UpdatedAt: now.Add(-time.Second)},
		{ID: "b", Status: jobs.Suspended, Waiting: []string{"job:b-3"}, UpdatedAt: now.Add(-2 * time.Second)},
		{ID: "c", Status: jobs.Succeeded, UpdatedAt: now.Add(-3 * time.Second)}})
	sum := m.summary(now)
	if !sum.Workflow || sum.Suspended != 2 || sum.Succeeded != 1 || len(sum.Recent) != 3 ||
		len(sum.Recent[0].Waiting) != 1 || sum.Recent[0].Waiting[0] != "signal:confirm" {
		t.Errorf("summary = %+v, want a workflow with 2 suspended runs (a awaiting signal:confirm) and 1 succeeded", sum)
	}
}

// TestSnapshotShowsTheSplit: a graph application's live split (from
// Options.GraphStatus) is in the snapshot the page renders.
func TestSnapshotShowsTheSplit(t *testing.T) {
	e := start(t, Options{GraphStatus: func(a config.Application) *protocol.GraphStatus {
		return &protocol.GraphStatus{Splitters: []protocol.SplitterStatus{{Node: "root", WindowSeconds: 60, Requests: 20,
			Branches: []protocol.BranchStatus{{Step: "v1", Target: "V1", Weight: 95, Requests: 19, Share: 95},
				{Step: "v2", Target: "V2", Weight: 5, Requests: 1, Share: 5}}}}}
	}})
	sc, err := config.Parse([]byte(`applications:
- name: canary
  route_prefix: /canary
  deployments: [{name: V1, handler: h}, {name: V2, handler: h}]
  graph: {nodes: [{name: root, type: splitter, steps: [{name: v1, deployment: V1, weight: 95}, {name: v2, deployment: V2, weight: 5}]}]}
- {name: plain, route_prefix: /p, ingress: D, deployments: [{name: D, handler: h}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, e.buckets.Apps, fleetstate.ConfigKey, sc)
	s := e.eventually(t, "the canary's split", func(s Snapshot) bool {
		for _, a := range s.Applications {
			if a.Name == "canary" && a.Graph != nil {
				return true
			}
		}
		return false
	})
	for _, a := range s.Applications {
		switch {
		case a.Name == "canary" && a.Graph.Splitters[0].Branches[1].Requests != 1:
			t.Errorf("canary's split = %+v, want v2 with 1 request", a.Graph)
		case a.Name == "plain" && a.Graph != nil:
			t.Errorf("plain has a split %+v, want none", a.Graph)
		}
	}
}
