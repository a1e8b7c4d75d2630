// Package routing is jetserve's request router as a library: it picks a
// replica for each sync request by power-of-two-choices on live load,
// forwards the request to the replica's call endpoint and hands the reply
// back verbatim. The router service runs it on the route subjects (queue
// group, for deployment handles and any NATS caller); the ingress embeds
// one and dispatches in-process (Dispatch, Caller), so an HTTP request
// costs one NATS round trip to the replica, like Ray Serve's per-proxy
// router. Follow keeps a Router fed with replicas, load reports, the
// applied config and the scheduler's status. max_queued_requests is
// therefore per router, as in Ray (per caller).
//
// No goroutine is started per request. The route subscription's callback
// picks and publishes (with a reply subject on the router's own inbox); the
// inbox subscription's callback relays the replica's answer, or retries on
// replica_full / draining / no responders. Requests that find no free
// replica wait in a per-deployment FIFO queue bounded by
// max_queued_requests and are released when load reports, completions, new
// replicas or the sweep free capacity. A per-request timer enforces the
// deadline (the caller's Jetserve-Deadline or the deployment's
// request_timeout), except for a Caller's request whose deadline is the
// caller's context's own: that context ends it (callerEnforces).
//
// Fault paths answer at once rather than at the deadline:
//   - a request that cannot be sent because of itself (over the NATS
//     max_payload) is answered 413 body_too_large, and nothing else is
//     affected; any failure to send leaves the queue moving;
//   - a request for a deployment absent from the applied config is
//     answered 404 not_found, and one for a deployment that cannot run
//     (the status says its replicas are PENDING for a placement reason or
//     FAILED, and none runs or starts) 503 no_replicas with the reason;
//   - a replica that vanishes while holding requests — "no responders" at
//     its call subject (then what it still holds ProbeAfter later), no
//     answer to repeated probes, or a probe answer that no longer lists a
//     request — loses them: each is retried on another replica when that
//     is safe (an idempotent method or an Idempotency-Key, not streamed)
//     and otherwise answered 503 replica_lost with Retry-After.
//
// Liveness: one sweep per router (Follow runs it every ProbeAfter/2)
// probes each replica holding a request of this router for longer than
// ProbeAfter (see wire.ProbeMsg): at most one probe per replica at a time.
//
// Concurrency: every method of Router is safe for concurrent use. Each
// deployment's state is guarded by its own mutex; the tables of in-flight
// requests and probes by another (pendMu), never held while taking a
// deployment's. Whoever removes a request from the in-flight table owns
// its answer.
package routing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing/p2c"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Options configure a Router.
type Options struct {
	NC    *nats.Conn
	Names protocol.Names
	Log   zerolog.Logger
	// Metrics receives the router's measurements; required.
	Metrics *Metrics
	// DefaultTimeout bounds requests that carry no deadline and whose
	// deployment has no request_timeout; 0 = none.
	DefaultTimeout time.Duration
	// MaxAttempts bounds how many replicas one dispatch round tries before
	// the request is queued (default 3).
	MaxAttempts int
	// UnreachableBackoff is how long a replica that had no responders is
	// skipped when that does not prove it gone (default 1s).
	UnreachableBackoff time.Duration
	// Liveness configures the probes of replicas holding requests; zero
	// fields take DefaultLiveness's.
	Liveness Liveness
	// OnQueueChange, if set, is called (without locks held) whenever a
	// deployment's queue length changed; it must not block.
	OnQueueChange func()
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Local, if set, finds the replicas of the router's own process (the
	// worker that embeds it) by id: requests are dispatched to them
	// in-process, and they are preferred when no more loaded than the
	// replica picked otherwise (see local.go).
	Local func(replicaID string) (LocalReplica, bool)
	// Tracer makes a span per routed request ("route <app>/<deployment>"),
	// the child of the request's trace context, which the request then
	// carries to its replica; nil (tracing off): none, the trace context
	// passes on unchanged.
	Tracer trace.Tracer
}

