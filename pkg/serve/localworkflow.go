package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// The in-memory workflow store of Local: journals and inboxes in maps,
// timers as time.AfterFunc, submitted jobs run by the in-process job
// runner. Nothing is durable; a crash is simulated with CrashWorkflowAt.

type localWorkflows struct {
	lj *localJobs

	mu      sync.Mutex
	runs    map[string]*localRun // guarded by mu
	dedup   map[string]bool      // guarded by mu: signal idempotency keys
	timers  []*time.Timer        // guarded by mu
	crashes []crashPoint         // guarded by mu: one-shot simulated crashes
	closed  bool                 // guarded by mu
}

type localRun struct {
	journal []JournalEntry
	inbox   []InboxEvent
	seq     uint64
}

type crashPoint struct {
	step  string
	after bool
}

func newLocalWorkflows(lj *localJobs) *localWorkflows {
	return &localWorkflows{lj: lj, runs: map[string]*localRun{}, dedup: map[string]bool{}}
}

func (w *localWorkflows) run(id string) *localRun {
	r := w.runs[id]
	if r == nil {
		r = &localRun{}
		w.runs[id] = r
	}
	return r
}

func (w *localWorkflows) Load(_ context.Context, run string) ([]JournalEntry, []InboxEvent, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.run(run)
	return append([]JournalEntry(nil), r.journal...), append([]InboxEvent(nil), r.inbox...), nil
}

func (w *localWorkflows) Append(_ context.Context, run string, e JournalEntry) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.run(run)
	r.journal = append(r.journal, e)
	return nil
}

func (w *localWorkflows) Submit(_ context.Context, run, method, id string, args Args) error {
	parent := run
	w.lj.mu.Lock()
	for name, m := range w.lj.methods {
		if m.wf != nil && m.jobs[run] != nil {
			parent = name + "/" + run // as the fleet names it
		}
	}
	w.lj.mu.Unlock()
	_, _, err := w.lj.submit(method, id, args, parent)
	return err
}

func (w *localWorkflows) Timer(_ context.Context, run string, pos int, at time.Time) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("the in-process runner is closed")
	}
	w.timers = append(w.timers, time.AfterFunc(time.Until(at), func() {
		w.lj.mu.Lock()
		defer w.lj.mu.Unlock()
		w.lj.postLocked(run, InboxEvent{Key: TimerEventKey(pos)}, "")
	}))
	return nil
}

// post appends ev to run's inbox unless dedup was seen; false if it was.
func (w *localWorkflows) post(run string, ev InboxEvent, dedup string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if dedup != "" {
		if w.dedup[run+"/"+dedup] {
			return false
		}
		w.dedup[run+"/"+dedup] = true
	}
	r := w.run(run)
	r.seq++
	ev.Seq = r.seq
	r.inbox = append(r.inbox, ev)
	return true
}

// delivered reports whether a signal with the idempotency key dedup was
// posted to run.
func (w *localWorkflows) delivered(run, dedup string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dedup[run+"/"+dedup]
}

// newerThan reports whether run's inbox has an event after seq.
func (w *localWorkflows) newerThan(run string, seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.run(run).seq > seq
}

func (w *localWorkflows) crashHook(run string, pos int, name string, journaled bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, c := range w.crashes {
		if c.step == name && c.after == journaled {
			w.crashes = append(w.crashes[:i:i], w.crashes[i+1:]...)
			return true
		}
	}
	return false
}

func (w *localWorkflows) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for _, t := range w.timers {
		t.Stop()
	}
	w.timers = nil
}

// WorkflowStore is the journal and inbox store of the in-process
// backend (Local).
func (c *localJobContext) WorkflowStore() WorkflowStore { return c.lj.wf }

// CrashWorkflowAt simulates, once, the crash of the worker running a
// workflow at the step (or undo) named step: before its result is
// journaled (after=false: the step ran, its result is lost, and the
// next attempt runs it again) or just after (after=true: the next
// attempt replays it). The run goes on in a new attempt at once.
func (l *Local) CrashWorkflowAt(step string, after bool) {
	w := l.jobs.wf
	w.mu.Lock()
	defer w.mu.Unlock()
	w.crashes = append(w.crashes, crashPoint{step: step, after: after})
}

// SignalWorkflow sends the signal name with payload (JSON-encoded) to a
// run; a repeated non-empty idempotency key sends nothing (sent false).
func (l *Local) SignalWorkflow(workflow, run, name, key string, payload any) (sent bool, err error) {
	j, err := l.jobs.job(workflow, run)
	if err != nil {
		return false, err
	}
	if j.m.wf == nil {
		return false, &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: workflow + " is not a workflow"}
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return false, &Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: "signal payload: " + err.Error()}
	}
	l.jobs.mu.Lock()
	defer l.jobs.mu.Unlock()
	if j.rec.Status.Terminal() {
		if key != "" && l.jobs.wf.delivered(run, key) {
			return false, nil // a retry of a signal the run had: not an error
		}
		return false, &Error{Status: http.StatusConflict, Code: protocol.ErrRunFinished, Msg: fmt.Sprintf("run %s is %s", run, j.rec.Status)}
	}
	return l.jobs.postLocked(run, InboxEvent{Key: SignalEventKey(name), Result: b}, key), nil
}

// WorkflowHistory returns a run's journal ordered by position.
func (l *Local) WorkflowHistory(workflow, run string) ([]JournalEntry, error) {
	if _, err := l.jobs.job(workflow, run); err != nil {
		return nil, err
	}
	es, _, err := l.jobs.wf.Load(context.Background(), run)
	return SortedHistory(es), err
}
