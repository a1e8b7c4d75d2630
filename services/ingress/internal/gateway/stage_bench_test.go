package gateway

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"testing"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The ingress stages of a no-op request, each alone (docs/performance.md
// has the table): HTTP parse, route match, the whole handler around a
// caller that answers at once (everything the ingress does of its own:
// ids, metrics, headers, body, response), and the HTTP write.

// stageRequest is what the e2e benchmark's load generator sends.
const stageRequest = "POST /bench/x HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: Go-http-client/1.1\r\n" +
	"Content-Length: 2\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n{}"

func BenchmarkStageHTTPParse(b *testing.B) {
	br := bufio.NewReader(nil)
	rd := bytes.NewReader(nil)
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset([]byte(stageRequest))
		br.Reset(rd)
		r, err := http.ReadRequest(br)
		if err != nil {
			b.Fatal(err)
		}
		_ = r
	}
}

func BenchmarkStageRouteMatch(b *testing.B) {
	tab := routes.New([]routes.Route{{Prefix: "/a", App: "a"}, {Prefix: "/bench", App: "bench"}, {Prefix: "/text", App: "t"}})
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := tab.Match("/bench/x"); !ok {
			b.Fatal("no match")
		}
	}
}

// nopCaller answers every call with resp, as a replica's echo would.
type nopCaller struct{ resp *serve.Response }

func (c nopCaller) Call(_ context.Context, _, _ string, req *serve.Request) (*serve.Response, error) {
	return &serve.Response{Status: 200, Header: c.resp.Header, Body: req.Body}, nil
}

func (c nopCaller) Stream(context.Context, string, string, *serve.Request, wire.StreamSink) error {
	return nil
}

// discardWriter is a reusable http.ResponseWriter with no output.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

func BenchmarkStageIngressHandler(b *testing.B) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	tab := routes.New([]routes.Route{{Prefix: "/bench", App: "bench", Ingress: "B"}})
	h := New(Options{Caller: nopCaller{resp: &serve.Response{Header: http.Header{"Content-Type": {"application/json"}}}},
		Routes: func() *routes.Table { return tab }, Healthy: func() error { return nil },
		MaxBodyBytes: 1 << 20, Metrics: m, Log: zerolog.Nop()})
	r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader([]byte(stageRequest))))
	if err != nil {
		b.Fatal(err)
	}
	body := bytes.NewReader(nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		body.Reset([]byte("{}"))
		r.Body = http.NoBody
		r.Body = readCloser{body}
		clear(w.h)
		h.ServeHTTP(w, r)
		if w.code != 200 {
			b.Fatalf("status %d", w.code)
		}
	}
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }
