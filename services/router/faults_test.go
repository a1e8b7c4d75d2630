package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/pkg/wire/wiretest"
	"github.com/jetserve/jetserve/services/router"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// startLive starts a replica stand-in on nc that behaves like the
// worker's (wiretest.Replica: it answers the router's liveness probes with
// the requests it holds) and, heartbeat > 0, re-puts its record like a
// worker does. If it holds, requests whose body is "hold" are held until
// Release; others are echoed.
func (e *env) startLive(id string, nc *nats.Conn, kv jetstream.KeyValue, heartbeat time.Duration, holds bool) *wiretest.Replica {
	e.t.Helper()
	r := wiretest.Start(e.t, nc, e.Names, id, nil)
	r.NoHold.Store(!holds)
	put := func() error {
		info := protocol.ReplicaInfo{ID: id, App: app, Deployment: dep, WorkerID: "w1", State: protocol.ReplicaRunning,
			MaxOngoingRequests: 100, Subject: e.Names.ReplicaSubject(id), Heartbeat: time.Now()}
		b, _ := json.Marshal(info)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := kv.Put(ctx, protocol.ReplicaKey(app, dep, "w1", id), b)
		return err
	}
	if err := put(); err != nil {
		e.t.Fatal(err)
	}
	if heartbeat > 0 {
		every(e.t, heartbeat, func() { _ = put() }) // fails while NATS is down, like a worker's
	}
	return r
}

// every calls fn every d, as a worker's heartbeat does, until the test
// ends (its cleanup waits for the last call).
func every(tb testing.TB, d time.Duration, fn func()) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	tb.Cleanup(func() { close(stop); <-done })
}

type callResult struct {
	name    string
	resp    *serve.Response
	err     error
	elapsed time.Duration
}

// callAsync sends one request in the background (again while no router
// is subscribed yet, for up to 10 s).
func (e *env) callAsync(name, method, body string, hdr http.Header, timeout time.Duration, out chan<- callResult) {
	go func() {
		c := wire.NewCaller(e.NC, e.Names)
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			start := time.Now()
			resp, err := c.Call(ctx, app, dep, &serve.Request{Method: method, Path: "/", Body: []byte(body), Header: hdr})
			cancel()
			var se *serve.Error
			if errors.As(err, &se) && se.Code == protocol.ErrUnavailable && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			out <- callResult{name, resp, err, time.Since(start)}
			return
		}
	}()
}

