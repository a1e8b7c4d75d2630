package wire_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// chunkedConns starts a server with a stock 1 MiB max_payload and
// connects a sender and a receiver.
func chunkedConns(t *testing.T) (send, recv *nats.Conn) {
	t.Helper()
	ns := natstest.ServerWith(t, natsembed.Options{MaxPayload: 1 << 20})
	return natstest.Conn(t, ns), natstest.Conn(t, ns)
}

// serveBody serves src on its own goroutine; the returned func waits for
// Serve's result. The source's subscription is flushed first: a receiver
// on another connection could otherwise pull before the server has it (in
// the fleet the name of a source goes out on the connection that
// subscribed it, after the subscription).
func serveBody(ctx context.Context, src *wire.BodySource) func() error {
	return serveBodyAt(ctx, src, nil)
}

// serveBodyAt is serveBody that also records when Serve returned.
func serveBodyAt(ctx context.Context, src *wire.BodySource, at *time.Time) func() error {
	_ = src.Flush()
	done := make(chan error, 1)
	go func() {
		err := src.Serve(ctx)
		if at != nil {
			*at = time.Now()
		}
		done <- err
	}()
	return func() error { return <-done }
}

// pattern is n bytes, each 4 KiB stamped with its offset: chunks out of
// order or repeated would not compare equal.
func pattern(n int) []byte {
	b := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuv"), n/32+1)[:n]
	for i := 0; i+4 <= n; i += 4 << 10 {
		binary.BigEndian.PutUint32(b[i:], uint32(i))
	}
	return b
}

// TestChunkedRoundTrip: bodies of 0 B, exactly one chunk, one byte over,
// 10 MB and 64 MiB cross a stock server whole, with their length known
// and unknown (a reader that hides it).
func TestChunkedRoundTrip(t *testing.T) {
	send, recv := chunkedConns(t)
	one := wire.ChunkSize(send.MaxPayload())
	if one >= 1<<20 || one < 900<<10 {
		t.Fatalf("ChunkSize(%d) = %d, want max_payload less header room", send.MaxPayload(), one)
	}
	for _, n := range []int{0, one, one + 1, 10_000_000, 64 << 20} {
		body := pattern(n)
		for _, known := range []bool{true, false} {
			size := int64(n)
			var r io.Reader = bytes.NewReader(body)
			if !known {
				size, r = -1, io.MultiReader(r) // no Len: the length is unknown
			}
			src, err := wire.NewBodySource(send, r, size, 0)
			if err != nil {
				t.Fatal(err)
			}
			wait := serveBody(context.Background(), src)
			got, err := wire.PullBody(context.Background(), recv, src.Header(), 64<<20, 0)
			if err != nil {
				t.Fatalf("PullBody(%d bytes, known %v) = %v", n, known, err)
			}
			if err := wait(); err != nil {
				t.Fatalf("Serve(%d bytes, known %v) = %v", n, known, err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("PullBody(%d bytes, known %v) = %d bytes, not the body", n, known, len(got))
			}
			if known && cap(got) != n {
				t.Errorf("PullBody(%d bytes) buffer cap %d, want one allocation of the length", n, cap(got))
			}
		}
	}
}

// slowWriter takes each chunk after a pause: a receiver slower than the
// sender.
type slowWriter struct{ bytes.Buffer }

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	return w.Buffer.Write(p)
}

// TestChunkedSlowReceiver: a receiver much slower than its sender gets
// every chunk (the credit window holds the sender back; without it the
// receiver's inbox would overflow and drop chunks).
func TestChunkedSlowReceiver(t *testing.T) {
	send, recv := chunkedConns(t)
	body := pattern(40 * wire.ChunkSize(send.MaxPayload()))
	src, err := wire.NewBodySource(send, bytes.NewReader(body), -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	wait := serveBody(context.Background(), src)
	var w slowWriter
	subject, _, _ := wire.ParseBodySource(src.Header())
	if _, err := wire.PullBodyTo(context.Background(), recv, subject, &w, 0); err != nil {
		t.Fatalf("PullBodyTo = %v", err)
	}
	if err := wait(); err != nil || !bytes.Equal(w.Bytes(), body) {
		t.Fatalf("Serve = %v, body whole %v", err, bytes.Equal(w.Bytes(), body))
	}
}

// closeAfter runs close once n bytes went through it (a peer that dies
// mid-body).
type closeAfter struct {
	r     io.Reader
	w     io.Writer
	n     int
	close func()
}

func (c *closeAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.close()
	}
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}

