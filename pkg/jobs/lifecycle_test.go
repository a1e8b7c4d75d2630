package jobs

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// inPhase returns a record in phase p, as the runner and the Queue leave
// records in it.
func inPhase(p Phase) Record {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	r := submitted("j1", "app", "dep", "train", json.RawMessage(`{"n":1}`), 3, 0, t0)
	switch p {
	case PhaseRetrying:
		r.Status, r.Retrying, r.Attempts, r.Error = Queued, true, 1, "boom"
	case PhaseRunning:
		r.Status, r.Attempts, r.Worker, r.Replica, r.Seq = Running, 1, "w", "r", 7
	case PhaseCancelling:
		r.Status, r.Attempts, r.CancelRequested, r.Seq = Running, 1, true, 7
	case PhaseSuspended:
		r.Status, r.Attempts, r.Suspensions, r.Waiting = Suspended, 1, 1, []string{"signal:go"}
	case PhaseSucceeded:
		r.Status, r.Attempts, r.Progress = Succeeded, 1, 1
	case PhaseFailed:
		r.Status, r.Attempts, r.Error = Failed, 3, "boom"
	case PhaseCancelled:
		r.Status = Cancelled
	}
	return r
}

var allPhases = []Phase{PhaseQueued, PhaseRetrying, PhaseRunning, PhaseCancelling, PhaseSuspended, PhaseSucceeded, PhaseFailed, PhaseCancelled}

// TestLifecycle runs every event in every phase: where the table allows
// it the record moves to the table's phase with the event's fields
// written; elsewhere apply returns a *TransitionError and the record is
// unchanged.
func TestLifecycle(t *testing.T) {
	now := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	c := change{now: now, worker: "w2", replica: "r2", maxAttempts: 3, seq: 9, progress: 0.5, message: "half",
		err: "bad", result: json.RawMessage(`"ok"`), resultSize: 4, waiting: []string{"job:x"}}
	// want is the table of this file's doc comment, phase by phase: the
	// phase each event leads to, absent where it does not apply.
	want := map[Event]map[Phase]Phase{
		EventClaim:         {PhaseQueued: PhaseRunning, PhaseRetrying: PhaseRunning, PhaseRunning: PhaseRunning},
		EventProgress:      {PhaseRunning: PhaseRunning, PhaseCancelling: PhaseCancelling},
		EventSucceed:       {PhaseRunning: PhaseSucceeded, PhaseCancelling: PhaseSucceeded},
		EventRetry:         {PhaseRunning: PhaseRetrying},
		EventFail:          {PhaseRunning: PhaseFailed, PhaseCancelling: PhaseFailed},
		EventExhaust:       {PhaseQueued: PhaseFailed, PhaseRetrying: PhaseFailed, PhaseRunning: PhaseFailed},
		EventRequestCancel: {PhaseRunning: PhaseCancelling},
		EventCancel: {PhaseQueued: PhaseCancelled, PhaseRetrying: PhaseCancelled, PhaseRunning: PhaseCancelled,
			PhaseCancelling: PhaseCancelled},
		EventResume:     {PhaseRunning: PhaseQueued},
		EventRequeue:    {PhaseSucceeded: PhaseQueued, PhaseFailed: PhaseQueued, PhaseCancelled: PhaseQueued},
		EventSuspend:    {PhaseRunning: PhaseSuspended},
		EventWake:       {PhaseSuspended: PhaseQueued},
		EventWakeCancel: {PhaseSuspended: PhaseQueued, PhaseCancelling: PhaseQueued},
		EventUnpin: {PhaseQueued: PhaseQueued, PhaseRetrying: PhaseRetrying, PhaseRunning: PhaseRunning,
			PhaseCancelling: PhaseCancelling, PhaseSuspended: PhaseSuspended},
	}
	for ev := range numEvents {
		for _, from := range allPhases {
			t.Run(ev.String()+"/"+from.String(), func(t *testing.T) {
				r := inPhase(from)
				if got := r.Phase(); got != from {
					t.Fatalf("inPhase(%s).Phase() = %s", from, got)
				}
				next, err := r.apply(ev, c)
				to, ok := want[ev][from]
				if !ok {
					var te *TransitionError
					if !errors.As(err, &te) || te.Event != ev || te.Phase != from {
						t.Fatalf("apply(%s) in %s = %v, want a TransitionError", ev, from, err)
					}
					if !strings.Contains(err.Error(), ev.String()) || !strings.Contains(err.Error(), from.String()) {
						t.Errorf("error %q does not name the event and the phase", err)
					}
					if !equalRecords(next, r) {
						t.Errorf("apply(%s) in %s changed the record: %+v", ev, from, next)
					}
					return
				}
				if err != nil {
					t.Fatalf("apply(%s) in %s = %v, want %s", ev, from, err, to)
				}
				if got := next.Phase(); got != to {
					t.Fatalf("apply(%s) in %s: phase %s, want %s", ev, from, got, to)
				}
				if !next.UpdatedAt.Equal(now) {
					t.Errorf("UpdatedAt = %v, want %v", next.UpdatedAt, now)
				}
				if to.Terminal() && (next.FinishedAt.IsZero() || next.CancelRequested || next.Retrying) {
					t.Errorf("final record %+v: want FinishedAt set, no cancel request, not retrying", next)
				}
				if next.ID != r.ID || next.CreatedAt != r.CreatedAt || string(next.Args) != string(r.Args) {
					t.Errorf("apply(%s) changed the job's identity: %+v", ev, next)
				}
				checkFields(t, ev, r, next, c)
			})
		}
	}
}

