package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Durable workflows on JetStream. A workflow (serve.NewWorkflow) is an
// async method whose jobs are runs; besides the method's job stream,
// records bucket and object store, each workflow has a stream
// Names.WorkflowStream(app, wf) with, per run:
//
//	<prefix>.wf.<app>.<wf>.<run>.j      the journal (serve.JournalEntry per message)
//	<prefix>.wf.<app>.<wf>.<run>.in     the inbox (serve.InboxEvent: ended jobs and children, fired timers, signals)
//	<prefix>.wf.<app>.<wf>.<run>.t.<pos> a timer: a message schedule ("@at") whose target is the inbox
//
// An attempt reads the run's journal and inbox with one ordered consumer
// (after a direct get that finds a fresh run empty) and appends to the
// journal with an expected last subject sequence: an attempt whose lease
// was lost — another one wrote meanwhile — fails its next write
// (serve.ErrJournalFenced), so a journaled step is never recorded twice.
// Signals carry their idempotency key as Nats-Msg-Id (the stream's dedup
// window) and an ended job its id ("done-<id>").
//
// A run whose workflow awaits what its inbox does not hold yet ends its
// attempt SUSPENDED (EventSuspend): its message is acked first, releasing
// the slot. The durable consumer WakersConsumer on the inbox subjects,
// pulled by every runner of the workflow, queues a suspended run again
// (EventWake, a new job message carrying the record's revision) when an
// event lands in its inbox; an event that lands while the run is still
// running is seen by the attempt when it suspends (it compares the
// inbox's last sequence with the one it read and wakes itself).
//
// Timers use JetStream message schedules (nats-server 2.12+,
// AllowMsgSchedules): the timer message is stored with
// "Nats-Schedule: @at <time>" and the server publishes it to the run's
// inbox at that time, durably and across restarts, with nothing polling.
// (A per-message TTL would only delete a message; a schedule delivers one.)

// WorkflowStream is the stream of one workflow's journals and inboxes.
func (n Names) WorkflowStream(app, wf string) string {
	return n.Prefix() + "_WF_" + protocol.Token(app) + "_" + protocol.Token(wf)
}

// WorkflowSubject is a subject of one run: kind "j" (journal), "in"
// (inbox) or "t.<pos>" (a timer).
func (n Names) WorkflowSubject(app, wf, run, kind string) string {
	return n.Prefix() + ".wf." + protocol.Token(app) + "." + protocol.Token(wf) + "." + protocol.Token(run) + "." + kind
}

// WorkflowWildcard matches every subject of one workflow's runs.
func (n Names) WorkflowWildcard(app, wf string) string {
	return n.Prefix() + ".wf." + protocol.Token(app) + "." + protocol.Token(wf) + ".>"
}

// WorkflowInboxes matches the inboxes of every run of one workflow.
func (n Names) WorkflowInboxes(app, wf string) string {
	return n.Prefix() + ".wf." + protocol.Token(app) + "." + protocol.Token(wf) + ".*.in"
}

// WakersConsumer is the durable consumer on a workflow's inboxes that
// queues suspended runs again.
const WakersConsumer = "wakers"

// wfHandle is a workflow's stream.
type wfHandle struct {
	app, wf string
	stream  jetstream.Stream
}

// ensureWorkflow creates or adopts a workflow's stream and its wakers
// consumer.
func (q *Queue) ensureWorkflow(ctx context.Context, app string, m config.AsyncMethod) (*wfHandle, error) {
	desc := fmt.Sprintf("jetserve workflow %s/%s: journals, inboxes and timers of its runs", app, m.Name)
	stream, err := q.ensureStream(ctx, jetstream.StreamConfig{
		Name:        q.names.WorkflowStream(app, m.Name),
		Description: desc,
		Subjects:    []string{q.names.WorkflowWildcard(app, m.Name)},
		Retention:   jetstream.LimitsPolicy,
		MaxMsgs:     -1,
		// No MaxAge: a run is kept as long as it lives, however long it
		// is suspended; its end schedules its removal (collectRun).
		AllowDirect:       true,
		AllowMsgSchedules: true,
		AllowMsgTTL:       true, // the collection's tombstones expire
		AllowRollup:       true, // the collection rolls a run's subjects up
		Storage:           jetstream.FileStorage,
		Duplicates:        q.dedupWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("workflow stream: %w", err)
	}
	if err := ensureConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       WakersConsumer,
		Description:   desc,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
		MaxDeliver:    -1,
		FilterSubject: q.names.WorkflowInboxes(app, m.Name),
	}); err != nil {
		return nil, fmt.Errorf("workflow wakers consumer: %w", err)
	}
	return &wfHandle{app: app, wf: m.Name, stream: stream}, nil
}