func (c *closeAfter) Write(p []byte) (int, error) {
	c.n -= len(p)
	if c.n <= 0 {
		c.close()
	}
	return c.w.Write(p)
}

// TestChunkedPeerGone: a receiver whose connection dies mid-body leaves
// its sender stalled, and a sender whose connection dies leaves its
// receiver stalled: each side ends with ErrBodyStalled within the stall
// timeout, and no goroutine is left (TestMain's goleak).
func TestChunkedPeerGone(t *testing.T) {
	const stall = 300 * time.Millisecond
	body := pattern(20 << 20)
	t.Run("receiver", func(t *testing.T) {
		send, recv := chunkedConns(t)
		src, err := wire.NewBodySource(send, bytes.NewReader(body), int64(len(body)), stall)
		if err != nil {
			t.Fatal(err)
		}
		var at time.Time
		wait := serveBodyAt(context.Background(), src, &at)
		subject, _, _ := wire.ParseBodySource(src.Header())
		w := &closeAfter{w: io.Discard, n: 2 << 20, close: recv.Close}
		start := time.Now()
		_, _ = wire.PullBodyTo(context.Background(), recv, subject, w, 2*stall)
		if err := wait(); !errors.Is(err, wire.ErrBodyStalled) || at.Sub(start) > 10*stall {
			t.Fatalf("Serve to a receiver gone = %v after %v, want ErrBodyStalled within %v", err, at.Sub(start), stall)
		}
	})
	t.Run("sender", func(t *testing.T) {
		send, recv := chunkedConns(t)
		r := &closeAfter{r: bytes.NewReader(body), n: 2 << 20, close: send.Close}
		src, err := wire.NewBodySource(send, r, int64(len(body)), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		wait := serveBody(context.Background(), src)
		start := time.Now()
		_, err = wire.PullBody(context.Background(), recv, src.Header(), 64<<20, stall)
		if !errors.Is(err, wire.ErrBodyStalled) || time.Since(start) > 10*stall {
			t.Fatalf("PullBody from a sender gone = %v after %v, want ErrBodyStalled within %v", err, time.Since(start), stall)
		}
		if e := wire.BodyError(err); e.Status != 504 {
			t.Errorf("BodyError(stalled) = %d, want 504", e.Status)
		}
		_ = wait() // a closed connection: whatever it says, it returns
	})
}

// failingReader returns its body, then err.
type failingReader struct {
	r   io.Reader
	err error
}

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestChunkedFailures: a source whose reader fails tells its receiver
// (503); a body shorter than announced fails both; a receiver that gives
// up stops its source at once; a second receiver is refused; a malformed
// source header and a body over the limit are refused before any pull.
func TestChunkedFailures(t *testing.T) {
	send, recv := chunkedConns(t)
	ctx := context.Background()
	gone := errors.New("client went away")
	body := pattern(3 << 20)

	src, _ := wire.NewBodySource(send, failingReader{bytes.NewReader(body), gone}, -1, 0)
	wait := serveBody(ctx, src)
	_, err := wire.PullBody(ctx, recv, src.Header(), 64<<20, 0)
	if !errors.Is(err, wire.ErrBodySource) || !strings.Contains(err.Error(), "client went away") {
		t.Errorf("PullBody of a failing source = %v, want ErrBodySource with its reason", err)
	}
	if e := wire.BodyError(err); e.Status != 503 {
		t.Errorf("BodyError(source failed) = %d, want 503", e.Status)
	}
	if err := wait(); !errors.Is(err, gone) {
		t.Errorf("Serve of a failing reader = %v, want its error", err)
	}

	src, _ = wire.NewBodySource(send, bytes.NewReader(body), int64(len(body))+1, 0)
	wait = serveBody(ctx, src)
	if _, err := wire.PullBody(ctx, recv, src.Header(), 64<<20, 0); !errors.Is(err, wire.ErrBodySource) {
		t.Errorf("PullBody of a short body = %v, want ErrBodySource", err)
	}
	if err := wait(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Serve of a short body = %v, want io.ErrUnexpectedEOF", err)
	}

	src, _ = wire.NewBodySource(send, bytes.NewReader(pattern(20<<20)), 20<<20, time.Minute)
	wait = serveBody(ctx, src)
	subject, _, _ := wire.ParseBodySource(src.Header())
	pctx, cancel := context.WithCancel(ctx)
	start := time.Now()
	_, err = wire.PullBodyTo(pctx, recv, subject, &closeAfter{w: io.Discard, n: 1 << 20, close: cancel}, 0)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("PullBodyTo cancelled = %v, want context.Canceled", err)
	}
	if err := wait(); !errors.Is(err, wire.ErrBodyAborted) || time.Since(start) > 5*time.Second {
		t.Errorf("Serve to a receiver that gave up = %v after %v, want ErrBodyAborted at once", err, time.Since(start))
	}

	src, _ = wire.NewBodySource(send, bytes.NewReader(body), int64(len(body)), 0)
	sctx, stop := context.WithCancel(ctx)
	wait = serveBody(sctx, src)
	if _, err := wire.PullBody(ctx, recv, src.Header(), 64<<20, 0); err != nil {
		t.Fatalf("first PullBody = %v", err)
	}
	if err := wait(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	stop()
	src, _ = wire.NewBodySource(send, bytes.NewReader(body), int64(len(body)), 0)
	wait = serveBody(ctx, src)
	subject, _, _ = wire.ParseBodySource(src.Header())
	_, _ = wire.PullBodyTo(ctx, recv, subject, &closeAfter{w: io.Discard, n: 1 << 20, close: func() {}}, 0)
	if err := wait(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	// The source is gone once served: a second pull finds nobody, at
	// once.
	if _, err := wire.PullBody(ctx, recv, src.Header(), 64<<20, time.Minute); !errors.Is(err, wire.ErrBodyLost) ||
		!strings.Contains(err.Error(), "no body source") {
		t.Errorf("PullBody of a body already sent = %v, want no body source", err)
	}

	for _, h := range []string{"", "subject", "subject x", "subject -2", " 12"} {
		if _, _, err := wire.ParseBodySource(h); err == nil {
			t.Errorf("ParseBodySource(%q) = nil error, want malformed", h)
		}
	}
	if _, err := wire.PullBody(ctx, recv, "_INBOX.x 100", 99, 0); err == nil || !strings.Contains(err.Error(), "exceeds 99") {
		t.Errorf("PullBody over the limit = %v, want exceeds", err)
	}
}

// TestChunkedSecondReceiver: a source that a first receiver pulls from
// refuses a second one (a retried request cannot get its body again).
func TestChunkedSecondReceiver(t *testing.T) {
	send, recv := chunkedConns(t)
	ctx := context.Background()
	body := pattern(20 << 20)
	src, _ := wire.NewBodySource(send, bytes.NewReader(body), int64(len(body)), 0)
	wait := serveBody(ctx, src)
	subject, _, _ := wire.ParseBodySource(src.Header())
	second := make(chan error, 1)
	// Mid-body, the first receiver waits for a second one's pull.
	w := &closeAfter{w: io.Discard, n: 1 << 20, close: func() {
		_, err := wire.PullBody(ctx, recv, src.Header(), 64<<20, 0)
		second <- err
	}}
	w.close = onceFunc(w.close)
	if _, err := wire.PullBodyTo(ctx, recv, subject, w, 0); err != nil {
		t.Fatalf("first PullBodyTo = %v", err)
	}
	if err := <-second; !errors.Is(err, wire.ErrBodySource) || !strings.Contains(err.Error(), "cannot be sent twice") {
		t.Errorf("second PullBody = %v, want refused", err)
	}
	if err := wait(); err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func onceFunc(f func()) func() {
	done := false
	return func() {
		if !done {
			done = true
			f()
		}
	}
}
