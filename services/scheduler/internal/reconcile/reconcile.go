// Package reconcile is the leading scheduler's control loop. Lead follows
// the Apps, Workers, Replicas and Scale (autoscaler decisions) buckets
// with kvfollow (re-read at once after a NATS reconnect), runs a plan.Step
// on every change (coalesced) and on a periodic tick — only while every
// bucket's copy is synced —, writes each worker's assignment to the
// Assignments bucket only when it changed, health-checks RUNNING replicas
// over NATS, counts the workflow runs pinned to earlier versions while a
// deployment has replicas of one (pins.go) and writes the fleet status to
// the Status bucket.
//
// All state is owned by the one goroutine running Lead, which reads the
// followers' copies when they signal a change; the followers, the health
// checks and the pinned-run counts run in goroutines Lead starts and
// waits for before it
// returns, which it does promptly once its context ends (leadership lost
// or shutdown).
package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/scheduler/internal/admin"
	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Options configure a Reconciler.
type Options struct {
	// ID identifies this scheduler in the status.
	ID      string
	Names   protocol.Names
	NC      *nats.Conn
	Buckets *service.Buckets
	// Interval is the periodic pass; StartTimeout how long a replica may
	// take to reach RUNNING before it is replaced.
	Interval, StartTimeout time.Duration
	// Rebalance moves replicas of unevenly spread deployments, one at a
	// time, at most one per RebalanceCooldown per deployment (plan.Input).
	Rebalance         bool
	RebalanceCooldown time.Duration
	// Colocate places deployments joined by uses edges on the same
	// workers where their spread allows (plan.Input).
	Colocate bool
	Log      zerolog.Logger
	Metrics  *Metrics
	// Signer, if set, signs every assignment (package provenance): the
	// scheduler's NATS credentials, which workers check.
	Signer *provenance.Signer
	// Records, if set, checks who wrote the workers' registrations and
	// replica records: one not signed by a worker user of the scheduler's
	// account (with a user per worker, the worker's own) is ignored.
	Records *provenance.Replicas
	// Jobs, if set, counts the workflow runs pinned to a deployment
	// version (pins.go): a rolling update keeps a replica of each old
	// version with pinned runs. nil: versions are not tracked.
	Jobs *jobs.Queue
}

// Reconciler runs the control loop while its scheduler leads.
type Reconciler struct {
	o Options
}

// New returns a Reconciler.
func New(o Options) *Reconciler {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	return &Reconciler{o: o}
}

const (
	// coalesce is how long a change waits for more before a pass runs.
	coalesce = 20 * time.Millisecond
	// statusRefresh rewrites an unchanged status this often (heartbeats).
	statusRefresh = 5 * time.Second
	healthTick    = 50 * time.Millisecond
)

type healthResult struct {
	id  string
	err error
}

// leader is the state of one leadership term.
type leader struct {
	*Reconciler
	epoch      uint64
	log        zerolog.Logger
	st         plan.State
	cfg        config.ServeConfig
	appJSON    map[string]string
	deployedAt map[string]time.Time
	workers    map[string]protocol.WorkerInfo    // by worker ID
	records    map[string]record                 // by Replicas-bucket key
	scale      map[string]protocol.ScaleDecision // by plan.Key, from the Scale bucket
	written    map[string][]byte                 // assignment last written, by worker key
	lastStatus []byte
	statusAt   time.Time

	failures  map[string]int
	lastCheck map[string]time.Time
	checking  map[string]bool
	replace   map[string]protocol.Reason
	results   chan healthResult
	wg        sync.WaitGroup

	// Pinned workflow runs (pins.go): counts by deployment key and
	// version (nil without Options.Jobs), whether a count runs, when the
	// last began, and where counts arrive.
	pinned      map[string]map[string]int
	pinCounting bool
	pinCountAt  time.Time
	pinResults  chan pinResult
	// pinStale holds the applications that had a replica of an earlier
	// version at the last look, pinAgain those to count even without one
	// (pins.go), and pinAll asks for every application to be counted
	// once (a new leader).
	pinStale, pinAgain map[string]bool
	pinAll             bool
}

