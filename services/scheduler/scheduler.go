// Package scheduler is jetserve's controller: it stores the desired
// applications (the admin API and the dashboard, served by every
// instance), elects one leader
// among its instances with a KV lease, and the leader places replicas on
// workers by resources and label selectors, writes each worker's
// assignment, rolls out new versions without dropping below the target of
// RUNNING replicas, health-checks and replaces replicas, and publishes the
// fleet status.
//
// Run is the whole service; it returns after a graceful drain when its
// context ends, releasing the lease at once so a standby takes over.
package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/lease"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/scheduler/internal/admin"
	"github.com/jetserve/jetserve/services/scheduler/internal/dashboard"
	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
	"github.com/jetserve/jetserve/services/scheduler/internal/reconcile"
	"github.com/jetserve/jetserve/services/scheduler/internal/splits"
	"golang.org/x/sync/errgroup"
)

// LeaseKey is the Leases-bucket key the scheduler instances contend for.
const LeaseKey = fleetstate.SchedulerLease

// Config is the scheduler's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// AdminAddr serves the admin API (Ray Serve's dashboard port).
	AdminAddr string `koanf:"admin_addr" help:"admin API and dashboard address"`
	// ReconcileInterval is the periodic reconcile pass (changes in the
	// buckets trigger a pass at once as well).
	ReconcileInterval time.Duration `koanf:"reconcile_interval" help:"periodic reconcile pass (changes trigger one at once)"`
	// ID names this instance in the lease and the status.
	ID string `koanf:"id" help:"this instance's id in the lease (default: generated)"`
	// ReplicaStartTimeout is how long a replica may take from assignment to
	// RUNNING before it is replaced (model loading can be slow).
	ReplicaStartTimeout time.Duration `koanf:"replica_start_timeout" help:"a replica not RUNNING by then is replaced"`
	// MaxBodyBytes caps a PUT of the serve config.
	MaxBodyBytes int64 `koanf:"max_body_bytes" help:"largest admin API request body"`
	// Rebalance moves a replica of a deployment whose replicas are spread
	// unevenly (a worker holds two more than another that could hold one
	// more) — a new replica starts first, the old one drains once it runs.
	Rebalance bool `koanf:"rebalance" help:"move replicas to spread deployments across workers"`
	// RebalanceCooldown spaces one deployment's moves, and is how long a
	// worker must be live before it takes a moved replica.
	RebalanceCooldown time.Duration `koanf:"rebalance_cooldown" help:"least time between two moves of a deployment"`

	// AdminReady, if set, is told the admin API's address once it listens.
	AdminReady func(net.Addr) `koanf:"-"`
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "scheduler"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return Config{
		Common:              service.DefaultCommon(":9103"),
		AdminAddr:           ":8265",
		ReconcileInterval:   time.Second,
		ID:                  host + "-" + hex.EncodeToString(b[:]),
		ReplicaStartTimeout: 10 * time.Minute,
		MaxBodyBytes:        admin.DefaultMaxBody,
		Rebalance:           true,
		RebalanceCooldown:   plan.DefaultRebalanceCooldown,
	}
}

// Validate checks the options; errors name the option key.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("admin_addr: is required"))
	}
	if c.ReconcileInterval <= 0 {
		errs = append(errs, fmt.Errorf("reconcile_interval: must be > 0, got %s", c.ReconcileInterval))
	}
	if c.ID == "" {
		errs = append(errs, errors.New("id: is required"))
	}
	if c.ReplicaStartTimeout <= 0 {
		errs = append(errs, fmt.Errorf("replica_start_timeout: must be > 0, got %s", c.ReplicaStartTimeout))
	}
	if c.RebalanceCooldown <= 0 {
		errs = append(errs, fmt.Errorf("rebalance_cooldown: must be > 0, got %s", c.RebalanceCooldown))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be > 0, got %d", c.MaxBodyBytes))
	}
	return errors.Join(errs...)
}

// CommonConfig returns the shared options.
func (c Config) CommonConfig() service.Common { return c.Common }

// Run serves the admin API and ops endpoints and contends for leadership,
// reconciling while it leads, until ctx ends.
func Run(ctx context.Context, cfg Config, deps service.Deps) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log := deps.Log.With().Str("scheduler_id", cfg.ID).Logger()
	fleet, cleanup, err := deps.Open(ctx, cfg.Common, "jetserve-scheduler")
	defer cleanup()
	if err != nil {
		return err
	}
	names, js, buckets := fleet.Names, fleet.JS, fleet.Buckets
	metrics := reconcile.NewMetrics(deps.Metrics)
	rec := reconcile.New(reconcile.Options{ID: cfg.ID, Names: names, NC: deps.NC, Buckets: buckets,
		Interval: cfg.ReconcileInterval, StartTimeout: cfg.ReplicaStartTimeout,
		Rebalance: cfg.Rebalance, RebalanceCooldown: cfg.RebalanceCooldown, Log: log, Metrics: metrics})
	elector := lease.New(js, buckets.Leases, LeaseKey, cfg.ID, fleetstate.LeaseTTL, log)
	liveSplits := splits.New(nil) // the graphs' splitter choices, from every ingress
	api := admin.New(buckets.Apps, buckets.Status, cfg.MaxBodyBytes, log).WithGraphStatus(liveSplits.Status)
	gauges, err := jobs.NewBacklogGauges(deps.Metrics)
	if err != nil {
		return err
	}
	dash := dashboard.New(dashboard.Options{NC: deps.NC, JS: js, Names: names, Buckets: buckets, ID: cfg.ID, GraphStatus: liveSplits.Status,
		Log: log, Gauges: gauges})
	// The admin port serves the admin API, the dashboard page and its JSON.
	mux := http.NewServeMux()
	mux.Handle("/", api)
	dh := dash.Handler()
	for _, p := range []string{dashboard.PagePath, dashboard.APIPath, "GET /{$}"} {
		mux.Handle(p, dh)
	}
	lead := func(ctx context.Context, epoch uint64) {
		dash.SetLeading(true)
		defer dash.SetLeading(false)
		rec.Lead(ctx, epoch)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error {
		return service.ServeHTTP(gctx, cfg.AdminAddr, mux, 5*time.Second, func(a net.Addr) {
			log.Info().Str("addr", a.String()).Msg("admin API listening") // read back by tests given port 0
			if cfg.AdminReady != nil {
				cfg.AdminReady(a)
			}
		})
	})
	g.Go(func() error { return elector.Run(gctx, lead) })
	g.Go(func() error { return dash.Run(gctx) })
	g.Go(func() error { return liveSplits.Run(gctx, deps.NC, names.GraphStatsSubject()) })
	log.Info().Str("admin_addr", cfg.AdminAddr).Str("ops_addr", cfg.OpsAddr).Msg("scheduler started")
	err = g.Wait()
	log.Info().Msg("scheduler stopped")
	return err
}
