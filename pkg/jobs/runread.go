package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A run's journal and inbox are read with batched direct gets
// (nats-server 2.11+: $JS.API.DIRECT.GET.<stream> with next_by_subj and
// batch, which nats.go's jetstream package does not wrap): one request
// answers up to runReadBatch messages of the run's subjects <run>.j and
// <run>.in (the filter <run>.* — not its timers, <run>.t.<pos>) in
// stream order, then an end-of-batch status saying how many are left; a
// fresh run gets one "404 no message". No consumer is created or
// deleted, and any replica of the stream may answer (AllowDirect).

// runReadBatch is how many messages one direct get asks for.
const runReadBatch = 1000

// errNoMessage is a direct get's 404 status: nothing (more) matches.
var errNoMessage = errors.New("no message")

// readRunDirect reads a run's journal and inbox subjects; last is the
// journal's last sequence.
func readRunDirect(ctx context.Context, js jetstream.JetStream, stream, filter, jSubj string) (journal []serve.JournalEntry, inbox []serve.InboxEvent, last uint64, err error) {
	nc := js.Conn()
	reply := nc.NewInbox()
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("read run: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	api := apiPrefix(js) + "DIRECT.GET." + stream
	for seq := uint64(1); ; {
		req, err := json.Marshal(directGetRequest{Seq: seq, NextFor: filter, Batch: runReadBatch})
		if err != nil {
			return nil, nil, 0, err
		}
		if err := nc.PublishRequest(api, reply, req); err != nil {
			return nil, nil, 0, fmt.Errorf("read run: %w", err)
		}
		more, next, err := readBatch(ctx, sub, func(m *nats.Msg, mseq uint64) error {
			if m.Header.Get(jetstream.SubjectHeader) == jSubj {
				if len(m.Data) == 0 {
					return nil // the tombstone of a collected run (collectRun)
				}
				var e serve.JournalEntry
				if err := json.Unmarshal(m.Data, &e); err != nil {
					return fmt.Errorf("decode journal entry %d: %w", mseq, err)
				}
				journal = append(journal, e)
				last = mseq
				return nil
			}
			var ev serve.InboxEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				return nil // not an event: ignored
			}
			ev.Seq = mseq
			inbox = append(inbox, ev)
			return nil
		})
		if err != nil {
			return nil, nil, 0, fmt.Errorf("read run: %w", err)
		}
		if !more {
			return journal, inbox, last, nil
		}
		seq = next
	}
}

// apiPrefix is the JetStream API prefix js sends requests to ("$JS.API."
// unless it was made with another).
func apiPrefix(js jetstream.JetStream) string {
	p := js.Options().APIPrefix
	switch {
	case p == "":
		return jetstream.DefaultAPIPrefix
	case !strings.HasSuffix(p, "."):
		return p + "."
	}
	return p
}

// directGetRequest is the body of a batched direct get.
type directGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	Batch   int    `json:"batch,omitempty"`
}

// readBatch reads one direct get's answers from sub, calling each with
// every message and its stream sequence, until its end: more is whether
// messages are left after the batch, from sequence next.
func readBatch(ctx context.Context, sub *nats.Subscription, each func(*nats.Msg, uint64) error) (more bool, next uint64, err error) {
	var lastSeq uint64
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return false, 0, err
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404":
			return false, 0, nil // none (left)
		case "204": // end of batch
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return pending > 0, lastSeq + 1, nil
		default:
			return false, 0, fmt.Errorf("direct get: %s %s", status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return false, 0, fmt.Errorf("direct get: bad sequence header %q", m.Header.Get(jetstream.SequenceHeader))
		}
		lastSeq = seq
		if err := each(m, seq); err != nil {
			return false, 0, err
		}
	}
}