// Lead runs the control loop until ctx ends; epoch (the lease revision)
// stamps every assignment written.
func (r *Reconciler) Lead(ctx context.Context, epoch uint64) {
	log := r.o.Log.With().Uint64("epoch", epoch).Logger()
	r.o.Metrics.IsLeader.Set(1)
	defer r.o.Metrics.IsLeader.Set(0)
	ctx, cancel := context.WithCancel(ctx)
	l := &leader{Reconciler: r, epoch: epoch, log: log, st: plan.NewState(),
		cfg: config.ServeConfig{}, appJSON: map[string]string{}, deployedAt: map[string]time.Time{},
		workers: map[string]protocol.WorkerInfo{}, records: map[string]record{}, written: map[string][]byte{},
		scale:    map[string]protocol.ScaleDecision{},
		failures: map[string]int{}, lastCheck: map[string]time.Time{}, checking: map[string]bool{}, replace: map[string]protocol.Reason{},
		results: make(chan healthResult, 64), pinResults: make(chan pinResult, 1)}
	if r.o.Jobs != nil {
		l.pinned, l.pinAll = map[string]map[string]int{}, true
	}
	defer func() {
		cancel()
		l.wg.Wait()
	}()
	if err := l.run(ctx); err != nil && ctx.Err() == nil {
		log.Error().Err(err).Msg("reconcile loop stopped; giving up leadership")
	}
}

func (l *leader) run(ctx context.Context) error {
	if err := l.loadAssignments(ctx); err != nil {
		return err
	}
	changed := make(chan struct{}, 1)
	srcs := l.sources(changed)
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runSources(fctx, srcs) }()
	defer func() {
		stop()
		<-done
	}()

	armed := false
	tick := time.NewTicker(l.o.Interval)
	defer tick.Stop()
	htick := time.NewTicker(healthTick)
	defer htick.Stop()
	kick := time.NewTimer(time.Hour)
	kick.Stop()
	defer kick.Stop()
	dirty := func() {
		if !armed {
			armed = true
			kick.Reset(coalesce)
		}
	}
	// ready takes what changed in the buckets and reports whether every
	// copy matches its bucket (after the initial values, and again after
	// each resync that follows a reconnect). It runs before a pass, not on
	// every change: a burst of heartbeats costs one copy of each bucket.
	ready := func() bool {
		ok := true
		for _, s := range srcs {
			s.apply()
			ok = ok && s.synced()
		}
		return ok
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			dirty()
		case <-kick.C:
			armed = false
			if ready() {
				l.pass(ctx)
			}
		case <-tick.C:
			if ready() {
				l.pass(ctx)
			}
		case <-htick.C:
			if ready() {
				l.startHealthChecks(ctx)
			}
		case hr := <-l.results:
			if l.onHealth(hr) {
				dirty()
			}
		case pr := <-l.pinResults:
			l.pinCounted(pr)
			dirty()
		}
	}
}

// loadAssignments rebuilds the replicas from the assignments a previous
// leader wrote, so a failover restarts nothing.
func (l *leader) loadAssignments(ctx context.Context) error {
	now := time.Now()
	workers := 0
	var stale []string
	err := service.ReadAll(ctx, l.o.Buckets.Assignments, func(key string, v []byte) {
		k, ok := protocol.WorkerOfAssignmentKey(key)
		if !ok {
			stale = append(stale, key)
			return
		}
		workers++
		var a protocol.Assignment
		if err := json.Unmarshal(v, &a); err != nil {
			l.log.Warn().Err(err).Str("worker_id", k).Msg("skip undecodable assignment")
			return
		}
		l.written[k] = v
		for _, s := range a.Replicas {
			l.st.Replicas[s.ID] = &plan.Replica{Spec: s, WorkerID: k, Created: now, Placed: now}
		}
	})
	if err != nil {
		return err
	}
	// Keys of no worker: the layout before protocol.AssignmentKey (no
	// worker reads them any more), or not a scheduler's.
	for _, key := range stale {
		if err := l.o.Buckets.Assignments.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			l.log.Warn().Err(err).Str("key", key).Msg("delete an assignment under no worker's key")
			continue
		}
		l.log.Info().Str("key", key).Msg("deleted an assignment under no worker's key")
	}
	if workers > 0 {
		l.log.Info().Int("workers", workers).Int("replicas", len(l.st.Replicas)).Msg("resumed assignments")
	}
	return nil
}

