// Package autoscaler is the service that turns live load into desired
// replica counts. Every instance listens to the load replicas push
// (LoadReport: ongoing requests) and the queues routers push (RouterStats);
// one instance, elected with the "autoscaler" lease, decides: per
// deployment with an autoscaling_config it averages ongoing+queued
// requests over look_back_period, applies Ray Serve's policy (see
// internal/decide) and writes each decision as a protocol.ScaleDecision
// into the Scale bucket, which the scheduler reconciles to. A standby
// takes over when the leader goes, reading the decisions back.
//
// Signals are pluggable (internal/signals.Source): sync traffic from the
// pushed reports, and async work from the leader's poll of the job
// consumers (num_pending + num_ack_pending of "runners" per async method,
// once per metrics_interval, woken at once by a job submitted to an idle
// deployment).
//
// Run owns every goroutine it starts and returns after they end.
package autoscaler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/lease"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler/internal/control"
	"github.com/jetserve/jetserve/services/autoscaler/internal/signals"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
)

// LeaseKey is the Leases-bucket key the autoscaler instances contend for.
const LeaseKey = fleetstate.AutoscalerLease

// Config is the autoscaler's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// ID names this instance in the lease and logs.
	ID string `koanf:"id" help:"this instance's id in the lease (default: generated)"`
	// Interval is the decision loop's tick; each deployment is sampled at
	// its own metrics_interval, decided on every tick.
	Interval time.Duration `koanf:"interval" help:"how often decisions are computed"`
	// Warmup is how long a newly elected leader only collects load before
	// it decides (a cold start from zero acts at once regardless).
	Warmup time.Duration `koanf:"warmup" help:"how long a new leader gathers metrics before deciding"`
	// StaleAfter is how old a replica's or router's report may be and
	// still count.
	StaleAfter time.Duration `koanf:"stale_after" help:"load reports older than this are ignored"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "autoscaler"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return Config{Common: service.DefaultCommon(":9104"), ID: host + "-" + hex.EncodeToString(b[:]),
		Interval: 100 * time.Millisecond, Warmup: 2 * time.Second, StaleAfter: 3 * time.Second}
}

// Validate checks the configuration; errors name the option.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.ID == "" {
		errs = append(errs, errors.New("id: is required"))
	}
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("interval: must be > 0, got %s", c.Interval))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("warmup: must be >= 0, got %s", c.Warmup))
	}
	if c.StaleAfter <= 0 {
		errs = append(errs, fmt.Errorf("stale_after: must be > 0, got %s", c.StaleAfter))
	}
	return errors.Join(errs...)
}

// CommonConfig returns the shared part.
func (c Config) CommonConfig() service.Common { return c.Common }

// Run serves until ctx ends.
func Run(ctx context.Context, cfg Config, deps service.Deps) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log := deps.Log.With().Str("autoscaler_id", cfg.ID).Logger()
	fleet, cleanup, err := deps.Bind(ctx, cfg.Common, "autoscaler")
	defer cleanup()
	if err != nil {
		return err
	}
	names, js, buckets := fleet.Names, fleet.JS, fleet.Buckets

	kick := make(chan struct{}, 1)
	syncSrc := signals.NewSync(cfg.StaleAfter, func(string, string) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	sub, err := deps.NC.Subscribe(names.LoadWildcard(), func(m *nats.Msg) {
		var r protocol.LoadReport
		if json.Unmarshal(m.Data, &r) == nil {
			syncSrc.OnLoad(r, time.Now())
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe load reports: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // best effort on the way out
	rsub, err := deps.NC.Subscribe(names.RouterStatsSubject(), func(m *nats.Msg) {
		var s protocol.RouterStats
		if json.Unmarshal(m.Data, &s) == nil {
			syncSrc.OnRouterStats(s, time.Now())
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe router stats: %w", err)
	}
	defer rsub.Unsubscribe() //nolint:errcheck // best effort on the way out

	// Async work: per deployment, the backlog (num_pending +
	// num_ack_pending) of its job consumers, polled by the leader only.
	jobsSrc := signals.NewJobs(signals.JobsOptions{NC: deps.NC, JS: js, Names: jobs.Names{Names: names},
		Buckets: buckets, OnBacklog: func(string, string) {
			select {
			case kick <- struct{}{}:
			default:
			}
		}, Log: log})
	ctl := control.New(control.Options{NC: deps.NC, Buckets: buckets, Sources: []signals.Source{syncSrc, jobsSrc}, Forget: syncSrc.Forget,
		Kick: kick, Interval: cfg.Interval, Warmup: cfg.Warmup, Log: log, Metrics: control.NewMetrics(deps.Metrics)})
	elector := lease.New(js, buckets.Leases, LeaseKey, cfg.ID, fleetstate.LeaseTTL, log)
	// lead runs the decision loop and, beside it for the same term, the
	// one job-backlog poller of the fleet (standbys never read consumers).
	lead := func(ctx context.Context, epoch uint64) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			jobsSrc.Run(ctx)
		}()
		ctl.Lead(ctx, epoch)
		cancel()
		<-polled
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error { return elector.Run(gctx, lead) })
	log.Info().Str("ops_addr", cfg.OpsAddr).Msg("autoscaler started")
	err = g.Wait()
	log.Info().Msg("autoscaler stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
