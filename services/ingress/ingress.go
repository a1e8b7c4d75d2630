// Package ingress is jetserve's public HTTP entry point (Ray Serve's HTTP
// proxy): it routes each request by the longest matching application
// route_prefix (on whole path segments) to the application's ingress
// deployment over NATS, through the routers, and writes the answer back —
// streamed chunk by chunk when the client asks (?stream=1 or
// Accept: text/event-stream).
//
// An application with a graph is served through it (package graph, over
// the same router): the ingress counts its splitters' choices over the
// last minute and publishes them every second on the graphstats subject
// (protocol.GraphStats) for the status's live traffic split.
//
// The route table comes from the Apps bucket key "config" and follows it
// live, and so does the table of Open Inference Protocol models served
// under /v2 (/v2/models/{model}/... goes to the deployment that serves the
// model, inference requests checked first; see package gateway). GET
// /-/routes lists the routes, GET /-/models the models; GET /-/healthz is 200 once NATS is connected
// and the table is loaded; GET /-/limits says the body limit in force.
// Bodies above it are refused 413 body_too_large, on the sync path and the
// job submit path alike: max_body_bytes (default 64 MiB) for
// application requests; for jobs, graphs and OIP requests, whose bodies
// travel in one NATS message, the smaller of it and what one message
// carries — the connected server's max_payload, read at connect (1 MiB on
// a stock nats-server, 8 MiB on jetserve's embedded one), less
// wire.HeaderRoom for headers; both are logged at start. Larger
// application bodies, both ways, travel as body_transport says: in chunks
// the replica pulls straight from the ingress (and the ingress from the
// replica; wire.BodySource), or through the bodies object store. Errors are answered by pkg/httperr with the status
// and Retry-After schemas/errors.json gives their code (overload and
// unavailability 503 with Retry-After, timeout 504, a full job queue 429
// with Retry-After); handler errors keep the handler's status.
//
// On ctx cancel Run stops accepting connections and waits up to
// drain_timeout for in-flight requests (http.Server.Shutdown). Every
// goroutine Run starts ends before it returns.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/gateway"
	"github.com/jetserve/jetserve/services/ingress/internal/jobsapi"
	"github.com/jetserve/jetserve/services/ingress/internal/models"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/jetserve/jetserve/services/ingress/internal/splits"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// DefaultHTTPAddr is loopback only, as Ray Serve's default host: serving
// beyond it needs auth (auth.keys_file or auth.jwks_file) or an explicit
// auth.anonymous.
const DefaultHTTPAddr = "127.0.0.1:8000"

// DefaultMaxBodyBytes is the default request body limit (64 MiB): bodies
// larger than one NATS message travel as Config.BodyTransport says.
const DefaultMaxBodyBytes = 64 << 20

