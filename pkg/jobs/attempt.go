package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/panics"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"net/http"
)

// attempt is one run of a job on this runner.
type attempt struct {
	r   *Runner
	m   *runMethod
	msg jetstream.Msg
	log zerolog.Logger

	start time.Time // when the handler was started (duration metric)
	// id and num are the job and the attempt: they never change while the
	// attempt runs (rec does, under mu).
	id  string
	num int

	mu           sync.Mutex // guards rec, rev, progress state, checkpointed
	rec          Record
	rev          uint64 // 0: not recorded yet (an unclaimed first attempt)
	lastProgress time.Time
	pending      *progress // unsaved progress
	checkpointed bool
}

type progress struct {
	fraction float64
	message  string
}

// step is a transition chosen from the latest record.
type step func(Record) (Record, error)

// on is the step of event ev.
func on(ev Event, c change) step { return func(r Record) (Record, error) { return r.apply(ev, c) } }

// update applies s to the record, compare-and-set, as long as the record
// is still this attempt's (else ErrLeaseLost).
func (a *attempt) update(s step) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.updateLocked(s)
}

func (a *attempt) updateLocked(s step) error {
	if a.rev == 0 {
		return a.createLocked(s)
	}
	ctx, cancel := opCtx()
	defer cancel()
	mine := a.rec.Attempts
	for range 10 {
		next, err := s(a.rec)
		if err != nil {
			return err
		}
		rev, err := writeRecord(ctx, a.m.h.kv, next, a.rev)
		if err == nil {
			a.rec, a.rev = next, rev
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return err
		}
		cur, rev, err := a.r.q.get(ctx, a.m.h, next.ID)
		if errors.Is(err, ErrNotFound) {
			return ErrLeaseLost
		}
		if err != nil {
			return err
		}
		if cur.Attempts != mine || cur.Status != Running {
			return ErrLeaseLost
		}
		a.rec, a.rev = cur, rev
	}
	return errors.New("update job record: too much contention")
}

// createLocked writes the first record of an unclaimed attempt (s
// applied). Create fails if a record exists: a cancel came first
// (errCancelledFirst), or another attempt has the job (ErrLeaseLost).
func (a *attempt) createLocked(s step) error {
	ctx, cancel := opCtx()
	defer cancel()
	next, err := s(a.rec)
	if err != nil {
		return err
	}
	rev, err := writeRecord(ctx, a.m.h.kv, next, 0)
	if err == nil {
		a.rec, a.rev = next, rev
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return err
	}
	if cur, _, err := a.r.q.get(ctx, a.m.h, next.ID); err == nil && cur.Status == Cancelled {
		return errCancelledFirst
	}
	return ErrLeaseLost
}

// claim records an unclaimed attempt as RUNNING (a no-op once claimed).
func (a *attempt) claim() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rev != 0 {
		return nil
	}
	return a.createLocked(func(r Record) (Record, error) { return r, nil })
}

// stopOn cancels the job's context when err says another party owns it.
func stopOn(err error, cancel context.CancelCauseFunc) {
	switch {
	case errors.Is(err, errCancelledFirst), errors.Is(err, errCancelRequested):
		cancel(errCancelRequested)
	case errors.Is(err, ErrLeaseLost):
		cancel(ErrLeaseLost)
	}
}

// check re-reads the record: ErrLeaseLost if another attempt owns it,
// errCancelRequested if cancel was asked.
func (a *attempt) check(ctx context.Context) error {
	a.mu.Lock()
	unclaimed, id, mine := a.rev == 0, a.rec.ID, a.rec.Attempts
	a.mu.Unlock()
	if unclaimed {
		return nil // nothing recorded to lose yet
	}
	cur, rev, err := a.r.q.get(ctx, a.m.h, id)
	if errors.Is(err, ErrNotFound) {
		return ErrLeaseLost
	}
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur.Attempts != mine || cur.Status != Running {
		return ErrLeaseLost
	}
	if rev > a.rev {
		a.rec, a.rev = cur, rev
	}
	if cur.Phase() == PhaseCancelling {
		return errCancelRequested
	}
	return nil
}

func (a *attempt) flushProgress() {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pending
	if p == nil {
		return
	}
	a.pending = nil
	a.lastProgress = time.Now()
	if err := a.updateLocked(on(EventProgress, change{progress: p.fraction, message: p.message})); err != nil {
		a.log.Debug().Err(err).Msg("save progress")
	}
}

