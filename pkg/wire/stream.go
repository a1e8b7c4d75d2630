package wire

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
)

// StreamSink receives a streamed answer as it comes (serve.StreamSink).
type StreamSink = serve.StreamSink

// Stream sends a streaming request to app/deployment and delivers the head
// and every chunk to sink in order as they arrive. It returns when the
// replica's final reply has come and every chunk it announced was delivered.
func (c *Caller) Stream(ctx context.Context, app, deployment string, req *serve.Request, sink StreamSink) error {
	m := EncodeRequest(c.names.RouteSubject(app, deployment), req)
	ctx, cancel := c.withDeadline(ctx, m)
	defer cancel()
	return StreamVia(ctx, c.nc, m, sink, func(ctx context.Context, m *nats.Msg, _ func(*nats.Msg) error) (*nats.Msg, error) {
		return c.nc.RequestMsgWithContext(ctx, m)
	})
}

// StreamVia runs the caller side of a stream for the encoded request m
// (deadline set): it subscribes an inbox on nc, names it in HdrStream,
// sends m with send (which returns the final reply) and delivers head and
// chunks to sink in order. send also gets local, which a replica in the
// caller's own process may write the head and chunk messages to instead of
// the inbox (in order; it blocks while the caller is behind and fails once
// the caller left). When StreamVia returns early (sink failed, ctx ended)
// send's context is cancelled.
//
// The final reply decides the outcome: an error before any head is
// returned as a *serve.Error; one after chunks (HdrChunks set) is
// returned once they were delivered; a reply that is not a stream at all
// (the deployment does not stream) is delivered as its head and its body
// as one chunk.
func StreamVia(ctx context.Context, nc *nats.Conn, m *nats.Msg, sink StreamSink,
	send func(ctx context.Context, m *nats.Msg, local func(*nats.Msg) error) (*nats.Msg, error)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inbox := nc.NewRespInbox()
	msgs := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return fmt.Errorf("subscribe stream inbox: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // best effort on the way out
	m.Header.Set(protocol.HdrStream, inbox)
	local := func(msg *nats.Msg) error {
		select {
		case msgs <- msg:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("stream to a caller that left: %w", ctx.Err())
		}
	}

	type result struct {
		msg *nats.Msg
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := send(ctx, m, local)
		done <- result{r, err}
	}()

	next := 0 // next sequence expected
	headSent := false
	want := -1
	var final error // the final reply's error, returned after the chunks
	pending := map[int]*nats.Msg{}
	deliver := func(msg *nats.Msg) error {
		seq, _ := strconv.Atoi(msg.Header.Get(protocol.HdrChunkSeq))
		pending[seq] = msg
		for {
			p, ok := pending[next]
			if !ok {
				return nil
			}
			delete(pending, next)
			if next == 0 {
				headSent = true
				if err := sink.Head(statusOf(p.Header), httpHeaders(p.Header)); err != nil {
					return err
				}
			} else if err := sink.Chunk(p.Data); err != nil {
				return err
			}
			next++
		}
	}
	for {
		if want >= 0 && next > want {
			return final
		}
		select {
		case msg := <-msgs:
			if err := deliver(msg); err != nil {
				return err
			}
		case r := <-done:
			done = nil
			if r.err != nil {
				return transportError(r.err)
			}
			code := ErrorCode(r.msg)
			chunks := r.msg.Header.Get(protocol.HdrChunks)
			switch {
			case chunks == "" && code != "" && !headSent && next == 0:
				resp := DecodeResponse(r.msg)
				return &serve.Error{Status: resp.Status, Code: code, Msg: string(resp.Body)}
			case chunks == "" && !headSent && next == 0:
				// Not a stream: the whole answer is one chunk.
				resp := DecodeResponse(r.msg)
				if err := sink.Head(resp.Status, resp.Header); err != nil {
					return err
				}
				if len(resp.Body) > 0 {
					return sink.Chunk(resp.Body)
				}
				return nil
			}
			n, err := strconv.Atoi(chunks)
			if err != nil {
				return fmt.Errorf("stream reply without %s", protocol.HdrChunks)
			}
			if code != "" {
				resp := DecodeResponse(r.msg)
				final = &serve.Error{Status: resp.Status, Code: code, Msg: string(resp.Body)}
			}
			want = n // head (0) plus chunks 1..n
		case <-ctx.Done():
			return transportError(ctx.Err())
		}
	}
}

// StreamWriter is the replica side of a stream: it publishes the head and
// chunks to the caller's inbox (or hands them to a caller in the same
// process). Safe for concurrent use.
type StreamWriter struct {
	publish func(*nats.Msg) error
	inbox   string
	mu      sync.Mutex
	seq     int // guarded by mu: last sequence sent
	headed  bool
}

// NewStreamWriter writes to inbox on nc.
func NewStreamWriter(nc *nats.Conn, inbox string) *StreamWriter {
	return &StreamWriter{publish: nc.PublishMsg, inbox: inbox}
}

// NewLocalStreamWriter hands the head and chunk messages to publish (the
// local function StreamVia gives a replica in the caller's process).
func NewLocalStreamWriter(publish func(*nats.Msg) error) *StreamWriter {
	return &StreamWriter{publish: publish}
}

// WriteHead sends status and headers (sequence 0).
func (w *StreamWriter) WriteHead(status int, h http.Header) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeHeadLocked(status, h)
}

func (w *StreamWriter) writeHeadLocked(status int, h http.Header) error {
	if w.headed {
		return nil
	}
	w.headed = true
	m := nats.NewMsg(w.inbox)
	m.Header.Set(protocol.HdrChunkSeq, "0")
	m.Header.Set(protocol.HdrStatus, strconv.Itoa(status))
	copyHTTPHeaders(m.Header, h)
	if err := w.publish(m); err != nil {
		return fmt.Errorf("stream head: %w", err)
	}
	return nil
}

// Write sends one chunk.
func (w *StreamWriter) Write(chunk []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writeHeadLocked(http.StatusOK, nil); err != nil {
		return err
	}
	w.seq++
	m := nats.NewMsg(w.inbox)
	m.Header.Set(protocol.HdrChunkSeq, strconv.Itoa(w.seq))
	m.Data = chunk
	if err := w.publish(m); err != nil {
		return fmt.Errorf("stream chunk %d: %w", w.seq, err)
	}
	return nil
}

// Finish returns the final reply announcing how many chunks were sent; err,
// if not nil, is carried as the error of the stream (after the chunks).
func (w *StreamWriter) Finish(err error) *nats.Msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m *nats.Msg
	if err != nil && !w.headed {
		m = EncodeError(err)
		return m
	}
	if !w.headed {
		_ = w.writeHeadLocked(http.StatusOK, nil)
	}
	if err != nil {
		m = EncodeError(err)
	} else {
		m = nats.NewMsg("")
		m.Header.Set(protocol.HdrStatus, "200")
	}
	m.Header.Set(protocol.HdrChunks, strconv.Itoa(w.seq))
	return m
}

var _ serve.StreamWriter = (*StreamWriter)(nil)