// Router routes requests; build it with New, then Start.
type Router struct {
	o           Options
	routePrefix string // "<prefix>.route."
	inbox       string // reply subjects are inbox + "." + token; probes inbox + ".p" + token

	depMu sync.RWMutex
	deps  map[string]*deployment // guarded by depMu; key "<app token>.<dep token>"

	pendMu  sync.Mutex
	pending map[uint64]*request // guarded by pendMu: requests sent to a replica
	probes  map[uint64]*replica // guarded by pendMu: probes awaiting their answer
	token   atomic.Uint64

	active       atomic.Int64  // requests accepted and not yet answered
	idle         chan struct{} // a value when active went to 0 (capacity 1: coalesces)
	configLoaded atomic.Bool   // the applied config was read (404s are possible)
	reconnected  atomic.Int64  // unix nanos of NC's last reconnect

	routeSub, replySub *nats.Subscription

	// Load reports are followed per deployment, from the first request
	// this router routes to it (followLoad): a worker's router hears only
	// the deployments its replicas hold handles to, not the whole fleet's.
	loadMu   sync.Mutex
	onLoad   nats.MsgHandler                 // guarded by loadMu; nil while Follow does not run
	loadSubs map[string][]*nats.Subscription // guarded by loadMu; by deployment key

	waiters sync.Pool // of *waiter: where Callers take their answers
}

