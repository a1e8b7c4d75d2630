// Package router is jetserve's request router service: it listens on every
// deployment's route subject (queue group protocol.RouterQueue, so any number
// of routers share the traffic), picks a replica by power-of-two-choices on
// live load, forwards the request and relays the reply verbatim.
//
// It learns RUNNING replicas from the Replicas bucket, their load from
// LoadReport messages, and each deployment's max_queued_requests and
// request_timeout from the Apps bucket key "config". Requests that find no
// replica with room wait in a FIFO queue per deployment (at most
// max_queued_requests; overflow is answered 503 queue_full with
// Retry-After: 1). A request whose deadline passes is answered 504 timeout
// — for the deployment's request_timeout as well as for the caller's
// deadline (Ray answers 408 for request_timeout; a router is a gateway, and
// 504 is what the caller's own timeout would give, so both read alike). A
// request for a deployment with no running replica is held until its
// deadline (so scale-from-zero can serve it) and then answered 503
// no_replicas — unless the scheduler's status says the deployment cannot
// run (replicas PENDING for a placement reason, or FAILED): then 503
// no_replicas at once, with the reason. A request for a deployment absent
// from the applied config is answered 404 not_found at once. Requests held
// by a replica that vanishes (kill -9 of its worker, no answer to probes,
// a lost reply) are retried when idempotent and otherwise answered 503
// replica_lost, within about a second (option liveness.*). After a NATS
// reconnect the buckets are re-read at once (pkg/kvfollow).
//
// Every goroutine Run starts ends before Run returns.
package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/nats-io/nuid"
	"golang.org/x/sync/errgroup"
)

// Config is the router's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// ID names this router in RouterStats; "" = "router-<random>".
	ID string `koanf:"id" help:"router id in stats and logs (default: generated)"`
	// DefaultRequestTimeout bounds requests that carry no caller deadline and
	// whose deployment has no request_timeout; 0 = none.
	DefaultRequestTimeout time.Duration `koanf:"default_request_timeout" help:"bound of requests with no deadline and no request_timeout (0: none)"`
	// Retry configures re-sending to another replica.
	Retry RetryConfig `koanf:"retry"`
	// StatsInterval is how often RouterStats are published (also on change).
	StatsInterval time.Duration `koanf:"stats_interval" help:"how often queue lengths are published"`
	// DrainTimeout bounds how long shutdown waits for in-flight requests.
	DrainTimeout time.Duration `koanf:"drain_timeout" help:"how long SIGTERM waits for requests in flight"`
	// Liveness configures the probes that find replicas gone while they
	// hold requests.
	Liveness routing.Liveness `koanf:"liveness"`
}

// RetryConfig configures retries on replica_full, draining and vanished
// replicas.
type RetryConfig struct {
	// MaxAttempts is how many replicas one dispatch round tries before the
	// request waits in the queue.
	MaxAttempts int `koanf:"max_attempts" help:"replicas tried per request before it queues"`
	// Backoff is how long a replica that had no responders is skipped.
	Backoff time.Duration `koanf:"backoff" help:"how long a replica with no responders is skipped"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Common:        service.DefaultCommon(":9101"),
		Retry:         RetryConfig{MaxAttempts: 3, Backoff: time.Second},
		StatsInterval: time.Second,
		DrainTimeout:  10 * time.Second,
		Liveness:      routing.DefaultLiveness(),
	}
}

// Validate checks the configuration; errors name the option.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.DefaultRequestTimeout < 0 {
		errs = append(errs, errors.New("default_request_timeout: must not be negative"))
	}
	if c.Retry.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("retry.max_attempts: must be >= 1, got %d", c.Retry.MaxAttempts))
	}
	if c.Retry.Backoff <= 0 {
		errs = append(errs, errors.New("retry.backoff: must be positive"))
	}
	if c.StatsInterval <= 0 {
		errs = append(errs, errors.New("stats_interval: must be positive"))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, errors.New("drain_timeout: must not be negative"))
	}
	errs = append(errs, c.Liveness.Validate("liveness"))
	return errors.Join(errs...)
}

// CommonConfig returns the shared part.
func (c Config) CommonConfig() service.Common { return c.Common }

// Run routes requests until ctx ends, then drains: it stops taking new
// requests, waits up to drain_timeout for in-flight ones and returns nil.
func Run(ctx context.Context, cfg Config, deps service.Deps) error {
	fleet, cleanup, err := deps.Bind(ctx, cfg.Common, "router")
	defer cleanup()
	if err != nil {
		return err
	}
	names, buckets := fleet.Names, fleet.Buckets
	id := cfg.ID
	if id == "" {
		id = "router-" + nuid.Next()[:8]
	}
	log := deps.Log.With().Str("router_id", id).Logger()
	metrics, err := routing.NewMetrics(deps.Metrics)
	if err != nil {
		return err
	}
	changed := make(chan struct{}, 1)
	rt := routing.New(routing.Options{
		NC: deps.NC, Names: names, Log: log, Metrics: metrics, Tracer: tracing.Tracer(deps.Tracer),
		DefaultTimeout:     cfg.DefaultRequestTimeout,
		MaxAttempts:        cfg.Retry.MaxAttempts,
		UnreachableBackoff: cfg.Retry.Backoff,
		Liveness:           cfg.Liveness,
		OnQueueChange: func() {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
	})

	// With credentials, only replica records signed by their workers' users
	// are routed to.
	records, err := provenance.LoadReplicas(cfg.NATS.Creds, buckets.Worker)
	if err != nil {
		return fmt.Errorf("nats.creds: %w", err)
	}
	// Follow state first and take traffic once the initial state is loaded.
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	g, gctx := errgroup.WithContext(wctx)
	loaded := make(chan struct{})
	g.Go(func() error {
		return rt.Follow(gctx, routing.FollowOptions{Buckets: buckets, ID: id, StatsInterval: cfg.StatsInterval,
			Log: log, Loaded: loaded, Changed: changed, Records: records})
	})
	select {
	case <-loaded:
	case <-gctx.Done():
		return waitErr(g.Wait())
	case <-ctx.Done():
		stopWatch()
		return waitErr(g.Wait())
	}
	if err := rt.Start(true); err != nil {
		stopWatch()
		_ = g.Wait()
		return err
	}
	log.Info().Str("subject", names.RouteWildcard()).Msg("router serving")

	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error {
		select {
		case <-ctx.Done():
		case <-gctx.Done():
		}
		dctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
		defer cancel()
		rt.Drain(dctx)
		stopWatch()
		return nil
	})
	return waitErr(g.Wait())
}

func waitErr(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
