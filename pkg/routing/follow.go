package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// FollowOptions say what a Router follows.
type FollowOptions struct {
	Buckets *fleetstate.Buckets
	// ID names the router in RouterStats.
	ID string
	// StatsInterval is how often RouterStats are published (also on
	// queue changes, at most one per 20 ms).
	StatsInterval time.Duration
	Log           zerolog.Logger
	// Loaded, if set, is closed once the replicas, the config and the
	// status were read (take traffic after that).
	Loaded chan struct{}
	// Changed receives a value whenever a queue changed (wire it to
	// Options.OnQueueChange); nil: stats only on the interval.
	Changed <-chan struct{}
	// Records, if set (a router with credentials), checks that each
	// replica record is signed by the user of its worker's verified
	// registration: an unsigned or forged record is never routed to.
	Records *provenance.Replicas
}

// CheckRecord reports a replica record no worker writes: one stored under
// another key than its app, deployment, worker and id give (the worker's
// token is what the NATS permissions let one worker write), or whose subject is
// not its id's replica subject — a record pointing requests elsewhere
// (defence in depth behind the NATS permissions, which let only workers
// write the bucket).
func CheckRecord(names protocol.Names, key string, info protocol.ReplicaInfo) error {
	if want := protocol.ReplicaKey(info.App, info.Deployment, info.WorkerID, info.ID); key != want {
		return fmt.Errorf("replica %s of %s/%s on worker %q is stored under %q, not %q", info.ID, info.App, info.Deployment, info.WorkerID, key, want)
	}
	if want := names.ReplicaSubject(info.ID); info.Subject != want {
		return fmt.Errorf("replica %s names subject %q, not its own %q", info.ID, info.Subject, want)
	}
	return nil
}

// recordCheckTimeout bounds reading a worker's registration to check its
// replica records' signatures (once per worker and signer).
const recordCheckTimeout = 2 * time.Second

// StaleAfter is how long a replica's record may go without a refresh
// before a router stops routing to it (records are refreshed every
// fleetstate.HeartbeatInterval and expire after fleetstate.ReplicaTTL; this
// catches an expiry the router did not hear of). It only counts while the
// router's copy of the records is current: never across a NATS outage.
const StaleAfter = fleetstate.ReplicaTTL + fleetstate.HeartbeatInterval

// bucketSilence: when no replica record at all changed for this long, the
// bucket is not delivering (its stream is electing a leader, or the watch
// is stuck behind a lost node) rather than every replica being gone — and
// a router that took the silence for staleness would stop routing to every
// replica at once. Records then count as current (not stale) until
// changes arrive again; a replica that is really gone answers "no
// responders" to the next request or probe.
const bucketSilence = 2 * fleetstate.HeartbeatInterval

// Follow feeds r until ctx ends: RUNNING replicas from the Replicas
// bucket, load reports, the applied config (which deployments exist,
// max_queued_requests, request_timeout) and the scheduler's status (which
// deployments cannot run); it publishes r's RouterStats for the
// autoscaler and runs r's Sweep. The buckets are followed with kvfollow:
// after a NATS reconnect they are re-read at once. Every goroutine it
// starts ends before it returns.
func (r *Router) Follow(ctx context.Context, o FollowOptions) error {
	r.startLoads(func(m *nats.Msg) {
		var rep protocol.LoadReport
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			o.Log.Warn().Err(err).Str("subject", m.Subject).Msg("bad load report")
			return
		}
		r.SetLoad(rep)
	})
	defer r.stopLoads()

	var heard atomic.Int64 // when the last change of a replica record arrived (UnixNano)
	replicas := kvfollow.New(r.o.NC, o.Buckets.Replicas, kvfollow.Options[protocol.ReplicaInfo]{
		Log:       o.Log,
		Refreshed: fleetstate.HeartbeatInterval, // liveness records: an expiry amid a NATS election is held
		OnChange: func(c kvfollow.Change[protocol.ReplicaInfo]) {
			heard.Store(time.Now().UnixNano())
			switch {
			case c.Deleted:
				r.DeleteReplicaKey(c.Key)
			case c.Value.ID != "":
				err := CheckRecord(r.o.Names, c.Key, c.Value)
				if err == nil && o.Records != nil {
					cctx, cancel := context.WithTimeout(ctx, recordCheckTimeout)
					err = o.Records.Check(cctx, c.Value)
					cancel()
				}
				if err != nil {
					// Not a record a worker writes: never route to it.
					o.Log.Error().Err(err).Str("key", c.Key).Msg("replica record refused")
					r.DeleteReplicaKey(c.Key)
					return
				}
				r.SetReplica(c.Value)
			}
		},
	})
	var cfg *kvfollow.Follower[config.ServeConfig]
	cfg = kvfollow.New(r.o.NC, o.Buckets.Apps, kvfollow.Options[config.ServeConfig]{
		Keys: []string{fleetstate.ConfigKey},
		Log:  o.Log,
		OnChange: func(c kvfollow.Change[config.ServeConfig]) {
			r.SetConfig(c.Value) // a delete: the zero config, no deployment
		},
		OnSync: func() {
			if _, ok := cfg.Get(fleetstate.ConfigKey); !ok {
				r.SetConfig(config.ServeConfig{}) // nothing applied yet
			}
		},
	})
	status := kvfollow.New(r.o.NC, o.Buckets.Status, kvfollow.Options[protocol.Status]{
		Keys: []string{fleetstate.StatusKey},
		Log:  o.Log,
		OnChange: func(c kvfollow.Change[protocol.Status]) {
			r.SetStatus(c.Value)
		},
	})

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return replicas.Run(gctx) })
	g.Go(func() error { return cfg.Run(gctx) })
	g.Go(func() error { return status.Run(gctx) })
	g.Go(func() error {
		for _, ch := range []<-chan struct{}{replicas.Ready(), cfg.Ready(), status.Ready()} {
			select {
			case <-ch:
			case <-gctx.Done():
				return nil
			}
		}
		if o.Loaded != nil {
			close(o.Loaded)
		}
		return nil
	})
	g.Go(func() error {
		return r.sweepLoop(gctx, func() bool {
			return replicas.Synced() && time.Since(time.Unix(0, heard.Load())) < bucketSilence
		})
	})
	interval := o.StatsInterval
	if interval <= 0 {
		interval = time.Second
	}
	g.Go(func() error { return r.publishStats(gctx, o.ID, interval, o.Changed, o.Log) })
	err := g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// sweepLoop runs Sweep every ProbeAfter/2 and notes reconnects. Replicas
