package routing

import (
	"context"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// Caller calls deployments through an embedded Router: the request goes
// straight from this process to the chosen replica (one NATS round trip,
// or none to a replica of this process), with the same routing, queueing,
// retries and deadlines as the router service. A call whose context ends
// first (the client left, the deadline passed) is cancelled at its
// replica, and so are the calls the replica's handler made. It satisfies
// serve.StreamCaller and the ingress's streaming caller.
type Caller struct {
	r  *Router
	nc *nats.Conn
	// DefaultTimeout bounds a call whose context has no deadline.
	DefaultTimeout time.Duration
}

// NewCaller returns a Caller dispatching through r (which must be started
// and followed).
func (r *Router) NewCaller() *Caller {
	return &Caller{r: r, nc: r.o.NC, DefaultTimeout: 5 * time.Minute}
}

// Call sends req to app/deployment and waits for the answer.
func (c *Caller) Call(ctx context.Context, app, deployment string, req *serve.Request) (*serve.Response, error) {
	m := wire.EncodeRequest("", req)
	ctx, cancel := wire.WithDeadline(ctx, m, c.DefaultTimeout)
	defer cancel()
	reply, err := c.send(ctx, app, deployment, m, nil)
	if err != nil {
		return nil, err
	}
	return wire.DecodeResponse(reply), nil
}

// Stream sends a streaming request and delivers head and chunks to sink
// (from a replica of this process without NATS).
func (c *Caller) Stream(ctx context.Context, app, deployment string, req *serve.Request, sink serve.StreamSink) error {
	m := wire.EncodeRequest("", req)
	ctx, cancel := wire.WithDeadline(ctx, m, c.DefaultTimeout)
	defer cancel()
	return wire.StreamVia(ctx, c.nc, m, sink, func(ctx context.Context, m *nats.Msg, local func(*nats.Msg) error) (*nats.Msg, error) {
		return c.send(ctx, app, deployment, m, local)
	})
}

// send dispatches m and waits for the router to answer (it always does, at
// the latest when m's deadline passes) or for ctx to end, which cancels
// the request.
func (c *Caller) send(ctx context.Context, app, deployment string, m *nats.Msg, chunks func(*nats.Msg) error) (*nats.Msg, error) {
	done := make(chan *nats.Msg, 1) // buffered: the router never blocks on a caller that left
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	ctx, span := c.r.startSpan(ctx, app, deployment, m)
	q := c.r.dispatch(depKey(app, deployment), m, func(h nats.Header, data []byte) {
		done <- &nats.Msg{Header: h, Data: data}
	}, chunks, ctx)
	select {
	case reply := <-done:
		endSpan(span, reply.Header, nil)
		return reply, nil
	case <-ctx.Done():
		c.r.cancel(q)
		endSpan(span, nil, ctx.Err())
		return nil, wire.TransportError(ctx.Err())
	}
}

var _ serve.StreamCaller = (*Caller)(nil)
