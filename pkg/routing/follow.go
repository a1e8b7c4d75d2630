package routing

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// FollowOptions say what a Router follows.
type FollowOptions struct {
	Buckets *service.Buckets
	// ID names the router in RouterStats.
	ID string
	// StatsInterval is how often RouterStats are published (also on
	// queue changes, at most one per 20 ms).
	StatsInterval time.Duration
	Log           zerolog.Logger
	// Loaded, if set, is closed once the replicas and the config were
	// read (take traffic after that).
	Loaded chan struct{}
	// Changed receives a value whenever a queue changed (wire it to
	// Options.OnQueueChange); nil: stats only on the interval.
	Changed <-chan struct{}
}

// Follow feeds r until ctx ends: RUNNING replicas from the Replicas
// bucket, load reports, the applied config (max_queued_requests,
// request_timeout), and publishes r's RouterStats for the autoscaler.
// Every goroutine it starts ends before it returns.
func (r *Router) Follow(ctx context.Context, o FollowOptions) error {
	load, err := r.o.NC.Subscribe(r.o.Names.LoadWildcard(), func(m *nats.Msg) {
		var rep protocol.LoadReport
		if err := json.Unmarshal(m.Data, &rep); err != nil {
			o.Log.Warn().Err(err).Str("subject", m.Subject).Msg("bad load report")
			return
		}
		r.SetLoad(rep)
	})
	if err != nil {
		return fmt.Errorf("subscribe load reports: %w", err)
	}
	defer load.Unsubscribe() //nolint:errcheck // best effort on the way out
	replicas, cfg := make(chan struct{}), make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return r.watchReplicas(gctx, o.Buckets.Replicas, replicas) })
	g.Go(func() error { return r.watchConfig(gctx, o.Buckets.Apps, o.Log, cfg) })
	g.Go(func() error {
		for _, ch := range []chan struct{}{replicas, cfg} {
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
	interval := o.StatsInterval
	if interval <= 0 {
		interval = time.Second
	}
	g.Go(func() error { return r.publishStats(gctx, o.ID, interval, o.Changed, o.Log) })
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// watchReplicas feeds the Replicas bucket to r; loaded is closed after the
// initial values. It also drops replicas whose records stop being
// refreshed, in case an expiry marker is missed.
func (r *Router) watchReplicas(ctx context.Context, kv jetstream.KeyValue, loaded chan struct{}) error {
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch replicas: %w", err)
	}
	defer w.Stop() //nolint:errcheck // best effort on the way out
	sweep := time.NewTicker(service.HeartbeatInterval)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sweep.C:
			r.ExpireReplicas(service.ReplicaTTL + service.HeartbeatInterval)
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch replicas: watcher closed")
			}
			if e == nil {
				if loaded != nil {
					close(loaded)
					loaded = nil
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				r.DeleteReplicaKey(e.Key())
				continue
			}
			var info protocol.ReplicaInfo
			if err := json.Unmarshal(e.Value(), &info); err != nil || info.ID == "" {
				continue
			}
			r.SetReplica(info, false)
		}
	}
}

// watchConfig feeds the Apps bucket key "config" to r.
func (r *Router) watchConfig(ctx context.Context, kv jetstream.KeyValue, log zerolog.Logger, loaded chan struct{}) error {
	w, err := kv.Watch(ctx, "config")
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	defer w.Stop() //nolint:errcheck // best effort on the way out
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch config: watcher closed")
			}
			if e == nil {
				if loaded != nil {
					close(loaded)
					loaded = nil
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				r.SetConfig(config.ServeConfig{})
				continue
			}
			var sc config.ServeConfig
			if err := json.Unmarshal(e.Value(), &sc); err != nil {
				log.Warn().Err(err).Uint64("revision", e.Revision()).Msg("bad serve config in apps bucket")
				continue
			}
			r.SetConfig(sc)
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
