// Package wiretest is a replica stand-in that speaks the wire protocol on
// a NATS connection of the test's, for tests of what calls replicas (the
// routing library, the router service).
//
// A Replica serves each request on a goroutine of its own; the test's
// cleanup stops it taking requests, releases what it holds and waits for
// those goroutines.
package wiretest

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// Replica answers on a replica's call endpoint: liveness probes with the
// requests it holds (unless Deaf), a request whose body is "hold" once
// Release is called (unless NoHold), one whose body is "drop" never, and
// every other at once, 200 with the body its answer function makes.
type Replica struct {
	ID string
	NC *nats.Conn
	// Sub is its subscription (unsubscribe it to leave as a draining
	// replica does, still answering what it holds).
	Sub *nats.Subscription
	// Deaf ignores probes; NoHold answers "hold" at once too.
	Deaf, NoHold atomic.Bool
	// Calls counts the requests received (probes excluded).
	Calls atomic.Int64

	release chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	mu      sync.Mutex
	held    map[string]bool // guarded by mu: reply subjects of the requests being served
	closing bool            // guarded by mu: the test ends, serve nothing more
}

// Start subscribes a replica id to its call endpoint (names'
// ReplicaSubject) on nc and flushes. answer makes the body of a 200
// answer from a request's body; nil answers id, ":" and the body.
func Start(tb testing.TB, nc *nats.Conn, names protocol.Names, id string, answer func(body []byte) []byte) *Replica {
	tb.Helper()
	if answer == nil {
		answer = func(body []byte) []byte { return []byte(id + ":" + string(body)) }
	}
	r := &Replica{ID: id, NC: nc, release: make(chan struct{}), held: map[string]bool{}}
	tb.Cleanup(func() {
		r.mu.Lock()
		r.closing = true
		r.mu.Unlock()
		r.Release()
		r.wg.Wait()
	})
	var err error
	r.Sub, err = nc.Subscribe(names.ReplicaSubject(id)+"."+protocol.EndpointCall, func(m *nats.Msg) {
		if wire.IsProbe(m) {
			if !r.Deaf.Load() {
				r.mu.Lock()
				a := wire.ProbeAnswer(m, func(s string) bool { return r.held[s] })
				r.mu.Unlock()
				_ = nc.PublishMsg(a)
			}
			return
		}
		r.Calls.Add(1)
		body := string(m.Data)
		if body == "drop" {
			return
		}
		r.mu.Lock()
		if r.closing {
			r.mu.Unlock()
			return
		}
		r.held[m.Reply] = true
		r.wg.Add(1)
		r.mu.Unlock()
		go func() {
			defer r.wg.Done()
			if body == "hold" && !r.NoHold.Load() {
				<-r.release
			}
			out := wire.EncodeResponse(&serve.Response{Status: 200, Body: answer(m.Data)})
			out.Subject = m.Reply
			_ = nc.PublishMsg(out)
			r.mu.Lock()
			delete(r.held, m.Reply)
			r.mu.Unlock()
		}()
	})
	if err != nil {
		tb.Fatalf("subscribe replica %s: %v", id, err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return r
}

// Release answers the requests held and those to come.
func (r *Replica) Release() { r.once.Do(func() { close(r.release) }) }

// Holding counts the requests being served.
func (r *Replica) Holding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

// Echo answers every request on subject (in queue group queue, unless
// "") on nc at once, in the subscription's callback: 200 with the
// request's body. It flushes before it returns; the subscription ends
// with the test. Benchmarks use it as the fastest possible far end.
func Echo(tb testing.TB, nc *nats.Conn, subject, queue string) {
	tb.Helper()
	sub, err := nc.QueueSubscribe(subject, queue, func(m *nats.Msg) {
		out := wire.EncodeResponse(&serve.Response{Status: 200, Body: m.Data})
		out.Subject = m.Reply
		_ = nc.PublishMsg(out)
	})
	if err != nil {
		tb.Fatalf("subscribe %s: %v", subject, err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
}