// openWorkflow opens a workflow's stream (it must exist).
func (q *Queue) openWorkflow(ctx context.Context, app, wf string) (*wfHandle, error) {
	s, err := q.js.Stream(ctx, q.names.WorkflowStream(app, wf))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("workflow %s/%s: %w", app, wf, ErrUnknownMethod)
	}
	if err != nil {
		return nil, fmt.Errorf("open workflow stream: %w", err)
	}
	return &wfHandle{app: app, wf: wf, stream: s}, nil
}

// runStore is the serve.WorkflowStore of one attempt of a run: it keeps
// the journal's last sequence, which fences its writes.
type runStore struct {
	q   *Queue
	h   *wfHandle
	met *methodMetrics

	mu      sync.Mutex // serialises appends (fenced one after the other)
	lastSeq uint64     // guarded by mu: the journal's last stream sequence
}

var _ serve.WorkflowStore = (*runStore)(nil)

func (s *runStore) subject(run, kind string) string {
	return s.q.names.WorkflowSubject(s.h.app, s.h.wf, run, kind)
}

// Load reads the run's journal and inbox.
func (s *runStore) Load(ctx context.Context, run string) ([]serve.JournalEntry, []serve.InboxEvent, error) {
	// A fresh run has no message at all: one direct get says so.
	if _, err := s.h.stream.GetLastMsgForSubject(ctx, s.subject(run, ">")); errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("read run %s: %w", run, err)
	}
	journal, inbox, last, err := readRun(ctx, s.h.stream, s.subject(run, "j"), s.subject(run, "in"))
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.lastSeq = last
	s.mu.Unlock()
	return journal, inbox, nil
}

// readRun reads a run's journal and inbox subjects; last is the
// journal's last sequence.
func readRun(ctx context.Context, stream jetstream.Stream, jSubj, inSubj string) (journal []serve.JournalEntry, inbox []serve.InboxEvent, last uint64, err error) {
	err = eachRunMsg(ctx, stream, []string{jSubj, inSubj}, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		if msg.Subject() == jSubj {
			if len(msg.Data()) == 0 {
				return nil // the tombstone of a collected run (collectRun)
			}
			var e serve.JournalEntry
			if err := json.Unmarshal(msg.Data(), &e); err != nil {
				return fmt.Errorf("decode journal entry %d: %w", meta.Sequence.Stream, err)
			}
			journal = append(journal, e)
			last = meta.Sequence.Stream
			return nil
		}
		var ev serve.InboxEvent
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			return nil // not an event: ignored
		}
		ev.Seq = meta.Sequence.Stream
		inbox = append(inbox, ev)
		return nil
	})
	if err != nil {
		return nil, nil, 0, err
	}
	return journal, inbox, last, nil
}

// errStopReading, returned by an eachRunMsg callback, ends the read
// early with no error.
var errStopReading = errors.New("stop reading")

// eachRunMsg calls fn with each message of stream on subjects (a run's),
// in order, up to the last one there when it starts, with an ordered
// consumer deleted afterwards. An error from fn ends the read and is
// returned, but errStopReading, which ends it with nil.
func eachRunMsg(ctx context.Context, stream jetstream.Stream, subjects []string, fn func(jetstream.Msg, *jetstream.MsgMetadata) error) error {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	if err != nil {
		return fmt.Errorf("read run: %w", err)
	}
	defer func() { _ = stream.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name) }()
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.FetchNoWait(int(min(pending, 1000)))
		if err != nil {
			return fmt.Errorf("read run: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("read run: %w", err)
			}
			pending = meta.NumPending
			if err := fn(msg, meta); errors.Is(err, errStopReading) {
				return nil
			} else if err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("read run: %w", err)
		}
		if n == 0 {
			// FetchNoWait may answer before the messages are there.
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("read run: %w", err)
			}
			pending = info.NumPending
		}
	}
	return nil
}

