// Package composetest is the contract of composition that every backend
// of serve's handles must keep: the in-process one (serve.Local) and the
// fleet (a worker's embedded router, across workers and within one). Run
// gives a backend an application of its own deployments (Front → Mid →
// Back, and Plain) and checks through the backend's caller: chaining,
// handler errors and panics, unknown deployments (and deployments the
// caller's uses do not list) answered 404 at once,
// streaming through a chain (and a deployment that does not stream
// answering in one chunk, errors before and after the head), the request
// id, trace context and deadline carried to every hop, and cancellation
// reaching the end of the chain when the caller leaves or its deadline
// passes.
//
// (A serve.Caller contract for single calls is the SDK structure work's,
// in its own package; this one is about handles between deployments.)
package composetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
)

// App is the name of the application Run deploys; its ingress is Front,
// which calls Mid, which calls Back; Plain does not stream.
const (
	App   = "compose"
	Front = "Front"
	Mid   = "Mid"
	Back  = "Back"
	Plain = "Plain"
)

// Handler names of the deployments.
const (
	HandlerFront = "compose.front"
	HandlerMid   = "compose.mid"
	HandlerBack  = "compose.back"
	HandlerPlain = "compose.plain"
)

// Start runs app (deployments registered in reg) on a backend and returns
// the caller a client of the application uses (it need not be in the
// application's process). It stops everything when t ends.
type Start func(t *testing.T, reg *serve.Registry, app config.Application) serve.StreamCaller

// Waited is what Back reports when a call it held ended: how its context
// ended.
type Waited struct {
	Err         error
	HadDeadline bool
}

// suite is one Run's deployments and what they report.
type suite struct {
	started chan string // Back began a "wait" call (its request id)
	waited  chan Waited // ... and it ended
}

// Registry returns a registry with the suite's deployments and the
// application config using them (for a backend to deploy).
func (s *suite) registry(t *testing.T) (*serve.Registry, config.Application) {
	t.Helper()
	reg := serve.NewRegistry()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(reg.Register(HandlerFront, func(_ context.Context, in serve.Init) (serve.Handler, error) {
		return &front{mid: in.Handle(Mid), back: in.Handle(Back), plain: in.Handle(Plain), init: in}, nil
	}))
	must(reg.Register(HandlerMid, func(_ context.Context, in serve.Init) (serve.Handler, error) {
		return &mid{back: in.Handle(Back)}, nil
	}))
	must(reg.Register(HandlerBack, func(context.Context, serve.Init) (serve.Handler, error) {
		return &back{s: s}, nil
	}))
	must(reg.Register(HandlerPlain, func(context.Context, serve.Init) (serve.Handler, error) {
		return serve.HandlerFunc(func(context.Context, *serve.Request) (*serve.Response, error) {
			return &serve.Response{Status: http.StatusOK, Body: []byte("plain")}, nil
		}), nil
	}))
	one := 1
	dep := func(name, handler string) config.Deployment {
		return config.Deployment{Name: name, Handler: handler, NumReplicas: &one, MaxOngoingRequests: 8}
	}
	front := dep(Front, HandlerFront)
	front.Uses = []string{Mid, Back, Plain} // its edges: not Front itself
	return reg, config.Application{Name: App, RoutePrefix: "/" + App, Ingress: Front, Deployments: []config.Deployment{
		front, dep(Mid, HandlerMid), dep(Back, HandlerBack), dep(Plain, HandlerPlain)}}
}

// front is the ingress: each method exercises one path of composition.
type front struct {
	mid, back, plain *serve.Handle
	init             serve.Init
}

