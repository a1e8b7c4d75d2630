package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/jetserve/jetserve/pkg/protocol"
	"golang.org/x/sync/errgroup"
)

// Caller sends a request to a deployment and returns its answer. Errors are
// *Error values carrying the status and code. Implementations: Local
// (in-process), routing.Caller (the fleet: a router embedded in the
// caller's process) and wire.Caller (through the router service).
type Caller interface {
	Call(ctx context.Context, app, deployment string, req *Request) (*Response, error)
}

// StreamSink receives a streamed answer as it arrives: Head once, then
// every chunk in order. An error from either ends the stream (the callee's
// context is cancelled).
type StreamSink interface {
	Head(status int, h http.Header) error
	Chunk(b []byte) error
}

// StreamCaller is a Caller that also streams: the head and chunks of the
// answer go to sink as the callee writes them. An error before the head
// is returned as an *Error (nothing reached sink); an error after it is
// returned once every chunk sent before it was delivered. A deployment
// that does not stream answers with its whole response as one chunk.
type StreamCaller interface {
	Caller
	Stream(ctx context.Context, app, deployment string, req *Request, sink StreamSink) error
}

// Handle calls one deployment. It is safe for concurrent use.
//
// A call made with the context of a request being served (the ctx of
// ServeRequest, ServeStream or RunJob, or one derived from it) carries
// that request's id and W3C trace context (traceparent, tracestate) to
// the callee, and its deadline; when the caller's context is cancelled
// (the client left) the callee's is too, down the whole chain.
type Handle struct {
	App        string
	Deployment string
	caller     Caller
	model      string // multiplexed model id set on every call; "" none
	err        error  // the deployment is unknown: every call fails with it
}

// WithModel returns a handle whose calls carry the multiplexed model id
// (Ray's handle.options(multiplexed_model_id=…)): routers send them to a
// replica that holds the model, and the callee reads it with ModelID.
func (h *Handle) WithModel(id string) *Handle {
	c := *h
	c.model = id
	return &c
}

// NewHandle returns a handle to app/deployment backed by c.
func NewHandle(c Caller, app, deployment string) *Handle {
	return &Handle{App: app, Deployment: deployment, caller: c}
}

// Err returns why every call of h fails at once (the deployment is not one
// of the application's), nil for a usable handle.
func (h *Handle) Err() error { return h.err }

// Call sends req. A response with a status of 400 or above is returned as
// an *Error. req is not modified.
func (h *Handle) Call(ctx context.Context, req *Request) (*Response, error) {
	if h.err != nil {
		return nil, fmt.Errorf("call %s/%s: %w", h.App, h.Deployment, h.err)
	}
	resp, err := h.caller.Call(ctx, h.App, h.Deployment, h.prepare(ctx, req))
	if err != nil {
		return nil, fmt.Errorf("call %s/%s: %w", h.App, h.Deployment, err)
	}
	if resp.Status >= 400 {
		return resp, &Error{Status: resp.Status, Code: codeOf(resp), Msg: string(resp.Body)}
	}
	return resp, nil
}

// Stream sends req as a streaming call (what ?stream=1 is over HTTP) and
// writes the answer to w as it arrives: the head, then each chunk. A
// deployment that streams (StreamHandler) is read chunk by chunk; one that
// does not answers in one chunk. Piping a stream through a chain is
// next.Stream(ctx, req, w) with the caller's own StreamWriter. An error
// before the head is returned as an *Error and nothing is written; one
// after it is returned once the chunks sent before it were written. A
// write error of w stops the stream and cancels the callee. req is not
// modified.
func (h *Handle) Stream(ctx context.Context, req *Request, w StreamWriter) error {
	if h.err != nil {
		return fmt.Errorf("stream %s/%s: %w", h.App, h.Deployment, h.err)
	}
	sc, ok := h.caller.(StreamCaller)
	if !ok {
		return fmt.Errorf("stream %s/%s: the caller %T cannot stream", h.App, h.Deployment, h.caller)
	}
	if err := sc.Stream(ctx, h.App, h.Deployment, h.prepare(ctx, req), writerSink{w}); err != nil {
		return fmt.Errorf("stream %s/%s: %w", h.App, h.Deployment, err)
	}
	return nil
}

