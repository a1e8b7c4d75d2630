package wire

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
)

// Chunked bodies.
//
// A body larger than one NATS message can travel as a sequence of
// core-NATS messages pulled by its receiver straight from its sender: no
// JetStream write, no store, no digest of the whole body. The sender opens
// a BodySource (an inbox subscription of its own) and names it in the
// message that would have carried the body (protocol.HeaderBodySource:
// "<subject> <length>", length -1 when unknown). The receiver (PullBody,
// PullBodyTo) subscribes an inbox and sends the source credit: the highest
// chunk sequence it takes (protocol.HdrCredit, cumulative, with the inbox
// as reply subject). The source reads its body and publishes chunks
// numbered from 1 (protocol.HdrChunkSeq), each at most ChunkSize of the
// server's max_payload, up to the credit; the last one carries the total
// length and a CRC-32C of the body (protocol.HdrBodyEnd). The receiver
// grants more as it consumes chunks, so that at most ChunkWindow chunks
// are ever in flight: a slow receiver slows the source down instead of
// making nats-server or nats.go drop chunks as a slow consumer.
//
// Failures end a transfer, never hang it. A missing chunk (a sequence
// gap), a wrong length or checksum fail the receiver (ErrBodyLost); a peer
// that stays silent for longer than the stall timeout fails the other side
// (ErrBodyStalled); a source whose reader fails sends that error as its
// last chunk (protocol.HdrBodyError) and returns it; a receiver that gives
// up tells the source (HdrCredit "abort"), which returns ErrBodyAborted. A
// source serves one receiver: another one (a router retrying the request
// on a second replica after the first took the body) is refused with an
// error chunk, since a streamed body cannot be read twice.
//
// Concurrency: a BodySource is served by one goroutine (Serve, owned by
// its caller); PullBody and PullBodyTo run on their caller's goroutine.
// Neither starts goroutines.

// ChunkWindow is how many chunks a receiver lets be in flight.
const ChunkWindow = 8

// MaxChunkedBody bounds a body a receiver takes when its caller sets no
// lower limit (a replica: the ingress enforces max_body_bytes).
const MaxChunkedBody = 1 << 30

// DefaultBodyStall is how long either side of a chunked transfer waits for
// the other before it gives up on it.
const DefaultBodyStall = 10 * time.Second

// Errors of a chunked transfer.
var (
	// ErrBodyStalled: the peer stayed silent for longer than the stall
	// timeout (gone, or stuck).
	ErrBodyStalled = errors.New("body transfer stalled")
	// ErrBodyLost: chunks went missing or the body arrived corrupt.
	ErrBodyLost = errors.New("body transfer lost chunks")
	// ErrBodyAborted: the receiver gave up on the body.
	ErrBodyAborted = errors.New("body receiver gave up")
	// ErrBodySource: the source failed to read its body (its text follows).
	ErrBodySource = errors.New("body source failed")
)

// ReadError is a BodySource's failure to read its body (a client gone,
// a body over its limit).
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "read body: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ChunkSize is the largest chunk one message of a server whose max_payload
// is maxPayload carries, with HeaderRoom kept for headers.
func ChunkSize(maxPayload int64) int {
	return int(max(BodyLimit(0, maxPayload), 4<<10))
}

// BodySource serves one body to the one receiver that pulls it.
type BodySource struct {
	nc    *nats.Conn
	sub   *nats.Subscription
	msgs  chan *nats.Msg
	r     io.Reader
	size  int64 // -1 unknown
	chunk int
	stall time.Duration
	// Sent is the number of bytes sent so far; read it after Serve.
	Sent int64
	// PullWithin, if set, bounds how long Serve waits for the first pull
	// (ErrBodyStalled after it); else only Serve's context does.
	PullWithin time.Duration
}

// Stall is how long Serve waits for credit once the receiver has pulled.
func (s *BodySource) Stall() time.Duration { return s.stall }

// NewBodySource subscribes the inbox a receiver pulls r from: size bytes
// (-1: until r's EOF). stall bounds how long Serve waits for credit once
// the receiver has pulled (0: DefaultBodyStall). Serve it, or Close it.
func NewBodySource(nc *nats.Conn, r io.Reader, size int64, stall time.Duration) (*BodySource, error) {
	if stall <= 0 {
		stall = DefaultBodyStall
	}
	s := &BodySource{nc: nc, msgs: make(chan *nats.Msg, 4*ChunkWindow), r: r, size: size,
		chunk: ChunkSize(nc.MaxPayload()), stall: stall}
	sub, err := nc.ChanSubscribe(nc.NewInbox(), s.msgs)
	if err != nil {
		return nil, fmt.Errorf("subscribe body source: %w", err)
	}
	s.sub = sub
	return s, nil
}

// Header is the value of protocol.HeaderBodySource naming this source.
func (s *BodySource) Header() string {
	return s.sub.Subject + " " + strconv.FormatInt(s.size, 10)
}