func (f *front) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	pass := func(h *serve.Handle, call string) (*serve.Response, error) {
		return h.Call(ctx, &serve.Request{Call: call, Body: req.Body, Query: req.Query})
	}
	switch serve.MethodName(req) {
	case "chain":
		resp, err := pass(f.mid, "")
		if err != nil {
			return nil, err
		}
		return &serve.Response{Status: http.StatusOK, Body: []byte("front(" + string(resp.Body) + ")")}, nil
	case "meta", "wait": // through Mid: two hops
		return pass(f.mid, serve.MethodName(req))
	case "fail", "panic":
		return pass(f.back, serve.MethodName(req))
	case "unknown": // a handle made without the application's check
		return serve.NewHandle(f.init.Caller, f.init.App, "Nope").Call(ctx, &serve.Request{})
	case "lazy": // a handle taken after construction
		return f.init.Handle("Nope").Call(ctx, &serve.Request{})
	case "undeclared": // a deployment of the app, taken after construction, that Front's uses do not list
		return f.init.Handle(Front).Call(ctx, &serve.Request{Call: "chain"})
	}
	return nil, serve.Errorf(http.StatusNotFound, "front: no method %q", serve.MethodName(req))
}

func (f *front) ServeStream(ctx context.Context, req *serve.Request, w serve.StreamWriter) error {
	switch serve.MethodName(req) {
	case "stream":
		return f.mid.Stream(ctx, &serve.Request{Call: "stream"}, w)
	case "plain":
		return f.plain.Stream(ctx, &serve.Request{}, w)
	case "failfirst", "failmid":
		return f.back.Stream(ctx, &serve.Request{Call: serve.MethodName(req)}, w)
	}
	return serve.Errorf(http.StatusNotFound, "front: no stream %q", serve.MethodName(req))
}

type mid struct{ back *serve.Handle }

func (m *mid) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	resp, err := m.back.Call(ctx, &serve.Request{Call: req.Call, Body: req.Body})
	if err != nil {
		return nil, err
	}
	if req.Call != "" {
		return resp, nil // meta, wait: Back's answer as it is
	}
	return &serve.Response{Status: http.StatusOK, Body: []byte("mid(" + string(resp.Body) + ")")}, nil
}

func (m *mid) ServeStream(ctx context.Context, req *serve.Request, w serve.StreamWriter) error {
	if err := w.WriteHead(http.StatusOK, http.Header{"Content-Type": {"text/plain"}}); err != nil {
		return err
	}
	if err := w.Write([]byte("mid-start")); err != nil {
		return err
	}
	// Back's chunks go straight on; its head is Mid's own already.
	if err := m.back.Stream(ctx, &serve.Request{Call: "stream"}, chunksOnly{w}); err != nil {
		return err
	}
	return w.Write([]byte("mid-end"))
}

// chunksOnly passes chunks to w and drops the head.
type chunksOnly struct{ w serve.StreamWriter }

func (c chunksOnly) WriteHead(int, http.Header) error { return nil }
func (c chunksOnly) Write(b []byte) error             { return c.w.Write(b) }

type back struct{ s *suite }

// Meta is what Back saw of a call.
type Meta struct {
	RequestID   string `json:"request_id"`
	TraceParent string `json:"traceparent"`
	TraceState  string `json:"tracestate"`
	HasDeadline bool   `json:"has_deadline"`
	DeadlineMS  int64  `json:"deadline_unix_ms"`
}

func (b *back) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	switch serve.MethodName(req) {
	case "":
		return &serve.Response{Status: http.StatusOK, Body: []byte("back(" + string(req.Body) + ")")}, nil
	case "meta":
		dl, ok := ctx.Deadline()
		return serve.JSON(Meta{RequestID: req.RequestID, TraceParent: req.Header.Get("Traceparent"),
			TraceState: req.Header.Get("Tracestate"), HasDeadline: ok, DeadlineMS: dl.UnixMilli()})
	case "fail":
		return nil, serve.Errorf(http.StatusTeapot, "back refuses")
	case "panic":
		panic("back panics")
	case "wait":
		_, hasDeadline := ctx.Deadline()
		b.s.started <- req.RequestID
		<-ctx.Done()
		b.s.waited <- Waited{Err: ctx.Err(), HadDeadline: hasDeadline}
		return nil, ctx.Err()
	}
	return nil, serve.Errorf(http.StatusNotFound, "back: no method %q", serve.MethodName(req))
}

