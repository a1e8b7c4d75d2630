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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/jobsapi"
	"github.com/jetserve/jetserve/services/ingress/internal/models"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
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
	// larger than one message carries (wire.BodyLimit) go through Bodies,
	// or are refused 413 without it.
	MaxPayload func() int64
	// Bodies, if set, carries request and response bodies too large for
	// one NATS message (application requests; jobs, graphs and OIP keep
	// theirs inline) when BodyTransport is BodyTransportObject.
	Bodies *wire.Bodies
	// BodyTransport is how bodies too large for one message travel:
	// BodyTransportChunked (pulled in chunks straight between the ingress
	// and the replica over NC, see wire.BodySource) or BodyTransportObject
	// (through Bodies). Empty: chunked when NC is set.
	BodyTransport string
	// NC carries chunked bodies.
	NC *nats.Conn
	// BodyStall is how long a chunked transfer waits for its peer (0:
	// wire.DefaultBodyStall).
	BodyStall time.Duration
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

// Body transports (Options.BodyTransport).
const (
	BodyTransportChunked = "chunked"
	BodyTransportObject  = "object"
)

// Handler serves the ingress HTTP API.
type Handler struct {
	o   Options
	mux http.Handler // the ingress's own endpoints under /-/
	// anonymous is the principal of requests the auth middleware did not
	// mark (auth off): made once, read only.
	anonymous httpauth.Principal
	// ridPrefix and ridSeq make request ids: "<prefix>-<n>", unique per
	// ingress process (the prefix is random).
	ridPrefix string
	ridSeq    atomic.Uint64
}

// New returns the handler.
func New(o Options) *Handler {
	if o.BodyTransport == "" && o.NC != nil {
		o.BodyTransport = BodyTransportChunked
	}
	h := &Handler{o: o, anonymous: httpauth.Anonymous(), ridPrefix: nuid.Next()[:10]}
	r := chi.NewRouter()
	r.Get("/-/routes", h.serveRoutes)
	r.Get("/-/healthz", h.serveHealth)
	r.Get("/-/models", h.serveModels)
	r.Get("/-/limits", h.serveLimits)
	r.NotFound(h.serveObserved)
	r.MethodNotAllowed(h.serveObserved)
	h.mux = r
	return h
}

// ServeHTTP serves the ingress's endpoints (/-/…) through its chi mux and
// everything else — application and OIP requests, the hot path — straight
// through serveObserved, with no router in between.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/-/") {
		h.mux.ServeHTTP(w, r)
		return
	}
	h.serveObserved(w, r)
}

// principal is who the request comes from: the auth middleware put it in
// the context; without one (auth off, or the handler used alone, as in its
// tests) it is the anonymous principal.
func (h *Handler) principal(r *http.Request) httpauth.Principal {
	if p, ok := httpauth.FromContext(r.Context()); ok {
		return p
	}
	return h.anonymous
}

func (h *Handler) serveRoutes(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.o.Routes().Prefixes())
}

// Limits is the body of GET /-/limits: the body limits in force and what
// they come from.
type Limits struct {
	// MaxBodyBytes is the limit in force for application requests: the
	// configured one when large bodies have a transport (chunked or the
	// bodies object store), else InlineBodyBytes.
	MaxBodyBytes           int64 `json:"max_body_bytes"`
	ConfiguredMaxBodyBytes int64 `json:"configured_max_body_bytes"`
	// InlineBodyBytes is what one message carries: the smaller of the
	// configured limit and the NATS max_payload less room for headers.
	// Larger application bodies go through BodyTransport; job, graph
	// and OIP bodies are limited to it.
	InlineBodyBytes int64 `json:"inline_body_bytes"`
	// BodyTransport is how larger bodies travel: "chunked" or "object".
	BodyTransport string `json:"body_transport,omitempty"`
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
	l.InlineBodyBytes = wire.BodyLimit(h.o.MaxBodyBytes, l.NATSMaxPayload)
	l.MaxBodyBytes = l.InlineBodyBytes
	if h.largeBodies() {
		l.MaxBodyBytes = h.o.MaxBodyBytes
		l.BodyTransport = h.o.BodyTransport
	}
	return l
}

// chunked reports whether large bodies travel chunked.
func (h *Handler) chunked() bool {
	return h.o.BodyTransport == BodyTransportChunked && h.o.NC != nil
}