func (a *attempt) run() {
	r, m, rec := a.r, a.m, a.rec
	id := rec.ID
	unclaimed := a.rev == 0 // read before any goroutine shares a
	var args serve.Args
	if len(rec.Args) > 0 {
		if err := json.Unmarshal(rec.Args, &args); err != nil {
			a.finish(nil, badRequest("arguments: %v", err), nil)
			return
		}
	}
	jctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stopAbort := context.AfterFunc(r.abortCtx, func() { cancel(errAborted) })
	defer stopAbort()
	tctx, tcancel := context.WithTimeoutCause(jctx, m.cfg.Timeout.D(), fmt.Errorf("timed out after %s", m.cfg.Timeout.D()))
	defer tcancel()

	key := m.cfg.Name + "/" + id
	r.mu.Lock()
	r.running[key] = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.running, key)
		r.mu.Unlock()
	}()
	if rec.Phase() == PhaseCancelling || rec.CancelWorkflow {
		cancel(errCancelRequested) // a cancelled workflow run replays to compensate
	}

	hb := r.heartbeat
	if hb == 0 {
		hb = m.cfg.LeaseTimeout.D() / 3
	}
	hbDone := make(chan struct{})
	var hbWG sync.WaitGroup
	if hb > 0 {
		hbWG.Go(func() { a.heartbeat(hb, hbDone, cancel) })
	}
	if unclaimed && m.cfg.Workflow {
		// A workflow run is claimed before it runs: its status says
		// RUNNING, and a cancel reaches it as a cancel (its compensations
		// run before it is CANCELLED).
		if err := a.claim(); err != nil {
			a.log.Debug().Err(err).Msg("claim workflow run")
			stopOn(err, cancel)
		}
		unclaimed = false
	}
	if unclaimed {
		after := r.claimAfter
		if after == 0 {
			after = min(ClaimAfter, m.cfg.LeaseTimeout.D()/3)
		}
		claimTimer := time.AfterFunc(after, func() {
			if err := a.claim(); err != nil {
				a.log.Debug().Err(err).Msg("claim job")
				stopOn(err, cancel)
			}
		})
		defer claimTimer.Stop()
	}
	sctx, span := a.startSpan(tctx, rec)
	defer span.End()
	jc := &jobContext{Context: sctx, a: a, job: &serve.Job{ID: id, Method: m.cfg.Name, Attempt: rec.Attempts, Args: args}}
	if r.onStart != nil {
		r.onStart(id)
	}
	res, err := runHandler(r.cfg.Handler, jc)
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	close(hbDone)
	hbWG.Wait()
	a.flushProgress()
	var cause error
	if jctx.Err() != nil {
		cause = context.Cause(jctx)
	} else if err != nil && tctx.Err() != nil {
		err = fmt.Errorf("%w: %w", context.Cause(tctx), err)
	}
	a.finish(res, err, cause)
}

// startSpan starts the attempt's span, the child of the trace context the
// job was submitted with, and returns ctx carrying it and the job as the
// request being served: the handler's handle calls carry the job's id as
// their request id, and the trace context.
// rec is the record run read before its goroutines started (a.rec is
// theirs now).
func (a *attempt) startSpan(ctx context.Context, rec Record) (context.Context, trace.Span) {
	h := http.Header{}
	if rec.TraceParent != "" {
		h.Set("Traceparent", rec.TraceParent)
		if rec.TraceState != "" {
			h.Set("Tracestate", rec.TraceState)
		}
	}
	span := tracing.Off()
	if tracer := a.r.cfg.Tracer; tracer != nil {
		ctx, span = tracer.Start(tracing.Extract(ctx, h), "job "+rec.App+"/"+rec.Method,
			trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(tracing.AttrApp.String(rec.App),
				tracing.AttrDeployment.String(rec.Deployment), tracing.AttrMethod.String(rec.Method),
				tracing.AttrRequestID.String(rec.ID), tracing.AttrAttempt.Int(rec.Attempts)))
		tracing.Inject(ctx, h)
	}
	return serve.ContextWithRequest(ctx, &serve.Request{RequestID: rec.ID, Header: h}), span
}

// heartbeat keeps the attempt's lease (InProgress every period), claims
// it when due, saves pending progress and stops the job when another
// party owns it, until done is closed.
func (a *attempt) heartbeat(period time.Duration, done <-chan struct{}, cancel context.CancelCauseFunc) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		if err := a.msg.InProgress(); err != nil {
			a.log.Debug().Err(err).Msg("heartbeat")
		}
		if err := a.claim(); err != nil {
			a.log.Debug().Err(err).Msg("claim job")
			stopOn(err, cancel)
		}
		a.flushProgress()
		ctx, c := opCtx()
		err := a.check(ctx)
		c()
		stopOn(err, cancel)
	}
}

