package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// The job lifecycle. A job's record changes only through the named
// transitions of this file (Record.apply), each allowed from the phases
// the table below lists; every write of a record to its bucket goes
// through writeRecord.
//
//	event          from                                  to          who
//	(submit)       —                                     queued      Queue.Submit: the record travels in the job message only
//	claim          queued, retrying, running             running     a runner, before it runs an attempt (Attempts+1)
//	progress       running, cancelling                   (same)      the attempt's JobContext.Progress
//	succeed        running, cancelling                   succeeded   the attempt, with its result
//	retry          running                               retrying    the attempt, after a failure with attempts left
//	fail           running, cancelling                   failed      the attempt (a 4xx error, or its last attempt)
//	exhaust        queued, retrying, running             failed      a runner given a job with no attempt left (its workers died)
//	request-cancel running                               cancelling  Queue.Cancel of a running job
//	cancel         queued, retrying, running, cancelling cancelled   Queue.Cancel before a runner has it; a runner stopping it
//	resume         running                               queued      Queue.ResumeAll: the job's message is gone, its record not
//	requeue        succeeded, failed, cancelled          queued      Queue.Requeue of a dead letter (attempts start again)
//	suspend        running                               suspended   a workflow run's attempt awaiting an event not in its inbox
//	wake           suspended                             queued      the waker (an event came), or the attempt that suspended
//	wake-cancel    suspended, cancelling                 queued      Queue.Cancel of a suspended run: it replays cancelled, to compensate
//	unpin          any but finished                      (same)      Queue.Unpin: the run's version is gone; any version runs it now
//
// "running" after "running" is a redelivery: the worker of the earlier
// attempt died and its lease ran out. A job is first in the bucket only
// once claimed: until then its record exists only as the payload of its
// job message (a revision of 0 below). Status, Result, List and Cancel
// read such a job from its message.
//
// A new state — a workflow run suspended until an event, say — is a new
// Phase, its transitions are rows of lifecycle, and the runner and the
// Queue call apply with the new events; nothing else writes records.

// Phase is what a job's record means: its Status refined by the
// Retrying and CancelRequested flags.
type Phase uint8

// Phases.
const (
	// PhaseQueued waits for a runner: just submitted (its record is
	// only in its message until claimed), requeued, or resumed.
	PhaseQueued Phase = iota
	// PhaseRetrying waits for the backoff after a failed attempt.
	PhaseRetrying
	// PhaseRunning has an attempt running (or one whose worker died and
	// whose lease has not run out).
	PhaseRunning
	// PhaseCancelling is running and asked to cancel: its runner cancels
	// the attempt's context and records CANCELLED.
	PhaseCancelling
	// PhaseSuspended is a workflow run waiting for an event: no attempt
	// runs and no message is queued until a waker queues it.
	PhaseSuspended
	PhaseSucceeded
	PhaseFailed
	PhaseCancelled
)

var phaseNames = [...]string{"queued", "retrying", "running", "cancelling", "suspended", "succeeded", "failed", "cancelled"}

func (p Phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", p)
}

// Terminal reports whether the job has ended.
func (p Phase) Terminal() bool { return p >= PhaseSucceeded }

// Phase returns the record's phase. A QUEUED record with
// CancelRequested (written by an older ResumeAll) is cancelling.
func (r Record) Phase() Phase {
	switch r.Status {
	case Queued:
		if r.CancelRequested {
			return PhaseCancelling
		}
		if r.Retrying {
			return PhaseRetrying
		}
		return PhaseQueued
	case Running:
		if r.CancelRequested {
			return PhaseCancelling
		}
		return PhaseRunning
	case Suspended:
		return PhaseSuspended
	case Succeeded:
		return PhaseSucceeded
	case Failed:
		return PhaseFailed
	default:
		return PhaseCancelled
	}
}

// Event names a transition.
type Event uint8

// Events (see the table at the top of this file).
const (
	EventClaim Event = iota
	EventProgress
	EventSucceed
	EventRetry
	EventFail
	EventExhaust
	EventRequestCancel
	EventCancel
	EventResume
	EventRequeue
	EventSuspend
	EventWake
	EventWakeCancel
	EventUnpin
	numEvents
)

var eventNames = [...]string{"claim", "progress", "succeed", "retry", "fail", "exhaust", "request-cancel", "cancel", "resume", "requeue",
	"suspend", "wake", "wake-cancel", "unpin"}

func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", e)
}

// change is what a transition needs besides the record; each event
// reads only its own fields.
type change struct {
	now time.Time
	// claim
	worker, replica string
	maxAttempts     int           // claim, exhaust
	seq             uint64        // claim: the message the attempt runs; cancel: the message of an unclaimed job (0: keep)
	version         string        // claim: the runner's deployment version ("" = none known)
	pinFor          time.Duration // claim: how long a run not pinned to version yet is pinned to it (0: not pinned)
	// progress
	progress float64
	message  string
	// retry, fail
	err string
	// suspend
	waiting []string
	// succeed
	result       json.RawMessage // inline (≤ InlineResultMax), or nil
	resultSize   int64
	resultObject string // a large result's object, or ""
}

