// Package control is the leading autoscaler's loop. Lead reads the
// decisions a previous leader wrote (so a restart loses none and restarts
// every delay rather than acting early), watches the serve config, the
// Replicas bucket and the status, and on every tick samples each
// autoscaled deployment's load from its Sources into a look-back series,
// runs decide.Decide and writes each change to the Scale bucket, where
// the scheduler picks it up. A kick (requests queued somewhere) runs a
// pass at once so a deployment at zero starts without waiting for the
// tick.
//
// The buckets are followed with kvfollow (re-read at once after a NATS
// reconnect) by goroutines Lead owns and waits for; all decision state
// belongs to the goroutine running Lead, which reads the followers'
// copies when they signal a change. Lead returns promptly once its
// context ends.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/services/autoscaler/internal/decide"
	"github.com/jetserve/jetserve/services/autoscaler/internal/signals"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Refresh is how often an unchanged decision is rewritten with the
// current load (for status and for humans reading the bucket).
const Refresh = 5 * time.Second

// Options configure a Controller.
type Options struct {
	// NC is the connection the buckets use (its reconnects resync them).
	NC      *nats.Conn
	Buckets *fleetstate.Buckets
	// Sources are summed per deployment.
	Sources []signals.Source
	// Forget is told each replica whose record left the Replicas bucket.
	Forget func(replicaID string)
	// Kick asks for a pass now.
	Kick <-chan struct{}
	// Interval is the loop's tick; Warmup how long a new leader only
	// collects load (cold starts excepted) before it decides.
	Interval, Warmup time.Duration
	Log              zerolog.Logger
	Metrics          *Metrics
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// Controller decides while its autoscaler leads.
type Controller struct {
	o Options
}

// New returns a Controller.
func New(o Options) *Controller {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = 100 * time.Millisecond
	}
	if o.Forget == nil {
		o.Forget = func(string) {}
	}
	return &Controller{o: o}
}

// deployment is one autoscaled deployment's state in a leadership term.
type deployment struct {
	app, name, key string
	policy         decide.Policy
	state          decide.State
	series         decide.Series
	// last is the decision last written (or read back); unwritten, when
	// not nil, one still to write.
	last      protocol.ScaleDecision
	have      bool
	unwritten *protocol.ScaleDecision
	writtenAt time.Time
}

type leader struct {
	*Controller
	epoch   uint64
	log     zerolog.Logger
	start   time.Time
	stored  map[string]protocol.ScaleDecision // read back at the start, by key
	deps    map[string]*deployment            // by ScaleKey
	cfg     config.ServeConfig
	records map[string]protocol.ReplicaInfo // by Replicas-bucket key
}

// Lead runs the loop until ctx ends; epoch stamps every decision.
func (c *Controller) Lead(ctx context.Context, epoch uint64) {
	log := c.o.Log.With().Uint64("epoch", epoch).Logger()
	c.o.Metrics.IsLeader.Set(1)
	defer c.o.Metrics.leaderEnded()
	l := &leader{Controller: c, epoch: epoch, log: log, stored: map[string]protocol.ScaleDecision{},
		deps: map[string]*deployment{}, records: map[string]protocol.ReplicaInfo{}}
	if err := l.run(ctx); err != nil && ctx.Err() == nil {
		log.Error().Err(err).Msg("autoscaler loop stopped; giving up leadership")
	}
}