func runHandler(h serve.JobHandler, jc *jobContext) (res any, err error) {
	defer panics.Recover("job handler", &err)
	if h == nil {
		return nil, errors.New("no job handler")
	}
	return h.RunJob(jc, jc.job)
}

func backoff(m config.AsyncMethod, attempt int) time.Duration {
	if len(m.Backoff) == 0 {
		return time.Second
	}
	i := min(max(attempt-1, 0), len(m.Backoff)-1)
	return m.Backoff[i].D()
}

// finish records an attempt's outcome and settles its message.
func (a *attempt) finish(res any, err, cause error) {
	// A handler that returned a result finished, whatever happened to its
	// context meanwhile (a lost lease is caught by the fenced write).
	var susp *serve.SuspendError
	switch {
	case err == nil:
		a.succeed(res)
		return
	case errors.As(err, &susp) && cause == nil:
		a.suspend(susp)
		return
	case errors.Is(err, serve.ErrJournalFenced):
		a.log.Warn().Msg("workflow journal written by a newer attempt; dropping this one")
		return
	case errors.Is(cause, errAborted):
		a.log.Info().Msg("job aborted by runner shutdown; handing it back")
		if err := a.claim(); err != nil { // the aborted attempt counts
			a.log.Debug().Err(err).Msg("record aborted attempt")
		}
		_ = a.msg.Nak()
		return
	case errors.Is(cause, ErrLeaseLost):
		a.log.Warn().Msg("job lease lost to a newer attempt; dropping this one")
		return
	case errors.Is(cause, errCancelRequested):
		if err := a.update(on(EventCancel, change{})); err != nil {
			a.lost(err)
			return
		}
		a.cancelled()
		return
	}
	a.failed(err)
}

func (a *attempt) succeed(res any) {
	r, m, id := a.r, a.m, a.id
	ctx, cancel := opCtx()
	defer cancel()
	b, err := json.Marshal(res)
	if err != nil {
		a.failed(fmt.Errorf("encode result: %w", err))
		return
	}
	c := change{resultSize: int64(len(b)), result: b}
	if len(b) > InlineResultMax {
		c.result, c.resultObject = nil, fmt.Sprintf("%s.%d", ResultObject(id), a.num)
		if _, err := m.h.obj.PutBytes(ctx, c.resultObject, b); err != nil {
			a.log.Error().Err(err).Msg("store result; retrying the job")
			_ = a.msg.NakWithDelay(time.Second)
			return
		}
	}
	if err := a.update(on(EventSucceed, c)); err != nil {
		a.lost(err)
		return
	}
	a.notifyParent(ctx)
	// A plain ack is enough: the record is already final, and should the
	// ack be lost, the redelivery finds it terminal and is dropped.
	if err := a.msg.Ack(); err != nil {
		a.log.Warn().Err(err).Msg("ack finished job (its record is final; a redelivery is dropped)")
	}
	a.mu.Lock()
	cp := a.checkpointed
	a.mu.Unlock()
	if cp {
		if err := r.q.deleteObject(ctx, m.h.obj, CheckpointObject(id)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			a.log.Debug().Err(err).Msg("delete checkpoint")
		}
	}
	inc(m.met.succeeded)
	m.met.attempt(OutcomeSucceeded, a.start)
	r.done(id, Succeeded)
}