// largeBodies reports whether bodies larger than one message have a
// transport.
func (h *Handler) largeBodies() bool {
	return h.chunked() || (h.o.BodyTransport == BodyTransportObject && h.o.Bodies != nil)
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
		if hopByHop[k] || k == protocol.HdrRequestID || k == protocol.HeaderPrincipal || k == protocol.HeaderBodyObject ||
			k == protocol.HeaderBodySource || k == protocol.HeaderBodyAccept || k == "Authorization" || k == "X-Api-Key" {
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

// exchange is one request being served: the response writer that
// captures its status, its id, and what the handler tells the metrics and
// the request log. One allocation per request carries all of it.
type exchange struct {
	w     http.ResponseWriter // the exchange itself: what handlers write to
	rw    http.ResponseWriter // the server's writer
	rid   string
	ridv  [1]string // the X-Request-Id header's value slice
	label string    // the route prefix (or model endpoint) in metrics
	code  protocol.ErrorCode
	// status is the status written (0 none yet).
	status int
}

func (x *exchange) Header() http.Header { return x.rw.Header() }

func (x *exchange) WriteHeader(code int) {
	if x.status == 0 {
		x.status = code
	}
	x.rw.WriteHeader(code)
}

func (x *exchange) Write(b []byte) (int, error) {
	if x.status == 0 {
		x.status = http.StatusOK
	}
	return x.rw.Write(b)
}

// Flush sends what was written (streamed answers).
func (x *exchange) Flush() {
	if f, ok := x.rw.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap gives http.ResponseController the server's writer.
func (x *exchange) Unwrap() http.ResponseWriter { return x.rw }

// requestID is the client's X-Request-Id, else a new one.
func (h *Handler) requestID(r *http.Request) string {
	if v := r.Header[protocol.HdrRequestID]; len(v) > 0 && v[0] != "" {
		return v[0]
	}
	var buf [32]byte
	b := append(append(buf[:0], h.ridPrefix...), '-')
	return string(strconv.AppendUint(b, h.ridSeq.Add(1), 10))
}

// serveObserved serves application and OIP requests: it takes the
// request id (the client's X-Request-Id, else a new one) and echoes it,
// captures the status, counts the request as ongoing and, when it ends,
// records its metrics (labelled by what the handler put in its exchange)
// and a debug log line.
func (h *Handler) serveObserved(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	x := &exchange{rw: rw, rid: h.requestID(r), label: "unmatched"}
	x.w = x
	x.ridv[0] = x.rid
	rw.Header()[protocol.HdrRequestID] = x.ridv[:]
	// The request's server span (the child of the caller's traceparent);
	// the request's Traceparent becomes its own, so that every hop below
	// is its child. Tracing off: no span, no context copy.
	span := tracing.Off()
	if h.o.Tracer != nil {
		var ctx context.Context
		ctx, span = h.o.Tracer.Start(tracing.Extract(r.Context(), r.Header), "HTTP "+r.Method,
			trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(tracing.AttrRequestID.String(x.rid),
				attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
		tracing.Inject(ctx, r.Header)
		r = r.WithContext(ctx)
	}
	m := h.o.Metrics
	m.ongoing.Inc()
	defer func() {
		m.ongoing.Dec()
		status := x.status
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
		if l := h.o.Log.Debug(); l.Enabled() {
			l.Str("request_id", x.rid).Str("trace_id", traceID(span)).Str("method", r.Method).Str("path", r.URL.Path).
				Int("status", status).Str("error_code", string(x.code)).Dur("latency", el).Msg("http request")
		}
	}()
	if p := r.URL.Path; p == "/v2" || strings.HasPrefix(p, "/v2/") {
		h.serveOIP(x, r)
		return
	}
	h.serveApp(x, r)
}

// traceID is span's trace id, "" without one.
func traceID(span trace.Span) string {
	if sc := span.SpanContext(); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

func (h *Handler) serveApp(x *exchange, r *http.Request) {
	w := x.w
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
	p := h.principal(r)
	if !p.CanApp(route.App) {
		x.code = protocol.ErrForbidden
		httperr.Write(w, x.code, fmt.Sprintf("%s may not call application %s", p.Name, route.App), rid)
		return
	}
	log := func() zerolog.Logger { return h.o.Log.With().Str("request_id", rid).Str("app", route.App).Logger() }

	lim := h.Limits()
	if h.o.Jobs != nil {
		if m, op, ok := h.o.Jobs.Match(route.App, rest); ok {
			// A job's body travels in its message: the inline limit.
			body, ok := h.readBodyOr413(x, r, lim.InlineBodyBytes, lim, "a job's body travels in its message")
			if ok {
				x.code = h.o.Jobs.Serve(w, r, m, op, body, rid, jobsapi.Caller{Name: p.Name, Operator: p.Has(httpauth.ScopeOperator)})
			}
			return
		}
	}
	// Large bodies (route.Graph apart: its nodes' calls carry theirs
	// inline) are pulled by the replica in chunks, or stream into the
	// bodies object store.
	large := h.largeBodies() && route.Graph == nil && !wantsStream(r)
	limit := lim.InlineBodyBytes
	if large {
		limit = lim.MaxBodyBytes
	}
	var body []byte
	var object string
	var src *wire.BodySource
	if large && (r.ContentLength > lim.InlineBodyBytes || r.ContentLength < 0) {
		var ok bool
		if h.chunked() {
			body, src, ok = h.bodySource(x, r, lim)
		} else {
			body, object, ok = h.storeBody(x, r, lim)
		}
		if !ok {
			return
		}
		if object != "" {
			defer h.deleteBody(r.Context(), object)
		}
	} else {
		var ok bool
		if body, ok = h.readBodyOr413(x, r, limit, lim, ""); !ok {
			return
		}
	}
	req := &serve.Request{
		Method:    r.Method,
		Path:      rest,
		Query:     query(r),
		Header:    forwardHeaders(r.Header),
		Body:      body,
		RequestID: rid,
	}
	req.Header.Set(protocol.HeaderPrincipal, p.Name)
	if object != "" {
		req.Header[protocol.HeaderBodyObject] = []string{object}
	}
	if src != nil {
		req.Header[protocol.HeaderBodySource] = []string{src.Header()}
	}
	if large {
		accept := "1"
		if h.chunked() {
			accept = protocol.BodyAcceptChunked
		}
		req.Header[protocol.HeaderBodyAccept] = []string{accept}
	}
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

	var resp *serve.Response
	var err error
	if src != nil {
		resp, err = h.callWithSource(ctx, x, route, req, src, lim)
		if resp == nil && err == nil {
			return // answered: the body could not be read
		}
	} else {
		resp, err = h.o.Caller.Call(ctx, route.App, route.Ingress, req)
	}
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
	if name := resp.Header.Get(protocol.HeaderBodyObject); name != "" && h.o.Bodies != nil {
		h.writeStoredBody(x, resp, status, code, name, log)
		return
	}
	if v := resp.Header.Get(protocol.HeaderBodySource); v != "" && h.o.NC != nil {
		h.writePulledBody(r.Context(), x, resp, status, code, v, log)
		return
	}
	copyResponseHeaders(w.Header(), resp.Header)
	httperr.SetHeaders(w.Header(), code)
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(status)
	_, _ = w.Write(resp.Body)
}

// readBodyOr413 reads r's body whole, up to limit; beyond it the client is
// answered 413 (why, when not empty, says what the limit is for) and ok
// is false, as for any other read failure (400).
func (h *Handler) readBodyOr413(x *exchange, r *http.Request, limit int64, lim Limits, why string) ([]byte, bool) {
	body, err := readBody(x.w, r, limit)
	if err == nil {
		return body, true
	}
	h.bodyError(x, err, limit, lim, why)
	return nil, false
}

// bodyError answers a failure to read or store a request body: 413 past
// limit, 400 otherwise.
func (h *Handler) bodyError(x *exchange, err error, limit int64, lim Limits, why string) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		x.code = protocol.ErrBodyTooLarge
		msg := fmt.Sprintf("request body exceeds %d bytes", limit)
		switch {
		case why != "":
			msg += " (" + why + fmt.Sprintf(": one message of the NATS max_payload of %d bytes, with room for headers)", lim.NATSMaxPayload)
		case limit < lim.ConfiguredMaxBodyBytes:
			msg += fmt.Sprintf(" (what one message of the NATS max_payload of %d bytes carries with room for headers; max_body_bytes is %d)",
				lim.NATSMaxPayload, lim.ConfiguredMaxBodyBytes)
		}
		httperr.Write(x.w, x.code, msg, x.rid)
		return
	}
	x.code = protocol.ErrBadRequest
	httperr.Write(x.w, x.code, "read request body: "+err.Error(), x.rid)
}

// storeBody streams a request body larger than one message (or of unknown
// length: the first InlineBodyBytes+1 bytes decide) into the bodies object
// store, up to lim.MaxBodyBytes, and returns the object's name; a body
// that turns out small is returned inline instead.
func (h *Handler) storeBody(x *exchange, r *http.Request, lim Limits) (body []byte, object string, ok bool) {
	if r.ContentLength > lim.MaxBodyBytes {
		h.bodyError(x, &http.MaxBytesError{Limit: lim.MaxBodyBytes}, lim.MaxBodyBytes, lim, "")
		return nil, "", false
	}
	src := http.MaxBytesReader(x.w, r.Body, lim.MaxBodyBytes)
	var rd io.Reader = src
	if r.ContentLength < 0 {
		head, err := io.ReadAll(io.LimitReader(src, lim.InlineBodyBytes+1))
		if err != nil {
			h.bodyError(x, err, lim.MaxBodyBytes, lim, "")
			return nil, "", false
		}
		if int64(len(head)) <= lim.InlineBodyBytes {
			return head, "", true
		}
		rd = io.MultiReader(bytes.NewReader(head), src)
	}
	// The body reader's error (413, a client gone) is the store's cause.
	var readErr error
	name, _, err := h.o.Bodies.Put(r.Context(), errReader{rd, &readErr})
	if err != nil {
		if readErr != nil {
			err = readErr
		}
		var tooBig *http.MaxBytesError
		if !errors.As(err, &tooBig) && readErr == nil {
			x.code = protocol.ErrUnavailable
			x.w.Header().Set("Retry-After", "1")
			httperr.Write(x.w, x.code, "store request body: "+err.Error(), x.rid)
			return nil, "", false
		}
		h.bodyError(x, err, lim.MaxBodyBytes, lim, "")
		return nil, "", false
	}
	return nil, name, true
}

// bodySource opens the source a replica pulls a request body larger than
// one message (or of unknown length: the first InlineBodyBytes+1 bytes
// decide) from, reading it from the client as the replica takes it, up to
// lim.MaxBodyBytes; a body that turns out small is returned inline
// instead.
func (h *Handler) bodySource(x *exchange, r *http.Request, lim Limits) (body []byte, src *wire.BodySource, ok bool) {
	if r.ContentLength > lim.MaxBodyBytes {
		h.bodyError(x, &http.MaxBytesError{Limit: lim.MaxBodyBytes}, lim.MaxBodyBytes, lim, "")
		return nil, nil, false
	}
	// The server's body reader stops at a known length; an unknown one
	// is bounded here.
	var rd io.Reader = r.Body
	if r.ContentLength < 0 {
		mr := http.MaxBytesReader(x.w, r.Body, lim.MaxBodyBytes)
		head, err := io.ReadAll(io.LimitReader(mr, lim.InlineBodyBytes+1))
		if err != nil {
			h.bodyError(x, err, lim.MaxBodyBytes, lim, "")
			return nil, nil, false
		}
		if int64(len(head)) <= lim.InlineBodyBytes {
			return head, nil, true
		}
		rd = io.MultiReader(bytes.NewReader(head), mr)
	}
	src, err := wire.NewBodySource(h.o.NC, rd, r.ContentLength, h.o.BodyStall)
	if err != nil {
		x.code = protocol.ErrUnavailable
		x.w.Header().Set("Retry-After", "1")
		httperr.Write(x.w, x.code, "request body: "+err.Error(), x.rid)
		return nil, nil, false
	}
	return nil, src, true
}

// callWithSource calls the deployment while src serves the request body
// to the replica that pulls it. When the body cannot be read from the
// client (413 past the limit, a client gone) or the replica stops taking
// it (504), the call is cancelled and the client answered here: it
// returns nil, nil then.
func (h *Handler) callWithSource(ctx context.Context, x *exchange, route routes.Route, req *serve.Request, src *wire.BodySource,
	lim Limits) (*serve.Response, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		err := src.Serve(ctx)
		var readErr *wire.ReadError
		if errors.As(err, &readErr) || errors.Is(err, wire.ErrBodyStalled) {
			cancel() // the call cannot succeed
		}
		served <- err
	}()
	resp, err := h.o.Caller.Call(ctx, route.App, route.Ingress, req)
	cancel()
	var srcErr error
	select {
	case srcErr = <-served:
	default:
		// Serve may be blocked reading a client that stopped sending
		// (the replica gave up on the body): end the read. The call's
		// answer is the client's.
		_ = http.NewResponseController(x.w).SetReadDeadline(time.Now())
		<-served
	}
	var readErr *wire.ReadError
	switch {
	case errors.As(srcErr, &readErr):
		h.bodyError(x, readErr.Err, lim.MaxBodyBytes, lim, "")
		return nil, nil
	case errors.Is(srcErr, wire.ErrBodyStalled):
		x.code = protocol.ErrTimeout
		httperr.Write(x.w, x.code, "the replica stopped taking the request body: "+srcErr.Error(), x.rid)
		return nil, nil
	}
	return resp, err
}

// writePulledBody answers with a response whose body the replica serves
// in chunks (source: its protocol.HeaderBodySource), written to the
// client as they arrive, with its Content-Length. A transfer that fails
// midway leaves the client a short body (the connection is closed).
func (h *Handler) writePulledBody(ctx context.Context, x *exchange, resp *serve.Response, status int, code protocol.ErrorCode,
	source string, log func() zerolog.Logger) {
	subject, size, err := wire.ParseBodySource(source)
	if err != nil {
		x.code = protocol.ErrInternal
		httperr.Write(x.w, x.code, "response body: "+err.Error(), x.rid)
		return
	}
	copyResponseHeaders(x.w.Header(), resp.Header)
	if code != "" {
		x.w.Header().Set("X-Jetserve-Error", string(code))
	}
	if size >= 0 {
		x.w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	x.w.WriteHeader(status)
	if _, err := wire.PullBodyTo(ctx, h.o.NC, subject, x.w, h.o.BodyStall); err != nil {
		l := log()
		l.Warn().Err(err).Msg("stream response body") // the client sees a short body
	}
}

// errReader remembers the error its reader returned (other than EOF).
type errReader struct {
	r   io.Reader
	err *error
}

func (e errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		*e.err = err
	}
	return n, err
}

// writeStoredBody answers with a response whose body is in the bodies
// object store, streamed from there, and deletes the object.
func (h *Handler) writeStoredBody(x *exchange, resp *serve.Response, status int, code protocol.ErrorCode, name string, log func() zerolog.Logger) {
	ctx := context.Background() // the copy stops when the client goes
	defer h.deleteBody(ctx, name)
	rd, size, err := h.o.Bodies.Open(ctx, name)
	if err != nil {
		l := log()
		l.Error().Err(err).Msg("read response body")
		x.code = protocol.ErrUnavailable
		x.w.Header().Set("Retry-After", "1")
		httperr.Write(x.w, x.code, "read response body: "+err.Error(), x.rid)
		return
	}
	defer rd.Close()
	copyResponseHeaders(x.w.Header(), resp.Header)
	if code != "" {
		x.w.Header().Set("X-Jetserve-Error", string(code))
	}
	x.w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	x.w.WriteHeader(status)
	if _, err := io.Copy(x.w, rd); err != nil {
		l := log()
		l.Warn().Err(err).Msg("stream response body") // the client sees a short body
	}
}

// deleteBody removes a body object once the request is over (the replica
// deletes a request's when it read it; this catches the rest).
func (h *Handler) deleteBody(ctx context.Context, name string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := h.o.Bodies.Delete(dctx, name); err != nil {
		h.o.Log.Debug().Err(err).Str("object", name).Msg("delete body object") // it expires
	}
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
		if hopByHop[k] || k == protocol.HdrError || k == "Content-Length" || k == protocol.HeaderBodyObject ||
			k == protocol.HeaderBodySource {
			continue
		}
		dst[k] = vs
	}
}

func wantsStream(r *http.Request) bool {
	if r.URL.RawQuery != "" {
		if v := r.URL.Query().Get("stream"); v == "1" || v == "true" {
			return true
		}
	}
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// query is r's query, nil when it has none (no map made).
func query(r *http.Request) url.Values {
	if r.URL.RawQuery == "" {
		return nil
	}
	return r.URL.Query()
}

func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if limit > 0 && r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	if r.ContentLength >= 0 {
		// The length is known and within the limit: the server's body
		// reader stops at it, no MaxBytesReader needed.
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	body := r.Body
	if limit > 0 {
		body = http.MaxBytesReader(w, r.Body, limit)
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
