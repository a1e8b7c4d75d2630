// Package reconcile is the leading scheduler's control loop. Lead watches
// the Apps, Workers, Replicas and Scale (autoscaler decisions) buckets, runs a plan.Step on every change
// (coalesced) and on a periodic tick, writes each worker's assignment to
// the Assignments bucket only when it changed, health-checks RUNNING
// replicas over NATS and writes the fleet status to the Status bucket.
//
// All state is owned by the one goroutine running Lead; health checks run
// in goroutines Lead starts and waits for before it returns, which it does
// promptly once its context ends (leadership lost or shutdown).
package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
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
	Log               zerolog.Logger
	Metrics           *Metrics
	// Signer, if set, signs every assignment (package provenance): the
	// scheduler's NATS credentials, which workers check.
	Signer *provenance.Signer
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
	workers    map[string]protocol.WorkerInfo
	records    map[string]protocol.ReplicaInfo   // by KV key
	recordSeen map[string]time.Time              // by KV key: when this instance last saw the record written
	scale      map[string]protocol.ScaleDecision // by plan.Key, from the Scale bucket
	written    map[string][]byte                 // assignment last written, by worker key
	lastStatus []byte
	statusAt   time.Time

	failures  map[string]int
	lastCheck map[string]time.Time
	checking  map[string]bool
	replace   map[string]string
	results   chan healthResult
	wg        sync.WaitGroup
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
		workers: map[string]protocol.WorkerInfo{}, records: map[string]protocol.ReplicaInfo{}, recordSeen: map[string]time.Time{}, written: map[string][]byte{},
		scale:    map[string]protocol.ScaleDecision{},
		failures: map[string]int{}, lastCheck: map[string]time.Time{}, checking: map[string]bool{}, replace: map[string]string{},
		results: make(chan healthResult, 64)}
	defer func() {
		cancel()
		l.wg.Wait()
	}()
	if err := l.run(ctx); err != nil && ctx.Err() == nil {
		log.Error().Err(err).Msg("reconcile loop stopped; giving up leadership")
	}
}

func (l *leader) run(ctx context.Context) error {
	b := l.o.Buckets
	if err := l.loadAssignments(ctx); err != nil {
		return err
	}
	watch := func(kv jetstream.KeyValue) (jetstream.KeyWatcher, error) {
		w, err := kv.WatchAll(ctx)
		if err != nil {
			return nil, fmt.Errorf("watch %s: %w", kv.Bucket(), err)
		}
		return w, nil
	}
	appsW, err := watch(b.Apps)
	if err != nil {
		return err
	}
	defer func() { _ = appsW.Stop() }()
	workersW, err := watch(b.Workers)
	if err != nil {
		return err
	}
	defer func() { _ = workersW.Stop() }()
	replicasW, err := watch(b.Replicas)
	if err != nil {
		return err
	}
	defer func() { _ = replicasW.Stop() }()
	scaleW, err := watch(b.Scale)
	if err != nil {
		return err
	}
	defer func() { _ = scaleW.Stop() }()

	var appsSynced, workersSynced, replicasSynced, scaleSynced, armed bool
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
	synced := func() bool { return appsSynced && workersSynced && replicasSynced && scaleSynced }
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-appsW.Updates():
			if !ok {
				return errors.New("apps watcher closed")
			}
			if e == nil {
				appsSynced = true
			} else {
				l.onApps(e)
			}
			dirty()
		case e, ok := <-workersW.Updates():
			if !ok {
				return errors.New("workers watcher closed")
			}
			if e == nil {
				workersSynced = true
			} else {
				l.onWorker(e)
			}
			dirty()
		case e, ok := <-replicasW.Updates():
			if !ok {
				return errors.New("replicas watcher closed")
			}
			if e == nil {
				replicasSynced = true
			} else {
				l.onReplica(e)
			}
			dirty()
		case e, ok := <-scaleW.Updates():
			if !ok {
				return errors.New("scale watcher closed")
			}
			if e == nil {
				scaleSynced = true
			} else {
				l.onScale(e)
			}
			dirty()
		case <-kick.C:
			armed = false
			if synced() {
				l.pass(ctx)
			}
		case <-tick.C:
			if synced() {
				l.pass(ctx)
			}
		case <-htick.C:
			if synced() {
				l.startHealthChecks(ctx)
			}
		case hr := <-l.results:
			if l.onHealth(hr) {
				dirty()
			}
		}
	}
}

