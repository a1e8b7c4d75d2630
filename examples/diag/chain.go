package diag

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/jetserve/jetserve/pkg/serve"
	"golang.org/x/sync/errgroup"
)

// Handler names of the composition deployments.
const (
	HandlerChain  = "diag.Chain"
	HandlerFanOut = "diag.FanOut"
)

// ChainConfig is diag.Chain's user_config.
type ChainConfig struct {
	// Next is the deployment of the same application the request is passed
	// to; "" makes this the end of the chain (it answers as Echo does).
	Next string `json:"next"`
}

// Chain passes every request on to the next deployment through a handle
// (method, path, query, body and Content-Type unchanged) and answers with
// its answer, adding its own replica id in front of the X-Chain header; a
// stream is piped through (Handle.Stream). The last one answers as Echo.
// The chains of no-op deployments of `make bench` are made of it.
type Chain struct {
	echo *Echo
	next *serve.Handle // nil at the end
}

// FanOutConfig is diag.FanOut's user_config.
type FanOutConfig struct {
	// Targets are the deployments every request is sent to in parallel.
	Targets []string `json:"targets"`
}

// FanOut sends every request to all its targets in parallel (an ensemble)
// and answers a JSON array of their bodies, in the targets' order; the
// first failure fails it (and cancels the rest).
type FanOut struct {
	targets []*serve.Handle
}

func newChain(_ context.Context, in serve.Init) (serve.Handler, error) {
	var c ChainConfig
	if err := in.DecodeUserConfig(&c); err != nil {
		return nil, err
	}
	ch := &Chain{echo: &Echo{replica: in.ReplicaID}}
	if c.Next != "" {
		ch.next = in.Handle(c.Next)
	}
	return ch, nil
}

func newFanOut(_ context.Context, in serve.Init) (serve.Handler, error) {
	var c FanOutConfig
	if err := in.DecodeUserConfig(&c); err != nil {
		return nil, err
	}
	if len(c.Targets) == 0 {
		return nil, fmt.Errorf("user_config.targets: at least one deployment is required")
	}
	f := &FanOut{}
	for _, t := range c.Targets {
		f.targets = append(f.targets, in.Handle(t))
	}
	return f, nil
}

func forward(req *serve.Request) *serve.Request {
	out := &serve.Request{Method: req.Method, Path: req.Path, Query: req.Query, Body: req.Body}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		out.Header = http.Header{"Content-Type": {ct}}
	}
	return out
}

// ServeRequest passes req on, or echoes it at the end of the chain.
func (c *Chain) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	if c.next == nil {
		resp, err := c.echo.ServeRequest(ctx, req)
		if err == nil {
			resp.Header.Set("X-Chain", c.echo.replica)
		}
		return resp, err
	}
	resp, err := c.next.Call(ctx, forward(req))
	if err != nil {
		return nil, err
	}
	h := http.Header{"X-Chain": {c.echo.replica + "," + resp.Header.Get("X-Chain")}}
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		h.Set("Content-Type", ct)
	}
	return &serve.Response{Status: resp.Status, Header: h, Body: resp.Body}, nil
}

// ServeStream pipes the next deployment's stream, or streams as Echo at
// the end of the chain.
func (c *Chain) ServeStream(ctx context.Context, req *serve.Request, w serve.StreamWriter) error {
	if c.next == nil {
		return c.echo.ServeStream(ctx, req, w)
	}
	return c.next.Stream(ctx, forward(req), w)
}

// ServeRequest calls every target in parallel.
func (f *FanOut) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	bodies := make([]string, len(f.targets))
	g, ctx := errgroup.WithContext(ctx)
	for i, t := range f.targets {
		g.Go(func() error {
			resp, err := t.Call(ctx, forward(req))
			if err != nil {
				return err
			}
			bodies[i] = string(resp.Body)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(bodies)
	if err != nil {
		return nil, fmt.Errorf("encode answers: %w", err)
	}
	return &serve.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}, nil
}