// StaleRecord is how long a replica record may go unrefreshed, as this
// instance sees it, before it is taken as expired even though its expiry
// (the bucket's TTL delete marker) never reached the watcher: three TTLs,
// while replicas refresh theirs every heartbeat. A NATS node lost or cut
// off while it led the bucket can lose that marker (seen in the chaos
// suite: a drained replica listed STOPPING for minutes).
const StaleRecord = 3 * fleetstate.ReplicaTTL

func (l *leader) recordsByID() map[string]protocol.ReplicaInfo {
	return l.liveRecords(time.Now())
}

func (l *leader) pass(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	start := time.Now()
	defer func() { l.o.Metrics.ReconcileDuration.Observe(time.Since(start).Seconds()) }()
	in := plan.Input{Config: l.cfg, Workers: l.workers, Records: l.recordsByID(), Replace: l.replace,
		StartTimeout: l.o.StartTimeout, Now: start, Scale: l.scale,
		Rebalance: l.o.Rebalance, RebalanceCooldown: l.o.RebalanceCooldown, Colocate: l.o.Colocate, Pinned: l.pinned}
	next, res := plan.Step(l.st, in)
	for _, ev := range res.Events {
		lg := l.log.Info()
		if ev.Action == "remove" && ev.Reason.Code.Replaced() {
			lg = l.log.Warn()
			l.o.Metrics.replaced(ev)
		}
		if ev.Reason.Code == protocol.ReasonPinnedUnplaced {
			lg = l.log.Warn()
		}
		if !ev.Reason.IsZero() {
			lg = lg.Str("reason_code", string(ev.Reason.Code)).Stringer("reason", ev.Reason)
		}
		lg.Str("replica_id", ev.ReplicaID).Str("app", ev.App).Str("deployment", ev.Deployment).
			Str("worker_id", ev.WorkerID).Msg("replica " + ev.Action)
	}
	l.st = next
	l.writeAssignments(ctx, res)
	l.startPinCount(ctx, start)
	for id := range l.replace {
		if _, ok := l.st.Replicas[id]; !ok {
			delete(l.replace, id)
		}
	}
	for _, m := range []map[string]int{l.failures} {
		for id := range m {
			if _, ok := l.st.Replicas[id]; !ok {
				delete(m, id)
			}
		}
	}
	for id := range l.lastCheck {
		if _, ok := l.st.Replicas[id]; !ok {
			delete(l.lastCheck, id)
		}
	}
	status := plan.BuildStatus(&l.st, in, res, l.o.ID, l.deployedAt)
	l.o.Metrics.observeStatus(status)
	l.writeStatus(ctx, status, start)
}

func (l *leader) writeAssignments(ctx context.Context, res plan.Result) {
	kv := l.o.Buckets.Assignments
	for id, a := range res.Assignments {
		a.Epoch = l.epoch
		data, err := json.Marshal(a)
		if err != nil {
			l.log.Error().Err(err).Str("worker_id", id).Msg("encode assignment")
			continue
		}
		if bytes.Equal(l.written[id], data) || ctx.Err() != nil {
			continue
		}
		unsigned := data
		if l.o.Signer != nil {
			if err := l.o.Signer.SignAssignment(&a); err != nil {
				l.log.Error().Err(err).Str("worker_id", id).Msg("sign assignment")
				continue
			}
			if data, err = json.Marshal(a); err != nil {
				l.log.Error().Err(err).Str("worker_id", id).Msg("encode assignment")
				continue
			}
		}
		if _, err := kv.Put(ctx, protocol.AssignmentKey(id), data); err != nil {
			l.log.Error().Err(err).Str("worker_id", id).Msg("write assignment")
			continue
		}
		l.written[id] = unsigned
		l.log.Debug().Str("worker_id", id).Int("replicas", len(a.Replicas)).Msg("assignment written")
	}
	for id := range l.written {
		if _, ok := res.Assignments[id]; ok || ctx.Err() != nil {
			continue
		}
		if err := kv.Delete(ctx, protocol.AssignmentKey(id)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			l.log.Error().Err(err).Str("worker_id", id).Msg("delete assignment of lost worker")
			continue
		}
		delete(l.written, id)
	}
}