// Append writes e to the journal, fenced by its last sequence.
func (s *runStore) Append(ctx context.Context, run string, e serve.JournalEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode journal entry: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ack, err := s.q.js.Publish(ctx, s.subject(run, "j"), b, jetstream.WithExpectLastSequencePerSubject(s.lastSeq))
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return fmt.Errorf("%w (run %s)", serve.ErrJournalFenced, run)
	}
	if err != nil {
		return fmt.Errorf("append to journal: %w", err)
	}
	s.lastSeq = ack.Sequence
	if e.Kind == serve.KindStep || e.Kind == serve.KindUndo {
		s.met.stepDone(e.Kind, e.Finished.Sub(e.Started))
	}
	return nil
}

// Submit starts job id of method (an async method or a workflow of the
// application) with this run as its parent, traced as the child of the
// trace context ctx serves (the run's Submit or Child span).
func (s *runStore) Submit(ctx context.Context, run, method, id string, args serve.Args) error {
	opts := []SubmitOption{func(r *Record) { r.Parent = s.h.wf + "/" + run }}
	if req, ok := serve.RequestFromContext(ctx); ok && req.Header.Get("Traceparent") != "" {
		opts = append(opts, Trace(req.Header.Get("Traceparent"), req.Header.Get("Tracestate")))
	}
	_, _, err := s.q.SubmitTo(ctx, s.h.app, method, id, args, opts...)
	return err
}

// Timer schedules the inbox event TimerEventKey(pos) at at. The run and
// its timer are kept however long it sleeps: its retention counts from
// its end.
func (s *runStore) Timer(ctx context.Context, run string, pos int, at time.Time) error {
	b, err := json.Marshal(serve.InboxEvent{Key: serve.TimerEventKey(pos)})
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: s.subject(run, "t."+strconv.Itoa(pos)), Data: b, Header: nats.Header{
		"Nats-Schedule":        []string{"@at " + at.UTC().Format(time.RFC3339Nano)},
		"Nats-Schedule-Target": []string{s.subject(run, "in")},
	}}
	if _, err := s.q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(run+"-t-"+strconv.Itoa(pos))); err != nil {
		return fmt.Errorf("schedule timer: %w", err)
	}
	return nil
}

