package ingress

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// TestBodyStallTimeout: a response body the replica stops sending (its
// source takes the ingress's pull and sends nothing) ends the client's
// response once the ingress's body_stall_timeout has passed, not after
// the 10 s default.
func TestBodyStallTimeout(t *testing.T) {
	const stall = 300 * time.Millisecond
	tf := natstest.NewFleet(t)
	ns, nc, names, b := tf.NS, tf.NC, tf.Names, tf.Buckets
	natstest.PutConfigText(t, b, "applications:\n- {name: echo, route_prefix: /echo, ingress: E, deployments: [{name: E, handler: h}]}\n")
	source := nc.NewInbox()
	pulls, err := nc.SubscribeSync(source)
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.Subscribe(names.ReplicaSubject("r1")+"."+protocol.EndpointCall, func(m *nats.Msg) {
		if wire.IsProbe(m) {
			_ = nc.PublishMsg(wire.ProbeAnswer(m, func(string) bool { return false }))
			return
		}
		r := wire.EncodeResponse(&serve.Response{Status: 200, Header: http.Header{protocol.HeaderBodySource: {source + " 5000000"}}})
		r.Subject = m.Reply
		_ = nc.PublishMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	natstest.PutReplica(t, b, protocol.ReplicaInfo{ID: "r1", App: "echo", Deployment: "E", WorkerID: "w1", State: protocol.ReplicaRunning,
		MaxOngoingRequests: 4, Subject: names.ReplicaSubject("r1"), Heartbeat: time.Now()})
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.BodyStallTimeout = stall
	base := runIngress(t, ns, cfg)

	start := time.Now()
	resp, err := http.Post(base+"/echo/x", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	took := time.Since(start)
	if _, perr := pulls.NextMsg(time.Second); perr != nil {
		t.Fatalf("the ingress never pulled the response body: %v", perr)
	}
	if resp.StatusCode != 200 || err == nil || n != 0 || took < stall || took > 5*time.Second {
		t.Errorf("response with a stalled body = %d, %d bytes (%v) after %v; want 200 cut short after body_stall_timeout (%v)",
			resp.StatusCode, n, err, took, stall)
	}
}
