// Package gateway is the ingress HTTP handler: it matches the request path
// against the route table, serves the async-method (job) endpoints itself
// (package jobsapi), runs the graph of an application that has one
// (package graph, over the same Caller; graph.go), and forwards method, path below the prefix, query,
// headers (hop-by-hop ones dropped) and body to the application's ingress
// deployment through a Caller, and writes the answer back — all at once, or
// chunk by chunk with flushes when the client asked for a stream. Before
// any route it serves the Open Inference Protocol v2 under /v2 (oip.go):
// model endpoints go to the deployment serving the model (package models),
// inference bodies checked first.
//
// The Handler is safe for concurrent use; it starts no goroutines of its
// own (the Caller may, for the duration of a call).
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/jobsapi"
	"github.com/jetserve/jetserve/services/ingress/internal/models"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Caller sends a request to a deployment; *wire.Caller is one.
type Caller interface {
	Call(ctx context.Context, app, deployment string, req *serve.Request) (*serve.Response, error)
	Stream(ctx context.Context, app, deployment string, req *serve.Request, sink wire.StreamSink) error
}

// Options configure a Handler.
type Options struct {
	Caller Caller
	// Routes returns the current table (nil before it is loaded).
	Routes func() *routes.Table
	// Healthy reports readiness for /-/healthz.
	Healthy func() error
	// MaxBodyBytes caps request bodies (413 beyond) — the configured
	// max_body_bytes; the transport may cap them lower (MaxPayload).
	MaxBodyBytes int64
	// MaxPayload, if set, returns the NATS server's max_payload: bodies
	// are limited to what fits one message (wire.BodyLimit).
	MaxPayload func() int64
	// RequestTimeout bounds a request end to end.
	RequestTimeout time.Duration
	Metrics        *Metrics
	Log            zerolog.Logger
	// Jobs, if set, serves the endpoints of the applications' async
	// methods ({prefix}/{method}[/cancel|status|result|list]); every
	// other path goes to the ingress deployment as before.
	Jobs *jobsapi.API
	// Models returns the current OIP model table (nil before it is
	// loaded): /v2/models/{model}/... goes to the deployment serving the
	// model. /v2 is served before application routes.
	Models func() *models.Table
	// OIPReadyTimeout bounds GET /v2/models/{model}/ready (the model's
	// deployment answers it); default 5s.
	OIPReadyTimeout time.Duration
	// OnSplit, if set, is told the choice of every splitter of an
	// application's graph (app, node, step). It must not block.
	OnSplit func(app, node, step string)
	// Tracer makes a server span per application and OIP request, the
	// child of the caller's traceparent, and passes it on; nil (tracing
	// off): no spans, the caller's traceparent is passed on unchanged.
	Tracer trace.Tracer
}

// Handler serves the ingress HTTP API.
type Handler struct {
	o   Options
	mux http.Handler
}

// New returns the handler.
func New(o Options) *Handler {
	h := &Handler{o: o}
	r := chi.NewRouter()
	r.Get("/-/routes", h.serveRoutes)
	r.Get("/-/healthz", h.serveHealth)
	r.Get("/-/models", h.serveModels)
	r.Get("/-/limits", h.serveLimits)
	r.Group(func(r chi.Router) {
		// Application and OIP requests: a request id (the client's
		// X-Request-Id, else one chi makes), the status captured, metrics
		// and a debug log line.
		r.Use(middleware.RequestID, h.observe)
		r.Handle("/v2", http.HandlerFunc(h.serveOIP))
		r.Handle("/v2/*", http.HandlerFunc(h.serveOIP))
		r.Handle("/*", http.HandlerFunc(h.serveApp))
	})
	h.mux = r
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// principal is who the request comes from: the auth middleware put it in
// the context; without one (the handler used alone, as in its tests) it is
// the anonymous principal auth-off servers use.
func principal(r *http.Request) httpauth.Principal {
	if p, ok := httpauth.FromContext(r.Context()); ok {
		return p
	}
	return httpauth.Anonymous()
}

func (h *Handler) serveRoutes(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.o.Routes().Prefixes())
}

// Limits is the body of GET /-/limits: the body limit in force and what
// it comes from.
type Limits struct {
	// MaxBodyBytes is the limit in force: the smaller of the configured
	// one and what fits the NATS max_payload with room for headers.
	MaxBodyBytes           int64 `json:"max_body_bytes"`
	ConfiguredMaxBodyBytes int64 `json:"configured_max_body_bytes"`
	// NATSMaxPayload is the connected server's max_payload (0 unknown).
	NATSMaxPayload int64 `json:"nats_max_payload"`
}

// Limits returns the limits in force now (the server's max_payload can
// change with a reconnect to another server).
func (h *Handler) Limits() Limits {
	l := Limits{ConfiguredMaxBodyBytes: h.o.MaxBodyBytes}
	if h.o.MaxPayload != nil {
		l.NATSMaxPayload = h.o.MaxPayload()
	}
	l.MaxBodyBytes = wire.BodyLimit(h.o.MaxBodyBytes, l.NATSMaxPayload)
	return l
}

