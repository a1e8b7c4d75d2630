// Package servetest is the contract every serve.Caller keeps, as one
// exported test suite that each implementation runs (serve.Local
// in-process, wire.Caller through the router service, routing's Caller
// through an embedded router): a deployment called through any of them
// sees the same request and its caller the same answer, error, timeout
// and panic.
//
// An implementation's test registers the contract's handlers (Register),
// serves App with them, and calls Run with its Caller. Local is the
// in-process application any test starts the same way.
package servetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// Local runs app of reg in-process (serve.NewLocal, logging nothing) until
// the test ends; a failure to start it fails the test.
func Local(tb testing.TB, reg *serve.Registry, app config.Application) *serve.Local {
	tb.Helper()
	l, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		tb.Fatalf("NewLocal(%s) = %v", app.Name, err)
	}
	tb.Cleanup(func() { _ = l.Close(context.Background()) })
	return l
}

// Names of the contract's application and deployments.
const (
	AppName = "contract"
	// Echo answers 200 with a JSON Seen of the request, header
	// X-Contract: echo; on path /fail a 418 error, on /panic a panic, on
	// /wait it waits for its context.
	Echo = "Echo"
	// Chain calls Echo through its handle and wraps the answer.
	Chain = "Chain"
)

// Handler names Register uses.
const (
	EchoHandler  = "contract.Echo"
	ChainHandler = "contract.Chain"
)

// App is the application the contract calls (ingress Echo).
func App() config.Application {
	return config.Application{Name: AppName, RoutePrefix: "/contract", Ingress: Echo, Deployments: []config.Deployment{
		{Name: Echo, Handler: EchoHandler},
		{Name: Chain, Handler: ChainHandler},
	}}
}

// Seen is what Echo saw of a request.
type Seen struct {
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Query   url.Values  `json:"query"`
	Header  http.Header `json:"header"`
	Body    string      `json:"body"`
	ModelID string      `json:"model_id,omitempty"`
}

// Register adds the contract's handlers to reg.
func Register(reg *serve.Registry) error {
	err := reg.Register(EchoHandler, func(context.Context, serve.Init) (serve.Handler, error) {
		return serve.HandlerFunc(echo), nil
	})
	if err != nil {
		return err
	}
	return reg.Register(ChainHandler, func(_ context.Context, init serve.Init) (serve.Handler, error) {
		next := init.Handle(Echo)
		return serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
			resp, err := next.Call(ctx, &serve.Request{Method: http.MethodPost, Path: "/", Body: req.Body})
			if err != nil {
				return nil, err
			}
			return &serve.Response{Status: http.StatusOK, Body: append([]byte("chain:"), resp.Body...)}, nil
		}), nil
	})
}

func echo(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	switch req.Path {
	case "/fail":
		return nil, serve.Errorf(http.StatusTeapot, "the contract asked to fail")
	case "/panic":
		panic("the contract asked to panic")
	case "/wait":
		<-ctx.Done()
		return nil, ctx.Err()
	}
	b, err := json.Marshal(Seen{Method: req.Method, Path: req.Path, Query: req.Query, Header: req.Header,
		Body: string(req.Body), ModelID: serve.ModelID(req)})
	if err != nil {
		return nil, err
	}
	return &serve.Response{Status: http.StatusOK, Header: http.Header{"X-Contract": {"echo"}, "Content-Type": {"application/json"}}, Body: b}, nil
}

