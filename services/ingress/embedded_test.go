package ingress

import (
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// TestEmbeddedRouterSendsStraightToReplica runs the ingress with its
// default embedded router against a replica that is only a NATS
// subscriber on its call subject (no router service runs): the request
// must reach it, and a replica at capacity must be retried on the other.
func TestEmbeddedRouterSendsStraightToReplica(t *testing.T) {
	tf := natstest.NewFleet(t)
	ns, nc, names, b := tf.NS, tf.NC, tf.Names, tf.Buckets
	natstest.PutConfigText(t, b, "applications:\n- {name: echo, route_prefix: /echo, ingress: E, deployments: [{name: E, handler: h}]}\n")
	replica := func(id string, full bool) {
		_, err := nc.Subscribe(names.ReplicaSubject(id)+"."+protocol.EndpointCall, func(m *nats.Msg) {
			var r *nats.Msg
			if full {
				r = wire.ErrorMsg(503, protocol.ErrReplicaFull, "full")
			} else {
				req := wire.DecodeRequest(m)
				r = wire.EncodeResponse(&serve.Response{Status: 200, Body: append([]byte(id+":"), req.Body...)})
			}
			r.Subject = m.Reply
			_ = nc.PublishMsg(r)
		})
		if err != nil {
			t.Fatal(err)
		}
		natstest.PutReplica(t, b, protocol.ReplicaInfo{ID: id, App: "echo", Deployment: "E", WorkerID: "w1", State: protocol.ReplicaRunning,
			MaxOngoingRequests: 4, Subject: names.ReplicaSubject(id), Heartbeat: time.Now()})
	}
	replica("good", false)
	replica("busy", true)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg := DefaultConfig()
	f := &fleet{base: runIngress(t, ns, cfg), nc: nc}
	for i := range 20 {
		code, _, body := f.do(t, "POST", "/echo/x", "hi")
		if code != 200 || !strings.HasPrefix(body, "good:hi") {
			t.Fatalf("request %d = %d %q, want 200 from the replica with room", i, code, body)
		}
	}
}
