// Package wire carries serve.Request and serve.Response over NATS: the body
// is the message data, untouched; metadata and HTTP headers travel as NATS
// headers (see protocol.Hdr*). Caller is the serve.Caller that sends
// through the router service (the ingress with router: service, any NATS
// client); the ingress and the workers embed a router instead
// (routing.Caller).
//
// Streaming: the caller subscribes to an inbox and names it in
// protocol.HdrStream; the replica publishes a head message (sequence 0:
// status and headers) and then chunks (1..N) there, and its final reply
// (through the router) carries protocol.HdrChunks = N so the caller knows
// when every chunk has arrived. A replica in the caller's own process
// hands the same messages over without NATS (NewLocalStreamWriter).
//
// Cancellation: a caller that gives up on a request tells its replica
// (CancelMsg), which cancels the request's context.
package wire

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
)

// EncodeRequest turns req into a NATS message for subject.
func EncodeRequest(subject string, req *serve.Request) *nats.Msg {
	// A small map (up to 8 headers: one group, no growth for the usual
	// request, deadline and stream included).
	m := &nats.Msg{Subject: subject, Header: make(nats.Header, 8)}
	m.Data = req.Body
	h := m.Header
	v := make(values, 0, 6)
	v.set(h, protocol.HdrMethod, req.Method)
	v.set(h, protocol.HdrPath, req.Path)
	if len(req.Query) > 0 {
		v.set(h, protocol.HdrQuery, req.Query.Encode())
	}
	if req.Call != "" {
		v.set(h, protocol.HdrCall, req.Call)
	}
	if req.RequestID != "" {
		v.set(h, protocol.HdrRequestID, req.RequestID)
	}
	copyHTTPHeaders(h, req.Header)
	if tp := req.Header.Get("Traceparent"); tp != "" {
		v.set(h, protocol.HdrTraceParent, tp) // NATS's own tracing reads it too
	}
	return m
}

// values hands out one-value header slices from one allocation (a hop
// sets several headers; one Set allocates one slice each).
type values []string

// set sets h[k] to the single value s (capacity 1: an Add reallocates).
func (v *values) set(h nats.Header, k, s string) {
	*v = append(*v, s)
	n := len(*v)
	h[k] = (*v)[n-1 : n : n]
}

// DecodeRequest reads a request from a NATS message. Headers are shared
// with the message, not copied.
func DecodeRequest(m *nats.Msg) *serve.Request {
	req := &serve.Request{
		Method:    m.Header.Get(protocol.HdrMethod),
		Path:      m.Header.Get(protocol.HdrPath),
		Call:      m.Header.Get(protocol.HdrCall),
		RequestID: m.Header.Get(protocol.HdrRequestID),
		Body:      m.Data,
		Header:    httpHeaders(m.Header),
	}
	if q := m.Header.Get(protocol.HdrQuery); q != "" {
		req.Query, _ = url.ParseQuery(q)
	}
	if tp := m.Header.Get(protocol.HdrTraceParent); tp != "" && req.Header.Get("Traceparent") == "" {
		req.Header.Set("Traceparent", tp) // a NATS caller's trace context
	}
	if req.Path == "" {
		req.Path = "/"
	}
	return req
}

// EncodeResponse turns resp into a reply message (subject set by the caller).
func EncodeResponse(resp *serve.Response) *nats.Msg {
	m := &nats.Msg{Header: make(nats.Header, 8)}
	m.Data = resp.Body
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	if status == http.StatusOK {
		m.Header[protocol.HdrStatus] = statusOK // read-only, shared by every reply
	} else {
		m.Header.Set(protocol.HdrStatus, strconv.Itoa(status))
	}
	copyHTTPHeaders(m.Header, resp.Header)
	if c := resp.Header.Get(protocol.HdrError); c != "" {
		m.Header.Set(protocol.HdrError, c)
	}
	return m
}

// EncodeError turns an error into a reply message.
func EncodeError(err error) *nats.Msg {
	e := serve.AsError(err)
	return ErrorMsg(e.Status, e.Code, e.Msg)
}

// ErrorMsg builds an error reply.
func ErrorMsg(status int, code protocol.ErrorCode, msg string) *nats.Msg {
	m := nats.NewMsg("")
	m.Data = []byte(msg)
	m.Header.Set(protocol.HdrStatus, strconv.Itoa(status))
	m.Header.Set(protocol.HdrError, string(code))
	m.Header.Set(protocol.HdrHTTPPrefix+"Content-Type", "text/plain; charset=utf-8")
	return m
}

// DecodeResponse reads a response from a reply message.
func DecodeResponse(m *nats.Msg) *serve.Response {
	status := statusOf(m.Header)
	resp := &serve.Response{Status: status, Body: m.Data, Header: httpHeaders(m.Header)}
	if c := m.Header.Get(protocol.HdrError); c != "" {
		resp.Header.Set(protocol.HdrError, c)
	}
	return resp
}