// checkFields checks what each event writes.
func checkFields(t *testing.T, ev Event, before, after Record, c change) {
	t.Helper()
	switch ev {
	case EventClaim:
		if after.Attempts != before.Attempts+1 || after.MaxAttempts != c.maxAttempts || after.Worker != c.worker ||
			after.Replica != c.replica || after.Seq != c.seq || !after.StartedAt.Equal(c.now) {
			t.Errorf("claim: %+v, want attempt %d on %s/%s of message %d", after, before.Attempts+1, c.worker, c.replica, c.seq)
		}
	case EventUnpin:
		if !after.PinnedUntil.IsZero() || after.Version != before.Version {
			t.Errorf("unpin: version %q until %s, want %q not pinned", after.Version, after.PinnedUntil, before.Version)
		}
	case EventProgress:
		if after.Progress != c.progress || after.Message != c.message {
			t.Errorf("progress: %v %q, want %v %q", after.Progress, after.Message, c.progress, c.message)
		}
	case EventSucceed:
		if string(after.Result) != string(c.result) || after.ResultSize != c.resultSize || after.Progress != 1 || after.Error != "" {
			t.Errorf("succeed: %+v", after)
		}
	case EventRetry, EventFail:
		if after.Error != c.err {
			t.Errorf("%s: error %q, want %q", ev, after.Error, c.err)
		}
	case EventExhaust:
		if !strings.Contains(after.Error, "attempts exhausted") {
			t.Errorf("exhaust: error %q", after.Error)
		}
		if before.Error != "" && !strings.Contains(after.Error, "last error: "+before.Error) {
			t.Errorf("exhaust: error %q does not keep the last one %q", after.Error, before.Error)
		}
	case EventResume:
		if after.Worker != "" || after.Replica != "" || after.Attempts != before.Attempts {
			t.Errorf("resume: %+v, want no worker and the attempts kept", after)
		}
	case EventSuspend:
		if after.Suspensions != before.Suspensions+1 || !slices.Equal(after.Waiting, c.waiting) || after.Worker != "" || after.Seq != 0 {
			t.Errorf("suspend: %+v, want one more suspension waiting for %v, no worker or message", after, c.waiting)
		}
	case EventWake:
		if after.Waiting != nil || after.Attempts != before.Attempts || after.Suspensions != before.Suspensions {
			t.Errorf("wake: %+v, want waiting nothing, the counts kept", after)
		}
	case EventWakeCancel:
		if !after.CancelWorkflow || after.CancelRequested || after.Waiting != nil {
			t.Errorf("wake-cancel: %+v, want queued to compensate", after)
		}
	case EventRequeue:
		if after.Attempts != 0 || after.Requeued != before.Requeued+1 || after.Error != "" || after.Result != nil ||
			!after.StartedAt.IsZero() || !after.FinishedAt.IsZero() || after.Seq != 0 {
			t.Errorf("requeue: %+v, want a fresh record", after)
		}
	}
}

func equalRecords(a, b Record) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Every row of the table names its from-phases once, and every phase but
// the initial one is reachable.
func TestLifecycleTableIsComplete(t *testing.T) {
	reached := map[Phase]bool{PhaseQueued: true}
	for ev, rl := range lifecycle {
		if rl.apply == nil || len(rl.from) == 0 {
			t.Errorf("event %s has no rule", Event(ev))
		}
		seen := map[Phase]bool{}
		for _, p := range rl.from {
			if seen[p] {
				t.Errorf("event %s lists %s twice", Event(ev), p)
			}
			seen[p] = true
			if rl.same {
				reached[p] = true
			}
		}
		if !rl.same {
			reached[rl.to] = true
		}
	}
	for _, p := range allPhases {
		if !reached[p] {
			t.Errorf("phase %s is never reached", p)
		}
	}
}

// nextAction's decisions, in order of precedence.
func TestNextAction(t *testing.T) {
	running := inPhase(PhaseRunning) // seq 7, 1 attempt
	exhausted := inPhase(PhaseRetrying)
	exhausted.Attempts = 3
	cancellingDup := inPhase(PhaseCancelling)
	tests := []struct {
		name string
		cur  Record
		seq  uint64
		want claimAction
	}{
		{"queued", inPhase(PhaseQueued), 1, actClaim},
		{"retrying", inPhase(PhaseRetrying), 1, actClaim},
		{"redelivered after its worker died", running, 7, actClaim},
		{"running from an older message of unknown seq", func() Record { r := running; r.Seq = 0; return r }(), 9, actClaim},
		{"duplicate of a running job", running, 8, actDuplicate},
		{"duplicate of a cancelling job", cancellingDup, 8, actDuplicate},
		{"cancelling", inPhase(PhaseCancelling), 7, actCancel},
		{"attempts used up", exhausted, 1, actExhaust},
		{"succeeded", inPhase(PhaseSucceeded), 1, actFinished},
		{"failed", inPhase(PhaseFailed), 1, actFinished},
		{"cancelled", inPhase(PhaseCancelled), 1, actFinished},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextAction(tc.cur, tc.seq, 3); got != tc.want {
				t.Errorf("nextAction(%s, seq %d) = %d, want %d", tc.cur.Phase(), tc.seq, got, tc.want)
			}
		})
	}
}

// The phases and events have the names the docs use.
func TestNames(t *testing.T) {
	var phases, events []string
	for _, p := range allPhases {
		phases = append(phases, p.String())
	}
	for ev := range numEvents {
		events = append(events, ev.String())
	}
	if !slices.Equal(phases, []string{"queued", "retrying", "running", "cancelling", "suspended", "succeeded", "failed", "cancelled"}) {
		t.Errorf("phases = %v", phases)
	}
	if len(events) != len(eventNames) || slices.Contains(events, "") {
		t.Errorf("events = %v", events)
	}
	if got := Phase(99).String(); got != "Phase(99)" {
		t.Errorf("Phase(99) = %q", got)
	}
}
