package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// replicaCaller stands in for the router and one replica, over a real
// NATS server and the replica's own connection: it pulls a request's
// chunked body as the replica does and answers like diag.Echo — ?size=N
// is N bytes of 'x' (pulled in chunks when larger than one message and
// the ingress accepts them), anything else the body's length.
type replicaCaller struct {
	fakeCaller
	nc    *nats.Conn
	stall time.Duration
	// ingress is the ingress's connection: flushed before a pull, as the
	// request would have gone out on it after the source's subscription.
	ingress *nats.Conn
	served  sync.WaitGroup // response sources being served
	// pullTo, if set, is where the request body is pulled to instead of a
	// buffer (a replica that dies mid-body).
	pullTo io.Writer
	// pulled receives every pull's outcome.
	pulled chan error
}

func (c *replicaCaller) Call(ctx context.Context, _, _ string, req *serve.Request) (*serve.Response, error) {
	body := req.Body
	if v := req.Header.Get(protocol.HeaderBodySource); v != "" {
		err := c.ingress.Flush()
		switch {
		case err != nil:
		case c.pullTo != nil:
			subject, _, _ := wire.ParseBodySource(v)
			_, err = wire.PullBodyTo(ctx, c.nc, subject, c.pullTo, c.stall)
		default:
			body, err = wire.PullBody(ctx, c.nc, v, wire.MaxChunkedBody, c.stall)
		}
		c.pulled <- err
		if err != nil {
			if c.pullTo != nil {
				<-ctx.Done() // a replica gone answers nothing
				return nil, wire.TransportError(ctx.Err())
			}
			return nil, wire.BodyError(err)
		}
	}
	size, err := strconv.Atoi(req.Query.Get("size"))
	if err != nil {
		return &serve.Response{Status: 200, Body: []byte(strconv.Itoa(len(body)))}, nil
	}
	out := bytes.Repeat([]byte{'x'}, size)
	if int64(size) <= wire.BodyLimit(0, c.nc.MaxPayload()) || req.Header.Get(protocol.HeaderBodyAccept) != protocol.BodyAcceptChunked {
		return &serve.Response{Status: 200, Body: out}, nil
	}
	src, err := wire.NewBodySource(c.nc, bytes.NewReader(out), int64(size), c.stall)
	if err != nil {
		return nil, err
	}
	src.PullWithin = src.Stall()
	// A replica's reply goes out on the connection that subscribed the
	// source, after it; this one's goes back by function call.
	if err := src.Flush(); err != nil {
		return nil, err
	}
	c.served.Go(func() { _ = src.Serve(context.Background()) })
	return &serve.Response{Status: 200, Header: http.Header{protocol.HeaderBodySource: {src.Header()}}}, nil
}

// chunkedIngress serves a Handler with chunked bodies (max_body_bytes 64
// MiB) on a real HTTP server over a stock 1 MiB max_payload server, with a
// replicaCaller; it returns the base URL and the ingress's connection.
func chunkedIngress(t *testing.T, stall time.Duration) (string, *nats.Conn, *replicaCaller) {
	t.Helper()
	ns := natstest.ServerWith(t, natsembed.Options{MaxPayload: 1 << 20})
	nc := natstest.Conn(t, ns)
	rc := &replicaCaller{nc: natstest.Conn(t, ns), ingress: nc, stall: stall, pulled: make(chan error, 64)}
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	tab := routes.New([]routes.Route{{Prefix: "/a", App: "a", Ingress: "A"}})
	h := New(Options{Caller: rc, Routes: func() *routes.Table { return tab }, Healthy: func() error { return nil },
		MaxBodyBytes: 64 << 20, MaxPayload: nc.MaxPayload, NC: nc, BodyStall: stall, Metrics: m, Log: zerolog.Nop()})
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		rc.served.Wait()
	})
	return srv.URL, nc, rc
}