// statusOf reads the HTTP status of a response or stream head: a missing
// one is 200; one outside 100..599 (which net/http refuses to write) is 502.
func statusOf(h nats.Header) int {
	status, err := strconv.Atoi(h.Get(protocol.HdrStatus))
	switch {
	case err != nil || status == 0:
		return http.StatusOK
	case status < 100 || status > 599:
		return http.StatusBadGateway
	}
	return status
}

// ErrorCode returns the error code of a reply, "" for success.
func ErrorCode(m *nats.Msg) protocol.ErrorCode {
	if m.Header == nil {
		return ""
	}
	return protocol.ErrorCode(m.Header.Get(protocol.HdrError))
}

// copyHTTPHeaders adds src to dst as Http-<Name> headers. The value
// slices are shared with src, capacity clipped (an Add reallocates).
func copyHTTPHeaders(dst nats.Header, src http.Header) {
	for k, vs := range src {
		if k == protocol.HdrError || len(vs) == 0 {
			continue
		}
		pk, ok := httpPrefixed[k]
		if !ok {
			pk = protocol.HdrHTTPPrefix + k
		}
		if cur := dst[pk]; len(cur) > 0 {
			dst[pk] = append(cur, vs...)
			continue
		}
		dst[pk] = vs[:len(vs):len(vs)]
	}
}

// httpPrefixed are the NATS names of common HTTP headers, built once:
// a hop then spends no allocation on them. Read-only.
var httpPrefixed = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept", "Accept-Encoding", "Authorization", "Cache-Control", "Content-Encoding",
		"Content-Length", "Content-Type", "Idempotency-Key", "Traceparent", "Tracestate", "User-Agent",
		"X-Chain", "X-Replica", protocol.HeaderModelID} {
		m[k] = protocol.HdrHTTPPrefix + k
	}
	return m
}()

// statusOK is the HdrStatus value of a 200 reply: one read-only slice
// (capacity 1: an Add reallocates), not one per reply.
var statusOK = []string{"200"}[:1:1]

func httpHeaders(h nats.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		if name, ok := strings.CutPrefix(k, protocol.HdrHTTPPrefix); ok {
			out[http.CanonicalHeaderKey(name)] = vs
		}
	}
	return out
}

// Caller is a serve.Caller that sends requests through the routers over
// NATS. Safe for concurrent use.
type Caller struct {
	nc    *nats.Conn
	names protocol.Names
	// DefaultTimeout bounds a call whose context has no deadline.
	DefaultTimeout time.Duration
}

// NewCaller returns a Caller on nc.
func NewCaller(nc *nats.Conn, names protocol.Names) *Caller {
	return &Caller{nc: nc, names: names, DefaultTimeout: 5 * time.Minute}
}

// Call sends req to app/deployment through a router and waits for the answer.
func (c *Caller) Call(ctx context.Context, app, deployment string, req *serve.Request) (*serve.Response, error) {
	m := EncodeRequest(c.names.RouteSubject(app, deployment), req)
	ctx, cancel := c.withDeadline(ctx, m)
	defer cancel()
	reply, err := c.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return nil, transportError(err)
	}
	return DecodeResponse(reply), nil
}

func (c *Caller) withDeadline(ctx context.Context, m *nats.Msg) (context.Context, context.CancelFunc) {
	return WithDeadline(ctx, m, c.DefaultTimeout)
}

// WithDeadline bounds ctx by def when it has no deadline and writes the
// deadline into m's HdrDeadline header.
func WithDeadline(ctx context.Context, m *nats.Msg, def time.Duration) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc = func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, def)
	}
	dl, _ := ctx.Deadline()
	m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(dl.UnixMilli(), 10))
	return ctx, cancel
}

// TransportError maps a NATS request error to a *serve.Error.
func TransportError(err error) error { return transportError(err) }

func transportError(err error) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable, Msg: "no router is running"}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return &serve.Error{Status: http.StatusGatewayTimeout, Code: protocol.ErrTimeout, Msg: "request timed out"}
	case errors.Is(err, context.Canceled):
		return &serve.Error{Status: 499, Code: protocol.ErrCancelled, Msg: "request cancelled"}
	case errors.Is(err, nats.ErrMaxPayload):
		return &serve.Error{Status: http.StatusRequestEntityTooLarge, Code: protocol.ErrBodyTooLarge,
			Msg: "the request does not fit one NATS message (max_payload)"}
	}
	return fmt.Errorf("nats request: %w", err)
}

// Deadline reads the caller's deadline from a request message.
func Deadline(m *nats.Msg) (time.Time, bool) {
	v := m.Header.Get(protocol.HdrDeadline)
	if v == "" {
		return time.Time{}, false // no error value made for the usual absence
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}, false
	}
	return time.UnixMilli(ms), true
}
