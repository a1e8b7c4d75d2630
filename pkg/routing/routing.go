// Package routing is jetserve's request router as a library: it picks a
// replica for each sync request by power-of-two-choices on live load,
// forwards the request to the replica's call endpoint and hands the reply
// back verbatim. The router service runs it on the route subjects (queue
// group, for deployment handles and any NATS caller); the ingress embeds
// one and dispatches in-process (Dispatch, Caller), so an HTTP request
// costs one NATS round trip to the replica, like Ray Serve's per-proxy
// router. Follow keeps a Router fed with replicas, load reports and the
// applied config. max_queued_requests is therefore per router, as in Ray
// (per caller).
//
// No goroutine is started per request. The route subscription's callback
// picks and publishes (with a reply subject on the router's own inbox); the
// inbox subscription's callback relays the replica's answer, or retries on
// replica_full / draining / no responders. Requests that find no free
// replica wait in a per-deployment FIFO queue bounded by
// max_queued_requests and are released when load reports, completions or new
// replicas free capacity. A per-request timer enforces the deadline
// (the caller's Jetserve-Deadline or the deployment's request_timeout).
//
// Concurrency: every method of Router is safe for concurrent use. Each
// deployment's state is guarded by its own mutex; the table of in-flight
// requests by another, never held while taking a deployment's.
package routing

