package replica

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The replica stages of a no-op request (docs/performance.md): admission,
// the handler's call with its context and bookkeeping, and the reply's
// encoding — CallLocal on the caller's goroutine, as the in-process path
// runs it, with an echo handler; and the handler alone for comparison.
// over_nats/c=N: the same request over NATS, as a router sends it (from a
// connection of its own, N at once): what a hop costs at its callee,
// NATS client and server included (cpu-µs/op: the process's CPU time per
// request, which the box's other work changes less than the wall time);
// raw_nats/c=N: the same round trip to a plain responder — the floor.

func echoHandler() serve.Handler {
	return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
		return &serve.Response{Status: 200, Body: req.Body}, nil
	})
}

func BenchmarkStageReplica(b *testing.B) {
	tf := natstest.NewFleet(b)
	nc, names, bk := tf.NC, tf.Names, tf.Buckets
	met, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	r := Start(Params{NC: nc, Names: names, Records: bk.Replicas, WorkerID: "w1", Log: zerolog.Nop(), Metrics: met,
		Spec: protocol.ReplicaSpec{ID: "r1", App: "a", Deployment: "d", Handler: "echo", MaxOngoingRequests: 1 << 20},
		Ctor: func(context.Context, serve.Init) (serve.Handler, error) { return echoHandler(), nil }})
	b.Cleanup(func() { r.Stop(); <-r.Done() })
	deadline := time.Now().Add(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := wire.EncodeRequest("", &serve.Request{Method: "POST", Path: "/x", Body: []byte("{}"), RequestID: "rid-1"})
	var got *nats.Msg
	done := func(reply *nats.Msg) { got = reply }
	for r.CallLocal(ctx, m, nil, done) != "" {
		if time.Now().After(deadline) {
			b.Fatal("replica never served")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Run("call_local", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if code := r.CallLocal(ctx, m, nil, done); code != "" || got == nil {
				b.Fatalf("CallLocal = %q", code)
			}
		}
	})
	// The floor: a plain responder on a connection of its own, answering
	// with the headers a replica's 200 has.
	rawNC := natstest.Conn(b, tf.NS)
	raw, err := rawNC.Subscribe("raw.call", func(m *nats.Msg) {
		_ = m.RespondMsg(&nats.Msg{Header: nats.Header{protocol.HdrStatus: {"200"}, protocol.HdrReplica: {"r1"}}, Data: m.Data})
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = raw.Unsubscribe() })
	for _, c := range []int{1, 32} {
		b.Run(fmt.Sprintf("over_nats/c=%d", c), func(b *testing.B) {
			roundTrips(b, tf.NS, names.ReplicaSubject("r1")+"."+protocol.EndpointCall, c)
		})
		b.Run(fmt.Sprintf("raw_nats/c=%d", c), func(b *testing.B) { roundTrips(b, tf.NS, "raw.call", c) })
	}
	b.Run("handler_only", func(b *testing.B) {
		h := echoHandler()
		req := wire.DecodeRequest(m)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := h.ServeRequest(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// roundTrips sends b.N requests as a router does (from a connection of
// its own, c at once) to subject and reports the process's CPU time per
// request.
func roundTrips(b *testing.B, ns *server.Server, subject string, c int) {
	caller := natstest.Conn(b, ns)
	var failed atomic.Int64
	var next atomic.Int64 // requests handed out: exactly c goroutines, each sending until b.N are
	var wg sync.WaitGroup
	start := cpuTime()
	b.ResetTimer()
	for range c {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				m := wire.EncodeRequest(subject, &serve.Request{Method: "POST", Path: "/x", Body: []byte("{}"), RequestID: "rid-1"})
				m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10))
				reply, err := caller.RequestMsg(m, 10*time.Second)
				if err != nil || wire.ErrorCode(reply) != "" {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Microsecond)/float64(b.N), "cpu-µs/op")
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
}

// cpuTime is the process's CPU time so far (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
