package routing

import (
	"context"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// Local replicas and cancellation.
//
// A router embedded in a worker (for the handles of its replicas) knows
// which replicas run in its own process (Options.Local). Such a replica is
// preferred when its load is no higher than that of the replica power of
// two choices picked (Ray's prefer-local routing), and a request sent to
// it never touches NATS: the router hands the request to the replica's own
// admission (CallLocal) — which admits it or refuses it replica_full or
// draining exactly as over NATS, and the router retries a refusal
// elsewhere as it would — and the replica hands the answer back
// (and a stream's chunks, straight to the caller). A Caller's request is
// served on the caller's own goroutine, which waits for it anyway: no
// goroutine is started and none is woken (so a handler that ignores its
// context holds a same-worker caller until it returns, where a caller on
// another worker would give up at its deadline). Local replicas are never
// probed: they answer every request they admitted.
//
// A caller that gives up (Caller: its context ended — the client left or
// the deadline passed) cancels its request: a queued one is dropped; one
// in flight is cancelled at its replica (wire.CancelMsg, or CancelLocal),
// whose handler's context ends, and so do the calls it made downstream.
// The request stays in flight until the replica answers (its slot is
// accounted for), and is never sent again.

// LocalReplica is a replica running in the router's own process. The
// worker's replicas implement it; it is declared here so that the routing
// library does not depend on the worker.
type LocalReplica interface {
	// CallLocal admits m (a request as it would arrive on the replica's
	// call subject; m.Reply names it) or refuses it. It returns "" once
	// admitted, and then calls done exactly once with the reply: before it
	// returns when ctx is not nil — the request is then served on the
	// calling goroutine, ctx (the waiting caller's) the parent of the
	// handler's context — else later, from a goroutine of its own.
	// Otherwise it returns why, and done is never called:
	// protocol.ErrReplicaFull or protocol.ErrDraining (retried elsewhere,
	// as over NATS), anything else when the replica does not serve
	// (skipped for a while). chunks, when not nil, takes a streaming
	// call's head and chunk messages (wire.NewLocalStreamWriter) instead
	// of the inbox named in m. The replica must not keep m after done.
	CallLocal(ctx context.Context, m *nats.Msg, chunks func(*nats.Msg) error, done func(*nats.Msg)) protocol.ErrorCode
	// CancelLocal cancels the admitted request whose m.Reply was reply
	// (a no-op when the replica no longer holds it).
	CancelLocal(reply string)
}

// statusCancelled is the answer to a request its caller gave up on
// (nginx's 499, which jetserve uses for "the client went away").
const statusCancelled = 499

// bindLocal records whether p (routable now, or about to be) runs in this
// process; d.mu held.
func (r *Router) bindLocal(d *deployment, p *replica) {
	var lr LocalReplica
	if r.o.Local != nil {
		if l, ok := r.o.Local(p.id); ok {
			lr = l
		}
	}
	if p.routable && (p.local == nil) != (lr == nil) {
		if lr != nil {
			d.locals++
		} else {
			d.locals--
		}
	}
	p.local = lr
}

// preferLocal returns the least loaded eligible local replica (among
// those ok accepts, when set) if its load is no higher than that of
// d.replicas[i] (the pick; -1 none), else the pick. d.mu held.
func (d *deployment) preferLocal(q *request, now time.Time, i int, ok func(*replica) bool) *replica {
	var best *replica
	for _, p := range d.replicas {
		if p.local == nil || !d.eligible(p, q, now) || (ok != nil && !ok(p)) {
			continue
		}
		if best == nil || p.load() < best.load() {
			best = p
		}
	}
	switch {
	case best != nil && (i < 0 || best.load() <= d.replicas[i].load()):
		return best
	case i < 0:
		return nil
	}
	return d.replicas[i]
}

// sendLocal hands op's request to its local replica, to be served on this
// goroutine when inline (the caller waits on it). A refusal is handled as
// the same refusal over NATS would be: the request is retried on another
// replica or queued (the sends returned), or failed.
func (r *Router) sendLocal(op sendOp, inline bool) ([]sendOp, bool) {
	tok := op.tok
	var ctx context.Context
	if inline {
		ctx = op.q.ctx
	}
	code := op.local.CallLocal(ctx, op.msg, op.q.chunks, func(m *nats.Msg) { r.reply(tok, m) })
	if code == "" {
		return nil, false
	}
	q, d := op.q, op.q.d
	now := r.o.Now()
	d.mu.Lock()
	if !r.own(q) {
		d.mu.Unlock()
		return nil, false // answered meanwhile (its deadline passed)
	}
	p := q.rep
	d.releaseRep(q)
	why := retryUnreachable
	switch code {
	case protocol.ErrReplicaFull:
		p.reported, why = max(p.reported, p.max), retryFull
	case protocol.ErrDraining:
		p.draining, why = true, retryDraining
	default:
		p.unreachable = now.Add(r.o.UnreachableBackoff)
	}
	ops, f, changed := r.retryLocked(d, q, why, now)
	d.mu.Unlock()
	if f != nil {
		r.fail(f.q, f.status, f.code, f.msg, f.retryAfter)
	}
	return ops, changed
}

// cancel gives up on q for its caller: a queued q is answered 499
// cancelled at once; one in flight is cancelled at its replica and
// answered when the replica answers (or its deadline passes).
func (r *Router) cancel(q *request) {
	d := q.d
	d.mu.Lock()
	switch {
	case q.state == stateQueued:
		d.unqueue(q)
		q.state = stateDone
		d.mu.Unlock()
		r.queueChanged()
		r.fail(q, statusCancelled, protocol.ErrCancelled, "the caller gave up on the request", false)
	case q.state == stateInflight && !q.cancelled:
		q.cancelled = true
		lr, reply := q.local, q.reply
		var m *nats.Msg
		if lr == nil {
			m = wire.CancelMsg(q.rep.subject, reply)
		}
		d.mu.Unlock()
		if lr != nil {
			lr.CancelLocal(reply)
		} else if err := r.o.NC.PublishMsg(m); err != nil {
			r.o.Log.Debug().Err(err).Str("subject", m.Subject).Msg("cancel request")
		}
	default:
		d.mu.Unlock()
	}
}