// rule is one row of the lifecycle: the phases an event applies in, the
// phase it leads to (same: the phase it was in) and what it writes.
type rule struct {
	from  []Phase
	to    Phase
	same  bool
	apply func(r *Record, c change)
}

var lifecycle = [numEvents]rule{
	EventClaim: {from: []Phase{PhaseQueued, PhaseRetrying, PhaseRunning}, to: PhaseRunning, apply: func(r *Record, c change) {
		r.Status, r.Retrying, r.CancelRequested = Running, false, false
		r.Attempts++
		r.MaxAttempts = c.maxAttempts
		r.Worker, r.Replica, r.Seq = c.worker, c.replica, c.seq
		r.StartedAt = c.now
		if c.version != "" && r.PinnedTo(c.now) != c.version {
			// A run's first attempt, or one whose pin ended (or was never
			// set): pinned to this version now, if its workflow pins.
			r.PinnedUntil = time.Time{}
			if c.pinFor > 0 {
				r.PinnedUntil = c.now.Add(c.pinFor)
			}
		}
		if c.version != "" {
			r.Version = c.version
		}
	}},
	EventProgress: {from: []Phase{PhaseRunning, PhaseCancelling}, same: true, apply: func(r *Record, c change) {
		r.Progress, r.Message = c.progress, c.message
	}},
	EventSucceed: {from: []Phase{PhaseRunning, PhaseCancelling}, to: PhaseSucceeded, apply: func(r *Record, c change) {
		r.Status, r.Retrying, r.CancelRequested, r.Progress, r.FinishedAt = Succeeded, false, false, 1, c.now
		r.Error, r.ResultSize, r.ResultObject, r.Result = "", c.resultSize, c.resultObject, c.result
	}},
	EventRetry: {from: []Phase{PhaseRunning}, to: PhaseRetrying, apply: func(r *Record, c change) {
		r.Status, r.Retrying, r.Error = Queued, true, c.err
	}},
	EventFail: {from: []Phase{PhaseRunning, PhaseCancelling}, to: PhaseFailed, apply: func(r *Record, c change) {
		r.Status, r.Retrying, r.CancelRequested, r.Error, r.FinishedAt = Failed, false, false, c.err, c.now
		r.CancelWorkflow = false
	}},
	EventExhaust: {from: []Phase{PhaseQueued, PhaseRetrying, PhaseRunning}, to: PhaseFailed, apply: func(r *Record, c change) {
		last := r.Error
		r.Status, r.Retrying, r.FinishedAt = Failed, false, c.now
		r.Error = fmt.Sprintf("attempts exhausted (%d of %d): its worker stopped", r.Attempts, c.maxAttempts)
		if last != "" {
			r.Error += "; last error: " + last
		}
	}},
	EventRequestCancel: {from: []Phase{PhaseRunning}, to: PhaseCancelling, apply: func(r *Record, _ change) {
		r.CancelRequested = true
	}},
	EventCancel: {from: []Phase{PhaseQueued, PhaseRetrying, PhaseRunning, PhaseCancelling}, to: PhaseCancelled,
		apply: func(r *Record, c change) {
			r.Status, r.Retrying, r.CancelRequested, r.CancelWorkflow, r.FinishedAt = Cancelled, false, false, false, c.now
			if c.seq != 0 {
				r.Seq = c.seq
			}
		}},
	EventResume: {from: []Phase{PhaseRunning}, to: PhaseQueued, apply: func(r *Record, _ change) {
		r.Status, r.Worker, r.Replica = Queued, "", ""
	}},
	EventSuspend: {from: []Phase{PhaseRunning}, to: PhaseSuspended, apply: func(r *Record, c change) {
		r.Status, r.Waiting, r.Worker, r.Replica, r.Seq, r.Error = Suspended, c.waiting, "", "", 0, ""
		r.Suspensions++
	}},
	EventWake: {from: []Phase{PhaseSuspended}, to: PhaseQueued, apply: func(r *Record, _ change) {
		r.Status, r.Waiting = Queued, nil
	}},
	EventWakeCancel: {from: []Phase{PhaseSuspended, PhaseCancelling}, to: PhaseQueued, apply: func(r *Record, _ change) {
		r.Status, r.Waiting, r.CancelRequested, r.CancelWorkflow, r.Worker, r.Replica, r.Seq = Queued, nil, false, true, "", "", 0
	}},
	EventUnpin: {from: []Phase{PhaseQueued, PhaseRetrying, PhaseRunning, PhaseCancelling, PhaseSuspended}, same: true,
		apply: func(r *Record, _ change) { r.PinnedUntil = time.Time{} }},
	EventRequeue: {from: []Phase{PhaseSucceeded, PhaseFailed, PhaseCancelled}, to: PhaseQueued, apply: func(r *Record, c change) {
		r.Status, r.Retrying, r.Attempts, r.Error, r.CancelRequested = Queued, false, 0, "", false
		r.Progress, r.Message, r.Worker, r.Replica = 0, "", "", ""
		r.Result, r.ResultSize, r.ResultObject, r.Seq = nil, 0, "", 0
		r.StartedAt, r.FinishedAt = time.Time{}, time.Time{}
		r.Requeued++
	}},
}