func (l *leader) run(ctx context.Context) error {
	if err := l.readDecisions(ctx); err != nil {
		return err
	}
	b := l.o.Buckets
	cfg := kvfollow.New(l.o.NC, b.Apps, kvfollow.Options[config.ServeConfig]{Keys: []string{fleetstate.ConfigKey}, Log: l.log})
	replicas := kvfollow.New(l.o.NC, b.Replicas, kvfollow.Options[protocol.ReplicaInfo]{Log: l.log, Refreshed: fleetstate.HeartbeatInterval})
	status := kvfollow.New(l.o.NC, b.Status, kvfollow.Options[protocol.Status]{Keys: []string{fleetstate.StatusKey}, Log: l.log})
	fctx, stop := context.WithCancel(ctx)
	var g errgroup.Group
	defer func() {
		stop()
		_ = g.Wait()
	}()
	g.Go(func() error { return cfg.Run(fctx) })
	g.Go(func() error { return replicas.Run(fctx) })
	g.Go(func() error { return status.Run(fctx) })

	l.start = l.o.Now()
	var appsSynced, replicasSynced bool
	tick := time.NewTicker(l.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-cfg.Changed():
			sc, _ := cfg.Get(fleetstate.ConfigKey) // none or deleted: no deployment
			l.onConfig(ctx, sc)
			if !appsSynced && closed(cfg.Ready()) {
				appsSynced = true
				l.prune(ctx)
			}
		case <-replicas.Changed():
			l.onReplicas(replicas.Snapshot())
			replicasSynced = replicasSynced || closed(replicas.Ready())
		case <-status.Changed():
			if st, ok := status.Get(fleetstate.StatusKey); ok {
				l.o.Metrics.DesiredWorkers.Set(float64(DesiredWorkers(st)))
			}
		case <-tick.C:
			if appsSynced && replicasSynced {
				l.pass(ctx)
			}
		case <-l.o.Kick:
			if appsSynced && replicasSynced {
				l.pass(ctx)
			}
		}
	}
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// readDecisions loads every decision in the Scale bucket.
func (l *leader) readDecisions(ctx context.Context) error {
	err := fleetstate.ReadAll(ctx, l.o.Buckets.Scale, func(k string, v []byte) {
		var d protocol.ScaleDecision
		if err := json.Unmarshal(v, &d); err != nil {
			l.log.Warn().Err(err).Str("key", k).Msg("skip undecodable decision")
			return
		}
		l.stored[k] = d
	})
	if err != nil {
		return err
	}
	if len(l.stored) > 0 {
		l.log.Info().Int("deployments", len(l.stored)).Msg("resumed decisions")
	}
	return nil
}

// onConfig tracks the autoscaled deployments of the new config.
func (l *leader) onConfig(ctx context.Context, cfg config.ServeConfig) {
	l.cfg = cfg
	seen := map[string]bool{}
	for _, app := range cfg.Applications {
		for _, d := range app.Deployments {
			if d.AutoscalingConfig == nil {
				continue
			}
			key := protocol.ScaleKey(app.Name, d.Name)
			seen[key] = true
			p := decide.PolicyOf(*d.AutoscalingConfig)
			if dep, ok := l.deps[key]; ok {
				dep.policy = p
				continue
			}
			dep := &deployment{app: app.Name, name: d.Name, key: key, policy: p}
			if prev, ok := l.stored[key]; ok {
				dep.state.Desired, dep.last, dep.have, dep.writtenAt = prev.Desired, prev, true, l.o.Now()
			} else {
				dep.state.Desired = d.Replicas()
			}
			l.deps[key] = dep
		}
	}
	for key, dep := range l.deps {
		if !seen[key] {
			l.drop(ctx, dep)
		}
	}
}

// prune deletes decisions of deployments the config no longer autoscales.
func (l *leader) prune(ctx context.Context) {
	for key, d := range l.stored {
		if _, ok := l.deps[key]; !ok {
			l.drop(ctx, &deployment{app: d.App, name: d.Deployment, key: key})
		}
	}
	l.stored = map[string]protocol.ScaleDecision{}
}

func (l *leader) drop(ctx context.Context, d *deployment) {
	delete(l.deps, d.key)
	l.o.Metrics.forget(d.app, d.name)
	if err := l.o.Buckets.Scale.Delete(ctx, d.key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) && ctx.Err() == nil {
		l.log.Warn().Err(err).Str("key", d.key).Msg("delete decision of a deployment no longer autoscaled")
	}
}

// onReplicas takes the Replicas bucket's records: the replicas gone are
// forgotten.
func (l *leader) onReplicas(records map[string]protocol.ReplicaInfo) {
	for key, r := range l.records {
		if _, ok := records[key]; !ok {
			l.o.Forget(r.ID)
		}
	}
	l.records = records
}

// running counts RUNNING replicas per ScaleKey.
func (l *leader) running() map[string]int {
	m := map[string]int{}
	for _, r := range l.records {
		if r.State == protocol.ReplicaRunning && !r.PinnedOnly { // a replica kept for pinned workflow runs serves nothing
			m[protocol.ScaleKey(r.App, r.Deployment)]++
		}
	}
	return m
}

