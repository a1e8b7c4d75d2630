package ingress

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestOversizedBodyAtDefaultMaxPayload runs the ingress (embedded router,
// default max_body_bytes 4 MiB) against a server left at NATS's default
// max_payload of 1 MiB. A 2.5 MB request is answered 413 at once — on the
// sync path and on the job submit path — and requests right after it are
// served at once: the deployment is not wedged.
func TestOversizedBodyAtDefaultMaxPayload(t *testing.T) {
	ns := natstest.ServerWith(t, natsembed.Options{MaxPayload: 1 << 20})
	nc := natstest.Conn(t, ns)
	names, _ := protocol.NewNames("")
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	b, err := fleetstate.Open(ctx, js, names)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := config.Parse([]byte("applications:\n- {name: echo, route_prefix: /echo, ingress: E, deployments: [{name: E, handler: h, async_methods: [{name: train}]}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(sc)
	if _, err := b.Apps.Put(ctx, fleetstate.ConfigKey, raw); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"r1", "r2"} {
		_, err := nc.Subscribe(names.ReplicaSubject(id)+"."+protocol.EndpointCall, func(m *nats.Msg) {
			if wire.IsProbe(m) {
				_ = nc.PublishMsg(wire.ProbeAnswer(m, func(string) bool { return false }))
				return
			}
			r := wire.EncodeResponse(&serve.Response{Status: 200, Body: []byte(fmt.Sprintf("%s:%d", id, len(m.Data)))})
			r.Subject = m.Reply
			_ = nc.PublishMsg(r)
		})
		if err != nil {
			t.Fatal(err)
		}
		info, _ := json.Marshal(protocol.ReplicaInfo{ID: id, App: "echo", Deployment: "E", WorkerID: "w1", State: protocol.ReplicaRunning,
			MaxOngoingRequests: 4, Subject: names.ReplicaSubject(id), Heartbeat: time.Now()})
		if _, err := b.Replicas.Put(ctx, protocol.ReplicaKey("echo", "E", "w1", id), info); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	// The 0.2 MB query below must reach the job path, past the request
	// head limits (max_url_bytes' default would answer it 431 first).
	cfg.MaxHeaderBytes, cfg.MaxURLBytes = 1<<20, 512<<10
	f := &fleet{base: runIngress(t, ns, cfg), nc: nc}

	big := `{"data":"` + strings.Repeat("x", 2500*1000) + `"}`
	for _, path := range []string{"/echo/infer", "/echo/train"} {
		start := time.Now()
		code, h, body := f.do(t, "POST", path, big)
		if code != 413 || h.Get("X-Jetserve-Error") != string(protocol.ErrBodyTooLarge) || !strings.Contains(body, "max_payload") {
			t.Errorf("POST %s (2.5 MB) = %d %q, want 413 body_too_large naming the NATS max_payload", path, code, body)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("POST %s (2.5 MB) answered after %v, want at once", path, el)
		}
	}
	// Under the body limit, but with its query arguments the job message
	// does not fit one NATS message: 413 too, not 500.
	under := `{"data":"` + strings.Repeat("x", 900*1000) + `"}`
	code, _, body := f.do(t, "POST", "/echo/train?extra="+strings.Repeat("y", 200*1000), under)
	if code != 413 || !strings.Contains(body, "body_too_large") || !strings.Contains(body, "max_payload") {
		t.Errorf("POST /echo/train (0.9 MB body + 0.2 MB query) = %d %.300q, want 413 body_too_large", code, body)
	}
	for i := range 20 {
		start := time.Now()
		code, _, body := f.do(t, "POST", "/echo/infer", "small")
		if code != 200 || !strings.HasSuffix(body, ":5") {
			t.Fatalf("request %d after the oversized one = %d %q, want 200", i, code, body)
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("request %d after the oversized one took %v, want at once", i, el)
		}
	}
	// GET /-/limits says what the ingress accepts and why.
	code, _, body = f.do(t, "GET", "/-/limits", "")
	var lim struct {
		MaxBodyBytes           int64 `json:"max_body_bytes"`
		ConfiguredMaxBodyBytes int64 `json:"configured_max_body_bytes"`
		NATSMaxPayload         int64 `json:"nats_max_payload"`
	}
	if err := json.Unmarshal([]byte(body), &lim); err != nil || code != 200 {
		t.Fatalf("GET /-/limits = %d %q (%v)", code, body, err)
	}
	if lim.NATSMaxPayload != 1<<20 || lim.ConfiguredMaxBodyBytes != DefaultMaxBodyBytes || lim.MaxBodyBytes != 1<<20-wire.HeaderRoom {
		t.Errorf("GET /-/limits = %+v, want max_body_bytes %d from max_payload 1 MiB", lim, 1<<20-wire.HeaderRoom)
	}
}