func (h *Handler) serveLimits(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.Limits())
}

func (h *Handler) serveHealth(w http.ResponseWriter, _ *http.Request) {
	if err := h.o.Healthy(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// hopByHop headers are not forwarded either way (RFC 9110 §7.6.1).
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// forwardHeaders copies h without hop-by-hop headers, those named in
// Connection, X-Request-Id (carried separately), the credentials
// (Authorization, X-API-Key: a deployment never sees the caller's secret)
// and the principal header, which only the ingress sets.
func forwardHeaders(h http.Header) http.Header {
	out := make(http.Header, len(h))
	conn := h["Connection"]
	for k, vs := range h {
		if hopByHop[k] || k == protocol.HdrRequestID || k == protocol.HeaderPrincipal || k == "Authorization" || k == "X-Api-Key" {
			continue
		}
		if len(conn) > 0 && named(conn, k) {
			continue
		}
		out[k] = vs
	}
	return out
}

func named(conn []string, k string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

// exchange is one request being served: its writer and id, and what the
// handler tells the metrics and the request log.
type exchange struct {
	w     http.ResponseWriter
	rid   string
	label string // the route prefix (or model endpoint) in metrics
	code  protocol.ErrorCode
}

type exchangeKey struct{}

// exchangeOf returns the exchange observe made for r.
func exchangeOf(r *http.Request) *exchange { return r.Context().Value(exchangeKey{}).(*exchange) }

// observe is the middleware of the application and OIP routes, after
// chi's RequestID: it echoes the request id, starts the request's server
// span (the child of the caller's traceparent) and makes the request's
// Traceparent its own, so that every hop below is its child; it captures
// the status (chi's WrapResponseWriter), counts the request as ongoing
// and, when it ends, records its metrics (labelled by what the handler put
// in its exchange), ends the span and writes a debug log line.
func (h *Handler) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(rw, r.ProtoMajor)
		x := &exchange{w: ww, rid: middleware.GetReqID(r.Context()), label: "unmatched"}
		ww.Header().Set(protocol.HdrRequestID, x.rid)
		ctx, span := r.Context(), tracing.Off()
		if h.o.Tracer != nil {
			ctx, span = h.o.Tracer.Start(tracing.Extract(ctx, r.Header), "HTTP "+r.Method,
				trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(tracing.AttrRequestID.String(x.rid),
					attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
			tracing.Inject(ctx, r.Header)
		}
		m := h.o.Metrics
		m.ongoing.Inc()
		defer func() {
			m.ongoing.Dec()
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			el := time.Since(start)
			m.observe(x.label, r.Method, status, x.code, el)
			if span.IsRecording() {
				span.SetName("HTTP " + r.Method + " " + x.label)
				span.SetAttributes(attribute.Int("http.response.status_code", status))
				if x.code != "" {
					span.SetAttributes(tracing.AttrErrorCode.String(string(x.code)))
				}
				if status >= 500 {
					span.SetStatus(codes.Error, string(x.code))
				}
			}
			span.End()
			h.o.Log.Debug().Str("request_id", x.rid).Str("trace_id", traceID(span)).Str("method", r.Method).Str("path", r.URL.Path).
				Int("status", status).Str("error_code", string(x.code)).Dur("latency", el).Msg("http request")
		}()
		next.ServeHTTP(ww, r.WithContext(context.WithValue(ctx, exchangeKey{}, x)))
	})
}

// traceID is span's trace id, "" without one.
func traceID(span trace.Span) string {
	if sc := span.SpanContext(); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

func (h *Handler) serveApp(w http.ResponseWriter, r *http.Request) {
	x := exchangeOf(r)
	rid := x.rid

	tab := h.o.Routes()
	route, rest, ok := tab.Match(r.URL.Path)
	if !ok && h.o.Healthy != nil {
		// Not ready (the route table not loaded yet, NATS away): the
		// route may well exist; 404 would be a lie a client acts on.
		if err := h.o.Healthy(); err != nil {
			x.code = protocol.ErrUnavailable
			httperr.Write(w, x.code, "the ingress is not ready: "+err.Error(), rid)
			return
		}
	}
	if !ok {
		x.code = protocol.ErrNotFound
		httperr.WriteBody(w, 0, x.code, struct {
			httperr.Body
			Routes map[string]string `json:"routes"`
		}{httperr.Body{Error: x.code, Message: "no application serves " + r.URL.Path, RequestID: rid}, tab.Prefixes()})
		return
	}
	x.label = route.Prefix
	p := principal(r)
	if !p.CanApp(route.App) {
		x.code = protocol.ErrForbidden
		httperr.Write(w, x.code, fmt.Sprintf("%s may not call application %s", p.Name, route.App), rid)
		return
	}
	log := func() zerolog.Logger { return h.o.Log.With().Str("request_id", rid).Str("app", route.App).Logger() }

	lim := h.Limits()
	body, err := readBody(w, r, lim.MaxBodyBytes)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			x.code = protocol.ErrBodyTooLarge
			msg := fmt.Sprintf("request body exceeds %d bytes", lim.MaxBodyBytes)
			if lim.MaxBodyBytes < lim.ConfiguredMaxBodyBytes {
				msg += fmt.Sprintf(" (what one message of the NATS max_payload of %d bytes carries with room for headers; max_body_bytes is %d)",
					lim.NATSMaxPayload, lim.ConfiguredMaxBodyBytes)
			}
			httperr.Write(w, x.code, msg, rid)
			return
		}
		x.code = protocol.ErrBadRequest
		httperr.Write(w, x.code, "read request body: "+err.Error(), rid)
		return
	}
	if h.o.Jobs != nil {
		if m, op, ok := h.o.Jobs.Match(route.App, rest); ok {
			x.code = h.o.Jobs.Serve(w, r, m, op, body, rid, jobsapi.Caller{Name: p.Name, Operator: p.Has(httpauth.ScopeOperator)})
			return
		}
	}
	req := &serve.Request{
		Method:    r.Method,
		Path:      rest,
		Query:     r.URL.Query(),
		Header:    forwardHeaders(r.Header),
		Body:      body,
		RequestID: rid,
	}
	req.Header.Set(protocol.HeaderPrincipal, p.Name)
	ctx := r.Context()
	if h.o.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.o.RequestTimeout)
		defer cancel()
	}

	if route.Graph != nil {
		h.serveGraph(ctx, w, r, x, route, req, log)
		return
	}
	if wantsStream(r) {
		sink := &httpSink{w: w}
		err := h.o.Caller.Stream(ctx, route.App, route.Ingress, req, sink)
		if err != nil {
			x.code = serve.AsError(err).Code
			if !sink.headed {
				h.writeCallError(w, err, rid, log)
				return
			}
			l := log()
			l.Warn().Err(err).Msg("stream ended with an error")
		}
		return
	}

	resp, err := h.o.Caller.Call(ctx, route.App, route.Ingress, req)
	if err != nil {
		x.code = serve.AsError(err).Code
		h.writeCallError(w, err, rid, log)
		return
	}
	code := protocol.ErrorCode(resp.Header.Get(protocol.HdrError))
	x.code = code
	status := resp.Status
	if platformError(code) {
		// The fleet's own refusals get one JSON shape; handler errors
		// below keep the handler's status, headers and body.
		httperr.Write(w, code, string(resp.Body), rid)
		return
	}
	copyResponseHeaders(w.Header(), resp.Header)
	httperr.SetHeaders(w.Header(), code)
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(status)
	_, _ = w.Write(resp.Body)
}

