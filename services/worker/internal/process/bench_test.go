package process

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
)

// BenchmarkProxy measures what the proxy adds to one HTTP round trip to
// the child: "direct" is a keep-alive http.Client POSTing to the child
// (the baseline, same run, same child), "proxy" is Child.ServeRequest of
// the same request. Run with
//
//	go test -run '^$' -bench Proxy -benchtime 5000x ./internal/process/
//
// and read proxy/direct from the ns/op column (or the "ratio" metric).
func BenchmarkProxy(b *testing.B) {
	var log logBuf
	c := start(b, opts(b, modeServe, &log))
	body := []byte(`{"text":"hello jetserve"}`)
	client := &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 4, DisableCompression: true}}
	defer client.CloseIdleConnections()
	url := c.base + "/echo"
	var direct, proxy time.Duration
	b.Run("direct", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		direct = time.Since(start) / time.Duration(b.N)
	})
	b.Run("proxy", func(b *testing.B) {
		req := &serve.Request{Method: http.MethodPost, Path: "/echo", Header: http.Header{"Content-Type": {"application/json"}}, Body: body}
		start := time.Now()
		for b.Loop() {
			resp, err := c.ServeRequest(context.Background(), req)
			if err != nil || resp.Status != http.StatusOK {
				b.Fatalf("ServeRequest = %v, %v", resp, err)
			}
		}
		proxy = time.Since(start) / time.Duration(b.N)
		if direct > 0 {
			b.ReportMetric(float64(proxy)/float64(direct), "ratio")
		}
	})
	if direct > 0 && proxy > 0 {
		b.Logf("proxy/direct = %.2fx (%v vs %v per request)", float64(proxy)/float64(direct), proxy, direct)
	}
}
