package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// ParseLevel parses a zerolog level name.
func ParseLevel(s string) (zerolog.Level, error) {
	l, err := zerolog.ParseLevel(strings.ToLower(s))
	if err != nil || s == "" {
		return zerolog.InfoLevel, fmt.Errorf("unknown level %q (want trace, debug, info, warn or error)", s)
	}
	return l, nil
}

// NewLogger builds the service's logger writing to w.
func NewLogger(c LogConfig, w io.Writer, svc string) zerolog.Logger {
	lvl, _ := ParseLevel(c.Level)
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	// Millisecond timestamps without touching zerolog's global
	// TimeFieldFormat (which is second-precision RFC 3339).
	return zerolog.New(w).Level(lvl).Hook(zerolog.HookFunc(func(e *zerolog.Event, _ zerolog.Level, _ string) {
		e.Str(zerolog.TimestampFieldName, time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	})).With().Str("service", svc).Logger()
}

// NewRegistry returns a Prometheus registry with the Go and process
// collectors, for one service (or, in dev, for the whole process).
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Health collects named readiness checks; /healthz answers 200 only when
// every check passes. Safe for concurrent use.
type Health struct {
	mu     sync.RWMutex
	checks map[string]func() error // guarded by mu
}

// NewHealth returns an empty Health (healthy).
func NewHealth() *Health { return &Health{checks: map[string]func() error{}} }

// Add registers a check.
func (h *Health) Add(name string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = check
}

// Check runs every check and joins the failures.
func (h *Health) Check() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var errs []error
	for name, c := range h.checks {
		if err := c(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP answers /healthz.
func (h *Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if err := h.Check(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// NATSCheck is a health check that fails while nc is not connected.
func NATSCheck(nc *nats.Conn) func() error {
	return func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats %s", nc.Status())
		}
		return nil
	}
}

// OpsMux returns a mux with /metrics and /healthz.
func OpsMux(reg *prometheus.Registry, health *Health) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("GET /healthz", health)
	return mux
}

// ServeHTTP runs srv on addr until ctx ends, then shuts it down, waiting
// up to drain for in-flight requests. ready, if not nil, receives the bound
// address once listening.
func ServeHTTP(ctx context.Context, addr string, h http.Handler, drain time.Duration, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down %s: %w", addr, err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Connect dials NATS and keeps reconnecting for ever; the first connect is
// retried until ctx ends, so services may start before NATS.
func Connect(ctx context.Context, c NATSConfig, name string, log zerolog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(c.PingInterval),
		nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: a deliberate close or drain
				log.Warn().Err(err).Msg("nats disconnected")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Int64("max_payload", nc.MaxPayload()).Msg("nats reconnected")
		}),
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", c.URL, err)
	}
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			nc.Close()
			return nil, fmt.Errorf("connect nats %s: %w", c.URL, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// max_payload bounds every message: request bodies, job messages,
	// stored configs. Services size their limits from nc.MaxPayload().
	log.Info().Str("url", nc.ConnectedUrlRedacted()).Int64("max_payload", nc.MaxPayload()).Msg("nats connected")
	return nc, nil
}

// Buckets are the fleet's shared buckets, declared in package
// fleetstate (this alias keeps the scheduler's reconcile package
// compiling until it moves there).
type Buckets = fleetstate.Buckets
