// Package diag holds diagnostic deployments for benchmarks and end-to-end
// tests: Echo answers at once with the request body (the no-op of `make
// bench`), optionally after ?delay_ms=N, and fails with ?fail=1; it streams
// ?chunks=N chunks when asked to stream. Chain passes a request on to the
// next deployment through a handle (user_config {next}), or answers as Echo
// at the end; FanOut calls several in parallel (user_config {targets}):
// the chains and the fan-out of the composition benchmarks. Journal runs
// async jobs and journals every attempt to a file (journal.go). Safe for
// concurrent use.
package diag

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
)

// HandlerEcho is the Echo deployment's handler name.
const HandlerEcho = "diag.Echo"

// Register adds the diagnostic deployments to reg: Echo, Chain, FanOut,
// Journal and the two versions of Versioned.
func Register(reg *serve.Registry) error {
	if err := reg.Register(HandlerEcho, func(_ context.Context, init serve.Init) (serve.Handler, error) {
		return &Echo{replica: init.ReplicaID}, nil
	}); err != nil {
		return err
	}
	if err := reg.Register(HandlerChain, newChain); err != nil {
		return err
	}
	if err := reg.Register(HandlerFanOut, newFanOut); err != nil {
		return err
	}
	if err := registerVersions(reg); err != nil {
		return err
	}
	return registerJournal(reg)
}

// Echo answers with the request body.
type Echo struct{ replica string }

func wait(ctx context.Context, req *serve.Request) error {
	ms, _ := strconv.Atoi(req.Query.Get("delay_ms"))
	if ms <= 0 {
		return nil
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ServeRequest echoes the body (after delay_ms, unless fail=1); with
// size=N it answers N bytes instead, with len=1 the body's length (the
// large-payload benchmarks' two directions).
func (e *Echo) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	if err := wait(ctx, req); err != nil {
		return nil, err
	}
	if req.Query.Get("fail") == "1" {
		return nil, serve.Errorf(http.StatusInternalServerError, "failed on request")
	}
	h := http.Header{"X-Replica": {e.replica}}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	}
	body := req.Body
	if n, err := strconv.Atoi(req.Query.Get("size")); err == nil && n >= 0 {
		body = bytes.Repeat([]byte{'x'}, n)
	} else if req.Query.Get("len") == "1" {
		body = strconv.AppendInt(nil, int64(len(req.Body)), 10)
	}
	return &serve.Response{Status: http.StatusOK, Header: h, Body: body}, nil
}

// ServeStream sends ?chunks=N chunks ("chunk i\n"), delay_ms apart.
func (e *Echo) ServeStream(ctx context.Context, req *serve.Request, w serve.StreamWriter) error {
	n, _ := strconv.Atoi(req.Query.Get("chunks"))
	if n <= 0 {
		n = 3
	}
	if err := w.WriteHead(http.StatusOK, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}); err != nil {
		return err
	}
	for i := range n {
		if i > 0 {
			if err := wait(ctx, req); err != nil {
				return err
			}
		}
		if err := w.Write([]byte(fmt.Sprintf("chunk %d\n", i))); err != nil {
			return err
		}
	}
	return nil
}

// App declares the echo application: Echo, the no-op of the benchmarks.
func App() serve.App {
	return serve.App{
		Name: "echo", RoutePrefix: "/echo", Ingress: "Echo",
		Deployments: []serve.Deployment{
			serve.Deploy("Echo", HandlerEcho, serve.NumReplicas(1), serve.MaxOngoingRequests(100), serve.CPU(0.1)),
		},
	}
}
