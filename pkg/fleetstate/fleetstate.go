// Package fleetstate declares, once, the key-value buckets the services
// of a fleet share — each bucket's settings (history, TTL), the keys it
// holds and how often its records are refreshed — opens them, and
// follows what they hold (typed, with pkg/kvfollow): the applied serve
// config and the async methods it declares.
//
// The buckets' names derive from the fleet's prefix (protocol.Names);
// their contents are the protocol's messages. Nothing here starts a
// goroutine except a Run method, which owns what it starts until its
// context ends, and Ensure, whose goroutines end before it returns.
package fleetstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Keys of the single-key buckets.
const (
	// ConfigKey is the Apps-bucket key of the whole serve config as last
	// applied (config.ServeConfig).
	ConfigKey = "config"
	// StatusKey is the Status-bucket key of the fleet status the leading
	// scheduler computes (protocol.Status).
	StatusKey = "status"
	// SchedulerLease and AutoscalerLease are the Leases-bucket keys the
	// instances of those services contend for.
	SchedulerLease  = "scheduler"
	AutoscalerLease = "autoscaler"
)

// Lifetimes.
const (
	// WorkerTTL and ReplicaTTL: a worker or replica record not refreshed
	// for this long expires.
	WorkerTTL  = 6 * time.Second
	ReplicaTTL = 6 * time.Second
	// HeartbeatInterval is how often workers refresh their records and
	// their replicas'.
	HeartbeatInterval = 2 * time.Second
	// LeaseTTL is how long a leader lease lives without renewal.
	LeaseTTL = 5 * time.Second
	// markerTTL is how long an expiry's delete marker stays, so that
	// watchers see the key go.
	markerTTL = time.Second
)

// Buckets are the JetStream KV buckets the fleet shares.
type Buckets struct {
	// Apps holds the desired state: ConfigKey, the applied serve config.
	Apps jetstream.KeyValue
	// Workers holds a protocol.WorkerInfo per live worker (key:
	// protocol.WorkerKey), expiring after WorkerTTL.
	Workers jetstream.KeyValue
	// Assignments holds a protocol.Assignment per worker (key:
	// protocol.AssignmentKey).
	Assignments jetstream.KeyValue
	// Replicas holds a protocol.ReplicaInfo per replica (key:
	// protocol.ReplicaKey), expiring after ReplicaTTL.
	Replicas jetstream.KeyValue
	// Status holds StatusKey, the fleet status.
	Status jetstream.KeyValue
	// Leases holds the leader leases (SchedulerLease, AutoscalerLease).
	Leases jetstream.KeyValue
	// Scale holds the autoscaler's protocol.ScaleDecision per deployment
	// (key: protocol.ScaleKey).
	Scale jetstream.KeyValue
	// Handlers holds what each handler's code declares, a
	// protocol.HandlerInfo per handler (key: protocol.HandlerKey), written
	// by the workers that register it and kept after they go.
	Handlers jetstream.KeyValue
}

// Worker reads the registration of the worker id.
func (b *Buckets) Worker(ctx context.Context, id string) (protocol.WorkerInfo, error) {
	e, err := b.Workers.Get(ctx, protocol.WorkerKey(id))
	if err != nil {
		return protocol.WorkerInfo{}, err
	}
	var w protocol.WorkerInfo
	if err := json.Unmarshal(e.Value(), &w); err != nil {
		return protocol.WorkerInfo{}, fmt.Errorf("decode worker %s: %w", id, err)
	}
	return w, nil
}

// bucket is one bucket's declaration.
type bucket struct {
	dst func(*Buckets) *jetstream.KeyValue
	cfg func(protocol.Names) jetstream.KeyValueConfig
}

