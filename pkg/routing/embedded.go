package routing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/prometheus/client_golang/prometheus"
)

// EmbeddedOptions configure a Router embedded in another service.
type EmbeddedOptions struct {
	// Options configure the Router; Metrics is left nil (NewEmbedded
	// registers the router's collectors on Registry).
	Options
	// Registry is where the router's collectors are registered.
	Registry prometheus.Registerer
	// Buckets are the fleet's KV buckets Run follows.
	Buckets *fleetstate.Buckets
	// ID names the router in its RouterStats.
	ID string
	// Creds is the service's NATS credentials file; set, only replica
	// records signed by their workers' users are routed to.
	Creds string
}

// ErrEmbeddedNotLoaded is what Embedded.Ready reports before Run has
// loaded the fleet's state.
var ErrEmbeddedNotLoaded = errors.New("embedded router has not loaded replicas and config")

// embeddedDrain bounds Close's drain: the embedding service has already
// drained its own callers, so only stragglers are left to answer.
const embeddedDrain = time.Second

// Embedded is a Router run inside the ingress or a worker for that
// process's own calls (Caller): it takes no traffic on the route subjects.
// Build it with NewEmbedded, run Run until the process stops taking work,
// then Close. Its methods are safe for concurrent use.
type Embedded struct {
	*Router
	follow FollowOptions
	loaded chan struct{} // closed by Follow once the state is loaded
}

// NewEmbedded registers the router's metrics, starts a Router on its own
// inbox (not on the route subjects) and reads the credentials that
// replica records are checked against.
func NewEmbedded(o EmbeddedOptions) (*Embedded, error) {
	m, err := NewMetrics(o.Registry)
	if err != nil {
		return nil, err
	}
	records, err := provenance.LoadReplicas(o.Creds, o.Buckets.Worker)
	if err != nil {
		return nil, fmt.Errorf("nats.creds: %w", err)
	}
	o.Metrics = m
	r := New(o.Options)
	if err := r.Start(false); err != nil {
		return nil, err
	}
	e := &Embedded{Router: r, loaded: make(chan struct{})}
	e.follow = FollowOptions{Buckets: o.Buckets, ID: o.ID, Log: o.Log, Loaded: e.loaded, Records: records}
	return e, nil
}

// Ready reports ErrEmbeddedNotLoaded until Run has read the replicas,
// the config and the status.
func (e *Embedded) Ready() error {
	select {
	case <-e.loaded:
		return nil
	default:
		return ErrEmbeddedNotLoaded
	}
}

// Run follows the fleet's state (see Router.Follow) until ctx ends, and
// then returns nil; call it once.
func (e *Embedded) Run(ctx context.Context) error {
	err := e.Follow(ctx, e.follow)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Close answers what is still in flight, waiting at most a second: call
// it once the embedding service no longer sends requests.
func (e *Embedded) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), embeddedDrain)
	defer cancel()
	e.Drain(ctx)
}
