package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/services/scheduler/internal/admin"
	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// stored is a followed value with its entry's revision and creation time.
type stored[T any] struct {
	Value   T
	Rev     uint64
	Created time.Time
}

// source is one bucket the leader follows: a kvfollow.Follower that marks
// the source dirty and signals the leader on every change and (re)sync,
// and what the leader does with a fresh copy of the bucket.
type source interface {
	run(ctx context.Context) error
	synced() bool
	// apply hands the copy to the leader if it changed since the last
	// apply; it runs on the leader's goroutine.
	apply()
}

type bucketSource[T any] struct {
	f     *kvfollow.Follower[stored[T]]
	dirty atomic.Bool
	take  func(map[string]stored[T])
}

// follow returns the source of kv's keys (all when none): each value is
// decoded by decode, handed to take as a whole copy, and its changes are
// signalled on changed (capacity 1: coalesced).
// refreshed is kvfollow.Options.Refreshed: set for the buckets of
// liveness records (workers, replicas), whose expiries amid a NATS
// election are held rather than taken for the loss of every worker.
func follow[T any](nc *nats.Conn, kv jetstream.KeyValue, keys []string, refreshed time.Duration, log zerolog.Logger, changed chan<- struct{},
	decode func(key string, data []byte) (T, error), take func(map[string]stored[T])) source {
	s := &bucketSource[T]{take: take}
	mark := func() {
		s.dirty.Store(true)
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	s.f = kvfollow.New(nc, kv, kvfollow.Options[stored[T]]{Keys: keys, Log: log, Refreshed: refreshed,
		DecodeEntry: func(e jetstream.KeyValueEntry) (stored[T], error) {
			v, err := decode(e.Key(), e.Value())
			return stored[T]{Value: v, Rev: e.Revision(), Created: e.Created()}, err
		},
		OnChange: func(kvfollow.Change[stored[T]]) { mark() },
		OnSync:   mark,
	})
	return s
}

func (s *bucketSource[T]) run(ctx context.Context) error { return s.f.Run(ctx) }
func (s *bucketSource[T]) synced() bool                  { return s.f.Synced() }

func (s *bucketSource[T]) apply() {
	if s.dirty.Swap(false) {
		s.take(s.f.Snapshot())
	}
}

// sources follows the Apps (the config key), Workers, Replicas and Scale
// buckets into the leader's state; every change is signalled on changed.
func (l *leader) sources(changed chan<- struct{}) []source {
	b, nc := l.o.Buckets, l.o.NC
	return []source{
		follow(nc, b.Apps, []string{admin.ConfigKey}, 0, l.log, changed,
			func(_ string, data []byte) (config.ServeConfig, error) { return admin.Decode(data) }, l.onApps),
		follow(nc, b.Workers, nil, fleetstate.HeartbeatInterval, l.log, changed, checkWorker(l.o.Records), l.onWorkers),
		follow(nc, b.Replicas, nil, fleetstate.HeartbeatInterval, l.log, changed, checkRecord(l.o.Records), func(m map[string]stored[protocol.ReplicaInfo]) {
			l.onReplicas(m, time.Now())
		}),
		follow(nc, b.Scale, nil, 0, l.log, changed, decodeDecision, l.onScale),
	}
}

// runSources runs every source until ctx ends.
func runSources(ctx context.Context, srcs []source) error {
	var g errgroup.Group
	for _, s := range srcs {
		g.Go(func() error { return s.run(ctx) })
	}
	return g.Wait()
}

func decodeJSON[T any](data []byte) (T, error) {
	var v T
	err := json.Unmarshal(data, &v)
	return v, err
}

// decodeWorker decodes a worker's registration; its ID is its key's
// (protocol.WorkerKey), which the worker's NATS permissions let it alone
// write. A registration under another key, or naming another worker, is
// refused.
func decodeWorker(key string, data []byte) (protocol.WorkerInfo, error) {
	id, ok := protocol.WorkerOfKey(key)
	if !ok {
		return protocol.WorkerInfo{}, fmt.Errorf("worker registration under %q, not a worker key", key)
	}
	w, err := decodeJSON[protocol.WorkerInfo](data)
	if err != nil {
		return w, err
	}
	if w.ID != "" && protocol.Token(w.ID) != id {
		return w, fmt.Errorf("registration of worker %q stored under worker %q's key", w.ID, id)
	}
	w.ID = id
	return w, nil
}

// checkWorker is decodeWorker, then, with c, the check of who signed the
// registration (an undecodable value: kvfollow logs and skips it).
func checkWorker(c *provenance.Replicas) func(string, []byte) (protocol.WorkerInfo, error) {
	if c == nil {
		return decodeWorker
	}
	return checked(decodeWorker, func(w protocol.WorkerInfo) error {
		if _, err := c.Verifier().VerifyWorker(w); err != nil {
			return fmt.Errorf("registration of worker %q refused: %w", w.ID, err)
		}
		return nil
	})
}

// checkRecord is decodeRecord, then, with c, the check that the record's
// worker signed it.
func checkRecord(c *provenance.Replicas) func(string, []byte) (protocol.ReplicaInfo, error) {
	if c == nil {
		return decodeRecord
	}
	return checked(decodeRecord, func(r protocol.ReplicaInfo) error {
		ctx, cancel := context.WithTimeout(context.Background(), recordCheckTimeout)
		defer cancel()
		if err := c.Check(ctx, r); err != nil {
			return fmt.Errorf("record of replica %s refused: %w", r.ID, err)
		}
		return nil
	})
}

// checked is decode, then check of what it decoded.
func checked[T any](decode func(string, []byte) (T, error), check func(T) error) func(string, []byte) (T, error) {
	return func(key string, data []byte) (T, error) {
		v, err := decode(key, data)
		if err == nil {
			err = check(v)
		}
		return v, err
	}
}

// recordCheckTimeout bounds reading a worker's registration to check its
// replica records (once per worker and signer).
const recordCheckTimeout = 2 * time.Second

// decodeRecord decodes a replica record; one without an ID takes it from
// its key (protocol.ReplicaKey). A record stored under another key than
// its app, deployment, worker and id give is refused: the worker token of
// the key is what the NATS permissions let one worker write.
func decodeRecord(key string, data []byte) (protocol.ReplicaInfo, error) {
	app, dep, worker, id, ok := protocol.SplitReplicaKey(key)
	if !ok {
		return protocol.ReplicaInfo{}, fmt.Errorf("replica record under %q, not a replica key", key)
	}
	r, err := decodeJSON[protocol.ReplicaInfo](data)
	if err != nil {
		return r, err
	}
	if r.ID == "" {
		r.ID = id
	}
	if want := protocol.ReplicaKey(r.App, r.Deployment, r.WorkerID, r.ID); want != key {
		return r, fmt.Errorf("replica %s of %s/%s on worker %q stored under %q (%s/%s on %s), not %q",
			r.ID, r.App, r.Deployment, r.WorkerID, key, app, dep, worker, want)
	}
	return r, nil
}

// decodeDecision decodes an autoscaler decision, which must name its
// deployment.
func decodeDecision(_ string, data []byte) (protocol.ScaleDecision, error) {
	d, err := decodeJSON[protocol.ScaleDecision](data)
	if err == nil && (d.App == "" || d.Deployment == "") {
		err = errors.New("decision names no app and deployment")
	}
	return d, err
}

// onApps takes the stored config (none: no application). An application
// whose definition changed is deployed at the time the config was stored.
func (l *leader) onApps(m map[string]stored[config.ServeConfig]) {
	e := m[admin.ConfigKey]
	cfg := e.Value
	seen := map[string]bool{}
	for _, a := range cfg.Applications {
		seen[a.Name] = true
		b, _ := json.Marshal(a)
		if l.appJSON[a.Name] != string(b) {
			l.appJSON[a.Name] = string(b)
			l.deployedAt[a.Name] = e.Created
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

// onWorkers takes the live workers, logging those that joined and left.
func (l *leader) onWorkers(m map[string]stored[protocol.WorkerInfo]) {
	workers := make(map[string]protocol.WorkerInfo, len(m))
	for _, e := range m {
		id := e.Value.ID
		if _, ok := l.workers[id]; !ok {
			l.log.Info().Str("worker_id", id).Float64("cpu", e.Value.CPU).Int("gpus", len(e.Value.GPUs)).Msg("worker joined")
		}
		workers[id] = e.Value
	}
	for id := range l.workers {
		if _, ok := workers[id]; !ok {
			l.log.Warn().Str("worker_id", id).Msg("worker lost")
		}
	}
	l.workers = workers
}

// record is a replica record as this instance follows it.
type record struct {
	info protocol.ReplicaInfo
	rev  uint64
	// seen is when this instance last saw the record written (a new
	// revision); stale is set once it was logged as expired.
	seen  time.Time
	stale bool
}

// onReplicas takes the replica records; one written since the last copy
// (a new revision) counts as seen at now.
func (l *leader) onReplicas(m map[string]stored[protocol.ReplicaInfo], now time.Time) {
	for k, e := range m {
		if r, ok := l.records[k]; ok && r.rev == e.Rev {
			continue
		}
		l.records[k] = record{info: e.Value, rev: e.Rev, seen: now}
	}
	for k := range l.records {
		if _, ok := m[k]; !ok {
			delete(l.records, k)
		}
	}
}

// onScale keeps the autoscaler's latest decision per deployment, logging
// each new replica count.
func (l *leader) onScale(m map[string]stored[protocol.ScaleDecision]) {
	scale := make(map[string]protocol.ScaleDecision, len(m))
	for _, e := range m {
		d := e.Value
		k := plan.Key(d.App, d.Deployment)
		if prev, ok := l.scale[k]; !ok || prev.Desired != d.Desired {
			l.log.Info().Str("app", d.App).Str("deployment", d.Deployment).Int("desired", d.Desired).
				Str("reason", string(d.Reason)).Msg("autoscaler decision")
		}
		scale[k] = d
	}
	l.scale = scale
}

// liveRecords returns the replica records by replica id, leaving out
// those not written within StaleRecord of now (logged once each).
func (l *leader) liveRecords(now time.Time) map[string]protocol.ReplicaInfo {
	m := make(map[string]protocol.ReplicaInfo, len(l.records))
	for k, r := range l.records {
		if age := now.Sub(r.seen); age > StaleRecord {
			if !r.stale {
				l.log.Warn().Str("replica_id", r.info.ID).Str("worker_id", r.info.WorkerID).Dur("unrefreshed", age).
					Msg("replica record not refreshed and its expiry never seen; ignoring it")
				r.stale = true
				l.records[k] = r
			}
			continue
		}
		m[r.info.ID] = r.info
	}
	return m
}
