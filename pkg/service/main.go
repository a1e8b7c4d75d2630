package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

// Configurable is a service's configuration: it validates itself and
// exposes the shared part.
type Configurable interface {
	Validate() error
	CommonConfig() Common
}

// Exec is the main function of a service binary: it calls run with a
// context cancelled on SIGINT or SIGTERM, the process's arguments,
// environment and stderr, and exits 1 with the error prefixed by name.
func Exec(name string, run func(ctx context.Context, args, environ []string, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Main loads cfg (a pointer holding the defaults) from file, environment
// and flags, validates it, builds the logger and calls run. -h prints the
// options and returns nil. It is what each service's run(ctx, args, …)
// calls; main itself only handles signals and the exit code.
func Main(ctx context.Context, name string, cfg Configurable, args, environ []string, stderr io.Writer,
	run func(ctx context.Context, log zerolog.Logger) error) error {
	if err := Load(cfg, name, args, environ, stderr); err != nil {
		if errors.Is(err, ErrHelp) {
			return nil
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	log := NewLogger(cfg.CommonConfig().Log, stderr, name)
	return run(ctx, log)
}

// Command is the run function of a service binary whose Run takes its
// Config and Deps: it loads and validates the defaults' Config as Main
// does and calls run with a Deps holding only the logger. A service's
// main is then one call:
//
//	func main() {
//		service.Exec("jetserve-router", service.Command("router", router.DefaultConfig, router.Run))
//	}
func Command[C any, P interface {
	*C
	Configurable
}](name string, defaults func() C, run func(context.Context, C, Deps) error) func(ctx context.Context, args, environ []string, stderr io.Writer) error {
	return func(ctx context.Context, args, environ []string, stderr io.Writer) error {
		cfg := defaults()
		return Main(ctx, name, P(&cfg), args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
			return run(ctx, cfg, Deps{Log: log})
		})
	}
}

// Deps are what a service's Run is handed; zero fields are filled in by
// Prepare. Passing them in lets `jetserve dev` and tests run every service
// in one process with their own connections, loggers and registries.
type Deps struct {
	// NC is the service's NATS connection; nil = connect with the config.
	NC *nats.Conn
	// Log is the service's logger.
	Log zerolog.Logger
	// Metrics is where the service registers its collectors; nil = a new
	// registry with the Go and process collectors.
	Metrics *prometheus.Registry
	// Health gathers readiness checks served at /healthz.
	Health *Health
	// OpsReady, if set, is told the ops server's address once it listens.
	OpsReady func(net.Addr)
	// Tracer makes the service's spans; nil = one from the config's
	// tracing options (a no-op provider without an endpoint), flushed and
	// stopped by Prepare's cleanup.
	Tracer trace.TracerProvider

	// pprof: the ops server serves /debug/pprof/ too (Common.OpsPprof,
	// set by Prepare).
	pprof bool
	// ops is the ops server Prepare started while it connected, so that
	// /healthz says why NATS is not connected; ServeOps takes it over.
	ops *opsServer
}

// opsServer is an ops HTTP server started before the service's errgroup.
type opsServer struct {
	srv  *http.Server
	done chan error
}

func (o *opsServer) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := o.srv.Shutdown(ctx)
	if serr := <-o.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// Prepare fills zero fields of d: it creates the registry and health,
// connects to NATS (closing the connection is then the returned cleanup's
// job) while already serving /healthz on c.OpsAddr — which says why NATS
// is not connected (a refused credential, a TLS failure) — and adds the
// NATS health check.
func (d *Deps) Prepare(ctx context.Context, c Common, name string) (cleanup func(), err error) {
	if d.Metrics == nil {
		d.Metrics = NewRegistry()
	}
	if d.Health == nil {
		d.Health = NewHealth()
	}
	d.pprof = c.OpsPprof
	var closers []func()
	cleanup = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	if d.Tracer == nil {
		tp, shutdown, err := tracing.NewProvider(c.Tracing, name)
		if err != nil {
			return cleanup, err
		}
		d.Tracer = tp
		closers = append(closers, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := shutdown(ctx); err != nil {
				d.Log.Warn().Err(err).Msg("flush spans")
			}
		})
	}
	if d.NC == nil {
		st := NewConnState()
		d.Health.Add("nats", st.Check)
		if c.OpsAddr != "" && d.ops == nil {
			ln, err := net.Listen("tcp", c.OpsAddr)
			if err != nil {
				return cleanup, fmt.Errorf("listen %s (ops_addr): %w", c.OpsAddr, err)
			}
			d.Log.Info().Str("addr", ln.Addr().String()).Msg("ops listening") // read back by tests given port 0
			if d.OpsReady != nil {
				d.OpsReady(ln.Addr())
			}
			o := &opsServer{srv: &http.Server{Handler: OpsMux(d.Metrics, d.Health, d.pprof), ReadHeaderTimeout: 10 * time.Second}, done: make(chan error, 1)}
			go func() { o.done <- o.srv.Serve(ln) }()
			d.ops = o
			closers = append(closers, func() {
				if d.ops != nil { // not taken over by ServeOps
					_ = d.ops.stop()
					d.ops = nil
				}
			})
		}
		nc, err := ConnectWatched(ctx, c.NATS, name, d.Log, st)
		if err != nil {
			return cleanup, err
		}
		d.NC = nc
		closers = append(closers, func() {
			if err := nc.Drain(); err != nil {
				nc.Close()
			}
		})
		return cleanup, nil
	}
	d.Health.Add("nats", NATSCheck(d.NC))
	return cleanup, nil
}

// ServeOps serves /metrics and /healthz on addr until ctx ends; "" does
// nothing and returns when ctx ends. The server Prepare started is kept.
func (d *Deps) ServeOps(ctx context.Context, addr string) error {
	if o := d.ops; o != nil {
		d.ops = nil
		<-ctx.Done()
		return o.stop()
	}
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	return ServeHTTP(ctx, addr, OpsMux(d.Metrics, d.Health, d.pprof), 5*time.Second, func(a net.Addr) {
		d.Log.Info().Str("addr", a.String()).Msg("ops listening") // read back by tests given port 0
		if d.OpsReady != nil {
			d.OpsReady(a)
		}
	})
}

// Fleet is what every service opens first: the names under its prefix,
// JetStream, and the shared buckets.
type Fleet struct {
	Names   protocol.Names
	JS      jetstream.JetStream
	Buckets *fleetstate.Buckets
}

// Open prepares d (see Prepare) and opens the fleet's JetStream state,
// creating the fleet's buckets if they are missing (the scheduler: see
// Bind for the other services). cleanup must be called on the way out,
// even when err is not nil.
func (d *Deps) Open(ctx context.Context, c Common, name string) (f Fleet, cleanup func(), err error) {
	return d.open(ctx, c, name, true)
}

// Bind is Open for a service that creates nothing (its NATS user may not
// create streams: deploy/auth): it waits, retrying and saying so in its
// log, until the scheduler has created the fleet's buckets.
func (d *Deps) Bind(ctx context.Context, c Common, name string) (f Fleet, cleanup func(), err error) {
	return d.open(ctx, c, name, false)
}

func (d *Deps) open(ctx context.Context, c Common, name string, create bool) (f Fleet, cleanup func(), err error) {
	cleanup, err = d.Prepare(ctx, c, name)
	if err != nil {
		return f, cleanup, err
	}
	if f.Names, err = protocol.NewNames(c.NATS.Prefix); err != nil {
		return f, cleanup, err
	}
	if f.JS, err = jetstream.New(d.NC); err != nil {
		return f, cleanup, fmt.Errorf("jetstream: %w", err)
	}
	f.Buckets, err = openBuckets(ctx, d.Log, f.JS, f.Names, c.NATS.Replicas, create)
	return f, cleanup, err
}

// openBuckets ensures (create) or binds to the fleet's buckets until NATS
// can answer (JetStream starting, a cluster electing its meta leader) and,
// when binding, until the scheduler has created them: retried, never given
// up on.
func openBuckets(ctx context.Context, log zerolog.Logger, js jetstream.JetStream, names protocol.Names, replicas int, create bool) (*Buckets, error) {
	var b *Buckets
	err := streams.Retry(ctx, log, "fleet buckets", func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		if create {
			b, err = fleetstate.Ensure(actx, js, names, replicas)
		} else {
			b, err = fleetstate.Bind(actx, js, names)
		}
		return err
	})
	return b, err
}

// BindBodies opens the bodies object store of the ingress and the workers
// (wire.Bodies) without creating it, retrying until the scheduler has
// created it (with the fleet's buckets) or ctx ends.
func BindBodies(ctx context.Context, log zerolog.Logger, js jetstream.JetStream, names protocol.Names) (*wire.Bodies, error) {
	var b *wire.Bodies
	err := streams.Retry(ctx, log, "bodies object store", func(ctx context.Context) error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		b, err = wire.BindBodies(actx, js, names)
		return err
	})
	return b, err
}
