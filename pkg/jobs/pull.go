package jobs

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// How a Runner pulls. All its pull requests name one inbox subscription
// (reply "<inbox>.<request id>"), so pulling costs one message each way and
// no subscription churn, and the runner asks for exactly as many jobs as it
// has free slots (no client-side buffer that would strand jobs on a busy
// replica). Jobs arrive on their own subjects, so credit is counted per
// method; the status message that ends a request names the request.
//
//   - One async method (the common case): waiting pull requests hold the
//     free slots' credit at the server, which hands over a job the moment
//     it is stored. A freed slot is re-requested once a quarter of the
//     slots are free (at once if no credit is left).
//   - Several methods: a core subscription to the jobs' subjects wakes the
//     runner, which scans the methods highest priority first (every 4th
//     scan lowest first, so low priorities never starve) with no-wait
//     requests for its free slots.
//
// Draining drains the inbox subscription: the server drops waiting
// requests nobody listens to any more, and a job already on its way is
// handed back (Nak), never stranded until its lease runs out.
const (
	pullExpiry = 10 * time.Second      // a waiting request's life
	pullGrace  = 2 * time.Second       // then it is forgotten (lost in a reconnect)
	hintWait   = 50 * time.Millisecond // a woken scan waits this long for a job not yet stored
)

// pullRequest is a JetStream pull request ($JS.API.CONSUMER.MSG.NEXT).
type pullRequest struct {
	Batch   int           `json:"batch"`
	Expires time.Duration `json:"expires,omitempty"`
	NoWait  bool          `json:"no_wait,omitempty"`
}

// pullReq is one outstanding pull request.
type pullReq struct {
	m        *runMethod
	wait     bool // a waiting request, not a scan's no-wait one
	deadline time.Time
}

// puller is the state of Run's loop; only Run's goroutine touches it.
type puller struct {
	r                *Runner
	methods          []*runMethod
	byPrio, lowFirst []*runMethod
	single           bool
	byStream         map[string]*runMethod
	inbox            string
	slots            *Slots              // shared with the replica's other runners
	reqs             map[string]*pullReq // by reply subject
	credit           []int               // jobs requested and not yet delivered, by method index
	nextID           uint64
	paused           map[int]bool // methods not pulled until the next tick (after an error)
	reconnects       uint64
	stopping         bool

	// Scans (several methods): one no-wait request in flight at a time.
	scanning  bool
	rescan    bool
	order     []*runMethod
	cursor    int
	hint      int  // method a wake-up named, -1 if none
	delivered bool // the current scan request delivered a job
	scans     int
}

// forget drops the requests of method m and their credit (they ended in a
// way that does not say how many jobs they still owed).
func (p *puller) forget(m *runMethod) {
	for k, q := range p.reqs {
		if q.m == m {
			delete(p.reqs, k)
		}
	}
	p.credit[m.idx] = 0
}

// refill sends the pull requests the free slots call for.
func (p *puller) refill() {
	free := p.slots.Free()
	if p.stopping || free <= 0 {
		return
	}
	if p.single {
		m := p.methods[0]
		credit := p.credit[0]
		want := free - credit
		if want > 0 && (credit == 0 || want >= max(1, p.slots.Size()/4)) && !p.paused[m.idx] {
			p.send(m, want, pullExpiry, false)
		}
		return
	}
	if p.scanning || !p.rescan {
		return
	}
	p.rescan = false
	p.order = p.byPrio
	if p.scans%4 == 3 {
		p.order = p.lowFirst
	}
	p.scans++
	p.cursor = 0
	p.scanning, p.delivered = true, false
	p.scanNext()
}

// scanNext asks the method at the cursor (or the next not paused one) for
// the free slots; past the last method the scan ends.
func (p *puller) scanNext() {
	for ; p.cursor < len(p.order); p.cursor++ {
		m := p.order[p.cursor]
		if p.paused[m.idx] {
			continue
		}
		var wait time.Duration
		if m.idx == p.hint {
			wait = hintWait
		}
		if p.send(m, p.slots.Free(), wait, true) {
			return
		}
	}
	p.scanning, p.hint = false, -1
}

func (p *puller) send(m *runMethod, n int, expires time.Duration, noWait bool) bool {
	p.nextID++
	reply := p.inbox + "." + strconv.FormatUint(p.nextID, 10)
	b, _ := json.Marshal(pullRequest{Batch: n, Expires: expires, NoWait: noWait})
	if err := p.r.nc.PublishRequest(m.api, reply, b); err != nil {
		p.r.log.Debug().Err(err).Str("method", m.cfg.Name).Msg("pull jobs")
		p.paused[m.idx] = true
		return false
	}
	p.reqs[reply] = &pullReq{m: m, wait: !noWait, deadline: time.Now().Add(expires + pullGrace)}
	p.credit[m.idx] += n
	return true
}

// receive handles a message on the inbox: a job (returned to be started,
// or nil if it was handed back) or the status that ends a request.
func (p *puller) receive(msg *nats.Msg) (*runMethod, *nats.Msg) {
	if status := msg.Header.Get("Status"); status != "" && len(msg.Data) == 0 {
		q := p.reqs[msg.Subject]
		if q == nil || status == "100" {
			return nil, nil // a forgotten request's end, or a heartbeat
		}
		delete(p.reqs, msg.Subject)
		i := q.m.idx
		if n, err := strconv.Atoi(msg.Header.Get("Nats-Pending-Messages")); err == nil {
			p.credit[i] = max(p.credit[i]-n, 0) // a waiting request expired owing n
		} else if !q.wait {
			p.credit[i] = 0 // a scan request: the only one of its method in flight
		} else {
			p.forget(q.m)
		}
		if status != "404" && status != "408" {
			p.r.log.Debug().Str("method", q.m.cfg.Name).Str("status", status).Str("description", msg.Header.Get("Description")).Msg("pull jobs")
			p.paused[i] = true
		}
		if !q.wait && p.scanning {
			if p.delivered && p.slots.Free() > 0 {
				p.rescan = true // it had jobs: there may be more, start from the top
				p.scanning, p.hint = false, -1
			} else {
				p.cursor++
				p.scanNext()
			}
		}
		return nil, nil
	}
	var m *runMethod
	if md, err := msg.Metadata(); err == nil {
		m = p.byStream[md.Stream]
	}
	if m != nil {
		p.credit[m.idx] = max(p.credit[m.idx]-1, 0)
		if p.scanning && p.order[p.cursor] == m {
			p.delivered = true
			if p.credit[m.idx] == 0 { // the scan request was filled: no status follows
				p.forgetScan(m)
				p.scanning, p.hint = false, -1
				p.rescan = true
			}
		}
	}
	if m == nil || p.stopping || !p.slots.take() {
		_ = msg.Nak() // hand it back at once
		return nil, nil
	}
	return m, msg
}

// forgetScan drops the filled scan request of m.
func (p *puller) forgetScan(m *runMethod) {
	for k, q := range p.reqs {
		if q.m == m && !q.wait {
			delete(p.reqs, k)
		}
	}
}

// tick forgets requests that outlived their deadline (or the connection
// they were sent on) and lifts pauses.
func (p *puller) tick(now time.Time) {
	if rc := p.r.nc.Stats().Reconnects; rc != p.reconnects {
		p.reconnects = rc
		clear(p.reqs)
		clear(p.credit)
		p.scanning = false
	}
	for _, q := range p.reqs {
		if now.After(q.deadline) {
			p.forget(q.m)
			if !q.wait {
				p.scanning = false
			}
		}
	}
	clear(p.paused)
	p.rescan = true
}
