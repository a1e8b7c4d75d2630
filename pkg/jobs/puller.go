package jobs

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// The puller asks JetStream for jobs, on the jetstream package's pull
// API: exactly as many as the runner has free slots, never more, so that
// no job waits in a client-side buffer of a busy replica (holding its
// lease and a max_running slot) while another replica is idle.
//
//   - One async method (the common case): consume sessions
//     (Consumer.Consume with PullMaxMessages = StopAfter = n) hold the
//     free slots' credit at the server, which hands over a job the moment
//     it is stored. A session re-pulls its remaining credit when a request
//     expires, after a reconnect and when the server's idle heartbeats stop
//     coming; it ends by itself once it delivered its n jobs. Freed slots
//     open a new session once a quarter of the slots are free (at once if
//     no credit is left).
//   - Several methods: a core subscription to the jobs' subjects wakes the
//     runner (Runner.wake), which scans the methods highest priority first
//     (every 4th scan that takes a job lowest first, so low priorities
//     never starve) with
//     one short fetch at a time for its free slots: no-wait, or for the
//     method a wake-up named a fetch of one job that waits hintWait for it
//     if it is not stored yet.
//
// Stopping drains the sessions (jobs already on their way are handed
// back with Nak, never stranded until their lease runs out) and waits for
// the scan's fetch, which ends within hintWait.
//
// The puller belongs to one goroutine (run's); the consume callbacks
// only hand jobs over on a channel.
const (
	pullExpiry    = 30 * time.Second       // a waiting request's life
	pullHeartbeat = 5 * time.Second        // idle heartbeats of a waiting request
	hintWait      = 10 * time.Millisecond  // a woken scan waits this long for a job not yet stored
	drainTimeout  = 10 * time.Second       // bound of a stop's hand-back
	pullTick      = time.Second            // errors are retried, sessions pruned, scans re-run this often
	pullRetry     = 250 * time.Millisecond // pause of a method after a failed pull
	handBackPause = 500 * time.Millisecond // pause of a method's scans after a job was handed back
)

// pullMethod is one async method as the puller sees it.
type pullMethod struct {
	idx      int
	name     string
	priority int
	cons     jetstream.Consumer
}

// delivery is a job the puller took a slot for.
type delivery struct {
	m   *pullMethod
	msg jetstream.Msg
}

// session is one consume session: credit for want jobs.
type session struct {
	m      *pullMethod
	want   int
	got    int          // jobs the loop took from it
	handed atomic.Int32 // jobs its callback handed over
	cc     jetstream.ConsumeContext
}

// arrival is a message of a session, handed from its callback.
type arrival struct {
	s   *session
	msg jetstream.Msg
}

// scan is the multi-method scan in progress.
type scan struct {
	wakes     int // puller.wakes when it started
	order     []*pullMethod
	cursor    int
	batch     jetstream.MessageBatch // the fetch in flight; nil between fetches
	delivered bool                   // the fetch in flight delivered a job
	picked    bool                   // some fetch of this scan delivered a job
}

type puller struct {
	log     zerolog.Logger
	slots   *Slots
	methods []*pullMethod
	// byPrio is highest priority first (stable: declaration order among
	// equals); lowFirst its reverse.
	byPrio, lowFirst []*pullMethod

	in       chan arrival // from the sessions' callbacks
	sessions []*session
	paused   map[int]time.Time // method index → no pulls until then (after an error)
	stopping bool
	// handedBack names methods whose job the runner handed back for a
	// replica of another version (nil: none are).
	handedBack <-chan int

	scan   *scan // nil when no scan runs
	rescan bool  // a scan is due
	hint   int   // method a wake-up named, -1 if none
	wakes  int   // wake-ups so far: a scan keeps a hint that came after it started
	scans  int   // scans that took a job: every 4th goes lowest priority first
}

func newPuller(log zerolog.Logger, slots *Slots, methods []*pullMethod) *puller {
	byPrio := slices.Clone(methods)
	slices.SortStableFunc(byPrio, func(a, b *pullMethod) int { return b.priority - a.priority })
	lowFirst := slices.Clone(byPrio)
	slices.Reverse(lowFirst)
	return &puller{
		log: log, slots: slots, methods: methods, byPrio: byPrio, lowFirst: lowFirst,
		in: make(chan arrival, slots.Size()+64), paused: map[int]time.Time{}, rescan: true, hint: -1,
	}
}

func (p *puller) single() bool { return len(p.methods) == 1 }

