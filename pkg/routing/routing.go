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
// request_timeout).
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
//     its call subject, no answer to repeated probes, or a probe answer
//     that no longer lists a request — loses them: each is retried on
//     another replica when that is safe (an idempotent method or an
//     Idempotency-Key, not streamed) and otherwise answered 503
//     replica_lost with Retry-After.
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

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing/p2c"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
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
}

// Liveness configures how a router finds out that a replica holding its
// requests is gone. koanf tags: services embed it as their `liveness`
// options.
type Liveness struct {
	// ProbeAfter is how long a request may be outstanding at a replica
	// before the router probes the replica (and the least time between two
	// probes of one replica).
	ProbeAfter time.Duration `koanf:"probe_after"`
	// ProbeTimeout is how long a probe may go unanswered before it counts
	// as failed.
	ProbeTimeout time.Duration `koanf:"probe_timeout"`
	// MaxProbeFailures consecutive failed probes make the replica lost.
	MaxProbeFailures int `koanf:"max_probe_failures"`
}

// DefaultLiveness: a probe after 500 ms outstanding; a replica that
// answers none of 3 probes, each given 2 s, is lost (a killed worker's
// replicas answer "no responders" to the first probe).
func DefaultLiveness() Liveness {
	return Liveness{ProbeAfter: 500 * time.Millisecond, ProbeTimeout: 2 * time.Second, MaxProbeFailures: 3}
}

// Validate checks l; errors name the option under prefix ("liveness").
func (l Liveness) Validate(prefix string) error {
	var errs []error
	if l.ProbeAfter < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("%s.probe_after: must be at least 10ms, got %v", prefix, l.ProbeAfter))
	}
	if l.ProbeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%s.probe_timeout: must be positive, got %v", prefix, l.ProbeTimeout))
	}
	if l.MaxProbeFailures < 1 {
		errs = append(errs, fmt.Errorf("%s.max_probe_failures: must be >= 1, got %d", prefix, l.MaxProbeFailures))
	}
	return errors.Join(errs...)
}

func (l Liveness) withDefaults() Liveness {
	d := DefaultLiveness()
	if l.ProbeAfter <= 0 {
		l.ProbeAfter = d.ProbeAfter
	}
	if l.ProbeTimeout <= 0 {
		l.ProbeTimeout = d.ProbeTimeout
	}
	if l.MaxProbeFailures <= 0 {
		l.MaxProbeFailures = d.MaxProbeFailures
	}
	return l
}

// reconnectGrace: for this long after the router's own connection came
// back, "no responders" from a replica does not prove it gone (its worker
// may still be reconnecting); it counts as a failed probe instead.
const reconnectGrace = 2 * time.Second

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

	active       atomic.Int64 // requests accepted and not yet answered
	configLoaded atomic.Bool  // the applied config was read (404s are possible)
	reconnected  atomic.Int64 // unix nanos of NC's last reconnect

	routeSub, replySub *nats.Subscription
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
// handled), waits until every accepted request was answered or timeout
// passed, answers what is left 503 unavailable and unsubscribes.
func (r *Router) Drain(timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	if r.routeSub != nil {
		_ = r.routeSub.Drain()
		for r.routeSub.IsValid() && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
	}
	for r.active.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
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
	counted  bool // fulfillment time observed

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
	// reported is the last ongoing count the replica reported.
	reported int
	// inflight is this router's requests outstanding at the replica,
	// linked from head (oldest send first) to tail.
	inflight    int
	head, tail  *request
	draining    bool
	unreachable time.Time // skip until then
	seen        time.Time // last record put
	routable    bool      // in d.replicas
	lost        bool

	probeTok   uint64 // the probe awaiting its answer; 0 none
	probeSent  time.Time
	probeFails int // consecutive
	probeNow   bool
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
	r.dispatch(key, m, nil)
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
	r.dispatch(depKey(app, deployment), m, done)
}