// Run runs the contract against c, which must serve App with the
// handlers of Register.
func Run(t *testing.T, c serve.Caller) {
	echoH := serve.NewHandle(c, AppName, Echo)
	ctx := func(t *testing.T) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return ctx
	}

	t.Run("the request arrives whole and the answer comes back", func(t *testing.T) {
		req := &serve.Request{Method: http.MethodPut, Path: "/items/7", Query: url.Values{"a": {"1", "2"}},
			Header: http.Header{"X-Test": {"v"}}, Body: []byte("payload")}
		resp, err := echoH.Call(ctx(t), req)
		if err != nil {
			t.Fatalf("Call = %v", err)
		}
		if resp.Status != http.StatusOK || resp.Header.Get("X-Contract") != "echo" {
			t.Errorf("answer %d %v, want 200 with X-Contract: echo", resp.Status, resp.Header)
		}
		var seen Seen
		if err := json.Unmarshal(resp.Body, &seen); err != nil {
			t.Fatalf("answer body %q: %v", resp.Body, err)
		}
		if seen.Method != http.MethodPut || seen.Path != "/items/7" || strings.Join(seen.Query["a"], ",") != "1,2" ||
			seen.Header.Get("X-Test") != "v" || seen.Body != "payload" {
			t.Errorf("the deployment saw %+v, want PUT /items/7?a=1&a=2 with X-Test: v and the body", seen)
		}
	})

	t.Run("a handler error is an *Error with its status", func(t *testing.T) {
		_, err := echoH.Call(ctx(t), &serve.Request{Path: "/fail"})
		var se *serve.Error
		if !errors.As(err, &se) || se.Status != http.StatusTeapot || !strings.Contains(se.Msg, "asked to fail") {
			t.Errorf("Call(/fail) = %v, want a 418 *serve.Error with the handler's message", err)
		}
	})

	t.Run("a panic is a 500 and the deployment goes on", func(t *testing.T) {
		_, err := echoH.Call(ctx(t), &serve.Request{Path: "/panic"})
		var se *serve.Error
		if !errors.As(err, &se) || se.Status != http.StatusInternalServerError || se.Code != protocol.ErrInternal ||
			!strings.Contains(se.Msg, "panicked") {
			t.Errorf("Call(/panic) = %v, want a 500 internal *serve.Error saying it panicked", err)
		}
		if _, err := echoH.Call(ctx(t), &serve.Request{Body: []byte("after")}); err != nil {
			t.Errorf("Call after the panic = %v", err)
		}
	})

	t.Run("the caller's deadline ends the call with a timeout", func(t *testing.T) {
		tctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := echoH.Call(tctx, &serve.Request{Path: "/wait"})
		var se *serve.Error
		if !errors.As(err, &se) || se.Status != http.StatusGatewayTimeout || se.Code != protocol.ErrTimeout {
			t.Errorf("Call(/wait) = %v, want a 504 timeout *serve.Error", err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("Call(/wait) took %v, want about the 300 ms deadline", took)
		}
	})

	t.Run("an unknown deployment is a 404", func(t *testing.T) {
		_, err := serve.NewHandle(c, AppName, "NoSuchDeployment").Call(ctx(t), &serve.Request{})
		var se *serve.Error
		if !errors.As(err, &se) || se.Status != http.StatusNotFound || se.Code != protocol.ErrNotFound {
			t.Errorf("Call(unknown deployment) = %v, want a 404 not_found *serve.Error", err)
		}
	})

	t.Run("a deployment calls another through its handle", func(t *testing.T) {
		resp, err := serve.NewHandle(c, AppName, Chain).Call(ctx(t), &serve.Request{Body: []byte("hop")})
		if err != nil {
			t.Fatalf("Call(Chain) = %v", err)
		}
		var seen Seen
		body, ok := strings.CutPrefix(string(resp.Body), "chain:")
		if !ok || json.Unmarshal([]byte(body), &seen) != nil || seen.Body != "hop" {
			t.Errorf("Chain answered %q, want chain: and Echo's answer to hop", resp.Body)
		}
	})

	t.Run("a handle's model id reaches the deployment", func(t *testing.T) {
		resp, err := echoH.WithModel("m-1").Call(ctx(t), &serve.Request{})
		if err != nil {
			t.Fatalf("Call = %v", err)
		}
		var seen Seen
		if err := json.Unmarshal(resp.Body, &seen); err != nil || seen.ModelID != "m-1" {
			t.Errorf("the deployment saw model id %q (%v), want m-1", seen.ModelID, err)
		}
	})

	t.Run("concurrent calls each get their own answer", func(t *testing.T) {
		const n = 16
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				body := fmt.Sprintf("call-%d", i)
				resp, err := echoH.Call(ctx(t), &serve.Request{Body: []byte(body)})
				var seen Seen
				switch {
				case err != nil:
					errs <- err
				case json.Unmarshal(resp.Body, &seen) != nil || seen.Body != body:
					errs <- fmt.Errorf("call %d answered %q", i, resp.Body)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}
