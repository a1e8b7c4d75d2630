// Package dashboard is the fleet's dashboard on the scheduler's admin
// port: a page (static files embedded in the binary, no build step, no
// CDN) at /dashboard/ and the JSON document it reads, GET /api/dashboard —
// applications, deployments and replicas with their workers, live request
// rate, latency and queues per deployment, jobs per async method, and the
// autoscaler's decisions over time. `jetserve status` reads the same
// document.
//
// Everything comes to the dashboard rather than being asked for on each
// request: replicas push load reports (with request totals) and routers
// their queues; the status, the config with the handlers' SDK defaults
// (fleetstate.AsyncFollower), the scale decisions (with their history)
// and each method's job records are followed with kvfollow, re-read at
// once after a NATS reconnect. The only JetStream API requests it makes
// are one backlog poll per async method (jobs.Queue.Backlog) every
// JobsInterval, and only while this instance leads (it then exports the
// backlog gauges for the fleet) or the page was viewed in the last
// ViewedFor. A snapshot is built from memory and shared by every viewer
// for up to CacheFor, so five browsers cost what one does.
//
// Run owns every goroutine the dashboard starts and returns when its
// context ends; Handler and Snapshot are safe for concurrent use.
package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Defaults of Options.
const (
	DefaultWindow       = 2 * time.Minute
	DefaultJobsInterval = 5 * time.Second
	DefaultCacheFor     = time.Second
	DefaultViewedFor    = 30 * time.Second
	// staleAfter: a replica's or router's report older than this no
	// longer counts in ongoing and queued.
	staleAfter = 3 * time.Second
	// maxDecisions per deployment kept for the chart.
	maxDecisions = 100
)

// Options configure a Dashboard.
type Options struct {
	NC      *nats.Conn
	JS      jetstream.JetStream
	Names   protocol.Names
	Buckets *fleetstate.Buckets
	// ID is this scheduler instance (shown on the page).
	ID  string
	Log zerolog.Logger
	// Gauges, if not nil, get the backlog of every method while this
	// instance leads (SetLeading), and lose it when it stops.
	Gauges *jobs.BacklogGauges
	// GraphStatus, if set, gives a graph application's live traffic split
	// (the ingresses' reports).
	GraphStatus func(config.Application) *protocol.GraphStatus
	// Window is how much live traffic and how far back decisions are
	// charted; JobsInterval how often backlogs are polled; CacheFor how
	// long one snapshot is shared; ViewedFor how long a view keeps the
	// polls going on a non-leading instance. Zero means the default.
	Window, JobsInterval, CacheFor, ViewedFor time.Duration
}

// Dashboard collects the fleet's live state for the page.
type Dashboard struct {
	o       Options
	queue   *jobs.Queue
	traffic *traffic
	leading atomic.Bool
	viewed  atomic.Int64 // unix nanoseconds of the last snapshot asked for

	mu        sync.Mutex            // guards the fields below
	status    protocol.Status       // latest of the Status bucket
	config    config.ServeConfig    // latest applied config
	decisions map[string][]decision // by ScaleKey, oldest first
	methods   map[string]*method    // by methodKey
	running   bool                  // Run is collecting
	cached    *Snapshot
	cachedAt  time.Time

	buildMu sync.Mutex // one snapshot is built at a time; the others wait and share it
}

// New returns a Dashboard; Run feeds it.
func New(o Options) *Dashboard {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.JobsInterval <= 0 {
		o.JobsInterval = DefaultJobsInterval
	}
	if o.CacheFor <= 0 {
		o.CacheFor = DefaultCacheFor
	}
	if o.ViewedFor <= 0 {
		o.ViewedFor = DefaultViewedFor
	}
	return &Dashboard{o: o, queue: jobs.NewQueue(o.JS, jobs.Names{Names: o.Names}, o.Log),
		traffic: newTraffic(o.Window, staleAfter), decisions: map[string][]decision{},
		methods: map[string]*method{}}
}

// SetLeading tells the dashboard whether this instance leads: the leader
// polls the job backlogs for the gauges even when no one looks.
func (d *Dashboard) SetLeading(on bool) { d.leading.Store(on) }

