// Package ingress is jetserve's public HTTP server: it routes each request
// by the longest matching route_prefix to its application's ingress
// deployment through the routers (NATS), passes method, path below the
// prefix, query, headers and body, and writes the deployment's answer back
// — streamed chunk by chunk when the deployment streams. It limits body
// size (413), answers unknown routes with 404 and lists routes at
// /-/routes, readiness at /-/healthz.
//
// The route table is kept from a watch of the applied serve config; Run
// owns the watch and the HTTP server and returns after draining them.
package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Config is the ingress's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// HTTPAddr is where the public HTTP API listens.
	HTTPAddr string `koanf:"http_addr"`
	// MaxBodyBytes caps a request body (413 beyond); it must stay below
	// the NATS server's max_payload (8 MiB for the embedded server and the
	// compose image; 1 MiB is NATS's own default).
	MaxBodyBytes int64 `koanf:"max_body_bytes"`
	// RequestTimeout bounds a request end to end when the deployment sets
	// no request_timeout of its own.
	RequestTimeout time.Duration `koanf:"request_timeout"`
	// DrainTimeout is how long shutdown waits for in-flight requests.
	DrainTimeout time.Duration `koanf:"drain_timeout"`
	// HTTPReady, if set, is told the HTTP listener's address (tests).
	HTTPReady func(net.Addr) `koanf:"-"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Common:         service.DefaultCommon(":9100"),
		HTTPAddr:       ":8000",
		MaxBodyBytes:   4 << 20,
		RequestTimeout: 60 * time.Second,
		DrainTimeout:   30 * time.Second,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if err := c.Common.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("http_addr: is required"))
	}
	if c.MaxBodyBytes < 1 || c.MaxBodyBytes > 8<<20 {
		errs = append(errs, fmt.Errorf("max_body_bytes: must be 1..8388608 (NATS max_payload), got %d", c.MaxBodyBytes))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("request_timeout: must be > 0, got %v", c.RequestTimeout))
	}
	if c.DrainTimeout < 0 {
		errs = append(errs, fmt.Errorf("drain_timeout: must be >= 0, got %v", c.DrainTimeout))
	}
	return errors.Join(errs...)
}

// CommonConfig returns the shared part.
func (c Config) CommonConfig() service.Common { return c.Common }

// route is one application's entry in the route table.
type route struct {
	prefix, app, deployment string
}

// table is an immutable route table, longest prefix first.
type table struct {
	routes []route
}

func newTable(cfg config.ServeConfig) *table {
	t := &table{}
	for _, a := range cfg.Applications {
		t.routes = append(t.routes, route{prefix: a.RoutePrefix, app: a.Name, deployment: a.Ingress})
	}
	sort.Slice(t.routes, func(i, j int) bool { return len(t.routes[i].prefix) > len(t.routes[j].prefix) })
	return t
}

// match finds the route for path by whole path segments: "/text" matches
// "/text" and "/text/x", not "/textual". It returns the path below the
// prefix (at least "/").
func (t *table) match(path string) (route, string, bool) {
	for _, r := range t.routes {
		if r.prefix == "/" {
			return r, path, true
		}
		if path == r.prefix {
			return r, "/", true
		}
		if strings.HasPrefix(path, r.prefix) && path[len(r.prefix)] == '/' {
			return r, path[len(r.prefix):], true
		}
	}
	return route{}, "", false
}

// server is the HTTP handler.
type server struct {
	cfg     Config
	caller  *wire.Caller
	log     zerolog.Logger
	routes  atomic.Pointer[table] // nil until the config was read once
	metrics *metrics
}

// Run serves HTTP until ctx ends, then drains.
func Run(ctx context.Context, cfg Config, deps service.Deps) error {
	cleanup, err := deps.Prepare(ctx, cfg.Common, "ingress")
	if err != nil {
		return err
	}
	defer cleanup()
	names, err := protocol.NewNames(cfg.NATS.Prefix)
	if err != nil {
		return err
	}
	js, err := jetstream.New(deps.NC)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	buckets, err := service.OpenBuckets(ctx, js, names)
	if err != nil {
		return err
	}
	s := &server{cfg: cfg, caller: wire.NewCaller(deps.NC, names), log: deps.Log, metrics: newMetrics(deps.Metrics)}
	deps.Health.Add("routes", func() error {
		if s.routes.Load() == nil {
			return errors.New("route table not loaded")
		}
		return nil
	})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchRoutes(gctx, buckets.Apps) })
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error {
		return service.ServeHTTP(gctx, cfg.HTTPAddr, s.handler(deps.Health), cfg.DrainTimeout, cfg.HTTPReady)
	})
	deps.Log.Info().Str("addr", cfg.HTTPAddr).Msg("ingress serving")
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (s *server) watchRoutes(ctx context.Context, apps jetstream.KeyValue) error {
	w, err := apps.Watch(ctx, "config")
	if err != nil {
		return fmt.Errorf("watch applied config: %w", err)
	}
	defer w.Stop() //nolint:errcheck // stopping on the way out
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil { // initial values done; an empty bucket means no apps
				if s.routes.Load() == nil {
					s.routes.Store(&table{})
				}
				continue
			}
			var cfg config.ServeConfig
			if e.Operation() == jetstream.KeyValuePut {
				if err := json.Unmarshal(e.Value(), &cfg); err != nil {
					s.log.Error().Err(err).Msg("applied config is not valid JSON; keeping the old routes")
					continue
				}
			}
			s.routes.Store(newTable(cfg))
			s.log.Info().Int("routes", len(cfg.Applications)).Msg("routes updated")
		}
	}
}

func (s *server) handler(health *service.Health) http.Handler {
	r := chi.NewRouter()
	r.Get("/-/healthz", health.ServeHTTP)
	r.Get("/-/routes", s.listRoutes)
	r.HandleFunc("/*", s.serve)
	return r
}

func (s *server) listRoutes(w http.ResponseWriter, _ *http.Request) {
	out := map[string]string{}
	if t := s.routes.Load(); t != nil {
		for _, r := range t.routes {
			out[r.prefix] = r.app
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// hopHeaders are not forwarded (RFC 9110 §7.6.1).
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

func (s *server) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rid := r.Header.Get("X-Request-Id")
	if rid == "" {
		rid = nuid.Next()
	}
	w.Header().Set("X-Request-Id", rid)
	s.metrics.ongoing.Inc()
	rec := &statusRecorder{ResponseWriter: w}
	routeLabel := "unknown"
	defer func() {
		s.metrics.ongoing.Dec()
		s.metrics.observe(routeLabel, r.Method, rec.status, time.Since(start))
	}()
	t := s.routes.Load()
	if t == nil {
		writeError(rec, rid, http.StatusServiceUnavailable, protocol.ErrUnavailable, "route table not loaded yet")
		return
	}
	rt, sub, ok := t.match(r.URL.Path)
	if !ok {
		writeError(rec, rid, http.StatusNotFound, protocol.ErrNotFound, "no application serves "+r.URL.Path+"; see GET /-/routes")
		return
	}
	routeLabel = rt.prefix
	body, err := io.ReadAll(http.MaxBytesReader(rec, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			writeError(rec, rid, http.StatusRequestEntityTooLarge, protocol.ErrBodyTooLarge,
				"request body exceeds "+strconv.FormatInt(s.cfg.MaxBodyBytes, 10)+" bytes")
			return
		}
		writeError(rec, rid, http.StatusBadRequest, protocol.ErrBadRequest, "read body: "+err.Error())
		return
	}
	h := http.Header{}
	for k, vs := range r.Header {
		if !hopHeaders[k] {
			h[k] = vs
		}
	}
	req := &serve.Request{Method: r.Method, Path: sub, Query: r.URL.Query(), Header: h, Body: body, RequestID: rid}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	log := s.log.With().Str("request_id", rid).Str("app", rt.app).Logger()
	if wantsStream(r) {
		s.stream(ctx, rec, rt, req, log)
		return
	}
	resp, err := s.caller.Call(ctx, rt.app, rt.deployment, req)
	if err != nil {
		se := serve.AsError(err)
		if se.Code == protocol.ErrInternal || se.Code == protocol.ErrHandler {
			log.Error().Err(err).Msg("call failed")
		}
		writeError(rec, rid, se.Status, se.Code, se.Msg)
		return
	}
	writeResponse(rec, rid, resp)
}

func wantsStream(r *http.Request) bool {
	if v := r.URL.Query().Get("stream"); v == "1" || v == "true" {
		return true
	}
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// httpSink writes a streamed answer to the client as it comes.
type httpSink struct {
	w       http.ResponseWriter
	rid     string
	flusher http.Flusher
	started bool
}

func (s *httpSink) Head(status int, h http.Header) error {
	for k, vs := range h {
		if k != protocol.HdrError && !hopHeaders[k] {
			s.w.Header()[k] = vs
		}
	}
	s.w.Header().Set("X-Request-Id", s.rid)
	s.w.WriteHeader(status)
	s.started = true
	if s.flusher != nil {
		s.flusher.Flush()
	}
	return nil
}

func (s *httpSink) Chunk(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("write chunk: %w", err)
	}
	if s.flusher != nil {
		s.flusher.Flush()
	}
	return nil
}

func (s *server) stream(ctx context.Context, w http.ResponseWriter, rt route, req *serve.Request, log zerolog.Logger) {
	f, _ := w.(http.Flusher)
	sink := &httpSink{w: w, rid: req.RequestID, flusher: f}
	err := s.caller.Stream(ctx, rt.app, rt.deployment, req, sink)
	if err == nil {
		return
	}
	if !sink.started {
		se := serve.AsError(err)
		writeError(w, req.RequestID, se.Status, se.Code, se.Msg)
		return
	}
	// Headers are gone: the client sees a truncated chunked body.
	log.Warn().Err(err).Msg("stream ended with an error after it started")
	panic(http.ErrAbortHandler)
}

func writeResponse(w http.ResponseWriter, rid string, resp *serve.Response) {
	for k, vs := range resp.Header {
		if k != protocol.HdrError && !hopHeaders[k] {
			w.Header()[k] = vs
		}
	}
	if code := resp.Header.Get(protocol.HdrError); code != "" {
		writeError(w, rid, resp.Status, protocol.ErrorCode(code), string(resp.Body))
		return
	}
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}

// errorBody is every error's JSON body.
type errorBody struct {
	Error     protocol.ErrorCode `json:"error"`
	Message   string             `json:"message"`
	RequestID string             `json:"request_id"`
}

func writeError(w http.ResponseWriter, rid string, status int, code protocol.ErrorCode, msg string) {
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if (code == protocol.ErrQueueFull || code == protocol.ErrNoReplicas || code == protocol.ErrUnavailable) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: code, Message: msg, RequestID: rid})
}

// statusRecorder remembers the status written.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush passes through to the underlying writer (streaming).
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// metrics are the ingress's Prometheus collectors (Ray Serve's names,
// jetserve_ prefix).
type metrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	ongoing  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetserve_num_http_requests_total",
			Help: "HTTP requests by route prefix, method and status."}, []string{"route", "method", "status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "jetserve_num_http_error_requests_total",
			Help: "HTTP requests answered with a status of 400 or more."}, []string{"route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "jetserve_http_request_latency_ms",
			Help:    "HTTP request latency in milliseconds.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000, 30000, 600000}}, []string{"route"}),
		ongoing: prometheus.NewGauge(prometheus.GaugeOpts{Name: "jetserve_num_ongoing_http_requests",
			Help: "HTTP requests in flight."}),
	}
	reg.MustRegister(m.requests, m.errors, m.latency, m.ongoing)
	return m
}

func (m *metrics) observe(route, method string, status int, d time.Duration) {
	if status == 0 {
		status = http.StatusOK
	}
	st := strconv.Itoa(status)
	m.requests.WithLabelValues(route, method, st).Inc()
	if status >= 400 {
		m.errors.WithLabelValues(route, st).Inc()
	}
	m.latency.WithLabelValues(route).Observe(float64(d.Microseconds()) / 1000)
}
