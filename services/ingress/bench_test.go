package ingress

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/pkg/wire/wiretest"
	"github.com/rs/zerolog"
)

// benchKey prefixes the bench's API keys.
const benchKey = "jsk_bench_0123456789abcdefghijklmnop_"

// BenchmarkIngress compares HTTP → ingress → (fake router answering on the
// route subject) with a raw HTTP handler doing one NATS request-reply to the
// same responder, at concurrency 1 and 64 — and the ingress with auth on
// (API key and rate limit per request), in the same run.
func BenchmarkIngress(b *testing.B) {
	tf := natstest.NewFleet(b)
	ns, names, bk := tf.NS, tf.Names, tf.Buckets
	sc := config.ServeConfig{Applications: []config.Application{{Name: "bench", RoutePrefix: "/bench", Ingress: "B",
		Deployments: []config.Deployment{{Name: "B", Handler: "h"}}}}}
	natstest.PutConfig(b, bk, sc)
	rnc := natstest.Conn(b, ns)
	subject := names.RouteSubject("bench", "B")
	wiretest.Echo(b, rnc, subject, protocol.RouterQueue)

	cfg := DefaultConfig()
	cfg.Router = RouterService // the fake router answers on the route subjects
	addrc := make(chan net.Addr, 1)
	cfg.HTTPAddr, cfg.OpsAddr, cfg.HTTPReady = "127.0.0.1:0", "", func(a net.Addr) { addrc <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	inc := natstest.Conn(b, ns)
	go func() { done <- Run(ctx, cfg, service.Deps{NC: inc, Log: zerolog.Nop()}) }()
	b.Cleanup(func() { cancel(); <-done })
	ingressURL := "http://" + (<-addrc).String() + "/bench/x"

	// The same ingress with auth on: an API key checked per request (a
	// keys file of 100 keys) and a per-key rate limit far above the load.
	keysDoc := "keys:\n"
	for i := range 100 {
		keysDoc += httpauth.Line("k"+strconv.Itoa(i), httpauth.Hash(benchKey+strconv.Itoa(i)), []string{"bench"}, nil) + "\n"
	}
	keysFile := filepath.Join(b.TempDir(), "keys.yaml")
	if err := os.WriteFile(keysFile, []byte(keysDoc), 0o600); err != nil {
		b.Fatal(err)
	}
	acfg := cfg
	acfg.Auth.KeysFile, acfg.Auth.RateLimit = keysFile, 1e9
	aaddrc := make(chan net.Addr, 1)
	acfg.HTTPReady = func(a net.Addr) { aaddrc <- a }
	actx, acancel := context.WithCancel(context.Background())
	adone := make(chan error, 1)
	anc := natstest.Conn(b, ns)
	go func() { adone <- Run(actx, acfg, service.Deps{NC: anc, Log: zerolog.Nop()}) }()
	b.Cleanup(func() { acancel(); <-adone })
	authURL := "http://" + (<-aaddrc).String() + "/bench/x"

	// The raw path: HTTP handler → one NATS request-reply → responder.
	cnc := natstest.Conn(b, ns)
	rawSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m := wire.EncodeRequest(subject, &serve.Request{Method: r.Method, Path: "/x", Body: body})
		reply, err := cnc.RequestMsg(m, 10*time.Second)
		if err != nil {
			http.Error(w, err.Error(), 503)
			return
		}
		_, _ = w.Write(reply.Data)
	}))
	b.Cleanup(rawSrv.Close)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
	b.Cleanup(client.CloseIdleConnections)
	payload := bytes.Repeat([]byte("x"), 256)
	do := func(url string) error {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Authorization", "Bearer "+benchKey+"42") // ignored where auth is off
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return &serve.Error{Status: resp.StatusCode, Msg: "status"}
		}
		return nil
	}
	// Wait for the route table.
	deadline := time.Now().Add(10 * time.Second)
	for do(ingressURL) != nil || do(authURL) != nil {
		if time.Now().After(deadline) {
			b.Fatal("ingress never served")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, c := range []int{1, 64} {
		for _, tg := range []struct{ name, url string }{{"raw", rawSrv.URL + "/bench/x"}, {"ingress", ingressURL}, {"ingress_auth", authURL}} {
			b.Run(tg.name+"/c"+strconv.Itoa(c), func(b *testing.B) {
				natstest.Measure(b, c, func() error { return do(tg.url) })
			})
		}
	}
}