import (
	"fmt"
	"math/rand/v2"
	"net/http"
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
	// skipped (default 1s).
	UnreachableBackoff time.Duration
	// OnQueueChange, if set, is called (without locks held) whenever a
	// deployment's queue length changed; it must not block.
	OnQueueChange func()
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Router routes requests; build it with New, then Start.
type Router struct {
	o           Options
	routePrefix string // "<prefix>.route."
	inbox       string // reply subjects are inbox + "." + token

	depMu sync.RWMutex
	deps  map[string]*deployment // guarded by depMu; key "<app token>.<dep token>"

	pendMu  sync.Mutex
	pending map[uint64]*request // guarded by pendMu: requests sent to a replica
	token   atomic.Uint64

	active atomic.Int64 // requests accepted and not yet answered

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
	return &Router{
		o:           o,
		routePrefix: strings.TrimSuffix(o.Names.RouteWildcard(), "*.*"),
		inbox:       o.NC.NewInbox(),
		deps:        map[string]*deployment{},
		pending:     map[uint64]*request{},
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
	r.depMu.RLock()
	ds := make([]*deployment, 0, len(r.deps))
	for _, d := range r.deps {
		ds = append(ds, d)
	}
	r.depMu.RUnlock()
	for _, d := range ds {
		d.mu.Lock()
		var out []*request
		for q := d.head; q != nil; q = q.next {
			out = append(out, q)
		}
		for _, q := range out {
			d.unqueue(q)
			q.state = stateDone
		}
		d.mu.Unlock()
		for _, q := range out {
			r.fail(q, http.StatusServiceUnavailable, protocol.ErrUnavailable, "router shutting down", false)
		}
	}
	r.pendMu.Lock()
	var out []*request
	for t, q := range r.pending {
		delete(r.pending, t)
		out = append(out, q)
	}
	r.pendMu.Unlock()
	for _, q := range out {
		q.d.mu.Lock()
		q.state = stateDone
		q.rep.inflight--
		q.d.mu.Unlock()
		r.fail(q, http.StatusServiceUnavailable, protocol.ErrUnavailable, "router shutting down", false)
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
	attempts int      // total sends, for HdrAttempt
	round    int      // sends in this dispatch round
	triedBuf [4]*replica
	tried    []*replica // replicas tried in this round
	state    int
	counted  bool   // fulfillment time observed
	model    string // multiplexed model id (protocol.HdrModelID); "" none

	prev, next *request // queue links
}

type replica struct {
	id      string
	subject string // the call subject
	max     int
	// reported is the last ongoing count the replica reported.
	reported int
	// inflight is this router's requests outstanding at the replica.
	inflight    int
	draining    bool
	unreachable time.Time // skip until then
	seen        time.Time // last KV put
	// models are the multiplexed model ids it last reported (sorted);
	// sent the ids this router sent it since (see models.go).
	models []string
	sent   []sentModel
}

func (p *replica) load() int { return max(p.reported, p.inflight) }

type deployment struct {
	key, app, name string
	m              depMetrics

	mu        sync.Mutex
	replicas  []*replica          // guarded by mu: RUNNING replicas
	byID      map[string]*replica // guarded by mu
	maxQueued int                 // guarded by mu; <0 unlimited
	timeout   time.Duration       // guarded by mu; request_timeout, 0 none
	head      *request            // guarded by mu: FIFO queue
	tail      *request
	queued    int
	loads     []int // scratch for the picker, guarded by mu
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
	d = &deployment{key: key, app: app, name: name, byID: map[string]*replica{}, maxQueued: -1,
		m: r.o.Metrics.forDeployment(app, name)}
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
	q := &request{msg: m, d: d, start: now, done: done, model: m.Header.Get(protocol.HdrModelID)}
	q.tried = q.triedBuf[:0]
	d.m.requests.Inc()
	r.active.Add(1)

	d.mu.Lock()
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
			out := r.sendLocked(q, p)
			d.mu.Unlock()
			r.publish(q, out)
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
	for _, t := range q.tried {
		if t == p {
			return true
		}
	}
	return false
}

// sendLocked marks q in flight at p and returns the message to publish
// (after d.mu is released); d.mu held.
func (r *Router) sendLocked(q *request, p *replica) *nats.Msg {
	q.state = stateInflight
	q.rep = p
	q.attempts++
	q.round++
	q.tried = append(q.tried, p)
	p.inflight++
	if q.model != "" {
		p.noteSent(q.model, r.o.Now())
	}
	if !q.counted {
		q.counted = true
		q.d.m.fulfillment.Observe(float64(r.o.Now().Sub(q.start).Microseconds()) / 1000)
	}
	tok := r.token.Add(1)
	q.token = tok
	r.pendMu.Lock()
	r.pending[tok] = q
	r.pendMu.Unlock()
	q.msg.Header.Set(protocol.HdrAttempt, strconv.Itoa(q.attempts))
	return &nats.Msg{
		Subject: p.subject,
		Reply:   r.inbox + "." + strconv.FormatUint(tok, 10),
		Header:  q.msg.Header,
		Data:    q.msg.Data,
	}
}

func (r *Router) publish(q *request, out *nats.Msg) {
	if err := r.o.NC.PublishMsg(out); err != nil {
		r.o.Log.Warn().Err(err).Str("subject", out.Subject).Msg("forward request")
		tok, _ := strconv.ParseUint(out.Reply[len(r.inbox)+1:], 10, 64)
		r.pendMu.Lock()
		_, mine := r.pending[tok]
		delete(r.pending, tok)
		r.pendMu.Unlock()
		if mine {
			r.retry(q, retryUnreachable)
		}
	}
}

// enqueueLocked appends q to the queue; reject reports that the queue is
// full. d.mu held.
func (d *deployment) enqueueLocked(q *request) (changed, reject bool) {
	if d.maxQueued >= 0 && d.queued >= d.maxQueued {
		q.state = stateDone
		return false, true
	}
	q.state = stateQueued
	q.rep = nil
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
		out = append(out, sendOp{q, r.sendLocked(q, p)})
	}
	return out
}

type sendOp struct {
	q   *request
	msg *nats.Msg
}

func (r *Router) sendAll(ops []sendOp, changed bool) {
	for _, op := range ops {
		r.publish(op.q, op.msg)
	}
	if changed || len(ops) > 0 {
		r.queueChanged()
	}
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
)

func (rr retryReason) String() string {
	switch rr {
	case retryFull:
		return string(protocol.ErrReplicaFull)
	case retryDraining:
		return string(protocol.ErrDraining)
	}
	return "no_responders"
}

// onReply handles a replica's answer on the router inbox.
func (r *Router) onReply(m *nats.Msg) {
	i := strings.LastIndexByte(m.Subject, '.')
	tok, err := strconv.ParseUint(m.Subject[i+1:], 10, 64)
	if err != nil {
		return
	}
	r.pendMu.Lock()
	q := r.pending[tok]
	delete(r.pending, tok)
	r.pendMu.Unlock()
	if q == nil {
		return // answered already (deadline passed)
	}
	if isNoResponders(m) {
		r.retry(q, retryUnreachable)
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
	p.inflight--
	if p.reported > 0 {
		// Our request was very likely counted in the last report.
		p.reported--
	}
	q.state = stateDone
	ops := r.releaseLocked(d, now)
	d.mu.Unlock()
	r.finish(q, m.Header, m.Data)
	r.sendAll(ops, false)
}

func isNoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header != nil && m.Header.Get("Status") == "503"
}

// retry sends q to another replica after a retryable failure at q.rep, or
// queues it when the round's attempts are used up or no replica has room.
// The caller owns q (took it out of pending).
func (r *Router) retry(q *request, why retryReason) {
	d := q.d
	now := r.o.Now()
	d.m.retries(why).Inc()
	d.mu.Lock()
	p := q.rep
	p.inflight--
	switch why {
	case retryFull:
		p.reported = max(p.reported, p.max) // full until it reports otherwise
	case retryDraining:
		p.draining = true
	case retryUnreachable:
		p.unreachable = now.Add(r.o.UnreachableBackoff)
	}
	if !q.deadline.IsZero() && !now.Before(q.deadline) {
		q.state = stateDone
		d.mu.Unlock()
		r.fail(q, http.StatusGatewayTimeout, protocol.ErrTimeout, "request timed out", false)
		return
	}
	if q.round < r.o.MaxAttempts && d.head == nil {
		if np := d.pick(q, now); np != nil {
			out := r.sendLocked(q, np)
			d.mu.Unlock()
			r.publish(q, out)
			return
		}
	}
	// Queue it at the front: it arrived before anything queued now.
	q.tried, q.round = q.triedBuf[:0], 0
	if d.maxQueued >= 0 && d.queued >= d.maxQueued {
		q.state = stateDone
		d.mu.Unlock()
		r.rejectFull(q)
		return
	}
	q.state = stateQueued
	q.rep = nil
	q.prev, q.next = nil, d.head
	if d.head != nil {
		d.head.prev = q
	} else {
		d.tail = q
	}
	d.head = q
	d.queued++
	d.m.queued.Set(float64(d.queued))
	d.mu.Unlock()
	r.queueChanged()
}

// expire runs when q's deadline passes.
func (r *Router) expire(q *request) {
	d := q.d
	d.mu.Lock()
	switch q.state {
	case stateQueued:
		d.unqueue(q)
		q.state = stateDone
		noReplicas := len(d.replicas) == 0
		d.mu.Unlock()
		r.queueChanged()
		if noReplicas {
			r.fail(q, http.StatusServiceUnavailable, protocol.ErrNoReplicas, "no running replica of "+d.app+"/"+d.name, false)
		} else {
			r.fail(q, http.StatusGatewayTimeout, protocol.ErrTimeout, "request timed out waiting for a replica", false)
		}
		return
	case stateInflight:
		r.pendMu.Lock()
		mine := r.pending[q.token] == q
		if mine {
			delete(r.pending, q.token)
		}
		r.pendMu.Unlock()
		if !mine {
			d.mu.Unlock()
			return // the reply is being handled
		}
		q.rep.inflight--
		q.state = stateDone
		ops := r.releaseLocked(d, r.o.Now())
		d.mu.Unlock()
		r.fail(q, http.StatusGatewayTimeout, protocol.ErrTimeout, "request timed out", false)
		r.sendAll(ops, false)
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
	if rid := q.msg.Header.Get(protocol.HdrRequestID); rid != "" {
		em.Header.Set(protocol.HdrRequestID, rid)
	}
	r.o.Log.Debug().Str("app", q.d.app).Str("deployment", q.d.name).
		Str("request_id", q.msg.Header.Get(protocol.HdrRequestID)).Str("code", string(code)).Msg(msg)
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

// SetReplica records a replica's KV state: RUNNING replicas are routed to,
// anything else (or deleted == true) removes it.
func (r *Router) SetReplica(info protocol.ReplicaInfo, deleted bool) {
	d := r.deployment(depKey(info.App, info.Deployment))
	now := r.o.Now()
	d.mu.Lock()
	p := d.byID[info.ID]
	if deleted || info.State != protocol.ReplicaRunning {
		if p != nil {
			delete(d.byID, info.ID)
			d.removeReplica(p)
		}
		d.mu.Unlock()
		return
	}
	added := false
	if p == nil {
		subj := info.Subject
		if subj == "" {
			subj = r.o.Names.ReplicaSubject(info.ID)
		}
		p = &replica{id: info.ID, subject: subj + "." + protocol.EndpointCall}
		d.byID[info.ID] = p
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
	r.sendAll(ops, false)
}

// DeleteReplicaKey removes the replica stored under a Replicas bucket key
// ("<app>.<dep>.<id>" tokens), for deletes and expiry markers that carry no
// value.
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
	defer d.mu.Unlock()
	for _, p := range d.replicas {
		if protocol.Token(p.id) == id {
			delete(d.byID, p.id)
			d.removeReplica(p)
			return
		}
	}
}

func (d *deployment) removeReplica(p *replica) {
	for i, x := range d.replicas {
		if x == p {
			d.replicas = append(d.replicas[:i], d.replicas[i+1:]...)
			d.replicas[len(d.replicas):cap(d.replicas)][0] = nil
			return
		}
	}
}

// ExpireReplicas drops replicas whose KV record was not refreshed for ttl.
func (r *Router) ExpireReplicas(ttl time.Duration) {
	now := r.o.Now()
	for _, d := range r.snapshot() {
		d.mu.Lock()
		for _, p := range append([]*replica(nil), d.replicas...) {
			if now.Sub(p.seen) > ttl {
				delete(d.byID, p.id)
				d.removeReplica(p)
			}
		}
		d.mu.Unlock()
	}
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
	p := d.byID[rep.ReplicaID]
	if p == nil {
		d.mu.Unlock()
		return
	}
	before := p.load()
	wasDraining := p.draining
	p.reported = rep.Ongoing
	p.draining = rep.Draining
	p.setModels(rep.Models, r.o.Now())
	if rep.Max > 0 {
		p.max = rep.Max
	}
	var ops []sendOp
	if d.head != nil && !p.draining && (p.load() < before || wasDraining) && p.load() < p.max {
		ops = r.releaseLocked(d, r.o.Now())
	}
	d.mu.Unlock()
	r.sendAll(ops, false)
}

// SetConfig applies the serve config's per-deployment limits.
func (r *Router) SetConfig(cfg config.ServeConfig) {
	for _, a := range cfg.Applications {
		for _, dc := range a.Deployments {
			d := r.deployment(depKey(a.Name, dc.Name))
			d.mu.Lock()
			d.maxQueued = dc.MaxQueuedRequests
			if d.maxQueued == 0 {
				d.maxQueued = config.DefaultMaxQueuedRequests
			}
			d.timeout = dc.RequestTimeout.D()
			d.mu.Unlock()
		}
	}
}

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