// loadAssignments rebuilds the replicas from the assignments a previous
// leader wrote, so a failover restarts nothing.
func (l *leader) loadAssignments(ctx context.Context) error {
	now := time.Now()
	workers := 0
	err := service.ReadAll(ctx, l.o.Buckets.Assignments, func(k string, v []byte) {
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
	if workers > 0 {
		l.log.Info().Int("workers", workers).Int("replicas", len(l.st.Replicas)).Msg("resumed assignments")
	}
	return nil
}

func deleted(e jetstream.KeyValueEntry) bool {
	return e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
}

func (l *leader) onApps(e jetstream.KeyValueEntry) {
	if e.Key() != admin.ConfigKey {
		return
	}
	cfg := config.ServeConfig{}
	if !deleted(e) {
		c, err := admin.Decode(e.Value())
		if err != nil {
			l.log.Error().Err(err).Msg("ignoring stored config")
			return
		}
		cfg = c
	}
	seen := map[string]bool{}
	for _, a := range cfg.Applications {
		seen[a.Name] = true
		b, _ := json.Marshal(a)
		if l.appJSON[a.Name] != string(b) {
			l.appJSON[a.Name] = string(b)
			l.deployedAt[a.Name] = e.Created()
		}
	}
	for name := range l.appJSON {
		if !seen[name] {
			delete(l.appJSON, name)
			delete(l.deployedAt, name)
		}
	}
	l.cfg = cfg
}

func (l *leader) onWorker(e jetstream.KeyValueEntry) {
	if deleted(e) {
		if _, ok := l.workers[e.Key()]; ok {
			l.log.Warn().Str("worker_id", e.Key()).Msg("worker lost")
		}
		delete(l.workers, e.Key())
		return
	}
	var w protocol.WorkerInfo
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		l.log.Warn().Err(err).Str("key", e.Key()).Msg("skip undecodable worker")
		return
	}
	if _, ok := l.workers[e.Key()]; !ok {
		l.log.Info().Str("worker_id", e.Key()).Float64("cpu", w.CPU).Int("gpus", len(w.GPUs)).Msg("worker joined")
	}
	w.ID = e.Key()
	l.workers[e.Key()] = w
}

func (l *leader) onReplica(e jetstream.KeyValueEntry) {
	if deleted(e) {
		delete(l.records, e.Key())
		delete(l.recordSeen, e.Key())
		return
	}
	var r protocol.ReplicaInfo
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		l.log.Warn().Err(err).Str("key", e.Key()).Msg("skip undecodable replica record")
		return
	}
	if r.ID == "" {
		if parts := strings.SplitN(e.Key(), ".", 3); len(parts) == 3 {
			r.ID = parts[2]
		}
	}
	l.records[e.Key()] = r
	l.recordSeen[e.Key()] = time.Now()
}

// onScale keeps the autoscaler's latest decision per deployment.
func (l *leader) onScale(e jetstream.KeyValueEntry) {
	if deleted(e) {
		for k, d := range l.scale {
			if protocol.ScaleKey(d.App, d.Deployment) == e.Key() {
				delete(l.scale, k)
			}
		}
		return
	}
	var d protocol.ScaleDecision
	if err := json.Unmarshal(e.Value(), &d); err != nil || d.App == "" || d.Deployment == "" {
		l.log.Warn().Err(err).Str("key", e.Key()).Msg("skip undecodable scale decision")
		return
	}
	k := plan.Key(d.App, d.Deployment)
	if prev, ok := l.scale[k]; !ok || prev.Desired != d.Desired {
		l.log.Info().Str("app", d.App).Str("deployment", d.Deployment).Int("desired", d.Desired).
			Str("reason", string(d.Reason)).Msg("autoscaler decision")
	}
	l.scale[k] = d
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

// liveRecords returns the replica records by replica id, dropping those
// not refreshed within StaleRecord of now.
func (l *leader) liveRecords(now time.Time) map[string]protocol.ReplicaInfo {
	m := make(map[string]protocol.ReplicaInfo, len(l.records))
	for k, r := range l.records {
		if seen, ok := l.recordSeen[k]; ok && now.Sub(seen) > StaleRecord {
			l.log.Warn().Str("replica_id", r.ID).Str("worker_id", r.WorkerID).Dur("unrefreshed", now.Sub(seen)).
				Msg("replica record not refreshed and its expiry never seen; dropping it")
			delete(l.records, k)
			delete(l.recordSeen, k)
			continue
		}
		m[r.ID] = r
	}
	return m
}

func (l *leader) pass(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	start := time.Now()
	defer func() { l.o.Metrics.ReconcileDuration.Observe(time.Since(start).Seconds()) }()
	in := plan.Input{Config: l.cfg, Workers: l.workers, Records: l.recordsByID(), Replace: l.replace,
		StartTimeout: l.o.StartTimeout, Now: start, Scale: l.scale,
		Rebalance: l.o.Rebalance, RebalanceCooldown: l.o.RebalanceCooldown}
	next, res := plan.Step(l.st, in)
	for _, ev := range res.Events {
		lg := l.log.Info()
		if ev.Action == "remove" && ev.Reason != "scale down" && !strings.HasPrefix(ev.Reason, "rolling update") &&
			!strings.HasPrefix(ev.Reason, "rebalance") && ev.Reason != "deleted from the config" {
			lg = l.log.Warn()
			l.o.Metrics.Replacements.WithLabelValues(ev.App, ev.Deployment, replacementKind(ev.Reason)).Inc()
		}
		lg.Str("replica_id", ev.ReplicaID).Str("app", ev.App).Str("deployment", ev.Deployment).
			Str("worker_id", ev.WorkerID).Str("reason", ev.Reason).Msg("replica " + ev.Action)
	}
	l.st = next
	l.writeAssignments(ctx, res)
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

func replacementKind(reason string) string {
	switch {
	case strings.Contains(reason, "health check"):
		return "health_check"
	case strings.Contains(reason, "lost"):
		return "worker_lost"
	case strings.Contains(reason, "draining"):
		return "worker_draining"
	case strings.Contains(reason, "vanished"):
		return "record_vanished"
	case strings.HasPrefix(reason, "FAILED"):
		return "start_failed"
	}
	return "start_timeout"
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
		if _, err := kv.Put(ctx, id, data); err != nil {
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
		if err := kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
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
		l.replace[hr.id] = fmt.Sprintf("health check failed %d times: %v", n, hr.err)
		return true
	}
	return false
}
