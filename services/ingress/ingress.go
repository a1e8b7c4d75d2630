// Package ingress is jetserve's public HTTP entry point (Ray Serve's HTTP
// proxy): it routes each request by the longest matching application
// route_prefix (on whole path segments) to the application's ingress
// deployment over NATS, through the routers, and writes the answer back —
// streamed chunk by chunk when the client asks (?stream=1 or
// Accept: text/event-stream).
//
// The route table comes from the Apps bucket key "config" and follows it
// live. GET /-/routes lists it; GET /-/healthz is 200 once NATS is connected
// and the table is loaded. Bodies above max_body_bytes are refused 413
// (default 4 MiB: the message must fit the NATS max_payload, 8 MiB on the
// embedded server and at most 8 MiB anywhere, with room for headers; a
// server left at NATS's default 1 MiB needs max_body_bytes lowered to
// match). Errors map to HTTP: queue_full and other overload → 503 with
// Retry-After, timeout → 504, unavailable/no_replicas → 503; handler errors
// keep the handler's status.
//
// On ctx cancel Run stops accepting connections and waits up to
// drain_timeout for in-flight requests (http.Server.Shutdown). Every
// goroutine Run starts ends before it returns.
package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/gateway"
	"github.com/jetserve/jetserve/services/ingress/internal/jobsapi"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// DefaultMaxBodyBytes is the default request body limit (4 MiB).
const DefaultMaxBodyBytes = 4 << 20

// Config is the ingress's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// HTTPAddr is the public HTTP listen address.
	HTTPAddr string `koanf:"http_addr"`
	// MaxBodyBytes caps request bodies; larger ones get 413.
	MaxBodyBytes int64 `koanf:"max_body_bytes"`
	// RequestTimeout is the deadline given to each request (sent to the
	// routers as the caller's deadline).
	RequestTimeout time.Duration `koanf:"request_timeout"`
	// DrainTimeout bounds how long shutdown waits for in-flight requests.
	DrainTimeout time.Duration `koanf:"drain_timeout"`
	// Router picks how requests reach replicas: "embedded" (default) runs
	// a router inside the ingress (pkg/routing) and sends each request
	// straight to the chosen replica — one NATS round trip, as Ray Serve's
	// proxies route themselves; "service" sends it to the router service's
	// queue group (one more hop).
	Router string `koanf:"router"`

	// HTTPReady, if set, is told the HTTP listener's address once it
	// listens (tests, and `jetserve dev` with port 0). Not configurable.
	HTTPReady func(net.Addr) `koanf:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Common:         service.DefaultCommon(":9100"),
		HTTPAddr:       ":8000",
		MaxBodyBytes:   DefaultMaxBodyBytes,
		RequestTimeout: 60 * time.Second,
		DrainTimeout:   30 * time.Second,
		Router:         RouterEmbedded,
	}
}

// Router modes.
const (
	RouterEmbedded = "embedded"
	RouterService  = "service"
)

// Validate checks the configuration; errors name the option.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("http_addr: is required"))
	}
	if c.MaxBodyBytes <= 0 || c.MaxBodyBytes > 8<<20 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be in 1..%d (NATS max_payload), got %d", 8<<20, c.MaxBodyBytes))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("request_timeout: must be positive"))
	}
	if c.Router != RouterEmbedded && c.Router != RouterService {
		errs = append(errs, fmt.Errorf("router: must be %q or %q, got %q", RouterEmbedded, RouterService, c.Router))
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
	fleet, cleanup, err := deps.Open(ctx, cfg.Common, "ingress")
	defer cleanup()
	if err != nil {
		return err
	}
	names, js, buckets := fleet.Names, fleet.JS, fleet.Buckets
	metrics, err := gateway.NewMetrics(deps.Metrics)
	if err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}

	var table atomic.Pointer[routes.Table]
	var loaded atomic.Bool
	asyncMethods := jobsapi.NewWatcher(deps.Log)
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
	var caller gateway.Caller
	var embedded *routing.Router
	routerLoaded := make(chan struct{})
	if cfg.Router == RouterEmbedded {
		rm, err := routing.NewMetrics(deps.Metrics)
		if err != nil {
			return fmt.Errorf("register router metrics: %w", err)
		}
		embedded = routing.New(routing.Options{NC: deps.NC, Names: names, Log: deps.Log, Metrics: rm})
		if err := embedded.Start(false); err != nil {
			return err
		}
		c := embedded.NewCaller()
		c.DefaultTimeout = cfg.RequestTimeout
		caller = c
		deps.Health.Add("router", func() error {
			select {
			case <-routerLoaded:
				return nil
			default:
				return errors.New("embedded router has not loaded replicas and config")
			}
		})
	} else {
		c := wire.NewCaller(deps.NC, names)
		c.DefaultTimeout = cfg.RequestTimeout
		caller = c
		close(routerLoaded)
	}
	ready = func(base func() error) func() error {
		return func() error {
			select {
			case <-routerLoaded:
			default:
				return errors.New("router not loaded")
			}
			return base()
		}
	}(ready)
	h := gateway.New(gateway.Options{
		Caller:         caller,
		Routes:         table.Load,
		Healthy:        ready,
		MaxBodyBytes:   cfg.MaxBodyBytes,
		RequestTimeout: cfg.RequestTimeout,
		Metrics:        metrics,
		Log:            deps.Log,
		Jobs:           jobsapi.New(jobs.NewQueue(js, jobs.Names{Names: names}, deps.Log), asyncMethods.Table, deps.Log),
	})

	// The watcher lives until the HTTP server has drained.
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := watchRoutes(wctx, buckets.Apps, &table, &loaded, deps.Log)
		if wctx.Err() != nil {
			return nil
		}
		return err
	})
	g.Go(func() error {
		err := asyncMethods.Run(wctx, buckets.Apps, buckets.Handlers)
		if wctx.Err() != nil {
			return nil
		}
		return err
	})
	if embedded != nil {
		g.Go(func() error {
			err := embedded.Follow(wctx, routing.FollowOptions{Buckets: buckets, ID: "ingress-" + nuid.Next()[:8],
				Log: deps.Log, Loaded: routerLoaded})
			if wctx.Err() != nil {
				return nil
			}
			return err
		})
	}
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error {
		defer stopWatch()
		if embedded != nil {
			// After the HTTP server drained: answer anything left.
			defer embedded.Drain(time.Second)
		}
		return service.ServeHTTP(gctx, cfg.HTTPAddr, h, cfg.DrainTimeout, func(a net.Addr) {
			deps.Log.Info().Str("addr", a.String()).Msg("ingress listening")
			if cfg.HTTPReady != nil {
				cfg.HTTPReady(a)
			}
		})
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// watchRoutes keeps table in step with the Apps bucket key "config".
func watchRoutes(ctx context.Context, kv jetstream.KeyValue, table *atomic.Pointer[routes.Table], loaded *atomic.Bool, log zerolog.Logger) error {
	w, err := kv.Watch(ctx, "config")
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	defer w.Stop() //nolint:errcheck // best effort on the way out
	table.Store(routes.New(nil))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch config: watcher closed")
			}
			if e == nil {
				loaded.Store(true)
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				table.Store(routes.New(nil))
				continue
			}
			var sc config.ServeConfig
			if err := json.Unmarshal(e.Value(), &sc); err != nil {
				log.Warn().Err(err).Uint64("revision", e.Revision()).Msg("bad serve config in apps bucket")
				continue
			}
			t := routes.FromConfig(sc)
			table.Store(t)
			log.Info().Any("routes", t.Prefixes()).Msg("route table updated")
		}
	}
}