// TransitionError is returned when an event does not apply in the
// phase a record is in.
type TransitionError struct {
	ID    string
	Event Event
	Phase Phase
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("job %s: %s does not apply to a %s job", e.ID, e.Event, e.Phase)
}

// apply returns r after event ev (c says with what), its UpdatedAt set
// to c.now; a *TransitionError if ev does not apply in r's phase.
func (r Record) apply(ev Event, c change) (Record, error) {
	if int(ev) >= len(lifecycle) {
		return r, fmt.Errorf("job %s: unknown event %s", r.ID, ev)
	}
	rl := lifecycle[ev]
	from := r.Phase()
	allowed := false
	for _, p := range rl.from {
		allowed = allowed || p == from
	}
	if !allowed {
		return r, &TransitionError{ID: r.ID, Event: ev, Phase: from}
	}
	if c.now.IsZero() {
		c.now = time.Now().UTC()
	}
	rl.apply(&r, c)
	r.UpdatedAt = c.now
	return r, nil
}

// submitted is the record of a job just submitted: QUEUED, in its
// message only until a runner claims it.
func submitted(id, app, deployment, method string, args json.RawMessage, maxAttempts, priority int, now time.Time) Record {
	return Record{
		ID: id, App: app, Deployment: deployment, Method: method, Args: args,
		Status: Queued, MaxAttempts: maxAttempts, Priority: priority,
		CreatedAt: now, UpdatedAt: now,
	}
}

// writeRecord stores next as its job's record: it creates the record
// when prev is 0 (the job had only its message) and otherwise
// compare-and-sets on revision prev. It returns the new revision;
// jetstream.ErrKeyExists or jetstream.ErrKeyRevisionMismatch (wrapped)
// when another writer came first.
func writeRecord(ctx context.Context, kv *records, next Record, prev uint64) (uint64, error) {
	b, err := json.Marshal(next)
	if err != nil {
		return 0, fmt.Errorf("encode job record %s: %w", next.ID, err)
	}
	var rev uint64
	if !next.Status.Terminal() {
		// Kept past the bucket's TTL: retention counts from the end.
		rev, err = kv.writeLive(ctx, next.ID, b, prev)
	} else if prev == 0 {
		rev, err = kv.Create(ctx, next.ID, b)
	} else {
		rev, err = kv.Update(ctx, next.ID, b, prev)
	}
	if err != nil {
		return 0, fmt.Errorf("write job record %s: %w", next.ID, err)
	}
	return rev, nil
}

// sameClaim reports whether r is the claim c, read back: the same
// attempt of the same message by the same replica, started at the same
// instant.
func (r Record) sameClaim(c Record) bool {
	return r.Status == Running && r.Seq == c.Seq && r.Attempts == c.Attempts && r.Replica == c.Replica &&
		r.Worker == c.Worker && r.StartedAt.Equal(c.StartedAt)
}

// claimAction is what a runner does with a delivered job message, given
// the job's current record.
type claimAction uint8

const (
	// actClaim: claim the job (EventClaim) and run the attempt.
	actClaim claimAction = iota
	// actFinished: the job ended before (cancelled while queued, or a
	// stray duplicate of a finished job): ack, run nothing.
	actFinished
	// actDuplicate: a stray duplicate message of a job running from
	// another message: ack, run nothing.
	actDuplicate
	// actCancel: cancel was asked and no attempt runs: EventCancel, ack.
	actCancel
	// actExhaust: no attempt is left: EventExhaust, dead-letter, term.
	actExhaust
)

// nextAction decides what a runner holding the message with stream
// sequence seq does with a job whose record is cur.
func nextAction(cur Record, seq uint64, maxAttempts int) claimAction {
	ph := cur.Phase()
	switch {
	case ph.Terminal():
		return actFinished
	case cur.Status == Running && cur.Seq != 0 && cur.Seq != seq:
		return actDuplicate
	case ph == PhaseCancelling:
		return actCancel
	case cur.spent() >= maxAttempts:
		return actExhaust
	}
	return actClaim
}
