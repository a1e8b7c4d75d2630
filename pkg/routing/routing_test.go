package routing_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/testclock"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/pkg/wire/wiretest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	app = "a"
	dep = "d"
)

// harness is one embedded server and a started Router fed by hand (no
// Follow: the test calls SetReplica, SetConfig, SetStatus and Sweep).
type harness struct {
	t     *testing.T
	ns    *server.Server
	names protocol.Names
	r     *routing.Router
	clock *testclock.Clock
}

func newHarness(t *testing.T, ns *server.Server) *harness {
	t.Helper()
	if ns == nil {
		ns = natstest.Server(t)
	}
	return startHarness(t, ns, nil)
}

// startHarness starts a router on ns (with local, its in-process
// replicas, if not nil) and configures the one deployment.
func startHarness(t *testing.T, ns *server.Server, local func(id string) (routing.LocalReplica, bool)) *harness {
	t.Helper()
	names, _ := protocol.NewNames("")
	m, err := routing.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	c := testclock.New(time.Now()) // near real time: request deadlines run on real timers
	r := routing.New(routing.Options{NC: natstest.Conn(t, ns), Names: names, Log: zerolog.New(zerolog.NewTestWriter(t)), Metrics: m, Now: c.Now,
		Liveness: routing.Liveness{ProbeAfter: 500 * time.Millisecond, ProbeTimeout: 2 * time.Second, MaxProbeFailures: 3},
		Local:    local})
	if err := r.Start(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Drain(ctx)
	})
	h := &harness{t: t, ns: ns, names: names, r: r, clock: c}
	h.config(-1, 0)
	return h
}

// config applies a config with the one deployment.
func (h *harness) config(maxQueued int, timeout time.Duration) {
	h.r.SetConfig(config.ServeConfig{Applications: []config.Application{{Name: app, RoutePrefix: "/a", Ingress: dep,
		Deployments: []config.Deployment{{Name: dep, Handler: "h", MaxQueuedRequests: maxQueued, RequestTimeout: config.Duration(timeout)}}}}})
}

// replica starts a wiretest.Replica on its own connection (its answers
// are its id and its request's length) and sets it RUNNING with max
// ongoing requests.
func (h *harness) replica(id string, max int) *wiretest.Replica {
	h.t.Helper()
	f := wiretest.Start(h.t, natstest.Conn(h.t, h.ns), h.names, id, func(body []byte) []byte {
		return []byte(id + ":" + strconv.Itoa(len(body)))
	})
	h.r.SetReplica(protocol.ReplicaInfo{ID: id, App: app, Deployment: dep, State: protocol.ReplicaRunning,
		MaxOngoingRequests: max, Subject: h.names.ReplicaSubject(id)})
	return f
}

// kill closes f's connection abruptly and waits until the server has
// dropped it (and its subscription), as after kill -9 of its worker.
func (h *harness) kill(f *wiretest.Replica) {
	h.t.Helper()
	before := h.ns.NumClients()
	f.NC.Close()
	waitfor.True(h.t, 10*time.Second, "the server dropped the connection", func() bool { return h.ns.NumClients() < before })
}

type answer struct {
	status int
	code   protocol.ErrorCode
	body   string
	h      nats.Header
}

// dispatch sends a request through the router; the answer arrives on the
// returned channel.
func (h *harness) dispatch(method, body string, hdr http.Header, timeout time.Duration) <-chan answer {
	m := wire.EncodeRequest("", &serve.Request{Method: method, Path: "/", Body: []byte(body), Header: hdr})
	m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(time.Now().Add(timeout).UnixMilli(), 10))
	out := make(chan answer, 1)
	h.r.Dispatch(app, dep, m, func(hd nats.Header, data []byte) {
		resp := wire.DecodeResponse(&nats.Msg{Header: hd, Data: data})
		out <- answer{resp.Status, protocol.ErrorCode(hd.Get(protocol.HdrError)), string(data), hd}
	})
	return out
}

func (h *harness) wait(ch <-chan answer, within time.Duration) answer {
	h.t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(within):
		h.t.Fatalf("no answer within %v", within)
		return answer{}
	}
}

