package replica

import (
	"context"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The replica stages of a no-op request (docs/performance.md): admission,
// the handler's call with its context and bookkeeping, and the reply's
// encoding — CallLocal on the caller's goroutine, as the in-process path
// runs it, with an echo handler; and the handler alone for comparison.

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