func (b *back) ServeStream(_ context.Context, req *serve.Request, w serve.StreamWriter) error {
	switch serve.MethodName(req) {
	case "stream":
		for _, c := range []string{"b1", "b2", "b3"} {
			if err := w.Write([]byte(c)); err != nil {
				return err
			}
		}
		return nil
	case "failfirst":
		return serve.Errorf(http.StatusConflict, "back refuses to stream")
	case "failmid":
		if err := w.Write([]byte("x1")); err != nil {
			return err
		}
		return serve.Errorf(http.StatusInternalServerError, "back broke mid-stream")
	}
	return serve.Errorf(http.StatusNotFound, "back: no stream %q", serve.MethodName(req))
}

// Run checks the contract on the backend start.
func Run(t *testing.T, start Start) {
	s := &suite{started: make(chan string, 4), waited: make(chan Waited, 4)}
	reg, app := s.registry(t)
	c := start(t, reg, app)
	front := serve.NewHandle(c, App, Front)
	ctx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("chain", func(t *testing.T) {
		resp, err := front.Call(ctx(t), &serve.Request{Call: "chain", Body: []byte("x")})
		if err != nil || string(resp.Body) != "front(mid(back(x)))" {
			t.Fatalf("Call(chain) = %v, %v; want front(mid(back(x)))", resp, err)
		}
	})
	t.Run("handler error keeps its status", func(t *testing.T) {
		wantErr(t, call(ctx(t), front, "fail"), http.StatusTeapot, protocol.ErrHandler, "back refuses")
	})
	t.Run("panic is 500", func(t *testing.T) {
		wantErr(t, call(ctx(t), front, "panic"), http.StatusInternalServerError, protocol.ErrInternal, "back panics")
	})
	t.Run("unknown deployment is 404 at once", func(t *testing.T) {
		for _, m := range []string{"unknown", "lazy"} {
			start := time.Now()
			wantErr(t, call(ctx(t), front, m), http.StatusNotFound, protocol.ErrNotFound, "Nope")
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("%s: the 404 took %v, want at once", m, took)
			}
		}
	})
	t.Run("a handle outside the caller's uses is 404 at once", func(t *testing.T) {
		start := time.Now()
		wantErr(t, call(ctx(t), front, "undeclared"), http.StatusNotFound, protocol.ErrNotFound,
			`deployment Front takes a handle to "Front", which its uses do not list (uses: Mid, Back, Plain)`)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("the 404 took %v, want at once", took)
		}
	})
	t.Run("request id, trace context and deadline reach every hop", func(t *testing.T) {
		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		dl := time.Now().Add(20 * time.Second)
		cctx, cancel := context.WithDeadline(context.Background(), dl)
		defer cancel()
		resp, err := front.Call(cctx, &serve.Request{Call: "meta", RequestID: "rid-123",
			Header: http.Header{"Traceparent": {tp}, "Tracestate": {"vendor=1"}}})
		if err != nil {
			t.Fatalf("Call(meta) = %v", err)
		}
		var m Meta
		if err := json.Unmarshal(resp.Body, &m); err != nil {
			t.Fatalf("meta answer %q: %v", resp.Body, err)
		}
		if m.RequestID != "rid-123" || m.TraceParent != tp || m.TraceState != "vendor=1" {
			t.Errorf("Back saw request id %q, traceparent %q, tracestate %q; want rid-123, %s, vendor=1", m.RequestID, m.TraceParent, m.TraceState, tp)
		}
		if !m.HasDeadline || m.DeadlineMS > dl.UnixMilli() {
			t.Errorf("Back's deadline = %v (%d), want one no later than the caller's %d", m.HasDeadline, m.DeadlineMS, dl.UnixMilli())
		}
	})
	t.Run("a caller leaving cancels the whole chain", func(t *testing.T) {
		cctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := front.Call(cctx, &serve.Request{Call: "wait", RequestID: "leaver"})
			errc <- err
		}()
		select {
		case rid := <-s.started:
			if rid != "leaver" {
				t.Errorf("Back's wait call carries request id %q, want leaver", rid)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Back never got the wait call")
		}
		cancel()
		select {
		case w := <-s.waited:
			if !errors.Is(w.Err, context.Canceled) {
				t.Errorf("Back's context ended with %v, want context.Canceled", w.Err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Back's context was not cancelled after the caller left")
		}
		if err := <-errc; serve.AsError(err).Code != protocol.ErrCancelled {
			t.Errorf("Call(wait) after cancel = %v, want cancelled", err)
		}
	})
	t.Run("a deadline ends the whole chain", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := front.Call(cctx, &serve.Request{Call: "wait"})
		if code := serve.AsError(err).Code; code != protocol.ErrTimeout {
			t.Errorf("Call(wait) past its deadline = %v, want timeout", err)
		}
		select {
		case <-s.started:
		case <-time.After(20 * time.Second):
			t.Fatal("Back never got the wait call (the 2 s deadline passed on the way?)")
		}
		select {
		case w := <-s.waited:
			if !w.HadDeadline || w.Err == nil {
				t.Errorf("Back's wait: deadline %v, ended with %v; want a deadline that ended it", w.HadDeadline, w.Err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Back's context did not end after the caller's deadline")
		}
	})
	t.Run("stream through a chain", func(t *testing.T) {
		var got serve.StreamRecorder
		if err := front.Stream(ctx(t), &serve.Request{Call: "stream"}, &got); err != nil {
			t.Fatalf("Stream(stream) = %v", err)
		}
		want := []string{"mid-start", "b1", "b2", "b3", "mid-end"}
		if got.Status != http.StatusOK || !slices.Equal(got.Strings(), want) || got.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("Stream(stream) = %d %v %q, want 200 %v text/plain", got.Status, got.Header, got.Strings(), want)
		}
	})
	t.Run("a deployment that does not stream answers in one chunk", func(t *testing.T) {
		var got serve.StreamRecorder
		if err := front.Stream(ctx(t), &serve.Request{Call: "plain"}, &got); err != nil {
			t.Fatalf("Stream(plain) = %v", err)
		}
		if got.Status != http.StatusOK || !slices.Equal(got.Strings(), []string{"plain"}) {
			t.Fatalf("Stream(plain) = %d %q, want 200 [plain]", got.Status, got.Strings())
		}
	})
	t.Run("a stream's error before its head", func(t *testing.T) {
		var got serve.StreamRecorder
		err := front.Stream(ctx(t), &serve.Request{Call: "failfirst"}, &got)
		wantErr(t, err, http.StatusConflict, protocol.ErrHandler, "back refuses to stream")
		if got.Status != 0 || len(got.Chunks) != 0 {
			t.Errorf("an error before the head wrote %d %q, want nothing", got.Status, got.Strings())
		}
	})
	t.Run("a stream's error after chunks", func(t *testing.T) {
		var got serve.StreamRecorder
		err := front.Stream(ctx(t), &serve.Request{Call: "failmid"}, &got)
		wantErr(t, err, http.StatusInternalServerError, protocol.ErrHandler, "back broke mid-stream")
		if !slices.Equal(got.Strings(), []string{"x1"}) {
			t.Errorf("chunks before the error = %q, want [x1]", got.Strings())
		}
	})
}

func call(ctx context.Context, h *serve.Handle, method string) error {
	_, err := h.Call(ctx, &serve.Request{Call: method})
	return err
}

// wantErr fails t unless err is an *serve.Error with status and code
// whose message contains text.
func wantErr(t *testing.T, err error, status int, code protocol.ErrorCode, text string) {
	t.Helper()
	var se *serve.Error
	if !errors.As(err, &se) || se.Status != status || se.Code != code || !strings.Contains(se.Msg, text) {
		t.Errorf("error = %v, want %d %s containing %q", describe(err), status, code, text)
	}
}

func describe(err error) string {
	if err == nil {
		return "nil"
	}
	return fmt.Sprintf("%T %v", err, err)
}