// TestChunkedBodies: through the ingress handler on a stock server,
// requests and responses of 0 B, exactly one message, one byte over, 10
// MB and 64 MiB (max_body_bytes) arrive whole — requests with their length
// known and unknown (chunked transfer encoding) — and responses carry
// their Content-Length; past max_body_bytes a request is refused 413
// before anything is pulled. GET /-/limits names the transport.
func TestChunkedBodies(t *testing.T) {
	base, nc, rc := chunkedIngress(t, 0)
	one := int(wire.BodyLimit(0, nc.MaxPayload()))
	client := &http.Client{Timeout: time.Minute}
	for _, n := range []int{0, one, one + 1, 10_000_000, 64 << 20} {
		body := bytes.Repeat([]byte{'y'}, n)
		for _, known := range []bool{true, false} {
			var r io.Reader = bytes.NewReader(body)
			if !known {
				r = io.MultiReader(r) // no length: chunked transfer encoding
			}
			resp, err := client.Post(base+"/a/", "application/octet-stream", r)
			if err != nil {
				t.Fatalf("POST %d bytes: %v", n, err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(got) != strconv.Itoa(n) {
				t.Errorf("POST %d bytes (length known %v) = %s %.200q, want its length", n, known, resp.Status, got)
			}
		}
		resp, err := client.Get(base + "/a/?size=" + strconv.Itoa(n))
		if err != nil {
			t.Fatalf("GET %d bytes: %v", n, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(got) != n || resp.ContentLength != int64(n) || (n > 0 && got[n-1] != 'x') {
			t.Errorf("GET ?size=%d = %s, %d bytes (Content-Length %d), %v; want %d bytes", n, resp.Status, len(got), resp.ContentLength, err, n)
		}
	}
	for len(rc.pulled) > 0 {
		if err := <-rc.pulled; err != nil {
			t.Errorf("a pull failed: %v", err)
		}
	}
	for _, known := range []bool{true, false} {
		var r io.Reader = bytes.NewReader(make([]byte, 64<<20+1))
		if !known {
			r = io.MultiReader(r)
		}
		resp, err := client.Post(base+"/a/", "application/octet-stream", r)
		if err != nil {
			t.Fatalf("POST over the limit: %v", err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get("X-Jetserve-Error") != "body_too_large" {
			t.Errorf("POST 64 MiB + 1 (length known %v) = %s %.200q, want 413 body_too_large", known, resp.Status, got)
		}
	}
	resp, err := client.Get(base + "/-/limits")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(got), `"max_body_bytes":67108864`) || !strings.Contains(string(got), `"body_transport":"chunked"`) {
		t.Errorf("GET /-/limits = %s, want max_body_bytes 64 MiB over the chunked transport", got)
	}
}

// dieAfter closes the replica's connection once n bytes came: a replica
// killed mid-body.
type dieAfter struct {
	n  int
	nc *nats.Conn
}

func (d *dieAfter) Write(p []byte) (int, error) {
	d.n -= len(p)
	if d.n <= 0 {
		d.nc.Close()
	}
	return len(p), nil
}

// serverLinger ignores net/http's connection goroutine that lingers after
// answering a request whose body it did not read whole.
var serverLinger = goleak.IgnoreTopFunction("time.Sleep")

// settle waits until the ingress's subscriptions are back to want (they
// go when Serve returns, which the handler waits for).
func settle(t *testing.T, nc *nats.Conn, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); nc.NumSubscriptions() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("ingress subscriptions = %d, want %d: a body source leaked", nc.NumSubscriptions(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestChunkedReplicaDiesMidBody: a replica whose connection dies after 2
// MiB of a 20 MiB request body leaves the ingress without credit: the
// client gets 504 timeout within the stall timeout, not a hang, and the
// body source's subscription and goroutine are gone.
func TestChunkedReplicaDiesMidBody(t *testing.T) {
	const stall = 300 * time.Millisecond
	base, nc, rc := chunkedIngress(t, stall)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), serverLinger)
	subs := nc.NumSubscriptions()
	rc.pullTo = &dieAfter{n: 2 << 20, nc: rc.nc}
	client := &http.Client{Timeout: time.Minute}
	defer client.CloseIdleConnections()
	start := time.Now()
	resp, err := client.Post(base+"/a/", "application/octet-stream", bytes.NewReader(make([]byte, 20<<20)))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(string(got), "stopped taking the request body") {
		t.Errorf("POST to a replica that died mid-body = %s %.200q, want 504 naming the body", resp.Status, got)
	}
	if el := time.Since(start); el > 20*stall {
		t.Errorf("answered after %v, want within a few stall timeouts (%v)", el, stall)
	}
	if err := <-rc.pulled; err == nil {
		t.Error("the dead replica's pull succeeded")
	}
	settle(t, nc, subs)
}

// TestChunkedClientLeavesMidUpload: a client that sends 3 MiB of a
// declared 10 MB body and hangs up: the replica's pull fails with the
// source's error or the call's cancellation (its handler never runs), and the body source's
// subscription and goroutine are gone.
func TestChunkedClientLeavesMidUpload(t *testing.T) {
	base, nc, rc := chunkedIngress(t, 0)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), serverLinger)
	subs := nc.NumSubscriptions()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(conn, "POST /a/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
	if err == nil {
		_, err = conn.Write(make([]byte, 3<<20))
	}
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case err := <-rc.pulled:
		// The source's error chunk or the call's cancellation, whichever
		// comes first, ends the pull.
		if !errors.Is(err, wire.ErrBodySource) && !errors.Is(err, context.Canceled) {
			t.Errorf("replica's pull of a body whose client left = %v, want ErrBodySource or cancelled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the replica's pull hangs after its client left")
	}
	settle(t, nc, subs)
}

// TestChunkedClientStallsMidUpload: a client that sends 3 MiB of a
// declared 10 MB body and then nothing, its connection open: the replica's
// pull stalls (504 timeout from it), and the ingress ends its read of the
// client instead of waiting on it — the client gets the 504, and the body
// source's subscription and goroutine are gone.
func TestChunkedClientStallsMidUpload(t *testing.T) {
	const stall = 300 * time.Millisecond
	base, nc, rc := chunkedIngress(t, stall)
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(), serverLinger)
	subs := nc.NumSubscriptions()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /a/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
	if err == nil {
		_, err = conn.Write(make([]byte, 3<<20))
	}
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, "504") {
		t.Errorf("client stalled mid-upload got %q, %v; want 504", status, err)
	}
	if err := <-rc.pulled; !errors.Is(err, wire.ErrBodyStalled) {
		t.Errorf("replica's pull of a stalled client = %v, want ErrBodyStalled", err)
	}
	conn.Close()
	settle(t, nc, subs)
}