func (l *leader) writeStatus(ctx context.Context, s protocol.Status, now time.Time) {
	cmp := s
	cmp.UpdatedAt = time.Time{}
	cmp.Workers = append([]protocol.WorkerStatus(nil), s.Workers...)
	for i := range cmp.Workers {
		cmp.Workers[i].Heartbeat = time.Time{}
	}
	key, _ := json.Marshal(cmp)
	if bytes.Equal(key, l.lastStatus) && now.Sub(l.statusAt) < statusRefresh {
		return
	}
	data, err := json.Marshal(s)
	if err != nil {
		l.log.Error().Err(err).Msg("encode status")
		return
	}
	if _, err := l.o.Buckets.Status.Put(ctx, admin.StatusKey, data); err != nil {
		if ctx.Err() == nil {
			l.log.Error().Err(err).Msg("write status")
		}
		return
	}
	l.lastStatus, l.statusAt = key, now
}

// deploymentConfig finds the config of a replica's deployment.
func (l *leader) deploymentConfig(app, dep string) (config.Deployment, bool) {
	a, ok := l.cfg.App(app)
	if !ok {
		return config.Deployment{}, false
	}
	return a.Deployment(dep)
}

// startHealthChecks sends a health request to each RUNNING replica whose
// period elapsed and that has no check in flight.
func (l *leader) startHealthChecks(ctx context.Context) {
	now := time.Now()
	recs := l.recordsByID()
	for id, r := range l.st.Replicas {
		rec, ok := recs[id]
		if !ok || r.WorkerID == "" || rec.WorkerID != r.WorkerID || rec.State != protocol.ReplicaRunning || l.checking[id] {
			continue
		}
		d, ok := l.deploymentConfig(r.Spec.App, r.Spec.Deployment)
		if !ok {
			continue
		}
		last, seen := l.lastCheck[id]
		if !seen {
			l.lastCheck[id] = now // first check one period after RUNNING
			continue
		}
		if now.Sub(last) < d.HealthCheckPeriod.D() {
			continue
		}
		l.lastCheck[id] = now
		l.checking[id] = true
		subject := l.o.Names.ReplicaSubject(id) + "." + protocol.EndpointHealth
		timeout := d.HealthCheckTimeout.D()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			err := check(ctx, l.o.NC, subject, timeout)
			select {
			case l.results <- healthResult{id: id, err: err}:
			case <-ctx.Done():
			}
		}()
	}
}

func check(ctx context.Context, nc *nats.Conn, subject string, timeout time.Duration) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(cctx, subject, nil)
	if err != nil {
		return err
	}
	if code := wire.ErrorCode(msg); code != "" {
		return fmt.Errorf("%s: %s", code, msg.Data)
	}
	if msg.Header != nil && msg.Header.Get("Nats-Service-Error-Code") != "" {
		return fmt.Errorf("%s: %s", msg.Header.Get("Nats-Service-Error-Code"), msg.Header.Get("Nats-Service-Error"))
	}
	return nil
}

// onHealth records a check's result; it reports whether the replica must
// now be replaced.
func (l *leader) onHealth(hr healthResult) bool {
	delete(l.checking, hr.id)
	r, ok := l.st.Replicas[hr.id]
	if !ok {
		return false
	}
	if hr.err == nil {
		delete(l.failures, hr.id)
		return false
	}
	l.failures[hr.id]++
	n := l.failures[hr.id]
	l.o.Metrics.HealthCheckFailure.WithLabelValues(r.Spec.App, r.Spec.Deployment).Inc()
	l.log.Warn().Err(hr.err).Str("replica_id", hr.id).Str("app", r.Spec.App).Str("deployment", r.Spec.Deployment).
		Int("consecutive", n).Msg("health check failed")
	if n >= config.HealthCheckFailureThreshold {
		l.replace[hr.id] = protocol.Reason{Code: protocol.ReasonHealthCheck, Failures: n, Detail: hr.err.Error()}
		return true
	}
	return false
}