// pass samples, decides and writes for every autoscaled deployment.
func (l *leader) pass(ctx context.Context) {
	now := l.o.Now()
	warm := now.Sub(l.start) >= l.o.Warmup
	running := l.running()
	for _, d := range l.deps {
		var smp signals.Sample
		for _, src := range l.o.Sources {
			smp = smp.Add(src.Sample(d.app, d.name, now))
		}
		if last := d.series.Last(); last.IsZero() || now.Sub(last) >= d.policy.MetricsInterval {
			d.series.Add(now, float64(smp.Ongoing+smp.Queued), float64(smp.Backlog))
		}
		load, backlog := d.series.Mean(now, d.policy.LookBack)
		in := decide.Input{Now: now, Load: load, Backlog: backlog, Ongoing: smp.Ongoing, Queued: smp.Queued,
			BacklogNow: smp.Backlog, Warm: warm}
		prev := d.state.Desired
		next, dec := decide.Decide(d.policy, d.state, in)
		d.state = next
		cur := running[d.key]
		l.o.Metrics.observe(d.app, d.name, dec.Proposal, next.Desired, cur, load, smp)

		rec := protocol.ScaleDecision{App: d.app, Deployment: d.name, Desired: next.Desired, Current: cur,
			Target: d.policy.TargetOngoing, Load: round(load), Ongoing: smp.Ongoing, Queued: smp.Queued, Backlog: smp.Backlog,
			Epoch: l.epoch, At: now.UTC()}
		switch {
		case dec.Changed:
			rec.Reason, rec.Message = dec.Reason, dec.Message
			l.o.Metrics.Decisions.WithLabelValues(d.app, d.name, string(dec.Reason)).Inc()
			l.log.Info().Str("app", d.app).Str("deployment", d.name).Int("from", prev).Int("to", next.Desired).
				Str("reason", string(dec.Reason)).Float64("load", load).Int("ongoing", smp.Ongoing).Int("queued", smp.Queued).
				Int("running", cur).Msg(dec.Message)
			d.unwritten = &rec
		case !d.have && d.unwritten == nil:
			rec.Reason = protocol.ScaleInitial
			rec.Message = fmt.Sprintf("no decision yet: %d initial replicas", next.Desired)
			l.o.Metrics.Decisions.WithLabelValues(d.app, d.name, string(rec.Reason)).Inc()
			d.unwritten = &rec
		case d.unwritten == nil && now.Sub(d.writtenAt) >= Refresh && d.last.Desired == next.Desired &&
			(d.last.Current != cur || d.last.Load != rec.Load || d.last.Ongoing != rec.Ongoing || d.last.Queued != rec.Queued ||
				d.last.Backlog != rec.Backlog || d.last.Epoch != l.epoch):
			rec.Reason, rec.Message, rec.At = d.last.Reason, d.last.Message, d.last.At
			d.unwritten = &rec
		}
		if d.unwritten != nil {
			l.write(ctx, d, now)
		}
	}
}

func (l *leader) write(ctx context.Context, d *deployment, now time.Time) {
	data, err := json.Marshal(d.unwritten)
	if err != nil {
		l.log.Error().Err(err).Msg("encode decision")
		d.unwritten = nil
		return
	}
	if _, err := l.o.Buckets.Scale.Put(ctx, d.key, data); err != nil {
		if ctx.Err() == nil {
			l.log.Warn().Err(err).Str("key", d.key).Msg("write decision (will retry)")
		}
		return
	}
	d.last, d.have, d.unwritten, d.writtenAt = *d.unwritten, true, nil, now
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }

// DesiredWorkers estimates how many workers the fleet should have: the
// live ones plus enough for the replicas PENDING for lack of CPU, GPU or
// memory or for lack of any worker (their reason's code NeedsWorkers),
// sized like the average live worker; what each asks for is its reason's
// Need. An external scaler (KEDA) scales worker pods on it.
func DesiredWorkers(st protocol.Status) int {
	var cpu, gpu float64
	var mem int64
	pending := 0
	for _, a := range st.Applications {
		for _, ds := range a.Deployments {
			for _, r := range ds.Replicas {
				why := r.Reason
				if r.State != protocol.ReplicaPending || why == nil || !why.Code.NeedsWorkers() || why.Need == nil {
					continue
				}
				pending++
				cpu += why.Need.CPU
				gpu += why.Need.GPU
				mem += why.Need.MemoryBytes
			}
		}
	}
	n := len(st.Workers)
	if pending == 0 {
		return n
	}
	if n == 0 {
		return 1 // a first worker; its size tells how many more
	}
	var wcpu, wgpu float64
	var wmem int64
	for _, w := range st.Workers {
		wcpu += w.CPU
		wgpu += float64(len(w.GPUs))
		wmem += w.Memory
	}
	extra := 1
	if wcpu > 0 {
		extra = max(extra, int(math.Ceil(cpu/(wcpu/float64(n)))))
	}
	if gpu > 0 && wgpu > 0 {
		extra = max(extra, int(math.Ceil(gpu/(wgpu/float64(n)))))
	}
	if mem > 0 && wmem > 0 {
		extra = max(extra, int(math.Ceil(float64(mem)/(float64(wmem)/float64(n)))))
	}
	return n + extra
}