func (h *harness) none(ch <-chan answer, what string) {
	h.t.Helper()
	select {
	case a := <-ch:
		h.t.Fatalf("%s: answered %+v, want no answer yet", what, a)
	case <-time.After(50 * time.Millisecond):
	}
}

// settle advances the clock by probe_after and sweeps, a few times, so
// that a probe is sent, its answer handled, and a gone replica's grace
// passes.
func (h *harness) settle() {
	for range 4 {
		h.clock.Add(600 * time.Millisecond)
		h.r.Sweep(0)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOversizedRequestDoesNotWedge: with max_payload 1 MiB, a 2.5 MB
// request queued behind a busy replica is answered 413 when its turn
// comes, the replica is not blamed, and the request queued behind it is
// served at once.
func TestOversizedRequestDoesNotWedge(t *testing.T) {
	h := newHarness(t, natstest.ServerWith(t, natsembed.Options{MaxPayload: 1 << 20}))
	f := h.replica("r1", 1)
	first := h.dispatch("POST", "hold", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "the first request held", func() bool { return f.Holding() == 1 })
	big := h.dispatch("POST", strings.Repeat("x", 2500*1000), nil, 30*time.Second)
	next := h.dispatch("POST", "next", nil, 30*time.Second)
	h.none(big, "the oversized request while the replica is busy")
	f.Release()
	if a := h.wait(first, 5*time.Second); a.status != 200 {
		t.Fatalf("first = %+v, want 200", a)
	}
	a := h.wait(big, 5*time.Second)
	if a.status != 413 || a.code != protocol.ErrBodyTooLarge || !strings.Contains(a.body, "max_payload of 1048576") {
		t.Errorf("oversized = %+v, want 413 body_too_large naming the max_payload", a)
	}
	if a := h.wait(next, 5*time.Second); a.status != 200 || a.body != "r1:4" {
		t.Errorf("request behind the oversized one = %+v, want 200 r1:4", a)
	}
	for i := range 20 { // and the replica still takes everything
		if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), time.Second); a.status != 200 {
			t.Fatalf("request %d after = %+v, want 200", i, a)
		}
	}
}

// TestQueuedThenExpired: a queued request whose deadline passes is
// answered 504 (replicas exist but are busy), or 503 no_replicas when
// there is none.
func TestQueuedThenExpired(t *testing.T) {
	h := newHarness(t, nil)
	nobody := h.dispatch("POST", "x", nil, 200*time.Millisecond)
	if a := h.wait(nobody, 5*time.Second); a.status != 503 || a.code != protocol.ErrNoReplicas || a.h.Get("Http-Retry-After") == "" {
		t.Errorf("queued with no replica = %+v, want 503 no_replicas with Retry-After", a)
	}
	f := h.replica("r1", 1)
	busy := h.dispatch("POST", "hold", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "held", func() bool { return f.Holding() == 1 })
	q := h.dispatch("POST", "x", nil, 200*time.Millisecond)
	if n := h.r.Queued()[app+"/"+dep]; n != 1 {
		t.Errorf("Queued() = %d, want 1", n)
	}
	if a := h.wait(q, 5*time.Second); a.status != 504 || a.code != protocol.ErrTimeout {
		t.Errorf("queued behind a busy replica = %+v, want 504 timeout", a)
	}
	f.Release()
	h.wait(busy, 5*time.Second)
}

// TestInFlightThenExpired: a request in flight past its deadline is
// answered 504 and its slot freed for the next one.
func TestInFlightThenExpired(t *testing.T) {
	h := newHarness(t, nil)
	f := h.replica("r1", 1)
	a := h.wait(h.dispatch("POST", "hold", nil, 200*time.Millisecond), 5*time.Second)
	if a.status != 504 || a.code != protocol.ErrTimeout {
		t.Errorf("in flight past the deadline = %+v, want 504", a)
	}
	f.Release()
	if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 {
		t.Errorf("next = %+v, want 200 (slot freed)", a)
	}
}

