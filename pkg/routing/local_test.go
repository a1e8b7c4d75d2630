package routing_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// localFake is a replica in the router's process (routing.LocalReplica):
// it admits up to max requests, holds those whose body is "hold" until
// release or cancel and those whose body is "wait" until cancel, streams
// two chunks when asked, and refuses with refuse when set. A call with a
// caller's context is served on the caller's goroutine.
type localFake struct {
	id        string
	max       int
	release   chan struct{}
	calls     atomic.Int64
	inline    atomic.Int64 // calls served on the caller's goroutine
	cancels   atomic.Int64 // CancelLocal of a held request
	cancelled atomic.Int64 // held requests whose context ended
	wg        sync.WaitGroup

	mu      sync.Mutex
	ongoing int                           // guarded by mu
	held    map[string]context.CancelFunc // guarded by mu
	refuse  protocol.ErrorCode            // guarded by mu
}

func (f *localFake) setRefuse(c protocol.ErrorCode) {
	f.mu.Lock()
	f.refuse = c
	f.mu.Unlock()
}

func (f *localFake) CallLocal(ctx context.Context, m *nats.Msg, chunks func(*nats.Msg) error, done func(*nats.Msg)) protocol.ErrorCode {
	f.mu.Lock()
	if f.refuse != "" {
		c := f.refuse
		f.mu.Unlock()
		return c
	}
	if f.ongoing >= f.max {
		f.mu.Unlock()
		return protocol.ErrReplicaFull
	}
	f.ongoing++
	parent := ctx
	if parent == nil {
		parent = context.Background()
	}
	cctx, cancel := context.WithCancel(parent)
	f.held[m.Reply] = cancel
	f.mu.Unlock()
	f.calls.Add(1)
	body := string(m.Data)
	run := func() {
		var reply *nats.Msg
		switch {
		case body == "hold" || body == "wait":
			release := f.release
			if body == "wait" {
				release = nil
			}
			select {
			case <-release:
				reply = wire.EncodeResponse(&serve.Response{Status: 200, Body: []byte(f.id + ":released")})
			case <-cctx.Done():
				f.cancelled.Add(1)
				reply = wire.EncodeError(cctx.Err())
			}
		case chunks != nil:
			w := wire.NewLocalStreamWriter(chunks)
			_ = w.Write([]byte("one"))
			_ = w.Write([]byte("two"))
			reply = w.Finish(nil)
		default:
			reply = wire.EncodeResponse(&serve.Response{Status: 200, Body: []byte(f.id + ":" + strconv.Itoa(len(body)))})
		}
		f.mu.Lock()
		f.ongoing--
		delete(f.held, m.Reply)
		f.mu.Unlock()
		cancel()
		done(reply)
	}
	if ctx != nil {
		f.inline.Add(1)
		run()
		return ""
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		run()
	}()
	return ""
}

func (f *localFake) CancelLocal(reply string) {
	f.mu.Lock()
	c := f.held[reply]
	f.mu.Unlock()
	if c != nil {
		f.cancels.Add(1)
		c()
	}
}

// newLocalHarness is newHarness with a router that has the local replicas
// locals (registered with SetReplica as RUNNING, max 4 each).
func newLocalHarness(t *testing.T, locals ...*localFake) *harness {
	t.Helper()
	byID := map[string]*localFake{}
	for _, f := range locals {
		f.release, f.held = make(chan struct{}), map[string]context.CancelFunc{}
		byID[f.id] = f
		t.Cleanup(func() {
			select {
			case <-f.release:
			default:
				close(f.release)
			}
			f.wg.Wait()
		})
	}
	h := startHarness(t, natstest.Server(t), func(id string) (routing.LocalReplica, bool) {
		f, ok := byID[id]
		return f, ok
	})
	for _, f := range locals {
		h.r.SetReplica(protocol.ReplicaInfo{ID: f.id, App: app, Deployment: dep, State: protocol.ReplicaRunning,
			MaxOngoingRequests: f.max, Subject: h.names.ReplicaSubject(f.id)})
	}
	return h
}

// TestLocalReplicaPreferredWhenNoMoreLoaded: with a local and a remote
// replica idle, every request goes to the local one, in-process (the
// remote one's subscription sees nothing); once the local one holds more
// requests than the remote one, the next request goes remote.
func TestLocalReplicaPreferredWhenNoMoreLoaded(t *testing.T) {
	loc := &localFake{id: "L", max: 4}
	h := newLocalHarness(t, loc)
	rem := h.replica("R", 4)
	for i := range 20 {
		if a := h.wait(h.dispatch("POST", "x", nil, 10*time.Second), 10*time.Second); a.status != 200 || a.body != "L:1" {
			t.Fatalf("request %d = %d %q, want 200 %q", i, a.status, a.body, "L:1")
		}
	}
	if n := rem.Calls.Load(); n != 0 {
		t.Fatalf("remote replica got %d requests while the local one was idle, want 0", n)
	}
	held := h.dispatch("POST", "hold", nil, 10*time.Second)
	waitfor.True(t, 10*time.Second, "the local replica holds a request", func() bool { return loc.calls.Load() == 21 })
	if a := h.wait(h.dispatch("POST", "yy", nil, 10*time.Second), 10*time.Second); a.body != "R:2" {
		t.Fatalf("request with the local replica busier = %q, want the remote replica's %q", a.body, "R:2")
	}
	close(loc.release)
	if a := h.wait(held, 10*time.Second); a.body != "L:released" {
		t.Fatalf("held request = %q, want %q", a.body, "L:released")
	}
}

