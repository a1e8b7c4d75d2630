package wire

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRequestRoundTrip(t *testing.T) {
	in := &serve.Request{
		Method: "POST", Path: "/analyze", Query: url.Values{"k": {"1", "2"}, "q": {"a b"}},
		Header: http.Header{"Content-Type": {"application/json"}, "X-Custom": {"x", "y"}},
		Body:   []byte(`{"text":"hi"}`), Call: "summarize", RequestID: "req-1",
	}
	out := DecodeRequest(EncodeRequest("s", in))
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("DecodeRequest(EncodeRequest(r)) = %+v, want %+v", out, in)
	}
}

func TestResponseRoundTrip(t *testing.T) {
	in := &serve.Response{Status: 201, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("made")}
	out := DecodeResponse(EncodeResponse(in))
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("DecodeResponse(EncodeResponse(r)) = %+v, want %+v", out, in)
	}
	e := DecodeResponse(EncodeError(serve.Errorf(http.StatusBadRequest, "no %s", "text")))
	if e.Status != 400 || e.Header.Get(protocol.HdrError) != string(protocol.ErrBadRequest) || string(e.Body) != "no text" {
		t.Fatalf("DecodeResponse(EncodeError(400)) = %d %v %q, want 400 bad_request \"no text\"", e.Status, e.Header, e.Body)
	}
}

// TestCallerAndStream runs a responder on the route subject (standing in
// for a router+replica) on a real embedded NATS server.
func TestCallerAndStream(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	names, _ := protocol.NewNames("")
	gate := make(chan struct{})
	_, err := nc.QueueSubscribe(names.RouteSubject("a", "d"), protocol.RouterQueue, func(m *nats.Msg) {
		req := DecodeRequest(m)
		if inbox := m.Header.Get(protocol.HdrStream); inbox != "" {
			go func() {
				w := NewStreamWriter(nc, inbox)
				_ = w.WriteHead(202, http.Header{"Content-Type": {"text/plain"}})
				_ = w.Write([]byte("one "))
				<-gate // the caller must see chunk one before chunk two exists
				_ = w.Write([]byte("two"))
				r := w.Finish(nil)
				r.Subject = m.Reply
				_ = nc.PublishMsg(r)
			}()
			return
		}
		if req.Call == "fail" {
			r := ErrorMsg(503, protocol.ErrQueueFull, "full")
			r.Subject = m.Reply
			_ = nc.PublishMsg(r)
			return
		}
		r := EncodeResponse(&serve.Response{Status: 200, Body: append([]byte("echo:"), req.Body...)})
		r.Subject = m.Reply
		_ = nc.PublishMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the subscription is registered at the server
		t.Fatal(err)
	}
	c := NewCaller(natstest.Conn(t, ns), names)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	resp, err := serve.NewHandle(c, "a", "d").Call(ctx, &serve.Request{Body: []byte("hi")})
	if err != nil || string(resp.Body) != "echo:hi" {
		t.Fatalf("Call() = %v, %v, want echo:hi", resp, err)
	}
	_, err = serve.NewHandle(c, "a", "d").Call(ctx, &serve.Request{Call: "fail"})
	var se *serve.Error
	if !errors.As(err, &se) || se.Status != 503 || se.Code != protocol.ErrQueueFull {
		t.Fatalf("Call(fail) = %v, want 503 queue_full", err)
	}
	if _, err := c.Call(ctx, "a", "nobody", &serve.Request{}); !errors.As(err, &se) || se.Code != protocol.ErrUnavailable {
		t.Fatalf("Call(no router) = %v, want unavailable", err)
	}

	sink := &recordSink{first: make(chan struct{})}
	go func() {
		<-sink.first
		close(gate)
	}()
	if err := c.Stream(ctx, "a", "d", &serve.Request{}, sink); err != nil {
		t.Fatalf("Stream() = %v", err)
	}
	if sink.status != 202 || strings.Join(sink.chunks, "") != "one two" {
		t.Fatalf("Stream() got status %d chunks %q, want 202 [one two]", sink.status, sink.chunks)
	}
}

type recordSink struct {
	mu     sync.Mutex
	status int
	chunks []string
	first  chan struct{}
}

func (s *recordSink) Head(status int, _ http.Header) error {
	s.status = status
	return nil
}

func (s *recordSink) Chunk(b []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chunks = append(s.chunks, string(b))
	if len(s.chunks) == 1 {
		close(s.first)
	}
	return nil
}