// go stale only while synced reports the records current.
func (r *Router) sweepLoop(ctx context.Context, synced func() bool) error {
	status := r.o.NC.StatusChanged(nats.CONNECTED)
	defer r.o.NC.RemoveStatusListener(status)
	t := time.NewTicker(r.o.Liveness.ProbeAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-status:
			r.Reconnected()
		case <-t.C:
			var stale time.Duration
			if synced() {
				stale = StaleAfter
			}
			r.Sweep(stale)
		}
	}
}

// publishStats publishes RouterStats every interval and, coalesced to at
// most one per 20 ms, whenever a queue changed.
func (r *Router) publishStats(ctx context.Context, id string, interval time.Duration, changed <-chan struct{}, log zerolog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	subject := r.o.Names.RouterStatsSubject()
	var last time.Time
	var hold <-chan time.Time
	pub := func() {
		b, err := json.Marshal(protocol.RouterStats{RouterID: id, Queued: r.Queued(), At: time.Now().UTC()})
		if err == nil {
			err = r.o.NC.Publish(subject, b)
		}
		if err != nil {
			log.Warn().Err(err).Msg("publish router stats")
		}
		last = time.Now()
	}
	const minGap = 20 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			pub()
		case <-changed:
			if wait := minGap - time.Since(last); wait > 0 {
				if hold == nil {
					hold = time.After(wait)
				}
				continue
			}
			pub()
		case <-hold:
			hold = nil
			pub()
		}
	}
}

// startLoads makes followLoad subscribe to a deployment's load reports
// with handle, from the next request routed to it.
func (r *Router) startLoads(handle nats.MsgHandler) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	r.onLoad, r.loadSubs = handle, map[string][]*nats.Subscription{}
}

// stopLoads ends every load-report subscription (Follow returns).
func (r *Router) stopLoads() {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	for key, subs := range r.loadSubs {
		for _, sub := range subs {
			_ = sub.Unsubscribe() // best effort on the way out
		}
		r.depMu.RLock()
		if d := r.deps[key]; d != nil {
			d.loadFollowed.Store(false)
		}
		r.depMu.RUnlock()
	}
	r.onLoad, r.loadSubs = nil, nil
}

// unfollowLoad ends the load-report subscriptions of d (a deployment
// that left the applied config: nothing is routed to it any more); a
// request to it after it came back subscribes again (followLoad).
func (r *Router) unfollowLoad(d *deployment) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	for _, sub := range r.loadSubs[d.key] {
		_ = sub.Unsubscribe() // best effort: the reports of a deployment gone stop anyway
	}
	delete(r.loadSubs, d.key)
	d.loadFollowed.Store(false)
}

// followLoad subscribes to d's load reports (the route reports sent on
// every change, and the full ones), once, while Follow runs. A router
// learns a replica's load from its reports and its own requests in flight
// (replica.load): until the first report after the subscription — at the
// next change of the replica's load, at most LoadInterval later — it
// counts only its own, as it does for a replica that just started. A
// failed subscription is tried again at the next request.
func (r *Router) followLoad(d *deployment) {
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if r.onLoad == nil || r.loadSubs[d.key] != nil {
		return
	}
	var subs []*nats.Subscription
	for _, subject := range []string{r.o.Names.RouteLoadSubject(d.app, d.name), r.o.Names.LoadSubject(d.app, d.name)} {
		sub, err := r.o.NC.Subscribe(subject, r.onLoad)
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe() // tried again at the next request
			}
			r.o.Log.Warn().Err(err).Str("deployment", d.app+"/"+d.name).Msg("subscribe load reports")
			return
		}
		subs = append(subs, sub)
	}
	r.loadSubs[d.key] = subs
	d.loadFollowed.Store(true)
}