// Flush waits until the server has the source's subscription (for a
// receiver on another connection that might pull before it).
func (s *BodySource) Flush() error { return s.nc.Flush() }

// Close unsubscribes the source (Serve does when it returns).
func (s *BodySource) Close() { _ = s.sub.Unsubscribe() }

// Serve sends the body to the first receiver that pulls it, as its credit
// allows, and returns once the last chunk went out (nil), or with the
// reason it could not: ctx ended (before anyone pulled, or during the
// transfer), the receiver stalled or gave up, the reader failed. It
// unsubscribes the source on its way out.
func (s *BodySource) Serve(ctx context.Context) error {
	defer s.Close()
	var (
		to      string // the receiver's inbox
		granted int64  // highest sequence the receiver takes
		seq     int64  // last sequence sent
		buf     []byte
		sum     uint32
	)
	stall := time.NewTimer(time.Hour)
	stall.Stop()
	defer stall.Stop()
	for {
		for to != "" && seq < granted {
			if buf == nil {
				n := s.chunk
				if s.size >= 0 {
					n = int(min(int64(n), max(s.size, 1)))
				}
				buf = make([]byte, n)
			}
			want := len(buf)
			if s.size >= 0 {
				want = int(min(int64(want), s.size-s.Sent))
			}
			n, err := io.ReadFull(s.r, buf[:want])
			last := false
			switch {
			case s.size >= 0 && err == nil:
				last = s.Sent+int64(n) == s.size
			case s.size < 0 && (err == io.EOF || err == io.ErrUnexpectedEOF):
				last, err = true, nil
			case s.size >= 0 && (err == io.EOF || err == io.ErrUnexpectedEOF):
				err = fmt.Errorf("body ended after %d of %d bytes: %w", s.Sent+int64(n), s.size, err)
			}
			seq++
			m := &nats.Msg{Subject: to, Header: nats.Header{protocol.HdrChunkSeq: {strconv.FormatInt(seq, 10)}}}
			if err != nil {
				m.Header[protocol.HdrBodyError] = []string{err.Error()}
				_ = s.nc.PublishMsg(m)
				return &ReadError{Err: err}
			}
			m.Data = buf[:n]
			sum = crc32.Update(sum, castagnoli, m.Data)
			s.Sent += int64(n)
			if last {
				m.Header[protocol.HdrBodyEnd] = []string{fmt.Sprintf("%d %08x", s.Sent, sum)}
			}
			if err := s.nc.PublishMsg(m); err != nil {
				return fmt.Errorf("send body chunk %d: %w", seq, err)
			}
			if last {
				return nil
			}
		}
		switch {
		case to != "":
			stall.Reset(s.stall)
		case s.PullWithin > 0:
			stall.Reset(s.PullWithin)
		}
		select {
		case m := <-s.msgs:
			stall.Stop()
			if m.Reply == "" {
				continue
			}
			if to == "" {
				to = m.Reply
			} else if m.Reply != to {
				refuse := &nats.Msg{Subject: m.Reply, Header: nats.Header{protocol.HdrChunkSeq: {"1"},
					protocol.HdrBodyError: {"the body was already streamed to another receiver: it cannot be sent twice"}}}
				_ = s.nc.PublishMsg(refuse)
				continue
			}
			v := m.Header.Get(protocol.HdrCredit)
			if v == "abort" {
				return ErrBodyAborted
			}
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > granted {
				granted = n
			}
		case <-stall.C:
			if to == "" {
				return fmt.Errorf("nobody pulled the body within %v: %w", s.PullWithin, ErrBodyStalled)
			}
			return fmt.Errorf("no credit from the receiver for %v: %w", s.stall, ErrBodyStalled)
		case <-ctx.Done():
			if to != "" {
				m := &nats.Msg{Subject: to, Header: nats.Header{protocol.HdrChunkSeq: {strconv.FormatInt(seq+1, 10)},
					protocol.HdrBodyError: {"the sender gave up: " + ctx.Err().Error()}}}
				_ = s.nc.PublishMsg(m)
			}
			return fmt.Errorf("serve body: %w", ctx.Err())
		}
	}
}

// ParseBodySource reads a protocol.HeaderBodySource value: the source's
// subject and the body's length (-1 unknown).
func ParseBodySource(v string) (subject string, size int64, err error) {
	subject, n, ok := strings.Cut(v, " ")
	if ok {
		size, err = strconv.ParseInt(n, 10, 64)
	}
	if !ok || err != nil || subject == "" || size < -1 {
		return "", 0, fmt.Errorf("malformed %s %q: want \"<subject> <length>\"", protocol.HeaderBodySource, v)
	}
	return subject, size, nil
}

