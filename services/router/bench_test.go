package router_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/pkg/wire/wiretest"
)

// BenchmarkHop compares a request through the router (caller → router →
// fake replica) with a raw NATS request-reply to the same fake replica, at
// concurrency 1 and 64.
func BenchmarkHop(b *testing.B) {
	e := newEnv(b)
	rnc := natstest.Conn(b, e.NS)
	body := make([]byte, 256)
	wiretest.Echo(b, rnc, e.Names.ReplicaSubject("r1")+".call", "")
	e.putReplica("r1", 1<<20, protocol.ReplicaRunning)
	every(b, fleetstate.HeartbeatInterval, func() { e.putReplica("r1", 1<<20, protocol.ReplicaRunning) })
	e.startRouter(nil)
	e.waitServing()
	cnc := natstest.Conn(b, e.NS)

	request := func(subject string) error {
		m := wire.EncodeRequest(subject, &serve.Request{Method: "POST", Path: "/", Body: body})
		m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(time.Now().Add(10*time.Second).UnixMilli(), 10))
		reply, err := cnc.RequestMsg(m, 10*time.Second)
		if err != nil {
			return err
		}
		if wire.ErrorCode(reply) != "" {
			b.Errorf("reply error %s", wire.ErrorCode(reply))
		}
		return nil
	}
	targets := []struct{ name, subject string }{
		{"raw", e.Names.ReplicaSubject("r1") + ".call"},
		{"router", e.Names.RouteSubject(app, dep)},
	}
	for _, c := range []int{1, 64} {
		for _, tg := range targets {
			b.Run(tg.name+"/c"+strconv.Itoa(c), func(b *testing.B) {
				natstest.Measure(b, c, func() error { return request(tg.subject) })
			})
		}
	}
}