// run pulls until ctx ends, calling start for every job it took a slot
// for (start must not block; the job's slot is released by whoever ran
// it). wake names a method a job was just published to. On the way out
// it hands back what still arrives and returns once no callback can run
// any more.
func (p *puller) run(ctx context.Context, wake <-chan int, start func(delivery)) {
	tick := time.NewTicker(pullTick)
	defer tick.Stop()
	for {
		p.refill(time.Now())
		var scanned <-chan jetstream.Msg
		if p.scan != nil && p.scan.batch != nil {
			scanned = p.scan.batch.Messages()
		}
		select {
		case a := <-p.in:
			p.arrive(a, start)
		case msg, ok := <-scanned:
			if ok {
				p.scanned(msg, start)
			} else {
				p.scanEnded(time.Now())
			}
		case <-p.slots.freed:
			p.rescan = true
		case idx := <-wake:
			p.hint, p.rescan = idx, true
			p.wakes++
		case idx := <-p.handedBack:
			// A job of idx was handed back for a replica of another
			// version: scans skip idx for a while, so that another
			// runner's scan takes it.
			p.paused[idx] = time.Now().Add(handBackPause)
		case <-tick.C:
			p.prune()
			p.rescan = true
		case <-ctx.Done():
			p.drain()
			return
		}
	}
}

// credit is how many jobs the live sessions may still deliver.
func (p *puller) credit() int {
	n := 0
	for _, s := range p.sessions {
		n += s.want - s.got
	}
	return n
}

func (p *puller) isPaused(m *pullMethod, now time.Time) bool {
	until, ok := p.paused[m.idx]
	return ok && now.Before(until)
}

func (p *puller) pause(m *pullMethod, err error, now time.Time) {
	p.log.Debug().Err(err).Str("method", m.name).Msg("pull jobs")
	p.paused[m.idx] = now.Add(pullRetry)
}

// refill asks for the jobs the free slots call for.
func (p *puller) refill(now time.Time) {
	free := p.slots.Free()
	if p.stopping || free <= 0 {
		return
	}
	if p.single() {
		m := p.methods[0]
		credit := p.credit()
		want := free - credit
		if want > 0 && (credit == 0 || want >= max(1, p.slots.Size()/4)) && !p.isPaused(m, now) {
			p.consume(m, want, now)
		}
		return
	}
	if p.scan != nil || !p.rescan {
		return
	}
	p.rescan = false
	order := p.byPrio
	if p.scans%4 == 3 {
		order = p.lowFirst
	}
	p.scan = &scan{order: order, wakes: p.wakes}
	p.scanNext(now)
}

// consume opens a session for n jobs of m.
func (p *puller) consume(m *pullMethod, n int, now time.Time) {
	s := &session{m: m, want: n}
	cc, err := m.cons.Consume(func(msg jetstream.Msg) {
		s.handed.Add(1)
		p.in <- arrival{s: s, msg: msg}
	},
		jetstream.PullMaxMessages(n), jetstream.StopAfter(n),
		jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			p.log.Debug().Err(err).Str("method", m.name).Msg("job pull session")
		}))
	if err != nil {
		p.pause(m, err, now)
		return
	}
	s.cc = cc
	p.sessions = append(p.sessions, s)
}

// arrive takes a session's job: a slot for it, or back it goes.
func (p *puller) arrive(a arrival, start func(delivery)) {
	s := a.s
	if s.got >= s.want { // beyond its credit (a request duplicated by a reconnect)
		_ = a.msg.Nak()
		return
	}
	s.got++
	if s.got == s.want {
		p.drop(s) // it stops by itself
	}
	p.take(s.m, a.msg, start)
}

// take starts msg in a free slot, or hands it back at once.
func (p *puller) take(m *pullMethod, msg jetstream.Msg, start func(delivery)) {
	if p.stopping || !p.slots.take() {
		_ = msg.Nak()
		return
	}
	start(delivery{m: m, msg: msg})
}

func (p *puller) drop(s *session) {
	p.sessions = slices.DeleteFunc(p.sessions, func(x *session) bool { return x == s })
}

// prune forgets the credit of sessions that ended before delivering all
// they asked for (an error stopped them: the consumer was deleted, say);
// their method waits a moment before it is pulled again. A session is
// forgotten once the loop took every job it handed over.
func (p *puller) prune() {
	now := time.Now()
	p.sessions = slices.DeleteFunc(p.sessions, func(s *session) bool {
		if !isClosed(s.cc) {
			return false
		}
		if handed := int(s.handed.Load()); handed < s.want { // (its callbacks are over once closed)
			p.pause(s.m, errors.New("pull session ended early"), now)
			s.want = handed
		}
		return s.got >= s.want
	})
}