// PullBody pulls the body a source holds (header: its
// protocol.HeaderBodySource value) into one buffer, allocated once when
// the length is known; a body longer than limit fails.
func PullBody(ctx context.Context, nc *nats.Conn, header string, limit int64, stall time.Duration) ([]byte, error) {
	subject, size, err := ParseBodySource(header)
	if err != nil {
		return nil, err
	}
	if size > limit {
		return nil, fmt.Errorf("body of %d bytes exceeds %d", size, limit)
	}
	var w limitedBuffer
	w.limit = limit
	if size > 0 {
		w.b = make([]byte, 0, size)
	}
	if _, err := PullBodyTo(ctx, nc, subject, &w, stall); err != nil {
		return nil, err
	}
	if size >= 0 && int64(len(w.b)) != size {
		return nil, fmt.Errorf("body of %d bytes announced, %d came: %w", size, len(w.b), ErrBodyLost)
	}
	return w.b, nil
}

// limitedBuffer appends what is written, up to limit bytes.
type limitedBuffer struct {
	b     []byte
	limit int64
}

func (w *limitedBuffer) Write(p []byte) (int, error) {
	if int64(len(w.b)+len(p)) > w.limit {
		return 0, fmt.Errorf("body exceeds %d bytes", w.limit)
	}
	w.b = append(w.b, p...)
	return len(p), nil
}

// PullBodyTo pulls the body of the source at subject and writes it to w
// chunk by chunk as it arrives; it returns the bytes written. Whatever
// ends it early (ctx, w failing, the source failing or going silent for
// stall (0: DefaultBodyStall), lost chunks) is returned, and the source is
// told to stop.
func PullBodyTo(ctx context.Context, nc *nats.Conn, subject string, w io.Writer, stall time.Duration) (int64, error) {
	if stall <= 0 {
		stall = DefaultBodyStall
	}
	inbox := nc.NewInbox()
	// Room for the whole window and a refusal: nats.go drops what a full
	// channel cannot take.
	msgs := make(chan *nats.Msg, ChunkWindow+2)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return 0, fmt.Errorf("subscribe body inbox: %w", err)
	}
	defer sub.Unsubscribe() //nolint:errcheck // best effort on the way out
	credit := func(v string) error {
		return nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Header: nats.Header{protocol.HdrCredit: {v}}})
	}
	done := false
	defer func() {
		if !done {
			_ = credit("abort")
		}
	}()
	granted := int64(ChunkWindow)
	if err := credit(strconv.FormatInt(granted, 10)); err != nil {
		return 0, fmt.Errorf("pull body: %w", err)
	}
	var total int64
	var sum uint32
	next := int64(1)
	timer := time.NewTimer(stall)
	defer timer.Stop()
	for {
		select {
		case m := <-msgs:
			if IsNoResponders(m) {
				// The credit found no source: gone, or done with another
				// receiver.
				done = true
				return total, fmt.Errorf("no body source at %s: %w", subject, ErrBodyLost)
			}
			seq, _ := strconv.ParseInt(m.Header.Get(protocol.HdrChunkSeq), 10, 64)
			if e := m.Header.Get(protocol.HdrBodyError); e != "" {
				done = true // the source stopped
				return total, fmt.Errorf("%w: %s", ErrBodySource, e)
			}
			if seq != next {
				return total, fmt.Errorf("chunk %d came when %d was due: %w", seq, next, ErrBodyLost)
			}
			if _, err := w.Write(m.Data); err != nil {
				return total, fmt.Errorf("write body: %w", err)
			}
			total += int64(len(m.Data))
			sum = crc32.Update(sum, castagnoli, m.Data)
			if end := m.Header.Get(protocol.HdrBodyEnd); end != "" {
				done = true
				if want := fmt.Sprintf("%d %08x", total, sum); end != want {
					return total, fmt.Errorf("body end says %q, got %q: %w", end, want, ErrBodyLost)
				}
				return total, nil
			}
			next++
			if granted-next < ChunkWindow/2 {
				granted = next - 1 + ChunkWindow
				if err := credit(strconv.FormatInt(granted, 10)); err != nil {
					return total, fmt.Errorf("pull body: %w", err)
				}
			}
			timer.Reset(stall)
		case <-timer.C:
			return total, fmt.Errorf("no chunk from the sender for %v: %w", stall, ErrBodyStalled)
		case <-ctx.Done():
			return total, fmt.Errorf("pull body: %w", ctx.Err())
		}
	}
}

// BodyError is the answer to a request whose chunked body could not be
// pulled: 504 timeout when the sender stalled, 503 unavailable otherwise
// (lost chunks, a sender that failed or left).
func BodyError(err error) *serve.Error {
	if errors.Is(err, ErrBodyStalled) || errors.Is(err, context.DeadlineExceeded) {
		return &serve.Error{Status: http.StatusGatewayTimeout, Code: protocol.ErrTimeout, Msg: "request body: " + err.Error()}
	}
	return &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable, Msg: "request body: " + err.Error()}
}