// TestLocalRefusalRetriedElsewhere: a local replica that refuses
// replica_full or draining is skipped like a remote one would be, and the
// request is served by the other replica.
func TestLocalRefusalRetriedElsewhere(t *testing.T) {
	for _, code := range []protocol.ErrorCode{protocol.ErrReplicaFull, protocol.ErrDraining, protocol.ErrUnavailable} {
		t.Run(string(code), func(t *testing.T) {
			loc := &localFake{id: "L", max: 4}
			h := newLocalHarness(t, loc)
			rem := h.replica("R", 4)
			loc.setRefuse(code)
			if a := h.wait(h.dispatch("POST", "abc", nil, 10*time.Second), 10*time.Second); a.status != 200 || a.body != "R:3" {
				t.Fatalf("request refused %s locally = %d %q, want 200 %q from the remote replica", code, a.status, a.body, "R:3")
			}
			if loc.calls.Load() != 0 || rem.Calls.Load() != 1 {
				t.Fatalf("calls local %d remote %d, want 0 and 1", loc.calls.Load(), rem.Calls.Load())
			}
		})
	}
}

// TestLocalReplicaNeverProbed: a local replica holding a request long
// past probe_after is not probed and the request is not lost.
func TestLocalReplicaNeverProbed(t *testing.T) {
	loc := &localFake{id: "L", max: 4}
	h := newLocalHarness(t, loc)
	ch := h.dispatch("POST", "hold", nil, 20*time.Second)
	waitfor.True(t, 10*time.Second, "the local replica holds the request", func() bool { return loc.calls.Load() == 1 })
	for range 5 {
		h.settle()
	}
	h.none(ch, "a held local request after many sweeps")
	close(loc.release)
	if a := h.wait(ch, 10*time.Second); a.status != 200 || a.body != "L:released" {
		t.Fatalf("held local request = %d %q, want 200 %q", a.status, a.body, "L:released")
	}
}

// TestCallerCancelsLocalRequest: a Caller's request to a local replica
// is served on the caller's goroutine with the caller's context, so the
// caller leaving cancels the handler; the replica's slot is free again
// after.
func TestCallerCancelsLocalRequest(t *testing.T) {
	loc := &localFake{id: "L", max: 1}
	h := newLocalHarness(t, loc)
	c := serve.NewHandle(h.r.NewCaller(), app, dep)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, &serve.Request{Body: []byte("hold")})
		errc <- err
	}()
	waitfor.True(t, 10*time.Second, "the local replica holds the request", func() bool { return loc.calls.Load() == 1 })
	cancel()
	if err := <-errc; serve.AsError(err).Code != protocol.ErrCancelled {
		t.Fatalf("Call after cancel = %v, want cancelled", err)
	}
	if loc.inline.Load() != 1 || loc.cancelled.Load() != 1 {
		t.Fatalf("served inline %d, handler cancelled %d; want 1 and 1", loc.inline.Load(), loc.cancelled.Load())
	}
	resp, err := c.Call(context.Background(), &serve.Request{Body: []byte("ok")})
	if err != nil || string(resp.Body) != "L:2" {
		t.Fatalf("Call after the cancelled one = %v, %v; want L:2", resp, err)
	}
}

// TestCallerCancelsReleasedLocalRequest: a request that waited in the
// queue and was then sent to a local replica from another goroutine is
// cancelled there (CancelLocal) when its caller leaves.
func TestCallerCancelsReleasedLocalRequest(t *testing.T) {
	loc := &localFake{id: "L", max: 1}
	h := newLocalHarness(t, loc)
	c := serve.NewHandle(h.r.NewCaller(), app, dep)
	first := make(chan error, 1)
	go func() {
		_, err := c.Call(context.Background(), &serve.Request{Body: []byte("hold")})
		first <- err
	}()
	waitfor.True(t, 10*time.Second, "the local replica holds the first request", func() bool { return loc.calls.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, &serve.Request{Body: []byte("wait")})
		second <- err
	}()
	waitfor.True(t, 10*time.Second, "the second request is queued", func() bool { return h.r.Queued()[app+"/"+dep] == 1 })
	close(loc.release)
	if err := <-first; err != nil {
		t.Fatalf("first call = %v", err)
	}
	waitfor.True(t, 10*time.Second, "the second request reaches the replica", func() bool { return loc.calls.Load() == 2 })
	cancel()
	if err := <-second; serve.AsError(err).Code != protocol.ErrCancelled {
		t.Fatalf("second call after cancel = %v, want cancelled", err)
	}
	waitfor.True(t, 10*time.Second, "the replica saw the cancel", func() bool { return loc.cancels.Load() == 1 && loc.cancelled.Load() == 1 })
}

