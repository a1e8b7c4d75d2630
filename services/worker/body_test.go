package worker_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/worker"
)

// TestBodyStallTimeout: a request whose chunked body stops coming (its
// source takes the replica's pull and sends nothing, as a stuck ingress)
// is answered 504 once the worker's body_stall_timeout has passed, not
// after the 10 s default.
func TestBodyStallTimeout(t *testing.T) {
	const stall = 300 * time.Millisecond
	f := startFleet(t, func(c *worker.Config) { c.BodyStallTimeout = stall })
	s := spec("r1", "echo-dep", "echo", 4, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)

	source := f.nc.NewInbox()
	pulls, err := f.nc.SubscribeSync(source)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	m := wire.EncodeRequest(f.names.ReplicaSubject("r1")+".call", &serve.Request{Method: "POST", Path: "/", RequestID: "req-stalled",
		Header: http.Header{protocol.HeaderBodySource: {source + " 5000000"}}})
	m.Header.Set(protocol.HdrDeadline, strconv.FormatInt(time.Now().Add(waitLimit).UnixMilli(), 10))
	start := time.Now()
	reply, err := f.nc.RequestMsg(m, waitLimit)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("call with a stalled body: %v", err)
	}
	if _, err := pulls.NextMsg(time.Second); err != nil {
		t.Fatalf("the replica never pulled the body: %v", err)
	}
	resp := wire.DecodeResponse(reply)
	if resp.Status != http.StatusGatewayTimeout || took < stall || took > 5*time.Second {
		t.Errorf("call with a stalled body = %d %q after %v, want 504 after body_stall_timeout (%v)", resp.Status, resp.Body, took, stall)
	}
}