func (r *Router) dispatch(key string, m *nats.Msg, done func(nats.Header, []byte)) {
	d := r.deployment(key)
	now := r.o.Now()
	q := &request{msg: m, d: d, start: now, done: done}
	q.tried = q.triedBuf[:0]
	d.m.requests.Inc()
	r.active.Add(1)

	d.mu.Lock()
	if f, refused := r.refusalLocked(d, q); refused {
		d.mu.Unlock()
		r.emit([]failure{f}, nil, false)
		return
	}
	q.deadline = r.deadline(m, d.timeout, now)
	if !q.deadline.IsZero() {
		if !q.deadline.After(now) {
			d.mu.Unlock()
			r.fail(q, http.StatusGatewayTimeout, protocol.ErrTimeout, "deadline passed before routing", false)
			return
		}
		q.timer = time.AfterFunc(q.deadline.Sub(now), func() { r.expire(q) })
	}
	if d.head == nil { // FIFO: nobody waits ahead of us
		if p := d.pick(q, now); p != nil {
			out := r.sendLocked(q, p, now)
			d.mu.Unlock()
			r.sendAll([]sendOp{{q, out}}, false)
			return
		}
	}
	changed, reject := d.enqueueLocked(q)
	d.mu.Unlock()
	if reject {
		r.rejectFull(q)
		return
	}
	if changed {
		r.queueChanged()
	}
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

// pick chooses a replica for q, or nil; d.mu held.
func (d *deployment) pick(q *request, now time.Time) *replica {
	d.loads = d.loads[:0]
	for _, p := range d.replicas {
		l := p.load()
		if p.draining || l >= p.max || now.Before(p.unreachable) || q.triedReplica(p) {
			l = p2c.Ineligible
		}
		d.loads = append(d.loads, l)
	}
	i := p2c.Pick(d.loads, rand.IntN)
	if i < 0 {
		return nil
	}
	return d.replicas[i]
}

func (q *request) triedReplica(p *replica) bool {
	return slices.Contains(q.tried, p)
}

// sendLocked marks q in flight at p and returns the message to publish
// (after d.mu is released); d.mu held.
func (r *Router) sendLocked(q *request, p *replica, now time.Time) *nats.Msg {
	q.state = stateInflight
	q.rep = p
	q.attempts++
	q.round++
	q.tried = append(q.tried, p)
	q.sent = now
	q.probed = 0
	p.inflight++
	q.prev, q.next = p.tail, nil
	if p.tail != nil {
		p.tail.next = q
	} else {
		p.head = q
	}
	p.tail = q
	if !q.counted {
		q.counted = true
		q.d.m.fulfillment.Observe(float64(now.Sub(q.start).Microseconds()) / 1000)
	}
	tok := r.token.Add(1)
	q.token = tok
	q.reply = r.inbox + "." + strconv.FormatUint(tok, 10)
	r.pendMu.Lock()
	r.pending[tok] = q
	r.pendMu.Unlock()
	q.msg.Header.Set(protocol.HdrAttempt, strconv.Itoa(q.attempts))
	return &nats.Msg{Subject: p.subject, Reply: q.reply, Header: q.msg.Header, Data: q.msg.Data}
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
	if q.prev != nil {
		q.prev.next = q.next
	} else {
		p.head = q.next
	}
	if q.next != nil {
		q.next.prev = q.prev
	} else {
		p.tail = q.prev
	}
	q.prev, q.next, q.rep = nil, nil, nil
	p.inflight--
	if p.inflight == 0 && !p.routable {
		d.retired = slices.DeleteFunc(d.retired, func(x *replica) bool { return x == p })
	}
}

type sendOp struct {
	q   *request
	msg *nats.Msg
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
func (r *Router) sendAll(ops []sendOp, changed bool) {
	for len(ops) > 0 {
		op := ops[0]
		ops = ops[1:]
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
	q.prev, q.next = d.tail, nil
	if d.tail != nil {
		d.tail.next = q
	} else {
		d.head = q
	}
	d.tail = q
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

// unqueue removes q from the queue; d.mu held.
func (d *deployment) unqueue(q *request) {
	if q.prev != nil {
		q.prev.next = q.next
	} else {
		d.head = q.next
	}
	if q.next != nil {
		q.next.prev = q.prev
	} else {
		d.tail = q.prev
	}
	q.prev, q.next = nil, nil
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
		out = append(out, sendOp{q, r.sendLocked(q, p, now)})
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
	d.m.retries(why).Inc()
	if !q.deadline.IsZero() && !now.Before(q.deadline) {
		q.state = stateDone
		return nil, &failure{q, http.StatusGatewayTimeout, protocol.ErrTimeout, "request timed out", false}, false
	}
	if q.round < r.o.MaxAttempts && d.head == nil {
		if np := d.pick(q, now); np != nil {
			return []sendOp{{q, r.sendLocked(q, np, now)}}, nil, false
		}
	}
	if !d.requeueFrontLocked(q) {
		q.state = stateDone
		return nil, &failure{q, http.StatusServiceUnavailable, protocol.ErrQueueFull,
			"too many requests queued for " + d.app + "/" + d.name, true}, false
	}
	return nil, nil, true
}

// noResponders handles an owned q whose send found nothing subscribed at
// its replica: q never got there, so it is retried; and the replica's
// subscription is gone, so the replica is lost — unless the router has
// just reconnected, when the replica's worker may be reconnecting too.
func (r *Router) noResponders(q *request) {
	d := q.d
	now := r.o.Now()
	d.mu.Lock()
	p := q.rep
	d.releaseRep(q)
	var fails []failure
	var ops []sendOp
	if r.inReconnectGrace(now) {
		p.unreachable = now.Add(r.o.UnreachableBackoff)
	} else {
		fails, ops = r.loseLocked(d, p, "is gone (no responders)", now)
	}
	more, f, changed := r.retryLocked(d, q, retryUnreachable, now)
	d.mu.Unlock()
	if f != nil {
		fails = append(fails, *f)
	}
	r.emit(fails, append(ops, more...), changed || len(ops) > 0)
}

func (r *Router) inReconnectGrace(now time.Time) bool {
	at := r.reconnected.Load()
	return at != 0 && now.Sub(time.Unix(0, at)) < reconnectGrace
}

// retrySafe reports whether q may run twice: an RFC 9110 idempotent
// method or an Idempotency-Key header, and not a streamed call (its
// chunks may have reached the caller already).
func retrySafe(q *request) bool {
	h := q.msg.Header
	if h.Get(protocol.HdrStream) != "" {
		return false
	}
	if h.Get(protocol.HdrHTTPPrefix+"Idempotency-Key") != "" {
		return true
	}
	switch h.Get(protocol.HdrMethod) {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete, http.MethodTrace:
		return true
	}
	return false
}

// loseLocked declares p lost: it is routed to no more, and every request
// of this router it holds is retried (when safe) or failed 503
// replica_lost. It returns the failures and messages to send after d.mu
// is released. d.mu held.
func (r *Router) loseLocked(d *deployment, p *replica, why string, now time.Time) ([]failure, []sendOp) {
	if p.lost {
		return nil, nil
	}
	p.lost = true
	r.o.Log.Warn().Str("app", d.app).Str("deployment", d.name).Str("replica_id", p.id).Int("in_flight", p.inflight).
		Msg("replica " + why + ": its requests are retried or failed")
	r.unrouteLocked(d, p)
	r.dropProbe(p)
	var fails []failure
	var ops []sendOp
	for q := p.head; q != nil; {
		next := q.next
		if r.own(q) {
			d.releaseRep(q)
			fs, os := r.lostRequestLocked(d, q, "replica "+p.id+" of "+d.app+"/"+d.name+" "+why+" while holding the request", now)
			fails, ops = append(fails, fs...), append(ops, os...)
		}
		q = next
	}
	return fails, append(ops, r.releaseLocked(d, now)...)
}

// lostRequestLocked handles an owned request whose replica lost it:
// retried when safe, else failed replica_lost. d.mu held.
func (r *Router) lostRequestLocked(d *deployment, q *request, why string, now time.Time) ([]failure, []sendOp) {
	if retrySafe(q) {
		ops, f, _ := r.retryLocked(d, q, retryLost, now)
		if f != nil {
			return []failure{*f}, nil
		}
		return nil, ops
	}
	q.state = stateDone
	unsafe := q.msg.Header.Get(protocol.HdrMethod) + " without an Idempotency-Key"
	if q.msg.Header.Get(protocol.HdrStream) != "" {
		unsafe = "a streamed call"
	}
	return []failure{{q, http.StatusServiceUnavailable, protocol.ErrReplicaLost,
		why + "; not retried (" + unsafe + "): it may or may not have run", true}}, nil
}

// unrouteLocked stops routing to p; it stays known (retired) while it
// holds requests of this router. d.mu held.
func (r *Router) unrouteLocked(d *deployment, p *replica) {
	if p.routable {
		p.routable = false
		delete(d.byID, p.key)
		if i := slices.Index(d.replicas, p); i >= 0 {
			d.replicas = slices.Delete(d.replicas, i, i+1)
		}
		if p.inflight > 0 && !p.lost {
			d.retired = append(d.retired, p)
		}
	}
	if p.lost || p.inflight == 0 {
		d.retired = slices.DeleteFunc(d.retired, func(x *replica) bool { return x == p })
	}
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
	r.active.Add(-1)
}

// SetReplica records a replica's KV record: RUNNING replicas are routed
// to; STARTING ones make the deployment wait for them; anything else
// removes it from routing. A FAILED replica is probed at once about the
// requests it may hold.
func (r *Router) SetReplica(info protocol.ReplicaInfo) {
	d := r.deployment(depKey(info.App, info.Deployment))
	now := r.o.Now()
	key := protocol.Token(info.ID)
	d.mu.Lock()
	if info.State == protocol.ReplicaStarting {
		d.starting[key] = true
	} else {
		delete(d.starting, key)
	}
	p := d.byID[key]
	if info.State != protocol.ReplicaRunning {
		var probe *nats.Msg
		if p != nil {
			r.unrouteLocked(d, p)
			if info.State != protocol.ReplicaStopping { // a drain answers what it holds
				probe = r.probeLocked(p, now, true)
			}
		}
		d.mu.Unlock()
		r.publishProbe(probe)
		return
	}
	added := false
	if p == nil {
		if i := slices.IndexFunc(d.retired, func(x *replica) bool { return x.key == key }); i >= 0 {
			p = d.retired[i] // back (e.g. its record expired during an outage)
			d.retired = slices.Delete(d.retired, i, i+1)
		} else {
			subj := info.Subject
			if subj == "" {
				subj = r.o.Names.ReplicaSubject(info.ID)
			}
			p = &replica{id: info.ID, key: key, subject: subj + "." + protocol.EndpointCall, d: d}
		}
		p.routable = true
		d.byID[key] = p
		d.replicas = append(d.replicas, p)
		added = true
	}
	p.seen = now
	oldMax := p.max
	p.max = info.MaxOngoingRequests
	if p.max <= 0 {
		p.max = config.DefaultMaxOngoingRequests
	}
	var ops []sendOp
	if added || p.max > oldMax {
		ops = r.releaseLocked(d, now)
	}
	d.mu.Unlock()
	r.sendAll(ops, len(ops) > 0)
}

// DeleteReplicaKey removes the replica stored under a Replicas bucket key
// ("<app>.<dep>.<id>" tokens): its record was deleted or expired. It is
// probed at once about the requests it may hold.
func (r *Router) DeleteReplicaKey(key string) {
	i := strings.LastIndexByte(key, '.')
	if i < 0 {
		return
	}
	r.depMu.RLock()
	d := r.deps[key[:i]]
	r.depMu.RUnlock()
	if d == nil {
		return
	}
	id := key[i+1:]
	d.mu.Lock()
	delete(d.starting, id)
	p := d.byID[id]
	if p == nil {
		if j := slices.IndexFunc(d.retired, func(x *replica) bool { return x.key == id }); j >= 0 {
			p = d.retired[j]
		}
	}
	var probe *nats.Msg
	if p != nil {
		r.unrouteLocked(d, p)
		probe = r.probeLocked(p, r.o.Now(), true)
	}
	d.mu.Unlock()
	r.publishProbe(probe)
}

// SetLoad records a replica's load report and releases queued requests
// if it freed capacity.
func (r *Router) SetLoad(rep protocol.LoadReport) {
	r.depMu.RLock()
	d := r.deps[depKey(rep.App, rep.Deployment)]
	r.depMu.RUnlock()
	if d == nil {
		return
	}
	d.mu.Lock()
	p := d.byID[protocol.Token(rep.ReplicaID)]
	if p == nil {
		d.mu.Unlock()
		return
	}
	before := p.load()
	wasDraining := p.draining
	p.reported = rep.Ongoing
	p.draining = rep.Draining
	if rep.Max > 0 {
		p.max = rep.Max
	}
	var ops []sendOp
	if d.head != nil && !p.draining && (p.load() < before || wasDraining) && p.load() < p.max {
		ops = r.releaseLocked(d, r.o.Now())
	}
	d.mu.Unlock()
	r.sendAll(ops, len(ops) > 0)
}

// SetConfig applies the serve config: per-deployment limits, and which
// deployments exist (requests for others are answered 404 from now on,
// and those queued for a deployment removed from it are failed).
func (r *Router) SetConfig(cfg config.ServeConfig) {
	in := map[string]bool{}
	for _, a := range cfg.Applications {
		for _, dc := range a.Deployments {
			key := depKey(a.Name, dc.Name)
			in[key] = true
			d := r.deployment(key)
			d.mu.Lock()
			d.inConfig = true
			d.maxQueued = dc.MaxQueuedRequests
			if d.maxQueued == 0 {
				d.maxQueued = config.DefaultMaxQueuedRequests
			}
			d.timeout = dc.RequestTimeout.D()
			d.mu.Unlock()
		}
	}
	r.configLoaded.Store(true)
	for _, d := range r.snapshot() {
		if in[d.key] {
			continue
		}
		d.mu.Lock()
		d.inConfig = false
		var fails []failure
		if len(d.replicas) == 0 && len(d.starting) == 0 {
			fails = d.failQueueLocked(http.StatusNotFound, protocol.ErrNotFound,
				fmt.Sprintf("deployment %s/%s was removed from the applied config", d.app, d.name), false)
		}
		d.mu.Unlock()
		r.emit(fails, nil, len(fails) > 0)
	}
}

// SetStatus applies the scheduler's status: a deployment whose replicas
// cannot run (target > 0; none RUNNING or STARTING; PENDING with a
// placement reason or FAILED) is unavailable, and requests queued for it
// are failed 503 no_replicas with the reason when that becomes so.
func (r *Router) SetStatus(st protocol.Status) {
	why := map[string]string{}
	for _, a := range st.Applications {
		for _, ds := range a.Deployments {
			if reason := unavailableReason(ds); reason != "" {
				key := depKey(a.Name, ds.Name)
				why[key] = reason
				r.deployment(key)
			}
		}
	}
	for _, d := range r.snapshot() {
		d.mu.Lock()
		before := d.unavailable
		d.unavailable = why[d.key]
		var fails []failure
		if d.unavailable != "" && d.unavailable != before && len(d.replicas) == 0 && len(d.starting) == 0 {
			fails = d.failQueueLocked(http.StatusServiceUnavailable, protocol.ErrNoReplicas, d.cannotRun(), true)
		}
		d.mu.Unlock()
		r.emit(fails, nil, len(fails) > 0)
	}
}

// unavailableReason says why a deployment cannot run, "" when it runs,
// starts, is at zero replicas, or has a replica not yet tried.
func unavailableReason(ds protocol.DeploymentStatus) string {
	if ds.TargetReplicas <= 0 {
		return ""
	}
	var reasons []string
	for _, rs := range ds.Replicas {
		var reason string
		switch rs.State {
		case protocol.ReplicaRunning, protocol.ReplicaStarting:
			return ""
		case protocol.ReplicaPending:
			if rs.Message == "" {
				return "" // not placed yet: no reason to refuse
			}
			reason = "PENDING: " + rs.Message
		case protocol.ReplicaFailed:
			reason = "FAILED: " + rs.Message
		default:
			continue
		}
		if !slices.Contains(reasons, reason) {
			reasons = append(reasons, reason)
		}
	}
	return strings.Join(reasons, "; ")
}

// Sweep is the router's periodic pass (Follow runs it every ProbeAfter/2):
// it probes replicas holding requests for longer than ProbeAfter, counts
// probes that timed out (declaring a replica lost after
// MaxProbeFailures), releases queues that can move (a replica's
// unreachable backoff ended), and — when stale > 0 — stops routing to
// replicas whose record was not refreshed for stale. Only call it with
// stale > 0 while the replica records are known to be current.
func (r *Router) Sweep(stale time.Duration) {
	now := r.o.Now()
	connected := r.o.NC.IsConnected()
	for _, d := range r.snapshot() {
		var probes []*nats.Msg
		var fails []failure
		var ops []sendOp
		d.mu.Lock()
		if stale > 0 {
			for _, p := range slices.Clone(d.replicas) {
				if now.Sub(p.seen) > stale {
					r.unrouteLocked(d, p)
					p.probeNow = true
				}
			}
		}
		for _, p := range append(slices.Clone(d.replicas), d.retired...) {
			if p.inflight == 0 || p.lost {
				continue
			}
			if !connected {
				r.dropProbe(p) // no answer can come; nothing counts
				continue
			}
			if p.probeTok != 0 && now.Sub(p.probeSent) >= r.o.Liveness.ProbeTimeout {
				r.dropProbe(p)
				p.probeFails++
				if p.probeFails >= r.o.Liveness.MaxProbeFailures {
					fs, os := r.loseLocked(d, p, fmt.Sprintf("stopped answering (%d probes unanswered for %v each)",
						p.probeFails, r.o.Liveness.ProbeTimeout), now)
					fails, ops = append(fails, fs...), append(ops, os...)
					continue
				}
			}
			if m := r.probeLocked(p, now, p.probeNow || !p.routable); m != nil {
				probes = append(probes, m)
			}
		}
		if d.head != nil {
			ops = append(ops, r.releaseLocked(d, now)...)
		}
		d.mu.Unlock()
		for _, m := range probes {
			r.publishProbe(m)
		}
		r.emit(fails, ops, len(ops) > 0)
	}
}

// probeLocked prepares a probe of p about this router's requests sent
// more than ProbeAfter ago (all of them when all is set), unless one is
// outstanding, none qualifies or p was probed less than ProbeAfter ago.
// d.mu held.
func (r *Router) probeLocked(p *replica, now time.Time, all bool) *nats.Msg {
	if p.probeTok != 0 || p.lost || p.head == nil {
		p.probeNow = p.probeNow || all
		return nil
	}
	after := r.o.Liveness.ProbeAfter
	if !all && now.Sub(p.probeSent) < after {
		return nil
	}
	tok := r.token.Add(1)
	var waiting []string
	for q := p.head; q != nil; q = q.next {
		if !all && now.Sub(q.sent) < after {
			break // sent in order: the rest are younger
		}
		q.probed = tok
		waiting = append(waiting, q.reply)
	}
	if len(waiting) == 0 {
		return nil
	}
	p.probeTok, p.probeSent, p.probeNow = tok, now, false
	r.pendMu.Lock()
	r.probes[tok] = p
	r.pendMu.Unlock()
	return wire.ProbeMsg(p.subject, r.inbox+".p"+strconv.FormatUint(tok, 10), waiting)
}

// dropProbe forgets p's outstanding probe; d.mu held.
func (r *Router) dropProbe(p *replica) {
	if p.probeTok == 0 {
		return
	}
	r.pendMu.Lock()
	delete(r.probes, p.probeTok)
	r.pendMu.Unlock()
	p.probeTok = 0
}

func (r *Router) publishProbe(m *nats.Msg) {
	if m == nil {
		return
	}
	if err := r.o.NC.PublishMsg(m); err != nil {
		r.o.Log.Debug().Err(err).Str("subject", m.Subject).Msg("probe replica")
	}
}

// onProbeAnswer handles a probe's answer: "no responders" loses the
// replica (after the reconnect grace); otherwise every request the probe
// named that the replica no longer holds, and that is still waiting, lost
// its reply (the replica answers probes after the requests sent before
// them, on one connection, so a reply sent earlier was handled already).
func (r *Router) onProbeAnswer(tok uint64, m *nats.Msg) {
	r.pendMu.Lock()
	p := r.probes[tok]
	delete(r.probes, tok)
	r.pendMu.Unlock()
	if p == nil {
		return // timed out already
	}
	d := p.d
	now := r.o.Now()
	var fails []failure
	var ops []sendOp
	d.mu.Lock()
	if p.probeTok != tok {
		d.mu.Unlock()
		return
	}
	p.probeTok = 0
	switch {
	case wire.IsNoResponders(m) && r.inReconnectGrace(now):
		p.probeFails++
	case wire.IsNoResponders(m):
		fails, ops = r.loseLocked(d, p, "is gone (no responders)", now)
	default:
		p.probeFails = 0
		held := wire.ProbeHeld(m)
		for q := p.head; q != nil; {
			next := q.next
			if q.probed == tok && !held[q.reply] && r.own(q) {
				d.releaseRep(q)
				fs, os := r.lostRequestLocked(d, q, "the reply of replica "+p.id+" of "+d.app+"/"+d.name+
					" was lost (the replica no longer holds the request)", now)
				fails, ops = append(fails, fs...), append(ops, os...)
			}
			q = next
		}
		if len(fails)+len(ops) > 0 {
			ops = append(ops, r.releaseLocked(d, now)...)
		}
	}
	d.mu.Unlock()
	r.emit(fails, ops, len(ops) > 0)
}

// Reconnected tells the router that its connection just came back (Follow
// calls it): for a short grace, "no responders" does not prove a replica
// gone.
func (r *Router) Reconnected() { r.reconnected.Store(r.o.Now().UnixNano()) }

func (r *Router) snapshot() []*deployment {
	r.depMu.RLock()
	defer r.depMu.RUnlock()
	ds := make([]*deployment, 0, len(r.deps))
	for _, d := range r.deps {
		ds = append(ds, d)
	}
	return ds
}

// Queued returns the queue length per deployment, keyed "<app>/<deployment>"
// (subject tokens).
func (r *Router) Queued() map[string]int {
	out := map[string]int{}
	for _, d := range r.snapshot() {
		d.mu.Lock()
		out[d.app+"/"+d.name] = d.queued
		d.mu.Unlock()
	}
	return out
}
