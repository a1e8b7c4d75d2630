package ingress

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provision/provisiontest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// TestLargeBodiesAtDefaultMaxPayload runs the ingress (embedded router,
// max_body_bytes 3 MB here) against a server left at NATS's default
// max_payload of 1 MiB, with replicas that read a request body from the
// bodies object store and answer its length (or, asked, a 3 MB body
// through the store). A 2.5 MB request, of known or unknown length, passes
// through the store; a 3 MB response comes back whole; past max_body_bytes
// the answer is 413 at once; a job's body, which travels in its message,
// is refused 413 past one message; requests right after are served at
// once, and no body object is left behind.
func TestLargeBodiesAtDefaultMaxPayload(t *testing.T) {
	ns := natstest.ServerWith(t, natsembed.Options{MaxPayload: 1 << 20})
	tf := natstest.FleetOn(t, ns, nil)
	nc, js, names, b := tf.NC, tf.JS, tf.Names, tf.Buckets
	ctx := context.Background()
	bodies, err := wire.OpenBodies(ctx, js, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	natstest.PutConfigText(t, b, "applications:\n- {name: echo, route_prefix: /echo, ingress: E, deployments: [{name: E, handler: h, async_methods: [{name: train}]}]}\n")
	provisiontest.Start(t, nc, js, jobs.Names{Names: names}, b) // the scheduler's part
	bigResponse := strings.Repeat("r", 3000*1000)
	// The requests the replicas hold, by reply subject: what they answer
	// the router's liveness probes with, as a replica does (a request
	// outstanding for probe_after, as a large one may be on a loaded
	// machine, is otherwise lost).
	var heldMu sync.Mutex
	held := map[string]bool{}
	for _, id := range []string{"r1", "r2"} {
		_, err := nc.Subscribe(names.ReplicaSubject(id)+"."+protocol.EndpointCall, func(m *nats.Msg) {
			heldMu.Lock()
			defer heldMu.Unlock()
			if wire.IsProbe(m) {
				_ = nc.PublishMsg(wire.ProbeAnswer(m, func(reply string) bool { return held[reply] }))
				return
			}
			held[m.Reply] = true
			// As a replica does (on its own goroutine: the store reads
			// go through this connection).
			go func() {
				defer func() { // after the reply went out
					heldMu.Lock()
					delete(held, m.Reply)
					heldMu.Unlock()
				}()
				req := wire.DecodeRequest(m)
				if name := req.Header.Get(protocol.HeaderBodyObject); name != "" {
					body, err := bodies.Bytes(ctx, name)
					if err != nil {
						t.Errorf("replica: %v", err)
					}
					req.Body = body
					_ = bodies.Delete(ctx, name)
				}
				resp := &serve.Response{Status: 200, Body: []byte(fmt.Sprintf("%s:%d", id, len(req.Body)))}
				r := wire.EncodeResponse(resp)
				if string(req.Body) == "big-response" && req.Header.Get(protocol.HeaderBodyAccept) != "" {
					name, err := bodies.PutBytes(ctx, []byte(bigResponse))
					if err != nil {
						t.Errorf("replica: %v", err)
					}
					r = wire.EncodeResponse(&serve.Response{Status: 200, Header: http.Header{protocol.HeaderBodyObject: {name}}})
				}
				r.Subject = m.Reply
				_ = nc.PublishMsg(r)
			}()
		})
		if err != nil {
			t.Fatal(err)
		}
		natstest.PutReplica(t, b, protocol.ReplicaInfo{ID: id, App: "echo", Deployment: "E", WorkerID: "w1", State: protocol.ReplicaRunning,
			MaxOngoingRequests: 4, Subject: names.ReplicaSubject(id), Heartbeat: time.Now()})
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.MaxBodyBytes = 3000 * 1000
	cfg.BodyTransport = "object" // this test's replicas read the bodies object store
	// The 0.2 MB query below must reach the job path, past the request
	// head limits (max_url_bytes' default would answer it 431 first).
	cfg.MaxHeaderBytes, cfg.MaxURLBytes = 1<<20, 512<<10
	f := &fleet{base: runIngress(t, ns, cfg), nc: nc}

	big := `{"data":"` + strings.Repeat("x", 2500*1000) + `"}`
	for _, chunked := range []bool{false, true} {
		code, _, body := f.doReader(t, "POST", "/echo/infer", big, chunked)
		if code != 200 || !strings.HasSuffix(body, fmt.Sprintf(":%d", len(big))) {
			t.Errorf("POST /echo/infer (2.5 MB, chunked %v) = %d %.200q, want 200 and the replica saw %d bytes", chunked, code, body, len(big))
		}
	}
	code, h, body := f.doReader(t, "POST", "/echo/infer", "big-response", false)
	if code != 200 || body != bigResponse || h.Get("Content-Length") != fmt.Sprint(len(bigResponse)) || h.Get(protocol.HeaderBodyObject) != "" {
		t.Errorf("POST /echo/infer for a 3 MB response = %d, %d bytes, headers %v; want 200 with the %d bytes, Content-Length, no object header",
			code, len(body), h, len(bigResponse))
	}
	over := `{"data":"` + strings.Repeat("x", 3100*1000) + `"}`
	for _, chunked := range []bool{false, true} {
		start := time.Now()
		code, h, body := f.doReader(t, "POST", "/echo/infer", over, chunked)
		if code != 413 || h.Get("X-Jetserve-Error") != string(protocol.ErrBodyTooLarge) || !strings.Contains(body, "3000000") {
			t.Errorf("POST /echo/infer (3.1 MB, chunked %v) = %d %.300q, want 413 body_too_large naming the 3000000-byte limit", chunked, code, body)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("POST /echo/infer (3.1 MB, chunked %v) answered after %v, want at once", chunked, el)
		}
	}
	code, h, body = f.do(t, "POST", "/echo/train", big)
	if code != 413 || h.Get("X-Jetserve-Error") != string(protocol.ErrBodyTooLarge) || !strings.Contains(body, "max_payload") || !strings.Contains(body, "job") {
		t.Errorf("POST /echo/train (2.5 MB) = %d %.300q, want 413 body_too_large naming the job message's max_payload", code, body)
	}
	// Under the body limit, but with its query arguments the job message
	// does not fit one NATS message: 413 too, not 500.
	under := `{"data":"` + strings.Repeat("x", 900*1000) + `"}`
	code, _, body = f.do(t, "POST", "/echo/train?extra="+strings.Repeat("y", 200*1000), under)
	if code != 413 || !strings.Contains(body, "body_too_large") || !strings.Contains(body, "max_payload") {
		t.Errorf("POST /echo/train (0.9 MB body + 0.2 MB query) = %d %.300q, want 413 body_too_large", code, body)
	}
	for i := range 20 {
		start := time.Now()
		code, _, body := f.do(t, "POST", "/echo/infer", "small")
		if code != 200 || !strings.HasSuffix(body, ":5") {
			t.Fatalf("request %d after the large ones = %d %q, want 200", i, code, body)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("request %d after the large ones took %v, want at once", i, el)
		}
	}
	// No body object is left (the replica deleted the requests', the
	// ingress the response's).
	waitfor.True(t, 5*time.Second, "every body object deleted", func() bool {
		objs, err := bodies.List(ctx)
		return err != nil && len(objs) == 0
	})
	// GET /-/limits says what the ingress accepts and why.
	code, _, body = f.do(t, "GET", "/-/limits", "")
	var lim struct {
		MaxBodyBytes    int64 `json:"max_body_bytes"`
		InlineBodyBytes int64 `json:"inline_body_bytes"`
		NATSMaxPayload  int64 `json:"nats_max_payload"`
	}
	if err := json.Unmarshal([]byte(body), &lim); err != nil || code != 200 {
		t.Fatalf("GET /-/limits = %d %q (%v)", code, body, err)
	}
	if lim.NATSMaxPayload != 1<<20 || lim.MaxBodyBytes != 3000*1000 || lim.InlineBodyBytes != 1<<20-wire.HeaderRoom {
		t.Errorf("GET /-/limits = %+v, want max_body_bytes 3000000 and inline_body_bytes %d from max_payload 1 MiB", lim, 1<<20-wire.HeaderRoom)
	}
}