// prepare returns a copy of req with its defaults (POST, "/"), the model
// id of the handle, and the request id and trace context of the request
// being served in ctx when req has none.
func (h *Handle) prepare(ctx context.Context, req *Request) *Request {
	r := *req
	if r.Method == "" {
		r.Method = http.MethodPost
	}
	if r.Path == "" {
		r.Path = "/"
	}
	cloned := false
	set := func(k, v string) {
		if !cloned {
			r.Header = r.Header.Clone()
			if r.Header == nil {
				r.Header = http.Header{}
			}
			cloned = true
		}
		r.Header.Set(k, v)
	}
	if h.model != "" {
		set(protocol.HeaderModelID, h.model)
	}
	if in, ok := RequestFromContext(ctx); ok {
		if r.RequestID == "" {
			r.RequestID = in.RequestID
		}
		for _, k := range traceHeaders {
			if v := in.Header.Get(k); v != "" && r.Header.Get(k) == "" {
				set(k, v)
			}
		}
	}
	return &r
}

// traceHeaders are the W3C trace context headers a handle call inherits
// from the request being served (as HTTP headers in Request.Header; over
// NATS also the native traceparent header).
var traceHeaders = []string{"Traceparent", "Tracestate"}

type incomingKey struct{}

// ContextWithRequest returns ctx carrying req as the request being
// served: Handle calls made with ctx (or a context derived from it) carry
// req's request id and trace context. The backends (the worker's replicas,
// Local) set it before calling a handler.
func ContextWithRequest(ctx context.Context, req *Request) context.Context {
	return context.WithValue(ctx, incomingKey{}, req)
}

// RequestFromContext returns the request being served in ctx, if any.
func RequestFromContext(ctx context.Context) (*Request, bool) {
	req, ok := ctx.Value(incomingKey{}).(*Request)
	return req, ok && req != nil
}

// writerSink adapts a StreamWriter to a StreamSink.
type writerSink struct{ w StreamWriter }

func (s writerSink) Head(status int, h http.Header) error { return s.w.WriteHead(status, h) }
func (s writerSink) Chunk(b []byte) error                 { return s.w.Write(b) }

// StreamRecorder is a StreamWriter that keeps what it is written: a
// streamed answer collected whole (tests, or a caller that wants every
// chunk at the end). Write copies its chunk. For one goroutine at a time.
type StreamRecorder struct {
	Status int // 0 until the head was written
	Header http.Header
	Chunks [][]byte
}

// WriteHead records the head (only the first one).
func (r *StreamRecorder) WriteHead(status int, h http.Header) error {
	if r.Status == 0 {
		r.Status, r.Header = status, h
	}
	return nil
}

// Write records a copy of chunk (a head of 200 first, if none was written).
func (r *StreamRecorder) Write(chunk []byte) error {
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	r.Chunks = append(r.Chunks, append([]byte(nil), chunk...))
	return nil
}

// Strings returns the chunks as strings.
func (r *StreamRecorder) Strings() []string {
	out := make([]string, len(r.Chunks))
	for i, c := range r.Chunks {
		out[i] = string(c)
	}
	return out
}

func codeOf(resp *Response) protocol.ErrorCode {
	if c := resp.Header.Get(protocol.HdrError); c != "" {
		return protocol.ErrorCode(c)
	}
	return protocol.ErrHandler
}

// CallJSON calls method on h with in encoded as JSON and decodes the JSON
// answer into Out: the typed way to chain deployments.
func CallJSON[Out any](ctx context.Context, h *Handle, method string, in any) (Out, error) {
	var out Out
	body, err := json.Marshal(in)
	if err != nil {
		return out, fmt.Errorf("encode request for %s/%s: %w", h.App, h.Deployment, err)
	}
	resp, err := h.Call(ctx, &Request{Call: method, Body: body, Header: http.Header{"Content-Type": {"application/json"}}})
	if err != nil {
		return out, err
	}
	if err := resp.Decode(&out); err != nil {
		return out, fmt.Errorf("%s/%s: %w", h.App, h.Deployment, err)
	}
	return out, nil
}

// FanOut calls every handle with the same input in parallel and returns the
// answers in order; the first error cancels the rest.
func FanOut[Out any](ctx context.Context, hs []*Handle, method string, in any) ([]Out, error) {
	out := make([]Out, len(hs))
	g, ctx := errgroup.WithContext(ctx)
	for i, h := range hs {
		g.Go(func() error {
			v, err := CallJSON[Out](ctx, h, method, in)
			out[i] = v
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}
