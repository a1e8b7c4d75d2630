package routing_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/pkg/wire/wiretest"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The routing stages of a no-op request (docs/performance.md): the
// routing decision and its bookkeeping alone (a replica in this process
// that answers at once: no NATS), and one call through the router to a
// replica over NATS beside a raw NATS request-reply to the same kind of
// responder, in the same run.

// nowReplica answers every request at once, on the caller's goroutine.
type nowReplica struct{ reply *nats.Msg }

func (n nowReplica) CallLocal(_ context.Context, _ *nats.Msg, _ func(*nats.Msg) error, done func(*nats.Msg)) protocol.ErrorCode {
	done(&nats.Msg{Header: n.reply.Header, Data: n.reply.Data})
	return ""
}

func (nowReplica) CancelLocal(string) {}

func stageRouter(b *testing.B, nc *nats.Conn, local routing.LocalReplica) *routing.Router {
	b.Helper()
	names, _ := protocol.NewNames("")
	m, err := routing.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	o := routing.Options{NC: nc, Names: names, Log: zerolog.Nop(), Metrics: m}
	if local != nil {
		o.Local = func(string) (routing.LocalReplica, bool) { return local, true }
	}
	r := routing.New(o)
	if err := r.Start(false); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.Drain(ctx)
	})
	r.SetConfig(config.ServeConfig{Applications: []config.Application{{Name: app, RoutePrefix: "/a", Ingress: dep,
		Deployments: []config.Deployment{{Name: dep, Handler: "h", MaxQueuedRequests: -1}}}}})
	r.SetReplica(protocol.ReplicaInfo{ID: "r1", App: app, Deployment: dep, State: protocol.ReplicaRunning,
		MaxOngoingRequests: 1 << 20, Subject: names.ReplicaSubject("r1")})
	return r
}

func stageReq() *serve.Request {
	return &serve.Request{Method: "POST", Path: "/x", Body: []byte("{}"), RequestID: "rid-1"}
}

func BenchmarkStageRoutingDecision(b *testing.B) {
	ns := natstest.Server(b)
	reply := wire.EncodeResponse(&serve.Response{Status: 200, Body: []byte("{}")})
	c := stageRouter(b, natstest.Conn(b, ns), nowReplica{reply}).NewCaller()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Call(ctx, app, dep, stageReq()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStageRoutingNATS: raw is nc.RequestMsg to a responder that
// answers with the request's body; routed is the router's Caller to a
// replica subscription answering the same way. Both wait for the answer
// (c=1): the difference is what routing adds to one NATS round trip.
func BenchmarkStageRoutingNATS(b *testing.B) {
	ns := natstest.Server(b)
	rnc := natstest.Conn(b, ns)
	names, _ := protocol.NewNames("")
	wiretest.Echo(b, rnc, names.ReplicaSubject("r1")+"."+protocol.EndpointCall, "")
	wiretest.Echo(b, rnc, "raw.echo", "")
	cnc := natstest.Conn(b, ns)
	c := stageRouter(b, cnc, nil).NewCaller()
	ctx := context.Background()
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := wire.EncodeRequest("raw.echo", stageReq())
			if _, err := cnc.RequestMsg(m, 10*time.Second); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("routed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Call(ctx, app, dep, stageReq()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