// failed records a failed attempt: retried after its backoff when
// attempts are left and the error is not a 4xx (unless a cancel came
// meanwhile: then cancelled), else FAILED.
func (a *attempt) failed(err error) {
	r, m, id := a.r, a.m, a.id
	msg := err.Error()
	var se *serve.Error
	permanent := errors.As(err, &se) && se.Status >= 400 && se.Status < 500
	a.mu.Lock()
	attempt := a.num - a.rec.Suspensions
	a.mu.Unlock()
	if !permanent && attempt < m.cfg.MaxAttempts {
		delay := backoff(m.cfg, attempt)
		if uerr := a.update(func(cur Record) (Record, error) {
			if cur.Phase() == PhaseCancelling {
				return cur.apply(EventCancel, change{})
			}
			return cur.apply(EventRetry, change{err: msg})
		}); uerr != nil {
			a.lost(uerr)
			return
		}
		a.mu.Lock()
		cancelled := a.rec.Status == Cancelled
		a.mu.Unlock()
		if cancelled {
			a.cancelled()
			return
		}
		a.log.Info().Str("error", msg).Dur("backoff", delay).Msg("job attempt failed; will retry")
		_ = a.msg.NakWithDelay(delay)
		inc(m.met.retried)
		m.met.attempt(OutcomeRetried, a.start)
		// Redeliveries publish nothing: wake the pull loop when it is due.
		idx := m.pull.idx
		time.AfterFunc(delay+5*time.Millisecond, func() { r.wakeFor(idx) })
		return
	}
	if uerr := a.update(on(EventFail, change{err: msg})); uerr != nil {
		a.lost(uerr)
		return
	}
	ctx, cancel := opCtx()
	defer cancel()
	if !permanent {
		a.mu.Lock()
		final := a.rec
		a.mu.Unlock()
		r.deadLetter(ctx, m, final, a.log)
	}
	a.notifyParent(ctx)
	_ = a.msg.Term()
	a.log.Info().Str("error", msg).Msg("job failed")
	inc(m.met.failed)
	m.met.attempt(OutcomeFailed, a.start)
	r.done(id, Failed)
}

// cancelled settles a cancelled attempt whose record says so.
func (a *attempt) cancelled() {
	ctx, cancel := opCtx()
	defer cancel()
	a.notifyParent(ctx)
	_ = a.msg.Term()
	a.m.met.attempt(OutcomeCancelled, a.start)
	a.r.done(a.id, Cancelled)
}

// notifyParent tells the job's parent run (if any) how it ended.
func (a *attempt) notifyParent(ctx context.Context) {
	a.mu.Lock()
	rec := a.rec
	a.mu.Unlock()
	a.r.notifyParent(ctx, rec, a.log)
}

func (a *attempt) lost(err error) {
	switch {
	case errors.Is(err, errCancelledFirst):
		a.log.Info().Msg("job was cancelled before its attempt was recorded; dropping its outcome")
		a.cancelled()
	case errors.Is(err, ErrLeaseLost):
		a.log.Warn().Msg("job lease lost to a newer attempt; not recording this attempt's outcome")
	default:
		a.log.Error().Err(err).Msg("record job outcome; it will be redelivered")
	}
}

// jobContext is the serve.JobContext of one attempt.
type jobContext struct {
	context.Context
	a   *attempt
	job *serve.Job
}

func (c *jobContext) Job() *serve.Job { return c.job }

// WorkflowStore is the JetStream journal of this attempt's run (a
// workflow's job only).
func (c *jobContext) WorkflowStore() serve.WorkflowStore {
	return &runStore{q: c.a.r.q, h: c.a.m.h.wf, met: c.a.m.met}
}
func (c *jobContext) Logger() zerolog.Logger { return c.a.log }

func (c *jobContext) Checkpoint(state []byte) error {
	ctx, cancel := opCtx()
	defer cancel()
	if err := c.a.claim(); err != nil { // a checkpoint belongs to a recorded attempt
		return fmt.Errorf("claim job: %w", err)
	}
	if err := c.a.check(ctx); errors.Is(err, ErrLeaseLost) {
		return err
	}
	if err := c.a.r.q.putObject(ctx, c.a.m.h.obj, CheckpointObject(c.job.ID), state); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	c.a.mu.Lock()
	c.a.checkpointed = true
	c.a.mu.Unlock()
	return nil
}

func (c *jobContext) LastCheckpoint() ([]byte, bool, error) {
	ctx, cancel := opCtx()
	defer cancel()
	b, err := c.a.m.h.obj.GetBytes(ctx, CheckpointObject(c.job.ID))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read checkpoint: %w", err)
	}
	c.a.mu.Lock()
	c.a.checkpointed = true
	c.a.mu.Unlock()
	return b, true, nil
}

// progressEvery bounds how often Progress writes the record.
const progressEvery = 250 * time.Millisecond

func (c *jobContext) Progress(fraction float64, message string) error {
	fraction = min(max(fraction, 0), 1)
	a := c.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.lastProgress) < progressEvery {
		a.pending = &progress{fraction: fraction, message: message}
		return nil
	}
	a.pending = nil
	a.lastProgress = time.Now()
	return a.updateLocked(on(EventProgress, change{progress: fraction, message: message}))
}

var _ serve.JobContext = (*jobContext)(nil)