// Run collects until ctx ends. If subscribing to the load reports fails,
// it tries again a second later; the traffic window survives that.
func (d *Dashboard) Run(ctx context.Context) error {
	for {
		err := d.run(ctx)
		if ctx.Err() != nil {
			return nil
		}
		d.o.Log.Warn().Err(err).Msg("dashboard collector stopped; restarting")
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (d *Dashboard) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup // the followers and the records followers
	defer func() {
		cancel()
		wg.Wait()
		d.mu.Lock()
		for _, m := range d.methods {
			m.stop = nil
		}
		d.running = false
		d.mu.Unlock()
		d.forgetGauges()
	}()
	names := d.o.Names
	for _, s := range []struct {
		subj string
		cb   nats.MsgHandler
	}{
		{names.LoadWildcard(), func(m *nats.Msg) {
			var r protocol.LoadReport
			if json.Unmarshal(m.Data, &r) == nil && r.ReplicaID != "" {
				d.traffic.load(r, time.Now())
			}
		}},
		{names.RouterStatsSubject(), func(m *nats.Msg) {
			var s protocol.RouterStats
			if json.Unmarshal(m.Data, &s) == nil && s.RouterID != "" {
				d.traffic.router(s, time.Now())
			}
		}},
	} {
		sub, err := d.o.NC.Subscribe(s.subj, s.cb)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", s.subj, err)
		}
		defer sub.Unsubscribe() //nolint:errcheck // best effort on the way out
	}
	b := d.o.Buckets
	async := fleetstate.NewAsyncFollower(d.o.NC, b, d.o.Log) // the config and the handlers' SDK defaults
	status := kvfollow.New(d.o.NC, b.Status, kvfollow.Options[protocol.Status]{Keys: []string{fleetstate.StatusKey}, Log: d.o.Log})
	scale := kvfollow.New(d.o.NC, b.Scale, kvfollow.Options[protocol.ScaleDecision]{History: true, Log: d.o.Log,
		OnChange: func(c kvfollow.Change[protocol.ScaleDecision]) {
			if !c.Deleted { // a deployment no longer autoscaled keeps its chart
				d.addDecision(c.Key, c.Revision, c.Value)
			}
		}})
	for _, run := range []func(context.Context) error{async.Run, status.Run, scale.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = run(ctx) // returns nil once ctx ends
		}()
	}
	d.mu.Lock()
	d.running = true
	d.mu.Unlock()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastPoll time.Time
	wasLeading := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-status.Changed():
			st, _ := status.Get(fleetstate.StatusKey) // none: the zero status
			d.mu.Lock()
			d.status = st
			d.mu.Unlock()
		case <-async.Changed():
			t := async.Table()
			d.mu.Lock()
			d.config = t.Config()
			d.mu.Unlock()
			d.setMethods(effectiveMethods(t))
		case now := <-tick.C:
			d.traffic.tick(now)
			leading := d.leading.Load()
			if wasLeading && !leading {
				d.forgetGauges()
			}
			wasLeading = leading
			viewed := now.Sub(time.Unix(0, d.viewed.Load())) < d.o.ViewedFor
			if (leading || viewed) && now.Sub(lastPoll) >= d.o.JobsInterval-10*time.Millisecond {
				lastPoll = now
				d.pollJobs(ctx, &wg, now, leading)
			}
		}
	}
}

// setMethods replaces the followed methods with ms, keeping the state of
// those that stay and stopping the watches of those that go.
func (d *Dashboard) setMethods(ms map[string]*method) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, old := range d.methods {
		if nm, ok := ms[k]; ok && nm.dep == old.dep {
			old.retention = nm.retention
			ms[k] = old
			continue
		}
		if old.stop != nil {
			old.stop()
		}
		if d.o.Gauges != nil {
			d.o.Gauges.Forget(old.app, old.name)
		}
	}
	d.methods = ms
}

// pollJobs reads every method's backlog (and starts the records watches
// of methods that have a bucket by now). It runs on Run's goroutine.
func (d *Dashboard) pollJobs(ctx context.Context, wg *sync.WaitGroup, now time.Time, leading bool) {
	d.mu.Lock()
	ms := make([]*method, 0, len(d.methods))
	for _, m := range d.methods {
		ms = append(ms, m)
	}
	d.mu.Unlock()
	for _, m := range ms {
		if ctx.Err() != nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		b, err := d.queue.Backlog(pctx, m.app, m.name)
		cancel()
		pollErr := ""
		switch {
		case errors.Is(err, jobs.ErrUnknownMethod):
			b, err = jobs.Backlog{}, nil // never used yet: nothing queued
		case err != nil:
			pollErr = err.Error()
			d.o.Log.Debug().Err(err).Str("app", m.app).Str("method", m.name).Msg("dashboard: job backlog")
		}
		d.mu.Lock()
		if err == nil {
			m.backlog = b
			m.polledAt = now
		}
		m.pollErr = pollErr
		var runs map[jobs.Status]int
		if m.workflow && leading && d.o.Gauges != nil {
			runs = countByStatus(m.records(now))
		}
		start := m.stop == nil && d.methods[methodKey(m.app, m.name)] == m
		var mctx context.Context
		if start {
			mctx, m.stop = context.WithCancel(ctx)
		}
		d.mu.Unlock()
		if err == nil && leading && d.o.Gauges != nil {
			d.o.Gauges.Set(m.app, m.name, b, now)
		}
		if runs != nil {
			d.o.Gauges.SetWorkflowRuns(m.app, m.name, runs)
		}
		if start {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := m.followRecords(mctx, d.o.NC, d.o.JS, jobs.Names{Names: d.o.Names}, d.o.Log)
				if err != nil && mctx.Err() == nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
					d.o.Log.Debug().Err(err).Str("app", m.app).Str("method", m.name).Msg("dashboard: job records watch")
				}
				d.mu.Lock()
				if mctx.Err() == nil {
					m.stop = nil // not there yet, or broken: the next poll starts it again
				}
				d.mu.Unlock()
			}()
		}
	}
}

func (d *Dashboard) forgetGauges() {
	if d.o.Gauges == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.methods {
		d.o.Gauges.Forget(m.app, m.name)
	}
}

// decision is a scale decision with its revision in the Scale bucket.
type decision struct {
	protocol.ScaleDecision
	rev uint64
}

// addDecision keeps dec, the revision rev of key, in time order; one it
// already has (a resync delivers the bucket's history again) is skipped.
func (d *Dashboard) addDecision(key string, rev uint64, dec protocol.ScaleDecision) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ds := d.decisions[key]
	if slices.ContainsFunc(ds, func(o decision) bool { return o.rev == rev && o.At.Equal(dec.At) }) {
		return
	}
	i := sort.Search(len(ds), func(i int) bool { return ds[i].At.After(dec.At) })
	ds = slices.Insert(ds, i, decision{ScaleDecision: dec, rev: rev})
	if len(ds) > maxDecisions {
		ds = ds[len(ds)-maxDecisions:]
	}
	d.decisions[key] = ds
}
