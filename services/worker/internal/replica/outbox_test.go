package replica

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// writeCounter is a nats.CustomDialer whose connections count their
// writes to the socket.
type writeCounter struct{ writes atomic.Int64 }

func (w *writeCounter) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return countingConn{c, &w.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestRepliesGoOutTogether: the replies of requests whose handlers finish
// at once are written to the socket together (the outbox), not one write
// each; every request is answered, and none is held once answered.
func TestRepliesGoOutTogether(t *testing.T) {
	const n = 32
	tf := natstest.NewFleet(t)
	var counter writeCounter
	nc, err := nats.Connect(tf.NS.ClientURL(), nats.SetCustomDialer(&counter))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var entered atomic.Int32
	release := make(chan struct{})
	h := serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
		if entered.Add(1) == n {
			close(release)
		}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &serve.Response{Status: 200, Body: req.Body}, nil
	})
	r := Start(Params{NC: nc, Names: tf.Names, Records: tf.Buckets.Replicas, WorkerID: "w1", Log: zerolog.Nop(),
		Spec: protocol.ReplicaSpec{ID: "r1", App: "a", Deployment: "d", Handler: "h", MaxOngoingRequests: n},
		Ctor: func(context.Context, serve.Init) (serve.Handler, error) { return h, nil }})
	defer func() { r.Stop(); <-r.Done() }()
	caller := natstest.Conn(t, tf.NS)
	subject := tf.Names.ReplicaSubject("r1") + "." + protocol.EndpointCall
	deadline := time.Now().Add(20 * time.Second)
	for {
		// Until the replica serves (a probe is answered once its endpoint exists).
		if _, err := caller.RequestMsg(wire.ProbeMsg(subject, "", nil), time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replica never answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := counter.writes.Load()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := wire.EncodeRequest(subject, &serve.Request{Method: "POST", Path: "/", Body: []byte("x")})
			reply, err := caller.RequestMsg(m, 10*time.Second)
			if err != nil || wire.ErrorCode(reply) != "" || string(reply.Data) != "x" {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	writes := counter.writes.Load() - before
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed", failed.Load(), n)
	}
	t.Logf("%d writes for %d replies", writes, n)
	// A load report or two may go out meanwhile; one write per reply is n
	// (33 before the outbox). Under the race detector the scheduling
	// differs (either way: from 2 to 16 writes before the outbox).
	if writes > n/4 && !raceEnabled {
		t.Errorf("the replica wrote %d times for %d replies that were ready at once, want ≤ %d", writes, n, n/4)
	}
	for {
		r.mu.Lock()
		held := len(r.held)
		r.mu.Unlock()
		if held == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still held after every reply went out", held)
		}
		time.Sleep(time.Millisecond)
	}
}
