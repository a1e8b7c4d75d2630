package wire_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
)

// The wire stages of a no-op request (docs/performance.md): the request's
// and the reply's encoding and decoding, and the publish of the encoded
// request to a nats-server (the client's share of a hop: protocol
// encoding and the write to its buffer).

func stageRequest() *serve.Request {
	return &serve.Request{Method: "POST", Path: "/x", Body: []byte("{}"), RequestID: "rid-1",
		Header: http.Header{"Content-Type": {"application/json"}, "User-Agent": {"Go-http-client/1.1"}, "Accept-Encoding": {"gzip"}}}
}

func BenchmarkStageEncodeRequest(b *testing.B) {
	req := stageRequest()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		m := wire.EncodeRequest("s", req)
		_, c := wire.WithDeadline(ctx, m, time.Minute)
		c()
	}
}

func BenchmarkStageDecodeRequest(b *testing.B) {
	m := wire.EncodeRequest("s", stageRequest())
	b.ReportAllocs()
	for b.Loop() {
		_ = wire.DecodeRequest(m)
	}
}

func BenchmarkStageEncodeDecodeResponse(b *testing.B) {
	resp := &serve.Response{Status: 200, Body: []byte("{}"), Header: http.Header{"Content-Type": {"application/json"}}}
	b.ReportAllocs()
	for b.Loop() {
		_ = wire.DecodeResponse(wire.EncodeResponse(resp))
	}
}

func BenchmarkStagePublish(b *testing.B) {
	nc := natstest.Conn(b, natstest.Server(b))
	m := wire.EncodeRequest("stage.nobody", stageRequest())
	b.ReportAllocs()
	for b.Loop() {
		if err := nc.PublishMsg(m); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
}