// TestRetriedOnFullReplica: replica_full is retried on another replica.
func TestRetriedOnFullReplica(t *testing.T) {
	h := newHarness(t, nil)
	full := natstest.Conn(t, h.ns)
	_, err := full.Subscribe(h.names.ReplicaSubject("full")+".call", func(m *nats.Msg) {
		r := wire.ErrorMsg(503, protocol.ErrReplicaFull, "full")
		r.Subject = m.Reply
		_ = full.PublishMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = full.Flush()
	h.r.SetReplica(protocol.ReplicaInfo{ID: "full", App: app, Deployment: dep, State: protocol.ReplicaRunning, MaxOngoingRequests: 10})
	h.replica("ok", 10)
	for range 10 {
		if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 || a.body != "ok:1" {
			t.Fatalf("answer = %+v, want 200 from the replica with room", a)
		}
	}
}

// TestLostReplicaNoResponders: a replica's connection closes while it
// holds requests; the probe (sent by the sweep once they are outstanding
// for probe_after) gets "no responders": idempotent requests are retried
// on the other replica, the others answered 503 replica_lost — and a new
// request to it is retried at once.
func TestLostReplicaNoResponders(t *testing.T) {
	h := newHarness(t, nil)
	dying := h.replica("dying", 10)
	get := h.dispatch("GET", "hold", nil, 30*time.Second)
	keyed := h.dispatch("POST", "hold", http.Header{"Idempotency-Key": {"k"}}, 30*time.Second)
	post := h.dispatch("POST", "hold", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "three held", func() bool { return dying.Holding() == 3 })
	h.replica("ok", 10).NoHold.Store(true)
	h.kill(dying)

	h.r.Sweep(0) // too young to probe
	h.none(post, "before probe_after")
	h.settle()
	for name, ch := range map[string]<-chan answer{"GET": get, "keyed POST": keyed} {
		if a := h.wait(ch, 5*time.Second); a.status != 200 || a.body != "ok:4" {
			t.Errorf("%s = %+v, want 200 retried on ok", name, a)
		}
	}
	a := h.wait(post, 5*time.Second)
	if a.status != 503 || a.code != protocol.ErrReplicaLost || a.h.Get("Http-Retry-After") == "" || !strings.Contains(a.body, "dying") {
		t.Errorf("POST = %+v, want 503 replica_lost naming the replica, with Retry-After", a)
	}
}

// TestStreamedCallNotRetried: a streamed call's chunks may have reached
// the caller: even a GET is answered replica_lost, not re-run.
func TestStreamedCallNotRetried(t *testing.T) {
	h := newHarness(t, nil)
	dying := h.replica("dying", 10)
	m := wire.EncodeRequest("", &serve.Request{Method: "GET", Path: "/", Body: []byte("hold")})
	m.Header.Set(protocol.HdrStream, "_INBOX.somewhere")
	m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(time.Now().Add(30*time.Second).UnixMilli(), 10))
	out := make(chan answer, 1)
	h.r.Dispatch(app, dep, m, func(hd nats.Header, data []byte) {
		out <- answer{code: protocol.ErrorCode(hd.Get(protocol.HdrError)), body: string(data)}
	})
	waitfor.True(t, 10*time.Second, "held", func() bool { return dying.Holding() == 1 })
	h.replica("ok", 10).NoHold.Store(true)
	h.kill(dying)
	h.settle()
	if a := h.wait(out, 5*time.Second); a.code != protocol.ErrReplicaLost {
		t.Errorf("streamed GET = %+v, want replica_lost", a)
	}
}

// TestLostReplicaStopsAnswering: a replica that answers no probe is lost
// after max_probe_failures probes each timed out.
func TestLostReplicaStopsAnswering(t *testing.T) {
	h := newHarness(t, nil)
	f := h.replica("hung", 10)
	f.Deaf.Store(true)
	post := h.dispatch("POST", "hold", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "held", func() bool { return f.Holding() == 1 })
	h.clock.Add(600 * time.Millisecond)
	for i := range 3 {
		h.r.Sweep(0) // sends a probe (the first time) or times one out and sends the next
		h.none(post, "probe "+strconv.Itoa(i+1)+" outstanding")
		h.clock.Add(2100 * time.Millisecond)
	}
	h.r.Sweep(0) // the third probe times out
	if a := h.wait(post, 5*time.Second); a.status != 503 || a.code != protocol.ErrReplicaLost || !strings.Contains(a.body, "stopped answering") {
		t.Errorf("POST = %+v, want 503 replica_lost (stopped answering)", a)
	}
}

// TestLostReply: the replica answers probes but no longer holds a request
// whose reply never came: it is answered (retried when idempotent).
func TestLostReply(t *testing.T) {
	h := newHarness(t, nil)
	f := h.replica("lossy", 10)
	post := h.dispatch("POST", "drop", nil, 30*time.Second)
	get := h.dispatch("GET", "drop", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "both received", func() bool { return f.Calls.Load() == 2 })
	h.clock.Add(600 * time.Millisecond)
	h.r.Sweep(0)
	a := h.wait(post, 5*time.Second)
	if a.status != 503 || a.code != protocol.ErrReplicaLost || !strings.Contains(a.body, "reply") {
		t.Errorf("POST = %+v, want 503 replica_lost (reply lost)", a)
	}
	// The GET was retried — on the same replica, the only one.
	waitfor.True(t, 10*time.Second, "the GET sent again", func() bool { return f.Calls.Load() == 3 })
	h.none(get, "the retried GET (dropped again, not yet probed)")
}

// TestHeldRequestNotLost: a replica that answers probes and still holds
// the request keeps it, however long it runs.
func TestHeldRequestNotLost(t *testing.T) {
	h := newHarness(t, nil)
	f := h.replica("slow", 10)
	post := h.dispatch("POST", "hold", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "held", func() bool { return f.Holding() == 1 })
	for range 5 {
		h.clock.Add(time.Second)
		h.r.Sweep(0)
		h.none(post, "a held request")
	}
	f.Release()
	if a := h.wait(post, 5*time.Second); a.status != 200 {
		t.Errorf("POST = %+v, want 200", a)
	}
}

// TestNoRespondersOnSendLosesReplica: a request sent to a replica whose
// subscription is gone is retried at once on another (it never got
// there), and the replica is routed to no more.
func TestNoRespondersOnSendLosesReplica(t *testing.T) {
	h := newHarness(t, nil)
	h.r.SetReplica(protocol.ReplicaInfo{ID: "ghost", App: app, Deployment: dep, State: protocol.ReplicaRunning, MaxOngoingRequests: 10})
	ok := h.replica("ok", 10)
	for range 20 {
		if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 || a.body != "ok:1" {
			t.Fatalf("answer = %+v, want 200 from ok", a)
		}
	}
	if ok.Calls.Load() != 20 {
		t.Errorf("ok calls = %d, want 20", ok.Calls.Load())
	}
}

// TestReconnectGrace: right after the router's connection came back, "no
// responders" does not prove a replica gone (its worker may be
// reconnecting): the replica is skipped for the backoff, not lost.
func TestReconnectGrace(t *testing.T) {
	h := newHarness(t, nil)
	f := h.replica("r1", 10)
	post := h.dispatch("POST", "hold", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "held", func() bool { return f.Holding() == 1 })
	h.kill(f)
	h.r.Reconnected()
	h.clock.Add(600 * time.Millisecond)
	h.r.Sweep(0)
	h.none(post, "no responders within the reconnect grace")
	h.clock.Add(reconnectGrace)
	h.settle()
	if a := h.wait(post, 5*time.Second); a.code != protocol.ErrReplicaLost {
		t.Errorf("POST after the grace = %+v, want replica_lost", a)
	}
}

const reconnectGrace = 2 * time.Second

// TestStaleReplicaDroppedOnlyWhenCurrent: Sweep(stale) stops routing to a
// replica whose record was not refreshed; Sweep(0) (records not current,
// e.g. during a NATS outage) never does.
func TestStaleReplicaDroppedOnlyWhenCurrent(t *testing.T) {
	h := newHarness(t, nil)
	h.replica("r1", 10)
	sweepLater := func(stale time.Duration) { // a minute after the record was seen
		h.clock.Add(time.Minute)
		h.r.Sweep(stale)
		h.clock.Add(-time.Minute) // back, for the requests' real-time deadlines
	}
	sweepLater(0)
	if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 {
		t.Fatalf("after Sweep(0) = %+v, want 200", a)
	}
	sweepLater(8 * time.Second)
	if a := h.wait(h.dispatch("POST", "x", nil, 200*time.Millisecond), 5*time.Second); a.code != protocol.ErrNoReplicas {
		t.Errorf("after Sweep(8s) = %+v, want no_replicas (dropped)", a)
	}
}

// TestNotFoundAndCannotRun: 404 for a deployment absent from the config;
// 503 no_replicas naming the reason while the status says it cannot run,
// queued requests failed when that appears; held while STARTING.
func TestNotFoundAndCannotRun(t *testing.T) {
	h := newHarness(t, nil)
	m := wire.EncodeRequest("", &serve.Request{Method: "POST", Path: "/"})
	out := make(chan answer, 1)
	h.r.Dispatch(app, "nope", m, func(hd nats.Header, data []byte) {
		out <- answer{status: wire.DecodeResponse(&nats.Msg{Header: hd}).Status, code: protocol.ErrorCode(hd.Get(protocol.HdrError)), body: string(data)}
	})
	if a := h.wait(out, time.Second); a.status != 404 || a.code != protocol.ErrNotFound {
		t.Errorf("unknown deployment = %+v, want 404 not_found", a)
	}

	status := func(rs ...protocol.ReplicaStatus) protocol.Status {
		return protocol.Status{Applications: map[string]protocol.AppStatus{app: {Name: app,
			Deployments: map[string]protocol.DeploymentStatus{dep: {Name: dep, TargetReplicas: 1, Replicas: rs}}}}}
	}
	h.r.SetStatus(status(protocol.ReplicaStatus{ID: "x", State: protocol.ReplicaStarting}))
	queued := h.dispatch("POST", "x", nil, 30*time.Second)
	h.none(queued, "a deployment whose replica is STARTING")
	h.r.SetStatus(status(protocol.ReplicaStatus{ID: "x", State: protocol.ReplicaPending, Message: `no worker matches labels {"zone":"mars"}`}))
	a := h.wait(queued, time.Second)
	if a.status != 503 || a.code != protocol.ErrNoReplicas || !strings.Contains(a.body, "zone") {
		t.Errorf("queued when the reason appears = %+v, want 503 no_replicas naming it", a)
	}
	a = h.wait(h.dispatch("POST", "x", nil, 30*time.Second), time.Second)
	if a.status != 503 || a.code != protocol.ErrNoReplicas || !strings.Contains(a.body, "PENDING: no worker matches") {
		t.Errorf("new request = %+v, want 503 no_replicas at once", a)
	}
	// A RUNNING replica wins over a stale status.
	h.replica("r1", 10)
	if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 {
		t.Errorf("with a running replica = %+v, want 200", a)
	}
}

// TestDrainedReplicaStillAnswers: a replica's subscription leaves the
// server (drained on the way out) while it still works on a request; a
// request sent then gets "no responders" and is retried, and the request
// it holds is answered by it — not failed as lost.
func TestDrainedReplicaStillAnswers(t *testing.T) {
	h := newHarness(t, nil)
	f := h.replica("leaving", 10)
	held := h.dispatch("POST", "hold", nil, 30*time.Second)
	waitfor.True(t, 10*time.Second, "held", func() bool { return f.Holding() == 1 })
	if err := f.Sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if err := f.NC.Flush(); err != nil { // the server has dropped the interest
		t.Fatal(err)
	}
	next := h.dispatch("POST", "x", nil, 30*time.Second)
	h.none(next, "no replica left to retry on")
	f.Release()
	if a := h.wait(held, 5*time.Second); a.status != 200 || a.body != "leaving:4" {
		t.Errorf("held request = %+v, want 200 from the leaving replica", a)
	}
	h.replica("ok", 10)
	if a := h.wait(next, 5*time.Second); a.status != 200 || a.body != "ok:1" {
		t.Errorf("retried request = %+v, want 200 from ok", a)
	}
	h.settle()
}

// TestDrain: Drain returns as soon as the last request in flight was
// answered — not at its context's end — and, when the context ends
// first, answers what is left 503 unavailable.
func TestDrain(t *testing.T) {
	t.Run("waits for the answers", func(t *testing.T) {
		h := newHarness(t, nil)
		f := h.replica("r1", 4)
		held := h.dispatch("POST", "hold", nil, 30*time.Second)
		waitfor.True(t, 10*time.Second, "the replica holds the request", func() bool { return f.Holding() == 1 })
		drained := make(chan time.Duration, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			t0 := time.Now()
			h.r.Drain(ctx)
			drained <- time.Since(t0)
		}()
		select {
		case <-drained:
			t.Fatal("Drain returned while a request was in flight")
		case <-time.After(100 * time.Millisecond):
		}
		f.Release()
		if a := h.wait(held, 5*time.Second); a.status != http.StatusOK {
			t.Fatalf("held request answered %+v, want 200", a)
		}
		select {
		case d := <-drained:
			if d > 10*time.Second {
				t.Errorf("Drain took %v: it waited for its context, not for the answer", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Drain did not return after the last answer")
		}
		if n := h.r.Active(); n != 0 {
			t.Errorf("Active() = %d after Drain, want 0", n)
		}
	})
	t.Run("context ends first", func(t *testing.T) {
		h := newHarness(t, nil)
		f := h.replica("r1", 4)
		held := h.dispatch("POST", "hold", nil, 30*time.Second)
		waitfor.True(t, 10*time.Second, "the replica holds the request", func() bool { return f.Holding() == 1 })
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		h.r.Drain(ctx)
		if a := h.wait(held, 5*time.Second); a.status != http.StatusServiceUnavailable || a.code != protocol.ErrUnavailable {
			t.Fatalf("request left at the drain's end answered %+v, want 503 unavailable", a)
		}
	})
}

// TestPinnedOnlyReplicaGetsNoRequests: a replica kept after a rolling
// update for its version's pinned workflow runs (pinned_only) is taken
// out of routing; requests go to the others, and to it again once it is
// an ordinary replica.
func TestPinnedOnlyReplicaGetsNoRequests(t *testing.T) {
	h := newHarness(t, nil)
	h.replica("old", 10)
	h.replica("new", 10)
	h.r.SetReplica(protocol.ReplicaInfo{ID: "old", App: app, Deployment: dep, State: protocol.ReplicaRunning,
		MaxOngoingRequests: 10, Subject: h.names.ReplicaSubject("old"), PinnedOnly: true})
	for i := range 20 {
		if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 || a.body != "new:1" {
			t.Fatalf("request %d = %+v, want 200 from the replica that is not pinned-only", i, a)
		}
	}
	h.r.SetReplica(protocol.ReplicaInfo{ID: "new", App: app, Deployment: dep, State: protocol.ReplicaStopping,
		MaxOngoingRequests: 10, Subject: h.names.ReplicaSubject("new")})
	h.r.SetReplica(protocol.ReplicaInfo{ID: "old", App: app, Deployment: dep, State: protocol.ReplicaRunning,
		MaxOngoingRequests: 10, Subject: h.names.ReplicaSubject("old")})
	if a := h.wait(h.dispatch("POST", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 || a.body != "old:1" {
		t.Fatalf("request once it is routable again = %+v, want 200 from it", a)
	}
}

// A replica's route report and its full report arrive on two
// subscriptions, so an older one may be handled after a newer one: the
// older is ignored. Here r1's newer report says idle and its older one
// full; r2 is busier than idle: the request goes to r1.
func TestOlderLoadReportIgnored(t *testing.T) {
	h := newHarness(t, nil)
	h.replica("r1", 5)
	h.replica("r2", 5)
	now := time.Now()
	h.r.SetLoad(protocol.LoadReport{ReplicaID: "r2", App: app, Deployment: dep, Ongoing: 4, Max: 5, At: now})
	h.r.SetLoad(protocol.LoadReport{ReplicaID: "r1", App: app, Deployment: dep, Ongoing: 0, Max: 5, At: now})
	h.r.SetLoad(protocol.LoadReport{ReplicaID: "r1", App: app, Deployment: dep, Ongoing: 5, Max: 5, At: now.Add(-time.Millisecond)})
	if a := h.wait(h.dispatch("GET", "x", nil, 5*time.Second), 5*time.Second); a.status != 200 || !strings.HasPrefix(a.body, "r1:") {
		t.Fatalf("answer = %d %q, want 200 from r1 (idle by its newest report)", a.status, a.body)
	}
}
