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
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/lease"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/pkg/provision"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/scheduler/internal/admin"
	"github.com/jetserve/jetserve/services/scheduler/internal/dashboard"
	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
	"github.com/jetserve/jetserve/services/scheduler/internal/reconcile"
	"github.com/jetserve/jetserve/services/scheduler/internal/splits"
	"golang.org/x/sync/errgroup"
)

// DefaultAdminAddr is loopback only, as Ray's dashboard: serving beyond it
// needs auth (auth.keys_file or auth.jwks_file) or an explicit
// auth.anonymous.
const DefaultAdminAddr = "127.0.0.1:8265"

// LeaseKey is the Leases-bucket key the scheduler instances contend for.
const LeaseKey = fleetstate.SchedulerLease

// Config is the scheduler's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// HTTPConfig of the admin port: tls.*, max_header_bytes, max_url_bytes.
	service.HTTPConfig `koanf:",squash"`
	// Auth says who may use the admin API and the dashboard: credentials
	// with the admin scope (admin:read for reads only), never the
	// ingress's.
	Auth httpauth.Config `koanf:"auth"`
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
	// Colocate places a replica, among the workers equally good for its
	// own deployment's spread, on the one holding the most replicas of the
	// deployments joined to it by `uses` edges, so that handle calls
	// between them stay in one process (prefer-local routing).
	Colocate bool `koanf:"colocate" help:"place deployments joined by uses edges on the same workers when their spread allows"`

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
		HTTPConfig:          service.DefaultHTTPConfig(),
		AdminAddr:           DefaultAdminAddr,
		ReconcileInterval:   time.Second,
		ID:                  host + "-" + hex.EncodeToString(b[:]),
		ReplicaStartTimeout: 10 * time.Minute,
		MaxBodyBytes:        admin.DefaultMaxBody,
		Rebalance:           true,
		RebalanceCooldown:   plan.DefaultRebalanceCooldown,
		Colocate:            true,
	}
}

// Validate checks the options; errors name the option key.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.HTTPConfig.Validate()}
	if c.AdminAddr == "" {
		errs = append(errs, errors.New("admin_addr: is required"))
	} else {
		errs = append(errs, c.Auth.Validate("auth", c.AdminAddr))
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
	// The scheduler creates the JetStream state the other services bind
	// to (their users may not create streams): the fleet's buckets and
	// the bodies object store (Open), and each async method's (provision).
	prov := provision.New(deps.NC, js, jobs.Names{Names: names}, buckets, cfg.NATS.Replicas, log)
	auth, err := httpauth.New(cfg.Auth, httpauth.Options{Realm: "jetserve admin"}, log)
	if err != nil {
		return err
	}
	tlsCfg, err := cfg.TLS.Load("tls", log)
	if err != nil {
		return err
	}
	metrics := reconcile.NewMetrics(deps.Metrics)
	// With NATS credentials, every assignment is signed by them: workers
	// obey only assignments their account's "scheduler" user signed.
	var signer *provenance.Signer
	if cfg.NATS.Creds != "" {
		if signer, err = provenance.LoadSigner(cfg.NATS.Creds); err != nil {
			return fmt.Errorf("nats.creds: %w", err)
		}
	}
	// And only registrations and replica records signed by workers' users
	// count.
	records, err := provenance.LoadReplicas(cfg.NATS.Creds, buckets.Worker)
	if err != nil {
		return fmt.Errorf("nats.creds: %w", err)
	}
	rec := reconcile.New(reconcile.Options{ID: cfg.ID, Names: names, NC: deps.NC, Buckets: buckets,
		Interval: cfg.ReconcileInterval, StartTimeout: cfg.ReplicaStartTimeout,
		Rebalance: cfg.Rebalance, RebalanceCooldown: cfg.RebalanceCooldown, Colocate: cfg.Colocate, Log: log, Metrics: metrics, Signer: signer,
		Records: records, Jobs: jobs.NewQueue(js, jobs.Names{Names: names}, log)})
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
	for _, p := range dashboard.Patterns() {
		mux.Handle(p, dh)
	}
	lead := func(ctx context.Context, epoch uint64) {
		dash.SetLeading(true)
		defer dash.SetLeading(false)
		var wg sync.WaitGroup
		defer wg.Wait()
		pctx, cancel := context.WithCancel(ctx)
		defer cancel() // (before the Wait)
		wg.Go(func() { prov.Lead(pctx) })
		rec.Lead(ctx, epoch)
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error {
		return service.ServeServer(gctx, service.Server{Addr: cfg.AdminAddr, Drain: 5 * time.Second, TLS: tlsCfg,
			MaxHeaderBytes: cfg.MaxHeaderBytes, Log: log, Ready: func(a net.Addr) {
				log.Info().Str("addr", a.String()).Bool("tls", tlsCfg != nil).Msg("admin API listening") // read back by tests given port 0
				if cfg.AdminReady != nil {
					cfg.AdminReady(a)
				}
			},
			Handler: httpauth.LimitURL(cfg.MaxURLBytes)(auth.Middleware(adminScopes(mux)))})
	})
	g.Go(func() error { return elector.Run(gctx, lead) })
	g.Go(func() error { return dash.Run(gctx) })
	g.Go(func() error { return prov.Run(gctx) })
	g.Go(func() error { return liveSplits.Run(gctx, deps.NC, names.GraphStatsSubject()) })
	log.Info().Str("admin_addr", cfg.AdminAddr).Str("ops_addr", cfg.OpsAddr).Bool("auth", auth.Enabled()).
		Bool("tls", tlsCfg != nil).Msg("scheduler started")
	err = g.Wait()
	log.Info().Msg("scheduler stopped")
	return err
}

// adminScopes lets reads (GET, HEAD) through with the admin or admin:read
// scope and everything else with admin only (403 otherwise).
func adminScopes(next http.Handler) http.Handler {
	read := httpauth.RequireScope(httpauth.ScopeAdmin, httpauth.ScopeAdminRead)(next)
	write := httpauth.RequireScope(httpauth.ScopeAdmin)(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			read.ServeHTTP(w, r)
			return
		}
		write.ServeHTTP(w, r)
	})
}