// inboxLast is the last sequence of a run's inbox (0: empty).
func (q *Queue) inboxLast(ctx context.Context, h *wfHandle, run string) (uint64, error) {
	m, err := h.stream.GetLastMsgForSubject(ctx, q.names.WorkflowSubject(h.app, h.wf, run, "in"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// SubmitTo submits a job of an existing async method (or workflow) of
// app, its deployment and settings read from its stream's metadata.
func (q *Queue) SubmitTo(ctx context.Context, app, method, id string, args serve.Args, opts ...SubmitOption) (Record, bool, error) {
	h, err := q.open(ctx, app, method)
	if err != nil {
		return Record{}, false, err
	}
	if e := h.ensured; e != nil {
		return q.Submit(ctx, app, e.deployment, e.m, id, args, opts...)
	}
	m, err := methodConfig(h)
	if err != nil {
		return Record{}, false, err
	}
	return q.Submit(ctx, app, h.stream.CachedInfo().Config.Metadata[metaDeployment], m, id, args, opts...)
}

// Metadata of a job stream: its deployment and its method's config.
const (
	metaDeployment = "jetserve.deployment"
	metaMethod     = "jetserve.method"
)

// Signal sends the signal name (payload: JSON) to a run of workflow wf; a
// repeated idempotency key within the dedup window sends nothing (sent
// false), also once the run has ended (a retry of a signal that was
// delivered is not an error). ErrNotFound for an unknown run; a
// *serve.Error 409 run_finished for a new signal to one that ended.
func (q *Queue) Signal(ctx context.Context, app, wf, run, name, key string, payload json.RawMessage) (sent bool, err error) {
	rec, err := q.Status(ctx, app, wf, run)
	if err != nil {
		return false, err
	}
	if rec.Status.Terminal() {
		if key != "" {
			if seen, err := q.signalSent(ctx, app, wf, run, signalMsgID(run, key)); err != nil || seen {
				return false, err
			}
		}
		return false, &serve.Error{Status: 409, Code: protocol.ErrRunFinished, Msg: fmt.Sprintf("run %s of %s is %s", run, wf, rec.Status)}
	}
	if name == "" || strings.ContainsAny(name, " \t\r\n") {
		return false, badRequest("signal name %q: must be a non-empty word", name)
	}
	b, err := json.Marshal(serve.InboxEvent{Key: serve.SignalEventKey(name), Result: payload})
	if err != nil {
		return false, badRequest("signal payload: %v", err)
	}
	var opts []jetstream.PublishOpt
	if key != "" {
		opts = append(opts, jetstream.WithMsgID(signalMsgID(run, key)))
	}
	ack, err := q.js.Publish(ctx, q.names.WorkflowSubject(app, wf, run, "in"), b, opts...)
	if err != nil {
		return false, fmt.Errorf("publish signal: %w", err)
	}
	return !ack.Duplicate, nil
}

// signalMsgID is the JetStream message id of a signal sent with an
// idempotency key: the stream drops a repeat within its dedup window.
func signalMsgID(run, key string) string { return "signal-" + run + "-" + key }

// signalSent reports whether run's inbox holds the signal whose message
// id is msgID (read from the stream: the run has ended, nothing is added).
func (q *Queue) signalSent(ctx context.Context, app, wf, run, msgID string) (bool, error) {
	h, err := q.openWorkflow(ctx, app, wf)
	if err != nil {
		return false, err
	}
	sent := false
	err = eachRunMsg(ctx, h.stream, []string{q.names.WorkflowSubject(app, wf, run, "in")}, func(msg jetstream.Msg, _ *jetstream.MsgMetadata) error {
		if sent = msg.Headers().Get(jetstream.MsgIDHeader) == msgID; sent {
			return errStopReading
		}
		return nil
	})
	return sent, err
}

// History returns a run's journal, ordered by position.
func (q *Queue) History(ctx context.Context, app, wf, run string) ([]serve.JournalEntry, error) {
	if _, err := q.Status(ctx, app, wf, run); err != nil {
		return nil, err
	}
	h, err := q.openWorkflow(ctx, app, wf)
	if err != nil {
		return nil, err
	}
	journal, _, _, err := readRun(ctx, h.stream, q.names.WorkflowSubject(app, wf, run, "j"), q.names.WorkflowSubject(app, wf, run, "in"))
	if err != nil {
		return nil, err
	}
	return serve.SortedHistory(journal), nil
}

// notifyParent puts a finished job's outcome in its parent run's inbox
// (deduplicated by the job's id: told once however often it is called).
func (q *Queue) notifyParent(ctx context.Context, rec Record) error {
	if rec.Parent == "" || !rec.Status.Terminal() {
		return nil
	}
	wf, run, ok := strings.Cut(rec.Parent, "/")
	if !ok {
		return fmt.Errorf("job %s: malformed parent %q", rec.ID, rec.Parent)
	}
	ev := serve.InboxEvent{Key: serve.JobEventKey(rec.ID), Result: rec.Result}
	switch rec.Status {
	case Failed:
		ev.Error, ev.Code = rec.Error, protocol.ErrHandler
	case Cancelled:
		ev.Error, ev.Code = "job "+rec.ID+" was cancelled", protocol.ErrCancelled
	}
	if rec.Result == nil && rec.ResultObject != "" && rec.Status == Succeeded {
		// A large result: the parent reads it from its object.
		if res, _, err := q.Result(ctx, rec.App, rec.Method, rec.ID); err == nil {
			ev.Result = res
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if _, err := q.js.Publish(ctx, q.names.WorkflowSubject(rec.App, wf, run, "in"), b, jetstream.WithMsgID("done-"+rec.ID)); err != nil {
		return fmt.Errorf("tell parent %s: %w", rec.Parent, err)
	}
	return nil
}

// wake queues a suspended run again (ev: EventWake, or EventWakeCancel
// to compensate); false when it was not suspended.
func (q *Queue) wake(ctx context.Context, h *handle, id string, ev Event) (bool, error) {
	for range 10 {
		r, rev, err := q.get(ctx, h, id)
		if err != nil {
			return false, err
		}
		next, err := r.apply(ev, change{})
		if errors.As(err, new(*TransitionError)) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		b, err := json.Marshal(next)
		if err != nil {
			return false, fmt.Errorf("encode job record: %w", err)
		}
		rev, err = writeRecord(ctx, h.kv, next, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return false, err
		}
		if err := q.publish(ctx, h, id, b, rev, id+"-wake-"+strconv.Itoa(next.Suspensions)+"-"+strconv.FormatUint(rev, 10)); err != nil {
			return true, fmt.Errorf("republish run %s: %w", id, err)
		}
		return true, nil
	}
	return false, errors.New("wake run: its record keeps changing")
}

// runWakers pulls the inbox events of a workflow's runs and queues each
// suspended run again, until ctx ends.
func (r *Runner) runWakers(ctx context.Context, m *runMethod) error {
	cons, err := m.h.wf.stream.Consumer(ctx, WakersConsumer)
	if err != nil {
		return fmt.Errorf("wakers of %s: %w", m.cfg.Name, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		toks := strings.Split(msg.Subject(), ".")
		if len(toks) < 2 {
			_ = msg.Term()
			return
		}
		run := toks[len(toks)-2]
		octx, cancel := opCtx()
		defer cancel()
		_, err := r.q.wake(octx, m.h, run, EventWake)
		switch {
		case errors.Is(err, ErrNotFound):
			collectStrayTimer(octx, m.h.wf, msg)
		case err != nil:
			r.log.Warn().Err(err).Str("run", run).Msg("wake workflow run; retrying")
			_ = msg.NakWithDelay(time.Second)
			return
		}
		_ = msg.Ack()
	}, jetstream.PullMaxMessages(64))
	if err != nil {
		return fmt.Errorf("wakers of %s: %w", m.cfg.Name, err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// suspend ends an attempt whose run awaits events: the message is acked
// (the slot and the queue's place released) and the record written
// SUSPENDED; when the inbox got an event after the one the attempt read,
// the run is queued again at once.
func (a *attempt) suspend(se *serve.SuspendError) {
	m := a.m
	ctx, cancel := opCtx()
	defer cancel()
	// Recorded before its message goes: a crash between the two leaves a
	// RUNNING record without a message, which ResumeAll queues again.
	if err := a.claim(); err != nil {
		a.lost(err)
		return
	}
	if err := a.msg.DoubleAck(ctx); err != nil {
		a.log.Warn().Err(err).Msg("ack suspended run (it will be redelivered)")
		return
	}
	if err := a.update(func(cur Record) (Record, error) {
		if cur.Phase() == PhaseCancelling {
			return cur.apply(EventWakeCancel, change{}) // cancelled meanwhile: compensate
		}
		return cur.apply(EventSuspend, change{waiting: se.Waiting})
	}); err != nil {
		a.lost(err)
		return
	}
	a.mu.Lock()
	rec := a.rec
	a.mu.Unlock()
	if rec.Status == Queued {
		data, _ := json.Marshal(rec)
		if err := a.r.q.publish(ctx, m.h, a.id, data, a.rev, a.id+"-wake-cancel"); err != nil {
			a.log.Error().Err(err).Msg("queue the cancelled run")
		}
		return
	}
	m.met.attempt(OutcomeSuspended, a.start)
	inc(m.met.suspended)
	if last, err := a.r.q.inboxLast(ctx, m.h.wf, a.id); err != nil || last > se.InboxSeq {
		if _, err := a.r.q.wake(ctx, m.h, a.id, EventWake); err != nil {
			a.log.Warn().Err(err).Msg("wake run (its waker will)")
		}
	}
}
