package routing

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// Liveness configures how a router finds out that a replica holding its
// requests is gone. koanf tags: services embed it as their `liveness`
// options.
type Liveness struct {
	// ProbeAfter is how long a request may be outstanding at a replica
	// before the router probes the replica (and the least time between two
	// probes of one replica).
	ProbeAfter time.Duration `koanf:"probe_after" help:"probe a replica that holds a request this long"`
	// ProbeTimeout is how long a probe may go unanswered before it counts
	// as failed.
	ProbeTimeout time.Duration `koanf:"probe_timeout" help:"how long a probe waits for its answer"`
	// MaxProbeFailures consecutive failed probes make the replica lost.
	MaxProbeFailures int `koanf:"max_probe_failures" help:"unanswered probes in a row after which a replica is lost"`
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

// noResponders handles an owned q whose send found nothing subscribed at
// its replica: q never got there, so it is retried; and the replica's
// subscription is gone, so the replica is gone (see goneLocked) — unless
// the router has just reconnected, when the replica's worker may be
// reconnecting too: then it is only skipped for a while.
func (r *Router) noResponders(q *request) {
	d := q.d
	now := r.o.Now()
	d.mu.Lock()
	p := q.rep
	d.releaseRep(q)
	if r.inReconnectGrace(now) {
		p.unreachable = now.Add(r.o.UnreachableBackoff)
	} else {
		r.goneLocked(d, p, now)
	}
	ops, f, changed := r.retryLocked(d, q, retryUnreachable, now)
	d.mu.Unlock()
	var fails []failure
	if f != nil {
		fails = append(fails, *f)
	}
	r.emit(fails, ops, changed)
}

// goneLocked records that p's subscription is gone ("no responders"): it
// is routed to no more, and its requests still waiting ProbeAfter later
// are lost (Sweep). Not at once: a subscription drained on the way out
// (micro's Stop, nc.Drain) leaves the server at once while the replica
// still answers what it had received, so those replies can arrive just
// after a "no responders". d.mu held.
func (r *Router) goneLocked(d *deployment, p *replica, now time.Time) {
	if !p.goneAt.IsZero() {
		return
	}
	p.goneAt = now
	r.dropProbe(p)
	r.unrouteLocked(d, p)
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
	how := "unanswered_probes"
	if !p.goneAt.IsZero() {
		how = "no_responders"
	}
	d.m.lost(how).Inc()
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
		if p.local != nil {
			d.locals--
		}
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
			if p.inflight == 0 || p.lost || p.local != nil {
				continue // local replicas answer everything they admitted
			}
			if !p.goneAt.IsZero() {
				if now.Sub(p.goneAt) >= r.o.Liveness.ProbeAfter {
					fs, os := r.loseLocked(d, p, "is gone (no responders)", now)
					fails, ops = append(fails, fs...), append(ops, os...)
				}
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
	if p.local != nil {
		return nil // in this process: never lost
	}
	if p.probeTok != 0 || p.lost || !p.goneAt.IsZero() || p.head == nil {
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
		r.goneLocked(d, p, now)
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