// Config is the ingress's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// HTTPConfig: tls.*, max_header_bytes, max_url_bytes.
	service.HTTPConfig `koanf:",squash"`
	// Auth says who may call (API keys, JWTs), at what rate.
	Auth httpauth.Config `koanf:"auth"`
	// HTTPAddr is the public HTTP listen address.
	HTTPAddr string `koanf:"http_addr" help:"public HTTP address"`
	// MaxBodyBytes caps request bodies; larger ones get 413.
	MaxBodyBytes int64 `koanf:"max_body_bytes" help:"largest request body (413 beyond); bodies over one NATS message travel as body_transport says"`
	// BodyTransport is how request and response bodies larger than one
	// NATS message travel: "chunked" (default) — core-NATS chunks pulled
	// straight between the ingress and the replica with a credit window —
	// or "object" — through the bodies object store (<prefix>_bodies).
	BodyTransport string `koanf:"body_transport" help:"chunked (core-NATS chunks straight to and from the replica, default) or object (the bodies object store) for bodies over one NATS message"`
	// BodyStallTimeout is how long the ingress's side of a chunked body
	// transfer waits for the replica (credit for a request body, a chunk
	// of a response body) before it ends the request (504).
	BodyStallTimeout time.Duration `koanf:"body_stall_timeout" help:"how long a chunked body transfer waits for the replica before the request fails (504)"`
	// RequestTimeout is the deadline given to each request (sent to the
	// routers as the caller's deadline).
	RequestTimeout time.Duration `koanf:"request_timeout" help:"end-to-end bound of one request (504 after it)"`
	// DrainTimeout bounds how long shutdown waits for in-flight requests.
	DrainTimeout time.Duration `koanf:"drain_timeout" help:"how long SIGTERM waits for requests in flight"`
	// Liveness configures the embedded router's probes of replicas that
	// hold requests (router: embedded).
	Liveness routing.Liveness `koanf:"liveness"`
	// Router picks how requests reach replicas: "embedded" (default) runs
	// a router inside the ingress (pkg/routing) and sends each request
	// straight to the chosen replica — one NATS round trip, as Ray Serve's
	// proxies route themselves; "service" sends it to the router service's
	// queue group (one more hop).
	Router string `koanf:"router" help:"embedded (route in the ingress) or service (through the router service)"`
	// OIPReadyTimeout bounds GET /v2/models/{model}/ready, which the
	// model's deployment answers; past it the model is reported not ready
	// (503). A model scaled to zero is woken by it, as by any request.
	OIPReadyTimeout time.Duration `koanf:"oip_ready_timeout" help:"bound of GET /v2/models/{m}/ready"`

	// HTTPReady, if set, is told the HTTP listener's address once it
	// listens (tests, and `jetserve dev` with port 0). Not configurable.
	HTTPReady func(net.Addr) `koanf:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Common:           service.DefaultCommon(":9100"),
		HTTPConfig:       service.DefaultHTTPConfig(),
		HTTPAddr:         DefaultHTTPAddr,
		MaxBodyBytes:     DefaultMaxBodyBytes,
		BodyTransport:    gateway.BodyTransportChunked,
		BodyStallTimeout: wire.DefaultBodyStall,
		RequestTimeout:   60 * time.Second,
		DrainTimeout:     30 * time.Second,
		Router:           RouterEmbedded,
		OIPReadyTimeout:  gateway.DefaultOIPReadyTimeout,
		Liveness:         routing.DefaultLiveness(),
	}
}

// Router modes.
const (
	RouterEmbedded = "embedded"
	RouterService  = "service"
)

// Validate checks the configuration; errors name the option.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate(), c.HTTPConfig.Validate()}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("http_addr: is required"))
	} else {
		errs = append(errs, c.Auth.Validate("auth", c.HTTPAddr))
	}
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be > 0, got %d", c.MaxBodyBytes))
	}
	if c.BodyTransport != gateway.BodyTransportChunked && c.BodyTransport != gateway.BodyTransportObject {
		errs = append(errs, fmt.Errorf("body_transport: must be %q or %q, got %q", gateway.BodyTransportChunked,
			gateway.BodyTransportObject, c.BodyTransport))
	}
	if c.BodyStallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("body_stall_timeout: must be > 0, got %v", c.BodyStallTimeout))
	}
	errs = append(errs, c.Liveness.Validate("liveness"))
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("request_timeout: must be positive"))
	}
	if c.Router != RouterEmbedded && c.Router != RouterService {
		errs = append(errs, fmt.Errorf("router: must be %q or %q, got %q", RouterEmbedded, RouterService, c.Router))
	}
	if c.OIPReadyTimeout <= 0 {
		errs = append(errs, fmt.Errorf("oip_ready_timeout: must be positive, got %v", c.OIPReadyTimeout))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, errors.New("drain_timeout: must not be negative"))
	}
	return errors.Join(errs...)
}

// CommonConfig returns the shared part.
func (c Config) CommonConfig() service.Common { return c.Common }

// Run serves HTTP until ctx ends, then drains in-flight requests and
// returns nil.
func Run(ctx context.Context, cfg Config, deps service.Deps) error {
	fleet, cleanup, err := deps.Bind(ctx, cfg.Common, "ingress")
	defer cleanup()
	if err != nil {
		return err
	}
	names, js, buckets := fleet.Names, fleet.JS, fleet.Buckets
	bodies, err := service.BindBodies(ctx, deps.Log, js, names)
	if err != nil {
		return err
	}
	auth, err := httpauth.New(cfg.Auth, httpauth.Options{Realm: "jetserve",
		Public: []string{"/-/healthz", "/v2/health/live", "/v2/health/ready"}}, deps.Log)
	if err != nil {
		return err
	}
	tlsCfg, err := cfg.TLS.Load("tls", deps.Log)
	if err != nil {
		return err
	}
	metrics, err := gateway.NewMetrics(deps.Metrics)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	jobMetrics, err := jobs.NewMetrics(deps.Metrics)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}

	var table atomic.Pointer[routes.Table]
	var modelTable atomic.Pointer[models.Table]
	table.Store(routes.New(nil))
	modelTable.Store(models.FromConfig(config.ServeConfig{}))
	var loaded atomic.Bool
	asyncMethods := fleetstate.NewAsyncFollower(deps.NC, buckets, deps.Log)
	// The route table comes from the config the async method table was
	// built from, after it: a new application's async method is never
	// routed as a sync call while the table lags.
	asyncMethods.SetConfigHooks(routeHooks(&table, &modelTable, &loaded, deps.Log))
	natsOK := service.NATSCheck(deps.NC)
	ready := func() error {
		if err := natsOK(); err != nil {
			return err
		}
		if !loaded.Load() {
			return errors.New("route table not loaded")
		}
		return asyncMethods.Ready()
	}
	deps.Health.Add("routes", func() error {
		if !loaded.Load() {
			return errors.New("route table not loaded")
		}
		return nil
	})
	id := "ingress-" + nuid.Next()[:8]
	var caller gateway.Caller
	var embedded *routing.Embedded
	if cfg.Router == RouterEmbedded {
		embedded, err = routing.NewEmbedded(routing.EmbeddedOptions{
			Options:  routing.Options{NC: deps.NC, Names: names, Log: deps.Log, Liveness: cfg.Liveness, Tracer: tracing.Tracer(deps.Tracer)},
			Registry: deps.Metrics, Buckets: buckets, ID: id, Creds: cfg.NATS.Creds,
		})
		if err != nil {
			return err
		}
		c := embedded.NewCaller()
		c.DefaultTimeout = cfg.RequestTimeout
		caller = c
		deps.Health.Add("router", embedded.Ready)
		ready = func(base func() error) func() error {
			return func() error {
				if embedded.Ready() != nil {
					return errors.New("router not loaded")
				}
				return base()
			}
		}(ready)
	} else {
		c := wire.NewCaller(deps.NC, names)
		c.DefaultTimeout = cfg.RequestTimeout
		caller = c
	}
	// The graphs' splitter choices, published for the status's live split.
	splitCounts := splits.NewCounter(nil)
	h := gateway.New(gateway.Options{
		Caller:          caller,
		Routes:          table.Load,
		Healthy:         ready,
		MaxBodyBytes:    cfg.MaxBodyBytes,
		MaxPayload:      deps.NC.MaxPayload,
		Bodies:          bodies,
		BodyTransport:   cfg.BodyTransport,
		BodyStall:       cfg.BodyStallTimeout,
		NC:              deps.NC,
		RequestTimeout:  cfg.RequestTimeout,
		Metrics:         metrics,
		Log:             deps.Log,
		Jobs:            jobsapi.New(jobs.NewQueue(js, jobs.Names{Names: names}, deps.Log, jobs.Replicas(cfg.NATS.Replicas), jobs.WithMetrics(jobMetrics), jobs.Bind()), asyncMethods.Table, deps.Log),
		Models:          modelTable.Load,
		OIPReadyTimeout: cfg.OIPReadyTimeout,
		OnSplit:         splitCounts.Add,
		Tracer:          tracing.Tracer(deps.Tracer),
	})

	lim := h.Limits()
	deps.Log.Info().Int64("max_body_bytes", lim.MaxBodyBytes).Int64("inline_body_bytes", lim.InlineBodyBytes).
		Int64("nats_max_payload", lim.NATSMaxPayload).Msg("request body limit")

	// The watcher lives until the HTTP server has drained.
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return asyncMethods.Run(wctx)
	})
	if embedded != nil {
		g.Go(func() error { return embedded.Run(wctx) })
	}
	g.Go(func() error {
		p := &splits.Publisher{NC: deps.NC, Subject: names.GraphStatsSubject(), IngressID: id, Counter: splitCounts, Log: deps.Log}
		return p.Run(wctx, time.Second)
	})
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error {
		defer stopWatch()
		if embedded != nil {
			// After the HTTP server drained: answer anything left.
			defer embedded.Close()
		}
		return service.ServeServer(gctx, service.Server{Addr: cfg.HTTPAddr, Drain: cfg.DrainTimeout, TLS: tlsCfg,
			MaxHeaderBytes: cfg.MaxHeaderBytes, Log: deps.Log,
			Handler: httpauth.LimitURL(cfg.MaxURLBytes)(auth.Middleware(h)),
			Ready: func(a net.Addr) {
				deps.Log.Info().Str("addr", a.String()).Bool("tls", tlsCfg != nil).Bool("mtls", cfg.TLS.ClientCAFile != "").
					Bool("auth", auth.Enabled()).Msg("ingress listening")
				if cfg.HTTPReady != nil {
					cfg.HTTPReady(a)
				}
			}})
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// routeHooks keep the route table and the OIP model table in step with
// the serve config the async method table follows (fleetstate.ConfigHooks).
func routeHooks(table *atomic.Pointer[routes.Table], modelTable *atomic.Pointer[models.Table], loaded *atomic.Bool,
	log zerolog.Logger) fleetstate.ConfigHooks {
	return fleetstate.ConfigHooks{
		OnConfig: func(sc config.ServeConfig) {
			t, err := routes.FromConfig(sc) // none (or deleted): no routes
			if err != nil {
				log.Error().Err(err).Msg("route table: applications left out")
			}
			table.Store(t)
			mt := models.FromConfig(sc)
			modelTable.Store(mt)
			log.Info().Any("routes", t.Prefixes()).Strs("oip_models", mt.Names()).Msg("route table updated")
		},
		OnSynced: func() { loaded.Store(true) },
	}
}
