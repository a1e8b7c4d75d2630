// Package provision creates the JetStream state of every async method of
// the applied serve config — its job stream and runners consumer, records
// bucket, object store, a workflow's stream and wakers consumer, and the
// shared dead-letter stream (jobs.Queue.Ensure) — and updates it when the
// method's settings change. The scheduler is the only service whose NATS
// user may create or update streams (deploy/auth): the ingress and the
// workers bind to what it created (jobs.Bind) and wait for it.
//
// The methods are those of the config merged over what the handlers'
// code declares (fleetstate.AsyncFollower), so a method a worker
// advertises is created when the worker registers its handler. Nothing is
// deleted: a method removed from the config keeps its jobs and records
// until their retention (as before).
//
// The scheduler runs it (Lead while it leads); tests of a service that
// binds run it in place of a scheduler (provisiontest.Start).
//
// Run follows the buckets; Lead creates while its context lives (the
// leading instance). Both own what they start and return when their
// context ends.
package provision

import (
	"context"
	"time"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Retry bounds after a failed creation (JetStream without a leader, say).
const (
	firstRetry = 250 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// Provisioner creates the async methods' JetStream state.
type Provisioner struct {
	async *fleetstate.AsyncFollower
	q     *jobs.Queue
	log   zerolog.Logger
}

// New returns a Provisioner following b on nc and creating on js with
// replicas replicas (nats.replicas).
func New(nc *nats.Conn, js jetstream.JetStream, names jobs.Names, b *fleetstate.Buckets, replicas int, log zerolog.Logger) *Provisioner {
	log = log.With().Str("component", "provision").Logger()
	return &Provisioner{async: fleetstate.NewAsyncFollower(nc, b, log), q: jobs.NewQueue(js, names, log, jobs.Replicas(replicas)), log: log}
}

// Run follows the config and the handlers' declarations until ctx ends.
func (p *Provisioner) Run(ctx context.Context) error { return p.async.Run(ctx) }

// Lead creates or updates every method's state now and after every change
// of the methods, retrying failures with backoff, until ctx ends.
func (p *Provisioner) Lead(ctx context.Context) {
	b := backoff.New(firstRetry, maxRetry)
	var retry <-chan time.Time
	for {
		if p.ensureAll(ctx) {
			b.Reset()
			retry = nil
		} else {
			retry = time.After(b.Next())
		}
		select {
		case <-ctx.Done():
			return
		case <-p.async.Changed():
		case <-retry:
		}
	}
}

// Ready reports whether the applied config and the handlers'
// declarations have been read (Run).
func (p *Provisioner) Ready() error { return p.async.Ready() }

// EnsureAll creates or updates every method's state once, now, and
// reports whether all of it succeeded (Lead does it after every change).
func (p *Provisioner) EnsureAll(ctx context.Context) bool { return p.ensureAll(ctx) }

// ensureAll ensures every method of the current table (a method ensured
// already with the same settings costs a map lookup) and reports whether
// all succeeded.
func (p *Provisioner) ensureAll(ctx context.Context) bool {
	ok := true
	for _, m := range p.async.Table().Methods() {
		if err := p.q.Ensure(ctx, m.App, m.Deployment, m.Config); err != nil {
			if ctx.Err() != nil {
				return false
			}
			ok = false
			p.log.Error().Err(err).Str("app", m.App).Str("deployment", m.Deployment).Str("method", m.Config.Name).
				Msg("create the job streams of an async method; retrying")
		}
	}
	return ok
}
