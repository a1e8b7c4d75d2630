package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A run is kept as long as it is not finished, however long it sleeps or
// awaits, and for its method's retention after it ends:
//
//   - its record: a record that is not final is written with the
//     per-message TTL "never" (Nats-TTL), which outlives the records
//     bucket's MaxAge; the final one is written without, so the bucket's
//     MaxAge (= retention) counts from the run's end (writeRecord);
//   - its journal and inbox: the workflow stream has no MaxAge. When a
//     run ends, collectRun stores two message schedules,
//     <run>.gc.j and <run>.gc.in, "@at end + retention": at that time the
//     server itself publishes an empty message with Nats-Rollup: sub to
//     the journal and to the inbox — which removes every earlier message
//     of that subject — and the tombstone expires a second later
//     (Nats-Schedule-TTL). Nothing polls; the schedules survive restarts
//     like the timers do.
//
// Plain jobs get the first half too: a job running longer than its
// retention keeps its record.

// recordMarkerTTL is the records buckets' LimitMarkerTTL: it enables
// per-message TTLs on the bucket (a record that expires leaves a delete
// marker for that long).
const recordMarkerTTL = time.Second

// ttlNever is the Nats-TTL of a message MaxAge never removes.
const ttlNever = "never"

// gcTombstoneTTL is how long the empty message that rolls a collected
// run's subject up is kept.
const gcTombstoneTTL = "1s"

// records is a method's records bucket.
type records struct {
	jetstream.KeyValue
	js jetstream.JetStream // writes live records (the KV API sets no TTL "never")
}

// writeLive writes a record that is not final, compare-and-set on prev
// (0: create), with the TTL "never": the bucket's MaxAge does not remove
// it. Its errors are those of KeyValue.Create and Update.
func (kv *records) writeLive(ctx context.Context, key string, b []byte, prev uint64) (uint64, error) {
	msg := &nats.Msg{Subject: streams.KVPutSubject(kv.js, kv.Bucket(), key), Data: b, Header: nats.Header{"Nats-TTL": []string{ttlNever}}}
	ack, err := kv.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(prev))
	if prev == 0 && isWrongLastSeq(err) {
		// As KeyValue.Create: a key whose last message is a delete (an
		// expired record's marker) is created over it.
		if seq, deleted := kv.deletedAt(ctx, key); deleted {
			msg.Header.Del("Nats-Expected-Last-Subject-Sequence")
			ack, err = kv.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(seq))
		}
	}
	if isWrongLastSeq(err) {
		if prev == 0 {
			return 0, fmt.Errorf("%w: %w", jetstream.ErrKeyExists, err)
		}
		return 0, fmt.Errorf("%w: %w", jetstream.ErrKeyRevisionMismatch, err)
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// errWrongLastSeqClustered is the wrong-last-sequence error code of a
// replicated stream (10071 on R1).
const errWrongLastSeqClustered = 10164

// isWrongLastSeq reports whether err is a compare-and-set conflict.
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == errWrongLastSeqClustered)
}

// deletedAt returns the sequence of key's last message when that is a
// delete, a purge or an expiry marker (one direct get).
func (kv *records) deletedAt(ctx context.Context, key string) (uint64, bool) {
	subj := "$KV." + kv.Bucket() + "." + key
	m, err := kv.js.Conn().RequestWithContext(ctx, streams.APIPrefix(kv.js)+"DIRECT.GET.KV_"+kv.Bucket()+"."+subj, nil)
	if err != nil || m.Header.Get("Status") != "" {
		return 0, false
	}
	if op := m.Header.Get("KV-Operation"); op != "DEL" && op != "PURGE" && m.Header.Get("Nats-Marker-Reason") == "" {
		return 0, false
	}
	seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	return seq, err == nil
}

// ended does what follows a job's end: its parent run is told, and a
// workflow run's journal and inbox are scheduled for removal after its
// retention. Called again (a redelivered message of a finished job), it
// does both again, harmlessly.
func (q *Queue) ended(ctx context.Context, rec Record) error {
	if err := q.collectRun(ctx, rec); err != nil {
		return err
	}
	return q.notifyParent(ctx, rec)
}

// collectRun schedules the removal of a finished workflow run's journal
// and inbox at its end plus its method's retention.
func (q *Queue) collectRun(ctx context.Context, rec Record) error {
	if !rec.Workflow || !rec.Status.Terminal() {
		return nil
	}
	h, err := q.open(ctx, rec.App, rec.Method)
	if err != nil {
		return err
	}
	m, err := methodConfig(h)
	if err != nil {
		return err
	}
	end := rec.FinishedAt
	if end.IsZero() {
		end = time.Now()
	}
	at := end.Add(m.Retention.D()).UTC().Truncate(time.Second).Add(time.Second)
	for _, kind := range []string{"j", "in"} {
		msg := &nats.Msg{Subject: q.names.WorkflowSubject(rec.App, rec.Method, rec.ID, "gc."+kind), Header: nats.Header{
			"Nats-Schedule":        []string{"@at " + at.Format(time.RFC3339)},
			"Nats-Schedule-Target": []string{q.names.WorkflowSubject(rec.App, rec.Method, rec.ID, kind)},
			"Nats-Schedule-Rollup": []string{"sub"},
			"Nats-Schedule-TTL":    []string{gcTombstoneTTL},
		}}
		if _, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(rec.ID+"-gc-"+kind)); err != nil {
			return fmt.Errorf("schedule the removal of run %s: %w", rec.ID, err)
		}
	}
	return nil
}

// collectStrayTimer deletes an inbox message the server published on a
// schedule (a timer) for a run that is gone: a run cancelled while it
// slept leaves its timer pending, and when that fires after the run's
// retention nothing would ever read or remove it. (A run has a record
// from its first attempt on, before any timer, so a timer's run without
// one is gone.)
func collectStrayTimer(ctx context.Context, h *wfHandle, msg jetstream.Msg) {
	if msg.Headers().Get("Nats-Scheduler") == "" {
		return
	}
	if meta, err := msg.Metadata(); err == nil {
		_ = h.stream.DeleteMsg(ctx, meta.Sequence.Stream)
	}
}

// methodConfig is the config of a method: the last Ensure's, or the one
// its stream's metadata holds.
func methodConfig(h *handle) (config.AsyncMethod, error) {
	if e := h.ensured; e != nil {
		return e.m, nil
	}
	md := h.stream.CachedInfo().Config.Metadata
	var m config.AsyncMethod
	if err := json.Unmarshal([]byte(md[metaMethod]), &m); err != nil || md[metaDeployment] == "" {
		return m, fmt.Errorf("%s/%s: its stream does not name its deployment: %w", h.app, h.method, ErrUnknownMethod)
	}
	return m, nil
}
