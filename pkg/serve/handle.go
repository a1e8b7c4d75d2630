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
// (in-process) and wire.Caller (NATS, through the routers).
type Caller interface {
	Call(ctx context.Context, app, deployment string, req *Request) (*Response, error)
}

// Handle calls one deployment. It is safe for concurrent use.
type Handle struct {
	App        string
	Deployment string
	caller     Caller
	model      string // multiplexed model id set on every call; "" none
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

// Call sends req. A response with a status of 400 or above is returned as
// an *Error.
func (h *Handle) Call(ctx context.Context, req *Request) (*Response, error) {
	if req.Method == "" {
		req.Method = http.MethodPost
	}
	if req.Path == "" {
		req.Path = "/"
	}
	if h.model != "" {
		SetModelID(req, h.model)
	}
	resp, err := h.caller.Call(ctx, h.App, h.Deployment, req)
	if err != nil {
		return nil, fmt.Errorf("call %s/%s: %w", h.App, h.Deployment, err)
	}
	if resp.Status >= 400 {
		return resp, &Error{Status: resp.Status, Code: codeOf(resp), Msg: string(resp.Body)}
	}
	return resp, nil
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
