package routing

import (
	"runtime"
	"sync"

	"github.com/nats-io/nats.go"
)

// outbox holds the router's messages to replicas — requests, cancels and
// probes — on their way out (Router.post).
type outbox struct {
	mu      sync.Mutex
	pending []outMsg // guarded by mu, in the order posted
	posting bool     // guarded by mu: a goroutine is publishing pending
}

// outMsg is a message to a replica; q is the request it carries (nil for
// a cancel or a probe), whose failure to go out is the request's.
type outMsg struct {
	m *nats.Msg
	q *request
}

// post publishes m, in the order of posting: a cancel or a probe never
// overtakes a request posted before it (a replica answers a probe after
// the requests sent before it). The goroutine that finds no other posting
// publishes: it yields once, so that the callers running beside it add
// their messages, and publishes every pending one back to back until none
// is left. The NATS client's flusher then writes them to the socket
// together; published one at a time by each caller's goroutine, which
// parks right after to wait for its answer, each cost a write (a syscall
// and a wake-up of nats-server) of its own. A request whose message
// cannot be published is answered (sendFailed). Call it with no lock
// held.
func (r *Router) post(m *nats.Msg, q *request) {
	o := &r.out
	o.mu.Lock()
	o.pending = append(o.pending, outMsg{m, q})
	if o.posting {
		o.mu.Unlock()
		return
	}
	o.posting = true
	o.mu.Unlock()
	runtime.Gosched()
	var batch []outMsg
	for {
		o.mu.Lock()
		batch, o.pending = o.pending, batch[:0]
		if len(batch) == 0 {
			o.posting = false
			o.mu.Unlock()
			return
		}
		o.mu.Unlock()
		for i, om := range batch {
			batch[i] = outMsg{}
			err := r.o.NC.PublishMsg(om.m)
			switch {
			case err == nil:
			case om.q != nil:
				more, changed := r.sendFailed(om.q, om.m, err)
				r.sendAllFrom(more, changed, nil) // a request among them is posted again
			default:
				r.o.Log.Debug().Err(err).Str("subject", om.m.Subject).Msg("publish to a replica")
			}
		}
	}
}