// errorStatus is the status of an error answer: the catalogue's for
// the fleet's own codes (platformError), the handler's for its errors
// (500 when it chose none).
func errorStatus(code protocol.ErrorCode, status int) int {
	if platformError(code) {
		return code.HTTPStatus()
	}
	if status == 0 {
		return http.StatusInternalServerError
	}
	return status
}

// platformError reports codes that the fleet (router, replica runtime)
// answers by itself, as opposed to a deployment handler's errors.
func platformError(code protocol.ErrorCode) bool {
	switch code {
	case protocol.ErrQueueFull, protocol.ErrReplicaFull, protocol.ErrDraining, protocol.ErrNoReplicas,
		protocol.ErrTimeout, protocol.ErrUnavailable, protocol.ErrCancelled, protocol.ErrReplicaLost,
		protocol.ErrBodyTooLarge:
		return true
	}
	return false
}

func (h *Handler) writeCallError(w http.ResponseWriter, err error, rid string, log func() zerolog.Logger) {
	e := serve.AsError(err)
	var se *serve.Error
	if !errors.As(err, &se) {
		// Not an answer from the fleet: a transport failure.
		l := log()
		l.Error().Err(err).Msg("call ingress deployment")
		e = &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable, Msg: "upstream unavailable"}
	}
	httperr.WriteBody(w, errorStatus(e.Code, e.Status), e.Code, httperr.Body{Error: e.Code, Message: e.Msg, RequestID: rid})
}

func copyResponseHeaders(dst, src http.Header) {
	for k, vs := range src {
		if hopByHop[k] || k == protocol.HdrError || k == "Content-Length" {
			continue
		}
		dst[k] = vs
	}
}

func wantsStream(r *http.Request) bool {
	if v := r.URL.Query().Get("stream"); v == "1" || v == "true" {
		return true
	}
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if limit > 0 && r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	body := r.Body
	if limit > 0 {
		body = http.MaxBytesReader(w, r.Body, limit)
	}
	if r.ContentLength >= 0 {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(body)
}

// httpSink writes a streamed answer to the client as it arrives.
type httpSink struct {
	w      http.ResponseWriter
	headed bool
}

func (s *httpSink) flush() {
	if f, ok := s.w.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *httpSink) Head(status int, h http.Header) error {
	copyResponseHeaders(s.w.Header(), h)
	s.w.Header().Del("Content-Length")
	s.headed = true
	s.w.WriteHeader(status)
	s.flush()
	return nil
}

func (s *httpSink) Chunk(b []byte) error {
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	s.flush()
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