// New returns a Router; it takes no traffic until Start.
func New(o Options) *Router {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.UnreachableBackoff <= 0 {
		o.UnreachableBackoff = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Liveness = o.Liveness.withDefaults()
	return &Router{
		o:           o,
		routePrefix: strings.TrimSuffix(o.Names.RouteWildcard(), "*.*"),
		inbox:       o.NC.NewInbox(),
		deps:        map[string]*deployment{},
		pending:     map[uint64]*request{},
		probes:      map[uint64]*replica{},
		idle:        make(chan struct{}, 1),
		waiters:     sync.Pool{New: newWaiter},
	}
}

// Start subscribes to replies and then, when serveRoutes is set, to the
// route subjects (queue group protocol.RouterQueue). A router embedded in
// a caller (the ingress) takes requests through Dispatch only.
func (r *Router) Start(serveRoutes bool) error {
	var err error
	if r.replySub, err = r.o.NC.Subscribe(r.inbox+".*", r.onReply); err != nil {
		return fmt.Errorf("subscribe router inbox: %w", err)
	}
	r.replySub.SetPendingLimits(-1, -1) //nolint:errcheck // cannot fail on a fresh async subscription
	if !serveRoutes {
		return nil
	}
	if r.routeSub, err = r.o.NC.QueueSubscribe(r.o.Names.RouteWildcard(), protocol.RouterQueue, r.onRequest); err != nil {
		_ = r.replySub.Unsubscribe()
		return fmt.Errorf("subscribe %s: %w", r.o.Names.RouteWildcard(), err)
	}
	r.routeSub.SetPendingLimits(-1, -1) //nolint:errcheck // as above
	return nil
}

// Drain stops taking new requests (already received ones are still
// handled), waits until every accepted request was answered or ctx ends,
// answers what is left 503 unavailable and unsubscribes.
func (r *Router) Drain(ctx context.Context) {
	if r.routeSub != nil {
		closed := r.routeSub.StatusChanged(nats.SubscriptionClosed)
		if err := r.routeSub.Drain(); err == nil {
			select {
			case <-closed:
			case <-ctx.Done():
			}
		}
	}
wait:
	for r.active.Load() > 0 {
		select {
		case <-r.idle:
		case <-ctx.Done():
			break wait
		}
	}
	r.failAll()
	if r.replySub != nil {
		_ = r.replySub.Unsubscribe()
	}
}

// Active returns how many requests are accepted and not yet answered.
func (r *Router) Active() int64 { return r.active.Load() }

// failAll answers every queued and in-flight request 503 unavailable.
func (r *Router) failAll() {
	for _, d := range r.snapshot() {
		var fails []failure
		d.mu.Lock()
		for q := d.head; q != nil; q = d.head {
			d.unqueue(q)
			q.state = stateDone
			fails = append(fails, failure{q, http.StatusServiceUnavailable, protocol.ErrUnavailable, "router shutting down", false})
		}
		for _, p := range append(slices.Clone(d.replicas), d.retired...) {
			for q := p.head; q != nil; {
				next := q.next
				if r.own(q) {
					d.releaseRep(q)
					q.state = stateDone
					fails = append(fails, failure{q, http.StatusServiceUnavailable, protocol.ErrUnavailable, "router shutting down", false})
				}
				q = next
			}
		}
		d.mu.Unlock()
		r.emit(fails, nil, false)
	}
}

// Request states, guarded by the deployment's mu.
const (
	stateNew = iota
	stateQueued
	stateInflight
	stateDone
)

type request struct {
	msg      *nats.Msg
	done     func(h nats.Header, data []byte) // in-process caller; nil: reply to msg.Reply
	d        *deployment
	start    time.Time
	deadline time.Time // zero: none
	timer    *time.Timer
	rep      *replica // while in flight
	token    uint64   // pending key while in flight
	reply    string   // reply subject of the current send
	sent     time.Time
	probed   uint64 // the probe that asked about the current send; 0 none
	attempts int    // total sends, for HdrAttempt
	round    int    // sends in this dispatch round
	triedBuf [4]*replica
	tried    []*replica // replicas tried in this round
	state    int
	counted  bool   // fulfillment time observed
	model    string // multiplexed model id (protocol.HdrModelID); "" none
	// chunks, for a streaming call from this process, takes the stream's
	// messages from a local replica (see LocalReplica); nil otherwise.
	chunks func(*nats.Msg) error
	// ctx is the context of a Caller waiting for q on its own goroutine:
	// a local replica picked at dispatch serves q there (LocalReplica).
	ctx context.Context
	// local is the in-process replica the current send went to; nil when
	// it went over NATS.
	local LocalReplica
	// cancelled: the caller gave up (Caller); the replica was told, and
	// the request is never sent again.
	cancelled bool

	// prev and next link the request into its deployment's queue while
	// queued, into its replica's in-flight list while in flight.
	prev, next *request
}

type replica struct {
	id      string // as in its record
	key     string // Token(id)
	subject string // the call subject
	d       *deployment
	max     int
	// reported is the last ongoing count the replica reported, at
	// reportedAt (its report's At: a route report and a full one arrive
	// on two subscriptions, and the older must not win).
	reported   int
	reportedAt time.Time
	// inflight is this router's requests outstanding at the replica,
	// linked from head (oldest send first) to tail.
	inflight    int
	head, tail  *request
	draining    bool
	unreachable time.Time // skip until then
	seen        time.Time // last record put
	routable    bool      // in d.replicas
	goneAt      time.Time // when "no responders" showed its subscription gone
	lost        bool

	probeTok   uint64 // the probe awaiting its answer; 0 none
	probeSent  time.Time
	probeFails int // consecutive
	probeNow   bool
	// models are the multiplexed model ids it last reported (sorted);
	// sent the ids this router sent it since (see models.go).
	models []string
	sent   []sentModel
	// local is the replica itself when it runs in this process; requests
	// go to it without NATS, and it is never probed.
	local LocalReplica
}

func (p *replica) load() int { return max(p.reported, p.inflight) }

type deployment struct {
	key, app, name string
	m              depMetrics

	mu        sync.Mutex
	replicas  []*replica          // guarded by mu: RUNNING replicas, routed to
	byID      map[string]*replica // guarded by mu: the same, by Token(id)
	retired   []*replica          // guarded by mu: no longer routed to, still holding requests
	starting  map[string]bool     // guarded by mu: Token(id) of replicas whose record says STARTING
	maxQueued int                 // guarded by mu; <0 unlimited
	timeout   time.Duration       // guarded by mu; request_timeout, 0 none
	inConfig  bool                // guarded by mu: in the applied config
	// unavailable says why the deployment cannot run (from the status);
	// "" when it runs, starts, waits at zero replicas, or is unknown.
	unavailable string   // guarded by mu
	head        *request // guarded by mu: FIFO queue
	tail        *request
	queued      int
	loads       []int // scratch for the picker, guarded by mu
	locals      int   // guarded by mu: routable replicas with a LocalReplica
	// loadFollowed: the router follows this deployment's load reports.
	loadFollowed atomic.Bool
}

// deployment returns the state of key ("<app>.<dep>" tokens), creating it.
func (r *Router) deployment(key string) *deployment {
	r.depMu.RLock()
	d := r.deps[key]
	r.depMu.RUnlock()
	if d != nil {
		return d
	}
	r.depMu.Lock()
	defer r.depMu.Unlock()
	if d = r.deps[key]; d != nil {
		return d
	}
	app, name, _ := strings.Cut(key, ".")
	d = &deployment{key: key, app: app, name: name, byID: map[string]*replica{}, starting: map[string]bool{},
		maxQueued: -1, m: r.o.Metrics.forDeployment(app, name)}
	r.deps[key] = d
	return d
}

func depKey(app, dep string) string { return protocol.Token(app) + "." + protocol.Token(dep) }

// onRequest handles one request from a route subject.
func (r *Router) onRequest(m *nats.Msg) {
	key, ok := strings.CutPrefix(m.Subject, r.routePrefix)
	if !ok || m.Header == nil {
		return
	}
	r.dispatch(key, m, nil, nil, nil)
}

// Dispatch routes m (a request encoded by wire.EncodeRequest, with its
// deadline header) to app/deployment in-process and calls done exactly
// once with the answer's headers and data — the replica's reply, or an
// error reply (queue_full, timeout, no_replicas…). done runs on a NATS
// callback or timer goroutine and must not block.
func (r *Router) Dispatch(app, deployment string, m *nats.Msg, done func(h nats.Header, data []byte)) {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	_, span := r.startSpan(context.Background(), app, deployment, m)
	r.dispatch(depKey(app, deployment), m, func(h nats.Header, data []byte) {
		endSpan(span, h, nil)
		done(h, data)
	}, nil, nil)
}

// startSpan starts the routing span of m, the child of m's trace context
// (else of ctx's), and makes m carry it.
func (r *Router) startSpan(ctx context.Context, app, deployment string, m *nats.Msg) (context.Context, trace.Span) {
	if r.o.Tracer == nil {
		return ctx, tracing.Off()
	}
	ctx, span := r.o.Tracer.Start(tracing.ExtractNATS(ctx, m.Header), "route "+app+"/"+deployment,
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(tracing.AttrApp.String(app),
			tracing.AttrDeployment.String(deployment), tracing.AttrRequestID.String(m.Header.Get(protocol.HdrRequestID))))
	tracing.InjectNATS(ctx, m.Header)
	return ctx, span
}

// endSpan ends a routing span with the answer's replica and error code
// (h nil: err says why there is no answer).
func endSpan(span trace.Span, h nats.Header, err error) {
	if !span.IsRecording() {
		span.End()
		return
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	if rep := h.Get(protocol.HdrReplica); rep != "" {
		span.SetAttributes(tracing.AttrReplica.String(rep))
	}
	if code := h.Get(protocol.HdrError); code != "" {
		span.SetAttributes(tracing.AttrErrorCode.String(code))
		if code != string(protocol.ErrHandler) {
			span.SetStatus(codes.Error, code)
		}
	}
	span.End()
}

// dispatch routes m and returns its request (for cancel); chunks, if not
// nil, takes a streaming call's messages from a local replica; ctx, if not
// nil, is the context of a caller waiting on this goroutine (a local
// replica picked now serves the request on it).
func (r *Router) dispatch(key string, m *nats.Msg, done func(nats.Header, []byte), chunks func(*nats.Msg) error, ctx context.Context) *request {
	d := r.deployment(key)
	now := r.o.Now()
	q := &request{msg: m, d: d, start: now, done: done, model: m.Header.Get(protocol.HdrModelID), chunks: chunks, ctx: ctx}
	q.tried = q.triedBuf[:0]
	d.m.requests.Inc()
	r.active.Add(1)

	d.mu.Lock()
	if f, refused := r.refusalLocked(d, q); refused {
		d.mu.Unlock()
		r.emit([]failure{f}, nil, false)
		return q
	}
	if !d.loadFollowed.Load() { // not for a 404: names no one deployed subscribe to nothing
		r.followLoad(d)
	}
	q.deadline = r.deadline(m, d.timeout, now)
	if !q.deadline.IsZero() {
		if !q.deadline.After(now) {
			d.mu.Unlock()
			r.fail(q, http.StatusGatewayTimeout, protocol.ErrTimeout, "deadline passed before routing", false)
			return q
		}
		if !r.callerEnforces(q) {
			q.timer = time.AfterFunc(q.deadline.Sub(now), func() { r.expire(q) })
		}
	}
	if d.head == nil { // FIFO: nobody waits ahead of us
		if p := d.pick(q, now); p != nil {
			op := r.sendLocked(q, p, now)
			d.mu.Unlock()
			r.sendAllFrom([]sendOp{op}, false, q)
			return q
		}
	}
	changed, reject := d.enqueueLocked(q)
	d.mu.Unlock()
	if reject {
		r.rejectFull(q)
		return q
	}
	if changed {
		r.queueChanged()
	}
	return q
}

// refusalLocked answers a request that no replica can take: 404 for a
// deployment absent from the applied config, 503 for one that cannot
// run. A deployment with a routable or starting replica takes requests
// whatever the config and status say (they may lag). d.mu held.
func (r *Router) refusalLocked(d *deployment, q *request) (failure, bool) {
	if len(d.replicas) > 0 || len(d.starting) > 0 {
		return failure{}, false
	}
	if r.configLoaded.Load() && !d.inConfig {
		return failure{q, http.StatusNotFound, protocol.ErrNotFound,
			fmt.Sprintf("no deployment %s/%s in the applied config", d.app, d.name), false}, true
	}
	if d.unavailable != "" {
		return failure{q, http.StatusServiceUnavailable, protocol.ErrNoReplicas, d.cannotRun(), true}, true
	}
	return failure{}, false
}

func (d *deployment) cannotRun() string {
	return fmt.Sprintf("%s/%s cannot run: %s", d.app, d.name, d.unavailable)
}

// deadline is the earliest of the caller's deadline and the deployment's
// request_timeout (or the router's default when neither is set).
func (r *Router) deadline(m *nats.Msg, timeout time.Duration, now time.Time) time.Time {
	dl, ok := wire.Deadline(m)
	if timeout <= 0 && !ok {
		timeout = r.o.DefaultTimeout
	}
	if timeout > 0 {
		if t := now.Add(timeout); !ok || t.Before(dl) {
			return t
		}
	}
	return dl
}

// callerEnforces reports whether q's deadline is its waiting caller's own
// (a Caller whose context ends no later than q.deadline, to the
// millisecond the header carries): the caller's context then ends q
// (cancel — dropped if queued, cancelled at its replica if in flight), and
// q needs no timer of its own. One timer per request instead of two.
func (r *Router) callerEnforces(q *request) bool {
	if q.ctx == nil {
		return false
	}
	dl, ok := q.ctx.Deadline()
	return ok && !q.deadline.Before(dl.Add(-time.Millisecond))
}

// pick chooses a replica for q, or nil; d.mu held. A request for a
// multiplexed model prefers a replica holding it (pickModel).
func (d *deployment) pick(q *request, now time.Time) *replica {
	if q.model != "" {
		return d.pickModel(q, now)
	}
	d.loads = d.loads[:0]
	for _, p := range d.replicas {
		l := p.load()
		if !d.eligible(p, q, now) {
			l = p2c.Ineligible
		}
		d.loads = append(d.loads, l)
	}
	i := p2c.Pick(d.loads, rand.IntN)
	if d.locals > 0 {
		return d.preferLocal(q, now, i, nil)
	}
	if i < 0 {
		return nil
	}
	return d.replicas[i]
}

// eligible reports whether p may take q now: it has room, is not draining
// nor unreachable, and was not tried in this round. d.mu held.
func (d *deployment) eligible(p *replica, q *request, now time.Time) bool {
	return !p.draining && p.load() < p.max && !now.Before(p.unreachable) && !q.triedReplica(p)
}

func (q *request) triedReplica(p *replica) bool {
	return slices.Contains(q.tried, p)
}

// sendLocked marks q in flight at p and returns the send to make (after
// d.mu is released): a message to publish, or for a local replica to hand
// it; d.mu held.
func (r *Router) sendLocked(q *request, p *replica, now time.Time) sendOp {
	q.state = stateInflight
	q.rep = p
	q.attempts++
	q.round++
	q.tried = append(q.tried, p)
	q.sent = now
	q.probed = 0
	p.inflight++
	if q.model != "" {
		p.noteSent(q.model, now)
	}
	pushBack(q, &p.head, &p.tail)
	if !q.counted {
		q.counted = true
		q.d.m.fulfillment.Observe(now.Sub(q.start).Seconds())
	}
	tok := r.token.Add(1)
	q.token = tok
	var buf [80]byte // inbox + "." + token, built on the stack
	q.reply = string(strconv.AppendUint(append(append(buf[:0], r.inbox...), '.'), tok, 10))
	r.pendMu.Lock()
	r.pending[tok] = q
	r.pendMu.Unlock()
	if q.attempts > 1 {
		q.msg.Header.Set(protocol.HdrAttempt, strconv.Itoa(q.attempts))
	}
	q.local = p.local
	return sendOp{q: q, msg: &nats.Msg{Subject: p.subject, Reply: q.reply, Header: q.msg.Header, Data: q.msg.Data},
		local: p.local, tok: tok}
}

// own takes q out of the in-flight table and reports whether it was
// there: the caller then owns q's answer.
func (r *Router) own(q *request) bool {
	r.pendMu.Lock()
	defer r.pendMu.Unlock()
	if r.pending[q.token] != q {
		return false
	}
	delete(r.pending, q.token)
	return true
}

// releaseRep detaches an owned in-flight q from its replica; d.mu held.
func (d *deployment) releaseRep(q *request) {
	p := q.rep
	if p == nil {
		return
	}
	unlink(q, &p.head, &p.tail)
	q.rep = nil
	p.inflight--
	if p.inflight == 0 && !p.routable {
		d.retired = slices.DeleteFunc(d.retired, func(x *replica) bool { return x == p })
	}
}

type sendOp struct {
	q   *request
	msg *nats.Msg
	// local, when set, takes the request in-process instead of msg being
	// published; tok is the send's token.
	local LocalReplica
	tok   uint64
}

// failure is an error answer decided under a lock and sent after it.
type failure struct {
	q          *request
	status     int
	code       protocol.ErrorCode
	msg        string
	retryAfter bool
}

// emit sends, without locks held, the failures and the messages decided
// under a deployment's lock.
func (r *Router) emit(fails []failure, ops []sendOp, changed bool) {
	for _, f := range fails {
		r.fail(f.q, f.status, f.code, f.msg, f.retryAfter)
	}
	r.sendAll(ops, changed)
}

// sendAll publishes ops; a publish that fails answers its request (and may
// release more of the queue, sent in the same loop, not recursively).
func (r *Router) sendAll(ops []sendOp, changed bool) { r.sendAllFrom(ops, changed, nil) }

// sendAllFrom is sendAll on the goroutine of self's caller (nil: none):
// a send of self to a local replica is served on it.
func (r *Router) sendAllFrom(ops []sendOp, changed bool, self *request) {
	for len(ops) > 0 {
		op := ops[0]
		ops = ops[1:]
		if op.local != nil {
			more, queueMoved := r.sendLocal(op, self != nil && op.q == self && self.ctx != nil)
			ops = append(ops, more...)
			changed = changed || queueMoved
			continue
		}
		if err := r.o.NC.PublishMsg(op.msg); err != nil {
			more, queueMoved := r.sendFailed(op.q, op.msg, err)
			ops = append(ops, more...)
			changed = changed || queueMoved
		}
	}
	if changed {
		r.queueChanged()
	}
}

// sendFailed answers q whose message could not be published, without
// blaming the replica: a message over max_payload fails the same way on
// every replica (413), and anything else is the connection's state (503).
// It returns the queued requests released by q's slot.
func (r *Router) sendFailed(q *request, out *nats.Msg, err error) ([]sendOp, bool) {
	d := q.d
	d.mu.Lock()
	if !r.own(q) {
		d.mu.Unlock()
		return nil, false // its deadline passed meanwhile: answered
	}
	d.releaseRep(q)
	q.state = stateDone
	ops := r.releaseLocked(d, r.o.Now())
	d.mu.Unlock()
	if errors.Is(err, nats.ErrMaxPayload) {
		r.fail(q, http.StatusRequestEntityTooLarge, protocol.ErrBodyTooLarge,
			fmt.Sprintf("request of %d body bytes plus %d header bytes exceeds the NATS max_payload of %d bytes",
				len(out.Data), headerSize(out.Header), r.o.NC.MaxPayload()), false)
	} else {
		r.o.Log.Warn().Err(err).Str("request_id", q.msg.Header.Get(protocol.HdrRequestID)).
			Str("subject", out.Subject).Msg("forward request")
		r.fail(q, http.StatusServiceUnavailable, protocol.ErrUnavailable, "forward request: "+err.Error(), true)
	}
	return ops, len(ops) > 0
}

// headerSize approximates the encoded size of h ("K: V\r\n" per value).
func headerSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// enqueueLocked appends q to the queue; reject reports that the queue is
// full. d.mu held.
func (d *deployment) enqueueLocked(q *request) (changed, reject bool) {
	if d.maxQueued >= 0 && d.queued >= d.maxQueued {
		q.state = stateDone
		return false, true
	}
	q.state = stateQueued
	pushBack(q, &d.head, &d.tail)
	d.queued++
	d.m.queued.Set(float64(d.queued))
	return true, false
}

// requeueFrontLocked puts q back at the front of the queue (it arrived
// before anything queued now); false when the queue is full. d.mu held.
func (d *deployment) requeueFrontLocked(q *request) bool {
	q.tried, q.round = q.triedBuf[:0], 0
	if d.maxQueued >= 0 && d.queued >= d.maxQueued {
		return false
	}
	q.state = stateQueued
	q.prev, q.next = nil, d.head
	if d.head != nil {
		d.head.prev = q
	} else {
		d.tail = q
	}
	d.head = q
	d.queued++
	d.m.queued.Set(float64(d.queued))
	return true
}

// pushBack appends q to the doubly linked list that runs from *head to
// *tail (a replica's in-flight requests, or a deployment's queue).
func pushBack(q *request, head, tail **request) {
	q.prev, q.next = *tail, nil
	if *tail != nil {
		(*tail).next = q
	} else {
		*head = q
	}
	*tail = q
}

// unlink removes q from the doubly linked list that runs from *head to
// *tail (a replica's in-flight requests, or a deployment's queue).
func unlink(q *request, head, tail **request) {
	if q.prev != nil {
		q.prev.next = q.next
	} else {
		*head = q.next
	}
	if q.next != nil {
		q.next.prev = q.prev
	} else {
		*tail = q.prev
	}
	q.prev, q.next = nil, nil
}

// unqueue removes q from the queue; d.mu held.
func (d *deployment) unqueue(q *request) {
	unlink(q, &d.head, &d.tail)
	d.queued--
	d.m.queued.Set(float64(d.queued))
}

// releaseLocked dispatches queued requests while replicas have room and
// returns the messages to publish; d.mu held.
func (r *Router) releaseLocked(d *deployment, now time.Time) (out []sendOp) {
	for d.head != nil {
		q := d.head
		q.tried, q.round = q.triedBuf[:0], 0
		p := d.pick(q, now)
		if p == nil {
			break
		}
		d.unqueue(q)
		out = append(out, r.sendLocked(q, p, now))
	}
	return out
}

// failQueueLocked takes every queued request out for an error answer;
// d.mu held.
func (d *deployment) failQueueLocked(status int, code protocol.ErrorCode, msg string, retryAfter bool) []failure {
	var fails []failure
	for q := d.head; q != nil; q = d.head {
		d.unqueue(q)
		q.state = stateDone
		fails = append(fails, failure{q, status, code, msg, retryAfter})
	}
	return fails
}

func (r *Router) queueChanged() {
	if r.o.OnQueueChange != nil {
		r.o.OnQueueChange()
	}
}

type retryReason int

const (
	retryFull retryReason = iota
	retryDraining
	retryUnreachable
	retryLost
)

func (rr retryReason) String() string {
	switch rr {
	case retryFull:
		return string(protocol.ErrReplicaFull)
	case retryDraining:
		return string(protocol.ErrDraining)
	case retryLost:
		return string(protocol.ErrReplicaLost)
	}
	return "no_responders"
}

// onReply handles a message on the router inbox: a replica's answer, or
// a probe's.
func (r *Router) onReply(m *nats.Msg) {
	i := strings.LastIndexByte(m.Subject, '.')
	last := m.Subject[i+1:]
	if rest, ok := strings.CutPrefix(last, "p"); ok {
		if tok, err := strconv.ParseUint(rest, 10, 64); err == nil {
			r.onProbeAnswer(tok, m)
		}
		return
	}
	tok, err := strconv.ParseUint(last, 10, 64)
	if err != nil {
		return
	}
	r.reply(tok, m)
}

// reply handles the answer to the send tok (from a replica over NATS, or
// from a local one).
func (r *Router) reply(tok uint64, m *nats.Msg) {
	r.pendMu.Lock()
	q := r.pending[tok]
	delete(r.pending, tok)
	r.pendMu.Unlock()
	if q == nil {
		return // answered already (deadline passed, or lost)
	}
	if wire.IsNoResponders(m) {
		r.noResponders(q)
		return
	}
	switch wire.ErrorCode(m) {
	case protocol.ErrReplicaFull:
		r.retry(q, retryFull)
		return
	case protocol.ErrDraining:
		r.retry(q, retryDraining)
		return
	}
	d := q.d
	now := r.o.Now()
	d.mu.Lock()
	p := q.rep
	d.releaseRep(q)
	if p.reported > 0 {
		// Our request was very likely counted in the last report.
		p.reported--
	}
	q.state = stateDone
	ops := r.releaseLocked(d, now)
	d.mu.Unlock()
	r.finish(q, m.Header, m.Data)
	r.sendAll(ops, len(ops) > 0)
}

// retry sends q to another replica after a retryable failure at q.rep
// (the caller owns q).
func (r *Router) retry(q *request, why retryReason) {
	d := q.d
	now := r.o.Now()
	d.mu.Lock()
	p := q.rep
	d.releaseRep(q)
	switch why {
	case retryFull:
		p.reported = max(p.reported, p.max) // full until it reports otherwise
	case retryDraining:
		p.draining = true
	}
	ops, f, changed := r.retryLocked(d, q, why, now)
	d.mu.Unlock()
	var fails []failure
	if f != nil {
		fails = append(fails, *f)
	}
	r.emit(fails, ops, changed)
}

// retryLocked sends an owned q, detached from its replica, to another
// replica, or queues it at the front when the round's attempts are used up
// or no replica has room; it fails q when its deadline passed or the queue
// is full. d.mu held.
func (r *Router) retryLocked(d *deployment, q *request, why retryReason, now time.Time) ([]sendOp, *failure, bool) {
	if q.cancelled {
		q.state = stateDone
		return nil, &failure{q, statusCancelled, protocol.ErrCancelled, "the caller gave up on the request", false}, false
	}
	d.m.retries(why).Inc()
	if !q.deadline.IsZero() && !now.Before(q.deadline) {
		q.state = stateDone
		return nil, &failure{q, http.StatusGatewayTimeout, protocol.ErrTimeout, "request timed out", false}, false
	}
	if q.round < r.o.MaxAttempts && d.head == nil {
		if np := d.pick(q, now); np != nil {
			return []sendOp{r.sendLocked(q, np, now)}, nil, false
		}
	}
	if !d.requeueFrontLocked(q) {
		q.state = stateDone
		return nil, &failure{q, http.StatusServiceUnavailable, protocol.ErrQueueFull,
			"too many requests queued for " + d.app + "/" + d.name, true}, false
	}
	return nil, nil, true
}

// expire runs when q's deadline passes.
func (r *Router) expire(q *request) {
	d := q.d
	d.mu.Lock()
	switch q.state {
	case stateQueued:
		d.unqueue(q)
		q.state = stateDone
		noReplicas, why := len(d.replicas) == 0, d.unavailable
		d.mu.Unlock()
		r.queueChanged()
		switch {
		case noReplicas && why != "":
			r.fail(q, http.StatusServiceUnavailable, protocol.ErrNoReplicas, d.app+"/"+d.name+" cannot run: "+why, true)
		case noReplicas:
			r.fail(q, http.StatusServiceUnavailable, protocol.ErrNoReplicas, "no running replica of "+d.app+"/"+d.name, true)
		default:
			r.fail(q, http.StatusGatewayTimeout, protocol.ErrTimeout, "request timed out waiting for a replica", false)
		}
		return
	case stateInflight:
		if !r.own(q) {
			d.mu.Unlock()
			return // the reply is being handled
		}
		d.releaseRep(q)
		q.state = stateDone
		ops := r.releaseLocked(d, r.o.Now())
		d.mu.Unlock()
		r.fail(q, http.StatusGatewayTimeout, protocol.ErrTimeout, "request timed out", false)
		r.sendAll(ops, len(ops) > 0)
		return
	}
	d.mu.Unlock()
}

func (r *Router) rejectFull(q *request) {
	r.fail(q, http.StatusServiceUnavailable, protocol.ErrQueueFull,
		"too many requests queued for "+q.d.app+"/"+q.d.name, true)
}

// fail answers q with an error reply.
func (r *Router) fail(q *request, status int, code protocol.ErrorCode, msg string, retryAfter bool) {
	em := wire.ErrorMsg(status, code, msg)
	if retryAfter {
		em.Header.Set(protocol.HdrHTTPPrefix+"Retry-After", "1")
	}
	q.d.m.rejections(code).Inc()
	rid := q.msg.Header.Get(protocol.HdrRequestID)
	if rid != "" {
		em.Header.Set(protocol.HdrRequestID, rid)
	}
	ev := r.o.Log.Debug()
	if code == protocol.ErrReplicaLost || code == protocol.ErrBodyTooLarge {
		ev = r.o.Log.Info()
	}
	ev.Str("app", q.d.app).Str("deployment", q.d.name).Str("request_id", rid).Str("code", string(code)).Msg(msg)
	r.finish(q, em.Header, em.Data)
}

// finish relays the answer to the caller.
func (r *Router) finish(q *request, h nats.Header, data []byte) {
	if q.timer != nil {
		q.timer.Stop()
	}
	switch {
	case q.done != nil:
		q.done(h, data)
	case q.msg.Reply != "":
		if err := r.o.NC.PublishMsg(&nats.Msg{Subject: q.msg.Reply, Header: h, Data: data}); err != nil {
			r.o.Log.Warn().Err(err).Msg("relay reply")
		}
	}
	if r.active.Add(-1) == 0 {
		select {
		case r.idle <- struct{}{}:
		default:
		}
	}
}