var buckets = []bucket{
	{func(b *Buckets) *jetstream.KeyValue { return &b.Apps }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketApps(), History: 10, Description: "jetserve desired state: the applied serve config"}
	}},
	{func(b *Buckets) *jetstream.KeyValue { return &b.Workers }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketWorkers(), TTL: WorkerTTL, LimitMarkerTTL: markerTTL, Description: "jetserve live workers (heartbeats)"}
	}},
	{func(b *Buckets) *jetstream.KeyValue { return &b.Assignments }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketAssignments(), History: 5, Description: "jetserve replicas assigned to each worker"}
	}},
	{func(b *Buckets) *jetstream.KeyValue { return &b.Replicas }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketReplicas(), TTL: ReplicaTTL, LimitMarkerTTL: markerTTL, Description: "jetserve live replicas (heartbeats)"}
	}},
	{func(b *Buckets) *jetstream.KeyValue { return &b.Status }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketStatus(), Description: "jetserve status computed by the leading scheduler"}
	}},
	{func(b *Buckets) *jetstream.KeyValue { return &b.Leases }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketLeases(), LimitMarkerTTL: markerTTL, Description: "jetserve leader leases"}
	}},
	{func(b *Buckets) *jetstream.KeyValue { return &b.Scale }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketScale(), History: 10, Description: "jetserve autoscaler decisions per deployment"}
	}},
	{func(b *Buckets) *jetstream.KeyValue { return &b.Handlers }, func(n protocol.Names) jetstream.KeyValueConfig {
		return jetstream.KeyValueConfig{Bucket: n.BucketHandlers(), Description: "jetserve deployment handlers and the async methods their code declares"}
	}},
}

// BodiesTTL is how long an unread body object is kept in the bodies
// object store (package wire).
const BodiesTTL = 15 * time.Minute

// BodiesConfig is the bodies object store's: request and response bodies
// larger than one NATS message (package wire), created with the buckets.
func BodiesConfig(n protocol.Names) jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      n.BucketBodies(),
		Description: "jetserve request and response bodies larger than one NATS message",
		TTL:         BodiesTTL,
		// In memory: a body lives for one request, and a server restart
		// fails that request anyway.
		Storage: jetstream.MemoryStorage,
	}
}

// Open creates or adopts every bucket with one replica (see Ensure);
// tests and single-server tools use it.
func Open(ctx context.Context, js jetstream.JetStream, n protocol.Names) (*Buckets, error) {
	return Ensure(ctx, js, n, 1)
}

// Ensure creates or adopts (package streams: never downgraded, updated
// only where a setting differs) and opens every bucket, and creates or
// adopts the bodies object store (BodiesConfig), with replicas replicas;
// the scheduler calls it (the other services Bind), and so may several
// instances, in any order.
//
// The buckets are ensured all at once, each on a goroutine that ends
// before Ensure returns: on a cluster each new bucket's Raft group elects
// its leader meanwhile, and a lookup waits for that leader, so a fresh
// fleet waits about one election, not one per bucket. One failing does
// not stop the others (what they created stays for the next attempt);
// the first error is returned.
func Ensure(ctx context.Context, js jetstream.JetStream, n protocol.Names, replicas int) (*Buckets, error) {
	var b Buckets
	var g errgroup.Group
	for _, d := range buckets {
		cfg, dst := d.cfg(n), d.dst(&b)
		g.Go(func() error {
			kv, err := streams.KeyValue(ctx, js, cfg, replicas)
			if err != nil {
				return fmt.Errorf("open bucket %s: %w", cfg.Bucket, err)
			}
			*dst = kv
			return nil
		})
	}
	g.Go(func() error {
		if _, err := streams.ObjectStore(ctx, js, BodiesConfig(n), replicas); err != nil {
			return fmt.Errorf("open the bodies object store: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return &b, nil
}

// ErrNotCreated: Bind found a bucket missing; the scheduler creates the
// fleet's buckets (Ensure).
var ErrNotCreated = errors.New("not created yet (the scheduler creates the fleet's buckets at its start)")

// Bind opens every bucket without creating or updating any (the services
// other than the scheduler, whose NATS users may not create streams):
// ErrNotCreated if one is missing.
func Bind(ctx context.Context, js jetstream.JetStream, n protocol.Names) (*Buckets, error) {
	var b Buckets
	for _, d := range buckets {
		name := d.cfg(n).Bucket
		kv, err := js.KeyValue(ctx, name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("bucket %s: %w", name, ErrNotCreated)
		}
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", name, err)
		}
		*d.dst(&b) = kv
	}
	return &b, nil
}

// ReadAll calls fn with the current value of every key in kv, in no
// particular order; keys deleted while it runs are skipped. It is how a
// newly elected leader reads back what the previous one wrote.
func ReadAll(ctx context.Context, kv jetstream.KeyValue, fn func(key string, value []byte)) error {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("list %s: %w", kv.Bucket(), err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s %s: %w", kv.Bucket(), k, err)
		}
		fn(k, e.Value())
	}
	return nil
}