// scanNext fetches from the method at the cursor (or the next one not
// paused); past the last method the scan ends.
func (p *puller) scanNext(now time.Time) {
	sc := p.scan
	for ; sc.cursor < len(sc.order); sc.cursor++ {
		m := sc.order[sc.cursor]
		if p.isPaused(m, now) {
			continue
		}
		free := p.slots.Free()
		if free <= 0 {
			break
		}
		var b jetstream.MessageBatch
		var err error
		if m.idx == p.hint {
			// One job, waited for: the fetch ends as soon as it came, so
			// a wake-up for another method (a workflow's job and the run
			// awaiting it) is not held behind the wait; the rescan that
			// follows a delivery fetches the rest without waiting.
			b, err = m.cons.Fetch(1, jetstream.FetchMaxWait(hintWait))
		} else {
			b, err = m.cons.FetchNoWait(free)
		}
		if err != nil {
			p.pause(m, err, now)
			continue
		}
		sc.batch, sc.delivered = b, false
		return
	}
	p.endScan()
}

// endScan ends the scan; a wake-up that came while it ran keeps its hint
// unless a job of its method came since (its job may not have been
// stored when the scan passed its method: the next scan waits for it).
func (p *puller) endScan() {
	if p.scan != nil && p.scan.wakes == p.wakes {
		p.hint = -1
	}
	if p.scan != nil && p.scan.picked {
		// Only a scan that took a job counts toward the every-4th
		// lowest-first one: an empty scan (a wake-up whose job was taken
		// already, a tick) would shift the cadence by timing.
		p.scans++
	}
	p.scan = nil
}

// scanned takes a job the scan's fetch delivered.
func (p *puller) scanned(msg jetstream.Msg, start func(delivery)) {
	sc := p.scan
	sc.delivered, sc.picked = true, true
	if sc.order[sc.cursor].idx == p.hint {
		p.hint = -1 // the job it was woken for (or one of its method's) came
	}
	p.take(sc.order[sc.cursor], msg, start)
}

// scanEnded moves the scan on once its fetch ended: back to the top if
// it delivered jobs (there may be more), else to the next method.
func (p *puller) scanEnded(now time.Time) {
	sc := p.scan
	m := sc.order[sc.cursor]
	if err := sc.batch.Error(); err != nil {
		p.pause(m, err, now)
	}
	sc.batch = nil
	if p.stopping {
		p.scan = nil
		return
	}
	if sc.delivered && p.slots.Free() > 0 {
		p.endScan()
		p.rescan = true
		return
	}
	sc.cursor++
	p.scanNext(now)
}

// drain stops pulling: every session is drained (the server forgets its
// requests) and the scan's fetch is awaited; what still arrives is
// handed back. It returns once no consume callback can run any more, or
// after drainTimeout.
func (p *puller) drain() {
	p.stopping = true
	for _, s := range p.sessions {
		s.cc.Drain()
	}
	timeout := time.NewTimer(drainTimeout)
	defer timeout.Stop()
	for {
		p.sessions = slices.DeleteFunc(p.sessions, func(s *session) bool { return isClosed(s.cc) })
		var scanned <-chan jetstream.Msg
		if p.scan != nil && p.scan.batch != nil {
			scanned = p.scan.batch.Messages()
		}
		if len(p.sessions) == 0 && scanned == nil {
			p.handBack()
			return
		}
		var closed <-chan struct{}
		if len(p.sessions) > 0 {
			closed = p.sessions[0].cc.Closed()
		}
		select {
		case a := <-p.in:
			_ = a.msg.Nak()
		case msg, ok := <-scanned:
			if ok {
				_ = msg.Nak()
			} else {
				p.scan = nil
			}
		case <-closed:
		case <-timeout.C:
			for _, s := range p.sessions {
				s.cc.Stop()
			}
			p.sessions, p.scan = nil, nil
			p.handBack()
			return
		}
	}
}

func isClosed(cc jetstream.ConsumeContext) bool {
	select {
	case <-cc.Closed():
		return true
	default:
		return false
	}
}

// handBack naks what the callbacks left in the channel.
func (p *puller) handBack() {
	for {
		select {
		case a := <-p.in:
			_ = a.msg.Nak()
		default:
			return
		}
	}
}