// TestCallerCancelsRemoteRequest: the cancel of a request held by a
// replica over NATS is a message on its call subject naming the request's
// reply subject, sent after the request.
func TestCallerCancelsRemoteRequest(t *testing.T) {
	h := newHarness(t, nil)
	rem := h.replica("R", 4)
	cancels := make(chan *nats.Msg, 4)
	spyNC := natstest.Conn(t, h.ns)
	spy, err := spyNC.ChanSubscribe(h.names.ReplicaSubject("R")+".call", cancels)
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Unsubscribe() //nolint:errcheck
	if err := spyNC.Flush(); err != nil {
		t.Fatal(err)
	}
	c := h.r.NewCaller()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, app, dep, &serve.Request{Method: "POST", Path: "/", Body: []byte("hold")})
		errc <- err
	}()
	var reply string
	select {
	case m := <-cancels:
		reply = m.Reply
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the replica")
	}
	waitfor.True(t, 10*time.Second, "the replica holds the request", func() bool { return rem.Holding() == 1 })
	cancel()
	if err := <-errc; serve.AsError(err).Code != protocol.ErrCancelled {
		t.Fatalf("Call after cancel = %v, want cancelled", err)
	}
	select {
	case m := <-cancels:
		if !wire.IsCancel(m) || wire.CancelTarget(m) != reply {
			t.Fatalf("message after the request = %v %q, want a cancel naming %q", m.Header, m.Data, reply)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no cancel reached the replica's call subject")
	}
}

// TestCallerCancelsQueuedRequest: a request queued for want of a replica
// is dropped when its caller leaves; the queue is empty again.
func TestCallerCancelsQueuedRequest(t *testing.T) {
	h := newHarness(t, nil)
	c := h.r.NewCaller()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, app, dep, &serve.Request{Method: "POST", Path: "/"})
		errc <- err
	}()
	waitfor.True(t, 10*time.Second, "the request is queued", func() bool { return h.r.Queued()[app+"/"+dep] == 1 })
	cancel()
	if err := <-errc; serve.AsError(err).Code != protocol.ErrCancelled {
		t.Fatalf("Call after cancel = %v, want cancelled", err)
	}
	waitfor.True(t, 10*time.Second, "the queue is empty", func() bool { return h.r.Queued()[app+"/"+dep] == 0 })
	if n := h.r.Active(); n != 0 {
		t.Fatalf("Active() = %d after the cancelled request, want 0", n)
	}
}

// TestLocalStream: a streaming call served by a local replica gets its
// chunks in-process, in order.
func TestLocalStream(t *testing.T) {
	loc := &localFake{id: "L", max: 4}
	h := newLocalHarness(t, loc)
	var got serve.StreamRecorder
	err := serve.NewHandle(h.r.NewCaller(), app, dep).Stream(context.Background(), &serve.Request{Path: "/"}, &got)
	if err != nil {
		t.Fatalf("Stream = %v", err)
	}
	if got.Status != http.StatusOK || len(got.Chunks) != 2 || string(got.Chunks[0]) != "one" || string(got.Chunks[1]) != "two" {
		t.Fatalf("Stream = %d %q, want 200 [one two]", got.Status, got.Strings())
	}
}

// TestQueuedFailedWhenTheLastStartingReplicaFails: requests that waited
// for a replica starting in a deployment the status says cannot run
// (a replacement of a FAILED replica) are failed 503 when it fails too,
// though the status does not change.
func TestQueuedFailedWhenTheLastStartingReplicaFails(t *testing.T) {
	h := newHarness(t, nil)
	h.r.SetStatus(protocol.Status{Applications: map[string]protocol.AppStatus{app: {Name: app,
		Deployments: map[string]protocol.DeploymentStatus{dep: {Name: dep, TargetReplicas: 1, Replicas: []protocol.ReplicaStatus{
			{ID: "x1", State: protocol.ReplicaFailed, Message: `handle to unknown deployment "Bee"`}}}}}}})
	h.r.SetReplica(protocol.ReplicaInfo{ID: "x2", App: app, Deployment: dep, State: protocol.ReplicaStarting})
	queued := h.dispatch("POST", "x", nil, 30*time.Second)
	h.none(queued, "a request while a replacement replica starts")
	h.r.SetReplica(protocol.ReplicaInfo{ID: "x2", App: app, Deployment: dep, State: protocol.ReplicaFailed, Message: `handle to unknown deployment "Bee"`})
	a := h.wait(queued, 5*time.Second)
	if a.status != http.StatusServiceUnavailable || a.code != protocol.ErrNoReplicas || !strings.Contains(a.body, "Bee") {
		t.Fatalf("queued request when the replacement failed = %+v, want 503 no_replicas naming the reason", a)
	}
}
