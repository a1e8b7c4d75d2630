package ingress

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fleet starts an ingress against a real embedded JetStream with a fake
// router answering on the route subjects.
type fleet struct {
	base string
	nc   *nats.Conn
	gate chan struct{} // closed by the test once it read the first streamed chunk
}

func startFleet(t *testing.T, cfg Config) *fleet {
	t.Helper()
	tf := natstest.NewFleet(t)
	ns, nc, names, b := tf.NS, tf.NC, tf.Names, tf.Buckets
	natstest.PutConfigText(t, b, `applications:
- {name: echo, route_prefix: /echo, ingress: E, deployments: [{name: E, handler: h}]}
- {name: full, route_prefix: /full, ingress: F, deployments: [{name: F, handler: h}]}
`)
	gate := make(chan struct{})
	fakeRouter(t, nc, names, gate)
	f := &fleet{base: runIngress(t, ns, cfg), nc: nc, gate: gate}
	return f
}

// fakeRouter stands in for router+replica: echo answers with what it got,
// full answers queue_full, stream sends three chunks, the second only once
// the test has read the first.
func fakeRouter(t *testing.T, nc *nats.Conn, names protocol.Names, gate <-chan struct{}) {
	t.Helper()
	reply := func(m *nats.Msg, r *nats.Msg) {
		r.Subject = m.Reply
		_ = nc.PublishMsg(r)
	}
	_, err := nc.QueueSubscribe(names.RouteSubject("echo", "E"), protocol.RouterQueue, func(m *nats.Msg) {
		req := wire.DecodeRequest(m)
		if inbox := m.Header.Get(protocol.HdrStream); inbox != "" {
			go func() {
				w := wire.NewStreamWriter(nc, inbox)
				_ = w.Write([]byte("first\n"))
				<-gate // the client must see "first" before "second" exists
				_ = w.Write([]byte("second\n"))
				reply(m, w.Finish(nil))
			}()
			return
		}
		out, _ := json.Marshal(map[string]any{"method": req.Method, "path": req.Path, "query": req.Query.Encode(),
			"header": req.Header.Get("X-Test"), "body": string(req.Body), "request_id": req.RequestID})
		reply(m, wire.EncodeResponse(&serve.Response{Status: 201, Header: map[string][]string{"X-Reply": {"yes"}}, Body: out}))
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.QueueSubscribe(names.RouteSubject("full", "F"), protocol.RouterQueue, func(m *nats.Msg) {
		reply(m, wire.ErrorMsg(503, protocol.ErrQueueFull, "queue full"))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fleet) do(t *testing.T, method, path, body string) (int, http.Header, string) {
	t.Helper()
	return f.doReader(t, method, path, body, false)
}

// doReader is do with a body of known length, or of unknown length
// (chunked) when chunked.
func (f *fleet) doReader(t *testing.T, method, path, body string, chunked bool) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader = strings.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // hides the length: sent chunked
	}
	req, _ := http.NewRequest(method, f.base+path, rd)
	req.Header.Set("X-Test", "pass")
	return send(t, req)
}

// send does req and reads the whole answer.
func send(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.RequestURI(), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestIngress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Router = RouterService // the fake router answers on the route subjects
	cfg.MaxBodyBytes = 1024
	f := startFleet(t, cfg)

	t.Run("passes method, path, query, headers and body", func(t *testing.T) {
		code, h, body := f.do(t, "PUT", "/echo/a/b?x=1", "hello")
		if code != 201 || h.Get("X-Reply") != "yes" || h.Get("X-Request-Id") == "" {
			t.Fatalf("PUT /echo/a/b = %d %v, want 201 with X-Reply and X-Request-Id", code, h)
		}
		var got map[string]string
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"method": "PUT", "path": "/a/b", "query": "x=1", "header": "pass", "body": "hello", "request_id": h.Get("X-Request-Id")}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("replica saw %s = %q, want %q", k, got[k], v)
			}
		}
	})
	t.Run("unknown route is 404", func(t *testing.T) {
		code, _, body := f.do(t, "GET", "/nope", "")
		if code != 404 || !strings.Contains(body, `"not_found"`) {
			t.Fatalf("GET /nope = %d %s, want 404 not_found", code, body)
		}
	})
	t.Run("routes are listed", func(t *testing.T) {
		code, _, body := f.do(t, "GET", "/-/routes", "")
		if code != 200 || !strings.Contains(body, `"/echo":"echo"`) {
			t.Fatalf("GET /-/routes = %d %s, want /echo listed", code, body)
		}
	})
	t.Run("oversized body is 413", func(t *testing.T) {
		code, _, body := f.do(t, "POST", "/echo/", strings.Repeat("x", 2048))
		if code != 413 || !strings.Contains(body, "body_too_large") {
			t.Fatalf("POST 2 KiB = %d %s, want 413", code, body)
		}
	})
	t.Run("queue full is 503 with Retry-After", func(t *testing.T) {
		code, h, body := f.do(t, "POST", "/full/x", "{}")
		if code != 503 || h.Get("Retry-After") == "" || !strings.Contains(body, "queue_full") {
			t.Fatalf("POST /full/x = %d %v %s, want 503 queue_full with Retry-After", code, h, body)
		}
	})
	t.Run("streams chunks as they come", func(t *testing.T) {
		req, _ := http.NewRequest("GET", f.base+"/echo/s?stream=1", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		first, err := r.ReadString('\n')
		if err != nil || first != "first\n" {
			t.Fatalf("first chunk = %q, %v", first, err)
		}
		close(f.gate) // only now may the second chunk be written
		rest, _ := io.ReadAll(r)
		if string(rest) != "second\n" {
			t.Fatalf("rest = %q, want second", rest)
		}
	})
}

// runIngress runs the ingress with cfg against ns on a free port until the
// test ends, waits until /-/healthz answers 200 and returns its base URL.
func runIngress(t testing.TB, ns *server.Server, cfg Config) string {
	t.Helper()
	addrc := make(chan net.Addr, 1)
	cfg.HTTPAddr, cfg.OpsAddr, cfg.HTTPReady = "127.0.0.1:0", "", func(a net.Addr) { addrc <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	inc := natstest.Conn(t, ns) // registered before the cleanup below, so closed after Run returns
	go func() { done <- Run(ctx, cfg, service.Deps{NC: inc, Log: zerolog.Nop()}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
	base := "http://" + (<-addrc).String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get(base + "/-/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("ingress never became healthy")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