// TestKilledReplicaInFlightAnsweredFast: a replica's connection closes
// abruptly (as when its worker is killed -9) while it holds requests. The
// idempotent ones (GET, and a POST with an Idempotency-Key) are retried on
// the other replica; the plain POST is answered 503 replica_lost with
// Retry-After — all within ~2 s, not at the 30 s request timeout.
func TestKilledReplicaInFlightAnsweredFast(t *testing.T) {
	e := newEnv(t)
	e.putConfig(-1, 30*time.Second)
	dying := e.startLive("dying", natstest.Conn(t, e.NS), e.Buckets.Replicas, 0, true)
	e.startRouter(nil)
	e.waitServing()

	results := make(chan callResult, 3)
	e.callAsync("get", "GET", "hold", nil, 30*time.Second, results)
	e.callAsync("keyed", "POST", "hold", http.Header{"Idempotency-Key": {"k1"}}, 30*time.Second, results)
	e.callAsync("post", "POST", "hold", nil, 30*time.Second, results)
	deadline := time.Now().Add(10 * time.Second)
	for int(dying.Calls.Load()) < 4 { // waitServing's ping + the three
		if time.Now().After(deadline) {
			t.Fatalf("the replica received %d requests, want 4", int(dying.Calls.Load()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.startLive("healthy", natstest.Conn(t, e.NS), e.Buckets.Replicas, 0, false)
	killed := time.Now()
	before := e.NS.NumClients()
	dying.NC.Close()
	for e.NS.NumClients() >= before { // the server dropped it, as after kill -9
		if time.Since(killed) > 10*time.Second {
			t.Fatal("the server never dropped the replica's connection")
		}
		time.Sleep(time.Millisecond)
	}

	got := map[string]callResult{}
	for range 3 {
		select {
		case r := <-results:
			got[r.name] = r
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 3 requests answered 10 s after the replica died: %v", len(got), got)
		}
	}
	for _, name := range []string{"get", "keyed"} {
		r := got[name]
		if r.err != nil || r.resp.Status != 200 || string(r.resp.Body) != "healthy:hold" {
			t.Errorf("%s: Call() = %+v, want 200 from the healthy replica (retried)", name, r)
		}
	}
	if r := got["post"]; r.err != nil || r.resp.Status != 503 || r.resp.Header.Get(protocol.HdrError) != string(protocol.ErrReplicaLost) ||
		r.resp.Header.Get("Retry-After") == "" {
		t.Errorf("post: Call() = %+v, want 503 replica_lost with Retry-After", r)
	}
	if el := time.Since(killed); el > 3*time.Second {
		t.Errorf("answered %v after the replica died, want within ~2 s", el)
	}
}

// TestLostReplyDetected: the replica is alive but a reply never comes
// (here the replica drops it): the router's probe finds the request no
// longer held and answers it (503 replica_lost) instead of waiting for
// the request timeout.
func TestLostReplyDetected(t *testing.T) {
	e := newEnv(t)
	e.putConfig(-1, 30*time.Second)
	nc := natstest.Conn(t, e.NS)
	_, err := nc.Subscribe(e.Names.ReplicaSubject("lossy")+"."+protocol.EndpointCall, func(m *nats.Msg) {
		if wire.IsProbe(m) {
			_ = nc.PublishMsg(wire.ProbeAnswer(m, func(string) bool { return false }))
			return
		}
		if string(m.Data) == "ping" { // for waitServing
			out := wire.EncodeResponse(&serve.Response{Status: 200})
			out.Subject = m.Reply
			_ = nc.PublishMsg(out)
		}
		// anything else: the reply is lost
	})
	if err != nil {
		t.Fatal(err)
	}
	e.putReplica("lossy", 10, protocol.ReplicaRunning)
	e.startRouter(nil)
	e.waitServing()
	start := time.Now()
	resp, err := e.call(30*time.Second, "x")
	if err != nil || resp.Status != 503 || resp.Header.Get(protocol.HdrError) != string(protocol.ErrReplicaLost) {
		t.Fatalf("Call() = %+v, %v, want 503 replica_lost", resp, err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("answered after %v, want within ~2 s", el)
	}
}

// TestServerRestartKeepsRouting: nats-server restarts (same store, same
// port) after 3 s down. The router reconnects, re-reads its replicas at
// once and never drops them for heartbeats that could not arrive during
// the outage: every request from the reconnect on succeeds, within 1 s.
func TestServerRestartKeepsRouting(t *testing.T) {
	opts := natsembed.Options{StoreDir: t.TempDir()}
	ns := natstest.ServerWith(t, opts)
	opts.Port = ns.Addr().(*net.TCPAddr).Port
	url := ns.ClientURL()
	e := &env{t: t, Fleet: natstest.FleetOn(t, ns, natstest.ReconnectingConn(t, url))}
	nc, names := e.NC, e.Names
	e.putConfig(-1, 0)
	for _, id := range []string{"r1", "r2"} {
		rnc := natstest.ReconnectingConn(t, url)
		rjs := natstest.JetStream(t, rnc)
		kv, err := rjs.KeyValue(context.Background(), names.BucketReplicas())
		if err != nil {
			t.Fatal(err)
		}
		e.startLive(id, rnc, kv, 500*time.Millisecond, false)
	}
	// The router on its own reconnecting connection.
	cfg := router.DefaultConfig()
	cfg.OpsAddr, cfg.DrainTimeout, cfg.StatsInterval = "", time.Second, 100*time.Millisecond
	rnc := natstest.ReconnectingConn(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- router.Run(ctx, cfg, service.Deps{NC: rnc, Log: zerolog.Nop(), Metrics: nil})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router.Run() = %v, want nil", err)
		}
	})
	e.waitServing()

	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	ns.Shutdown()
	ns.WaitForShutdown()
	time.Sleep(3 * time.Second) // the outage itself
	natstest.ServerWith(t, opts)
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the client never reconnected")
	}
	// Requests from 1 s after the reconnect on, for longer than the old
	// 8 s staleness drop and the watcher's 10 s activity check.
	back := time.Now()
	var failures []string
	var okCount int
	for time.Since(back) < 12*time.Second {
		start := time.Now()
		resp, err := e.call(3*time.Second, "x")
		el := time.Since(start)
		switch {
		case start.Sub(back) < time.Second:
			// Sent while settling (judged by when it was sent: one
			// sent at once may take over a second to answer).
			if err == nil && resp.Status == 200 {
				okCount++
			}
			continue // settling: the routers and replicas reconnect
		case err != nil:
			failures = append(failures, fmt.Sprintf("+%v: %v", start.Sub(back).Round(time.Millisecond), err))
		case resp.Status != 200:
			failures = append(failures, fmt.Sprintf("+%v: %d %s %s", start.Sub(back).Round(time.Millisecond), resp.Status, resp.Header.Get(protocol.HdrError), resp.Body))
		case el > time.Second:
			failures = append(failures, fmt.Sprintf("+%v: took %v", start.Sub(back).Round(time.Millisecond), el))
		default:
			okCount++
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(failures) > 0 {
		t.Fatalf("%d requests failed or were slow after the reconnect (%d ok): %s", len(failures), okCount, strings.Join(failures[:min(len(failures), 10)], "; "))
	}
}

// putStatus writes the scheduler's status document with one deployment.
func (e *env) putStatus(target int, replicas ...protocol.ReplicaStatus) {
	e.t.Helper()
	st := protocol.Status{Leader: "test", UpdatedAt: time.Now(), Applications: map[string]protocol.AppStatus{
		app: {Name: app, Deployments: map[string]protocol.DeploymentStatus{
			dep: {Name: dep, TargetReplicas: target, Replicas: replicas}}}}}
	b, _ := json.Marshal(st)
	if _, err := e.Buckets.Status.Put(context.Background(), "status", b); err != nil {
		e.t.Fatal(err)
	}
}

// callRouted retries while no router is subscribed yet.
func (e *env) callRouted(timeout time.Duration, body string) (*serve.Response, time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		start := time.Now()
		resp, err := e.call(timeout, body)
		var se *serve.Error
		if errors.As(err, &se) && se.Code == protocol.ErrUnavailable && time.Now().Before(deadline) {
			continue
		}
		if err != nil {
			e.t.Fatalf("Call() error %v", err)
		}
		return resp, time.Since(start)
	}
}

// TestUnplaceableDeploymentFailsFast: while the status says a
// deployment's replicas are PENDING for a placement reason (or FAILED),
// a request is answered 503 no_replicas at once naming the reason, and a
// request already queued is failed when the reason appears.
func TestUnplaceableDeploymentFailsFast(t *testing.T) {
	reasons := []protocol.ReplicaStatus{
		{ID: "p1", State: protocol.ReplicaPending, Message: `no worker has handler "echo"`},
		{ID: "p2", State: protocol.ReplicaFailed, Message: "command not found: ./serve.py"},
	}
	for _, rs := range reasons {
		t.Run(string(rs.State), func(t *testing.T) {
			e := newEnv(t)
			e.putConfig(-1, 30*time.Second)
			e.putStatus(1, protocol.ReplicaStatus{ID: "s1", State: protocol.ReplicaStarting})
			e.startRouter(nil)
			results := make(chan callResult, 1)
			e.callAsync("queued", "POST", "x", nil, 30*time.Second, results)
			e.waitQueued(1) // held: a replica is STARTING
			e.putStatus(1, rs)
			select {
			case r := <-results:
				if r.err != nil || r.resp.Status != 503 || r.resp.Header.Get(protocol.HdrError) != string(protocol.ErrNoReplicas) ||
					!strings.Contains(string(r.resp.Body), rs.Message) {
					t.Errorf("queued Call() = %+v, want 503 no_replicas naming %q", r, rs.Message)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the queued request was not failed when the status said the deployment cannot run")
			}
			resp, el := e.callRouted(30*time.Second, "y")
			if resp.Status != 503 || resp.Header.Get(protocol.HdrError) != string(protocol.ErrNoReplicas) ||
				!strings.Contains(string(resp.Body), rs.Message) || resp.Header.Get("Retry-After") == "" {
				t.Errorf("Call() = %d %v %q, want 503 no_replicas naming %q with Retry-After", resp.Status, resp.Header, resp.Body, rs.Message)
			}
			if el > time.Second {
				t.Errorf("answered after %v, want at once", el)
			}
		})
	}
}

// TestScaleFromZeroStillHeld: a deployment at zero replicas (target 0)
// holds a request until a replica runs, and serves it.
func TestScaleFromZeroStillHeld(t *testing.T) {
	e := newEnv(t)
	e.putConfig(-1, 30*time.Second)
	e.putStatus(0)
	e.startRouter(nil)
	results := make(chan callResult, 1)
	e.callAsync("held", "POST", "late", nil, 30*time.Second, results)
	e.waitQueued(1)
	e.putStatus(1, protocol.ReplicaStatus{ID: "r1", State: protocol.ReplicaStarting, Message: "assigned to worker w1; waiting for it to start"})
	_ = e.startLive("r1", natstest.Conn(t, e.NS), e.Buckets.Replicas, 0, false)
	select {
	case r := <-results:
		if r.err != nil || r.resp.Status != 200 || string(r.resp.Body) != "r1:late" {
			t.Errorf("held Call() = %+v, want 200 r1:late", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held request was never served")
	}
}

// TestUnknownDeploymentNotFound: a request for a deployment absent from
// the applied config is answered 404 at once.
func TestUnknownDeploymentNotFound(t *testing.T) {
	e := newEnv(t)
	sc := config.ServeConfig{Applications: []config.Application{{Name: "other", RoutePrefix: "/other", Ingress: "o",
		Deployments: []config.Deployment{{Name: "o", Handler: "h"}}}}}
	natstest.PutConfig(t, e.Buckets, sc)
	e.startRouter(nil)
	resp, el := e.callRouted(30*time.Second, "x")
	if resp.Status != 404 || resp.Header.Get(protocol.HdrError) != string(protocol.ErrNotFound) {
		t.Errorf("Call() = %d %v %q, want 404 not_found", resp.Status, resp.Header, resp.Body)
	}
	if el > time.Second {
		t.Errorf("answered after %v, want at once", el)
	}
}
