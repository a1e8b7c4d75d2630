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
	w := c.r.waiters.Get().(*waiter)
	reply, err := c.send(ctx, app, deployment, m, nil, w)
	if err != nil {
		return nil, err // w is dropped: the router may still answer into it
	}
	resp := wire.DecodeResponse(reply)
	w.msg = nats.Msg{}
	c.r.waiters.Put(w) // answered: the router is done with it
	return resp, nil
}

// waiter is where the router hands a Caller its answer: kept for the next
// call once the answer was taken (Router.waiters), so that a call
// allocates no channel, closure or message for its answer.
type waiter struct {
	ch   chan *nats.Msg // buffered: the router never blocks on a caller that left
	msg  nats.Msg
	done func(h nats.Header, data []byte) // w.answer, bound once
}

func newWaiter() any {
	w := &waiter{ch: make(chan *nats.Msg, 1)}
	w.done = w.answer
	return w
}

// answer is the router's done callback (called exactly once per call).
func (w *waiter) answer(h nats.Header, data []byte) {
	w.msg = nats.Msg{Header: h, Data: data}
	w.ch <- &w.msg
}

// Stream sends a streaming request and delivers head and chunks to sink
// (from a replica of this process without NATS).
func (c *Caller) Stream(ctx context.Context, app, deployment string, req *serve.Request, sink serve.StreamSink) error {
	m := wire.EncodeRequest("", req)
	ctx, cancel := wire.WithDeadline(ctx, m, c.DefaultTimeout)
	defer cancel()
	return wire.StreamVia(ctx, c.nc, m, sink, func(ctx context.Context, m *nats.Msg, local func(*nats.Msg) error) (*nats.Msg, error) {
		return c.send(ctx, app, deployment, m, local, newWaiter().(*waiter)) // not kept: the reply outlives this call
	})
}

// send dispatches m and waits for the router to answer into w (it always
// does, at the latest when m's deadline passes) or for ctx to end, which
// cancels the request.
func (c *Caller) send(ctx context.Context, app, deployment string, m *nats.Msg, chunks func(*nats.Msg) error, w *waiter) (*nats.Msg, error) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	ctx, span := c.r.startSpan(ctx, app, deployment, m)
	q := c.r.dispatch(depKey(app, deployment), m, w.done, chunks, ctx)
	select {
	case reply := <-w.ch:
		endSpan(span, reply.Header, nil)
		return reply, nil
	case <-ctx.Done():
		c.r.cancel(q)
		endSpan(span, nil, ctx.Err())
		return nil, wire.TransportError(ctx.Err())
	}
}

var _ serve.StreamCaller = (*Caller)(nil)
