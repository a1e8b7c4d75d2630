package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// Durable workflows: a workflow is a plain Go function registered with a
// deployment (WithWorkflows) and started like an async method. Each of its
// steps is journaled; an attempt replays the journal, so a step that was
// journaled is never run again, and awaiting something that has not
// happened yet (a submitted job, a timer, a signal, a child workflow)
// suspends the run: the attempt ends, releasing its goroutine and its
// slot, and the run resumes — replaying its journal — when what it awaits
// lands in its inbox.
//
// A workflow function must be deterministic given its journal: it decides
// only on its input and on the results of its steps. Plain goroutines,
// select on channels, time.Now and random numbers inside a workflow
// (outside a step) are not allowed: use wf.Go, wf.Select, a Step. When
// changed code asks, at some position, for another step than the journal
// holds there, the run fails with a *NonDeterminismError naming both.
//
// Positions are given in program order by the workflow's own goroutine;
// wf.Go branches run concurrently and are journaled as they finish, each
// under the position it was started at, so a crash during a fan-out reruns
// only the branches that had not finished.

// Journal entry kinds.
const (
	KindStep   = "step"   // Step, Go, Call: a side effect and its result
	KindSubmit = "submit" // Submit, Child: a durable job started (Ref: its id)
	KindSleep  = "sleep"  // Sleep: a timer (Wake: when)
	KindSignal = "signal" // Await: a signal received
	KindSelect = "select" // Select: which future was ready first
	KindPatch  = "patch"  // Patched: a marker
	KindUndo   = "undo"   // a compensation run
	KindResult = "result" // the result of a Submit/Child/Sleep future
	// KindSuspend marks where a run suspended (Name: what it awaited): a
	// run that reached a position counts as past it for Patched.
	KindSuspend = "suspend"
)

// JournalEntry is one record of a run's journal (JSON on the subject
// <prefix>.wf.<app>.<workflow>.<run>.j; schemas/ has its schema).
type JournalEntry struct {
	// Pos is the position of the call in the workflow's program order.
	Pos  int    `json:"pos"`
	Kind string `json:"kind"`
	Name string `json:"name,omitempty"`
	// Result is the step's JSON result; Error its error (after its last
	// attempt) — one of the two.
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
	// Code is the error's wire code when the step returned an *Error.
	Code     protocol.ErrorCode `json:"code,omitempty"`
	Status   int                `json:"status,omitempty"`
	Attempts int                `json:"attempts,omitempty"`
	// InputSize is the size of the JSON input of Call, Submit and Child.
	InputSize int       `json:"input_size,omitempty"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
	// Ref is the id of a submitted job or child run; Wake a timer's time;
	// Inbox the inbox sequence a result or signal was taken from.
	Ref   string    `json:"ref,omitempty"`
	Wake  time.Time `json:"wake,omitzero"`
	Inbox uint64    `json:"inbox,omitempty"`
}

// InboxEvent is something that happened to a run from outside: a
// submitted job or child run ended ("job:<id>"), a timer fired
// ("timer:<pos>"), a signal came ("signal:<name>").
type InboxEvent struct {
	Seq    uint64             `json:"-"`
	Key    string             `json:"key"`
	Result json.RawMessage    `json:"result,omitempty"`
	Error  string             `json:"error,omitempty"`
	Code   protocol.ErrorCode `json:"code,omitempty"`
}

// Inbox event keys.
func JobEventKey(id string) string { return "job:" + id }
func TimerEventKey(pos int) string { return "timer:" + strconv.Itoa(pos) }
func SignalEventKey(n string) string {
	return "signal:" + n
}

// WorkflowStore is where runs keep their journals and inboxes; the
// backends implement it (an in-memory one in Local, JetStream in the
// fleet, package jobs).
type WorkflowStore interface {
	// Load returns a run's journal and inbox, in order.
	Load(ctx context.Context, run string) ([]JournalEntry, []InboxEvent, error)
	// Append adds e to the run's journal, fenced: it fails with
	// ErrJournalFenced when another attempt wrote to the journal since
	// this one loaded it.
	Append(ctx context.Context, run string, e JournalEntry) error
	// Submit starts job id of the async method (or workflow) with args;
	// its end lands in the run's inbox as JobEventKey(id). A repeated id
	// starts nothing.
	Submit(ctx context.Context, run, method, id string, args Args) error
	// Timer puts TimerEventKey(pos) in the run's inbox at at.
	Timer(ctx context.Context, run string, pos int, at time.Time) error
}

// ErrCancelled is the cause a backend cancels a run's context with when
// the run is cancelled (not when its worker stops): only then do its
// compensations run.
var ErrCancelled = errors.New("cancelled")

// ErrJournalFenced: another attempt wrote to the run's journal.
var ErrJournalFenced = errors.New("workflow journal written by another attempt")

// SuspendError ends an attempt whose workflow awaits something not in
// its inbox yet; the backends record the run SUSPENDED and resume it when
// its inbox gets an event after InboxSeq.
type SuspendError struct {
	Waiting  []string
	InboxSeq uint64
}

func (e *SuspendError) Error() string {
	return fmt.Sprintf("workflow suspended, waiting for %v", e.Waiting)
}

// NonDeterminismError: the code asked for another step than the journal
// holds at that position.
type NonDeterminismError struct {
	Run       string
	Pos       int
	Journaled string // "kind name"
	Requested string
	Msg       string // set instead of the fields above when it crossed the wire
}

func (e *NonDeterminismError) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return fmt.Sprintf("workflow %s is not deterministic: at position %d the journal holds %s but the code asks for %s (use wf.Patched to change a running workflow)",
		e.Run, e.Pos, e.Journaled, e.Requested)
}

// MaxSleep bounds wf.Sleep.
const MaxSleep = 366 * 24 * time.Hour

// StepContext is what a step's function gets.
type StepContext interface {
	context.Context
	// IdempotencyKey is stable across attempts and crashes (run id and
	// position): hand it to external systems.
	IdempotencyKey() string
	// Attempt is 1-based.
	Attempt() int
}

// StepFunc is a step's side effect; its result is journaled as JSON.
type StepFunc func(s StepContext) (any, error)

// StepOption tunes one step.
type StepOption func(*stepOpts)

type stepOpts struct {
	attempts int
	backoff  []time.Duration
}

// Retries sets a step's attempts (default 3) and backoff between them
// (the last repeats; default 100ms, 1s).
func Retries(attempts int, backoff ...time.Duration) StepOption {
	return func(o *stepOpts) {
		o.attempts = max(attempts, 1)
		if len(backoff) > 0 {
			o.backoff = backoff
		}
	}
}

// Result is a journaled result: Decode fills v or returns the step's
// error.
type Result struct {
	raw json.RawMessage
	err error
}

// Err is the step's error.
func (r Result) Err() error { return r.err }

// Raw is the JSON result.
func (r Result) Raw() json.RawMessage { return r.raw }

// Decode unmarshals the result into v (nil: ignore it), or returns the
// step's error.
func (r Result) Decode(v any) error {
	if r.err != nil {
		return r.err
	}
	if v == nil || len(r.raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(r.raw, v); err != nil {
		return fmt.Errorf("decode step result: %w", err)
	}
	return nil
}

// Workflow is what a workflow function gets. Its methods are called from
// the workflow's goroutine only (wf.Go branches get a StepContext).
type Workflow interface {
	context.Context
	// RunID is the run's id (the job's request id).
	RunID() string
	Logger() zerolog.Logger
	// Step runs fn, retried with backoff, and journals its result; a
	// journaled step returns its result without running.
	Step(name string, fn StepFunc, opts ...StepOption) Result
	// Handle returns a handle to a deployment of the application, for
	// Call.
	Handle(deployment string) *Handle
	// Call calls method of a deployment and journals the answer.
	Call(h *Handle, method string, in any) Result
	// Go starts a step that runs concurrently; Get (or Gather) awaits it.
	Go(name string, fn StepFunc, opts ...StepOption) *Future
	// Gather awaits every future; the first error is returned.
	Gather(fs ...*Future) error
	// Select awaits the first future ready (journaled: a replay picks the
	// same) and returns its index; -1 when the run was cancelled.
	Select(fs ...*Future) int
	// Submit starts a durable job of an async method of the application
	// and returns its future; awaiting it suspends the run until the job
	// ends.
	Submit(method string, args any) *Future
	// Child starts a child run of a workflow with input in.
	Child(workflow string, in any) *Future
	// Sleep waits d (at most MaxSleep) holding no slot.
	Sleep(d time.Duration) error
	// Await waits for the signal named name and decodes its payload into v.
	Await(name string, v any) error
	// OnFailure registers a compensation: when the workflow fails or is
	// cancelled the compensations run in reverse order, each journaled.
	OnFailure(name string, undo StepFunc)
	// Patched reports whether this run takes the new branch of a change
	// named id: true for runs that reach it with this code, false for runs
	// that were past it with older code.
	Patched(id string) bool
}

// Future is the pending result of Go, Submit or Child.
type Future struct {
	r    *wfRun
	pos  int
	kind string
	name string
	ref  string
	done chan struct{} // Go: closed when the branch finished (res set)
	res  Result
}

// Get awaits the future and decodes its result into v (nil: ignore).
func (f *Future) Get(v any) error { return f.r.get(f).Decode(v) }

// WorkflowDef is a workflow registered with WithWorkflows.
type WorkflowDef struct {
	name       string
	run        func(wf Workflow, args Args) (any, error)
	versioning string // config.AsyncMethod.Versioning; "" = pinned
}

// DefOption is an option of NewWorkflow.
type DefOption func(*WorkflowDef)

// AutoUpgrade makes a workflow's runs follow the deployment's current
// version: a run suspended on one version replays, after a rolling update,
// on the new version's code (guard changes with Workflow.Patched and check
// them with workflowtest.ReplayJournal). By default a run is pinned to the
// version that started it (config versioning: pinned); the serve config's
// async_methods[].versioning overrides either.
func AutoUpgrade() DefOption {
	return func(d *WorkflowDef) { d.versioning = config.VersioningAutoUpgrade }
}

// Name is the workflow's name (its async method's).
func (d *WorkflowDef) Name() string { return d.name }

// NewWorkflow declares a workflow: its input In is decoded from the start
// request's arguments; its Out is the run's result.
func NewWorkflow[In, Out any](name string, fn func(wf Workflow, in In) (Out, error), opts ...DefOption) *WorkflowDef {
	d := &WorkflowDef{name: name, run: func(wf Workflow, args Args) (any, error) {
		var in In
		if len(args) > 0 {
			if err := args.Decode(&in); err != nil {
				return nil, err
			}
		}
		return fn(wf, in)
	}}
	for _, o := range opts {
		o(d)
	}
	return d
}

// WithWorkflows registers workflows with a deployment: each is an async
// method (config kind workflow) run by the SDK; the deployment's handler
// need not implement JobHandler for them.
func WithWorkflows(defs ...*WorkflowDef) RegisterOption {
	return func(r *registration) {
		for _, d := range defs {
			r.async = append(r.async, config.AsyncMethod{Name: d.name, Workflow: true, MaxAttempts: DefaultWorkflowAttempts,
				Versioning: d.versioning})
			r.workflows = append(r.workflows, d)
		}
	}
}

// DefaultWorkflowAttempts is how many attempts of a run may be lost to
// crashes between two suspensions.
const DefaultWorkflowAttempts = 10

// Workflows returns the workflows registered with handler.
func (r *Registry) Workflows(handler string) []*WorkflowDef {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]*WorkflowDef(nil), r.workflows[handler]...)
}

// WorkflowJobs returns the JobHandler of a deployment with workflows: a
// job of a workflow runs it (its JobContext must carry a WorkflowStore),
// other jobs go to h (which must then implement JobHandler).
func WorkflowJobs(h Handler, defs []*WorkflowDef, opts ...WorkflowOption) JobHandler {
	jh, _ := h.(JobHandler)
	if len(defs) == 0 {
		return jh
	}
	w := workflowJobs{next: jh, defs: map[string]*WorkflowDef{}}
	for _, d := range defs {
		w.defs[d.name] = d
	}
	for _, o := range opts {
		o(&w)
	}
	return w
}

// WorkflowOption tunes WorkflowJobs.
type WorkflowOption func(*workflowJobs)

// Handles gives the workflows handles (wf.Handle) to the deployments of
// app through c.
func Handles(c Caller, app string) WorkflowOption {
	return func(w *workflowJobs) { w.caller, w.app = c, app }
}

type workflowJobs struct {
	next   JobHandler
	defs   map[string]*WorkflowDef
	caller Caller // nil: wf.Handle's calls fail
	app    string
}

// WorkflowContext is implemented by the JobContext of a backend that runs
// workflows.
type WorkflowContext interface {
	WorkflowStore() WorkflowStore
}

func (w workflowJobs) RunJob(ctx JobContext, job *Job) (any, error) {
	d, ok := w.defs[job.Method]
	if !ok {
		if w.next == nil {
			return nil, &Error{Status: http.StatusNotFound, Code: protocol.ErrMethodNotFound, Msg: "no async method " + quote(job.Method)}
		}
		return w.next.RunJob(ctx, job)
	}
	wc, ok := ctx.(WorkflowContext)
	if !ok {
		return nil, errors.New("this backend has no workflow store")
	}
	return runWorkflow(ctx, wc.WorkflowStore(), d, job, nil, w.handle)
}

func (w workflowJobs) handle(deployment string) *Handle {
	h := NewHandle(w.caller, w.app, deployment)
	if w.caller == nil {
		h.err = &Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable,
			Msg: "this backend gives workflows no handles (serve.Handles)"}
	}
	return h
}

// crashHook, when set, is called before and after each step is journaled
// (Local's crash simulation); a true return abandons the attempt as if
// its worker died.
type crashHook func(run string, pos int, name string, journaled bool) bool

// errCrashed ends an attempt abandoned by a crash hook.
var errCrashed = errors.New("simulated crash")

// runWorkflow runs one attempt of a workflow run: it loads the journal,
// runs d from the start (replaying journaled steps) and returns the
// run's result, its failure (an *Error, not retried: the workflow's
// answer), a *SuspendError, or another error (an infrastructure failure:
// the attempt is retried). handle gives wf.Handle's handles.
func runWorkflow(ctx JobContext, store WorkflowStore, d *WorkflowDef, job *Job, crash crashHook, handle func(string) *Handle) (any, error) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	entries, inbox, err := store.Load(lctx, job.ID)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("load workflow journal: %w", err)
	}
	r := &wfRun{Context: ctx, id: job.ID, store: store, log: ctx.Logger(), crash: crash, handle: handle,
		byPos: map[int][]JournalEntry{}, inbox: inbox, consumed: map[uint64]bool{}, maxPos: -1}
	for _, e := range entries {
		r.index(e)
	}
	for _, ev := range inbox {
		r.inboxSeq = max(r.inboxSeq, ev.Seq)
	}
	res, err := r.execute(d, job.Args)
	traceAttempt(ctx, len(entries), err)
	return res, err
}

// wfRun is one attempt of a run.
type wfRun struct {
	context.Context
	id    string
	store WorkflowStore
	log   zerolog.Logger
	crash crashHook
	// replay: run only as far as the journal goes (ReplayWorkflow).
	replay bool
	handle func(deployment string) *Handle

	pos   int    // next position; the workflow goroutine only
	gid   uint64 // the workflow goroutine's id (wf methods are called from it only)
	undos []undo

	branches sync.WaitGroup

	mu       sync.Mutex
	byPos    map[int][]JournalEntry // guarded by mu
	maxPos   int                    // guarded by mu: highest journaled position
	inbox    []InboxEvent           // guarded by mu (fixed after load)
	inboxSeq uint64                 // the last inbox sequence seen
	consumed map[uint64]bool        // guarded by mu: inbox events journaled
	fail     error                  // guarded by mu: an infrastructure failure ending the attempt
	waiting  []string               // guarded by mu
	done     chan struct{}          // closed when the attempt must end (fail or crash)
	doneOnce sync.Once
}

type undo struct {
	name string
	fn   StepFunc
}

func (r *wfRun) index(e JournalEntry) {
	r.maxPos = max(r.maxPos, e.Pos)
	if e.Kind == KindSuspend {
		return
	}
	r.byPos[e.Pos] = append(r.byPos[e.Pos], e)
	if e.Inbox != 0 {
		r.consumed[e.Inbox] = true
	}
}

// abort ends the attempt from the workflow goroutine: waits for running
// branches and exits the goroutine (Goexit runs the workflow's defers).
func (r *wfRun) abort(err error) {
	r.mu.Lock()
	if r.fail == nil {
		r.fail = err
	}
	r.mu.Unlock()
	r.doneOnce.Do(func() { close(r.done) })
	runtime.Goexit()
}

// suspend ends the attempt waiting for the events; a cancelled run does
// not suspend: the cancel's cause is returned.
func (r *wfRun) suspend(waiting ...string) error {
	if r.Err() != nil {
		return context.Cause(r)
	}
	r.mu.Lock()
	r.waiting = append(r.waiting, waiting...)
	reached := r.maxPos
	r.mu.Unlock()
	if p := r.pos - 1; p > reached {
		now := time.Now().UTC()
		r.mustAppend(JournalEntry{Pos: p, Kind: KindSuspend, Name: strings.Join(waiting, " "), Started: now, Finished: now})
	}
	r.abort(&SuspendError{Waiting: waiting})
	return nil
}

// execute runs the workflow function in its own goroutine (so that
// suspension can end it) and returns the attempt's outcome.
func (r *wfRun) execute(d *WorkflowDef, args Args) (any, error) {
	r.done = make(chan struct{})
	type outcome struct {
		res any
		err error
		ok  bool
	}
	out := make(chan outcome, 1)
	go func() {
		r.gid = goid()
		o := outcome{}
		defer func() { out <- o }()
		defer func() {
			if v := recover(); v != nil {
				o.err, o.ok = fmt.Errorf("workflow panicked: %v", v), true
			}
		}()
		res, err := d.run(r, args)
		if err != nil && !isAttemptEnd(err) && !r.stopped() {
			r.compensate(err)
		}
		o = outcome{res: res, err: err, ok: true}
	}()
	o := <-out
	r.branches.Wait() // a suspended or crashed attempt lets its branches journal
	r.mu.Lock()
	fail := r.fail
	r.mu.Unlock()
	if !o.ok || fail != nil {
		var se *SuspendError
		if errors.As(fail, &se) {
			r.mu.Lock()
			se.Waiting, se.InboxSeq = r.waiting, r.inboxSeq
			r.mu.Unlock()
		}
		return nil, fail
	}
	if o.err != nil {
		if isAttemptEnd(o.err) || r.stopped() {
			return nil, o.err // the attempt ends; the run goes on in another
		}
		if r.Err() != nil {
			return nil, o.err // cancelled: the backend records CANCELLED
		}
		var nd *NonDeterminismError
		if errors.As(o.err, &nd) {
			return nil, &Error{Status: http.StatusConflict, Code: protocol.ErrNonDeterministic, Msg: nd.Error()}
		}
		e := AsError(o.err)
		if e.Status >= 500 || e.Status < 400 {
			// The workflow's failure is its answer: never retried.
			e = &Error{Status: http.StatusUnprocessableEntity, Code: e.Code, Msg: e.Msg}
		}
		return nil, e
	}
	return o.res, nil
}

// stopped reports whether the attempt's context ended for another reason
// than a cancel of the run (its worker stops, its timeout passed).
func (r *wfRun) stopped() bool {
	return r.Err() != nil && !errors.Is(context.Cause(r), ErrCancelled)
}

// own ends the attempt when a wf method is called from another goroutine
// than the workflow's (one the workflow started itself: not allowed, its
// order is not deterministic) or after a branch failed; the offending
// goroutine exits (its defers run) and the run fails with an error that
// says so.
func (r *wfRun) own() {
	if r.gid != 0 && goid() != r.gid {
		err := &Error{Status: http.StatusConflict, Code: protocol.ErrNonDeterministic, Msg: fmt.Sprintf(
			"workflow %s: a wf method was called from a goroutine the workflow started itself; run parallel steps with wf.Go", r.id)}
		r.mu.Lock()
		r.fail = err
		r.mu.Unlock()
		r.doneOnce.Do(func() { close(r.done) })
		runtime.Goexit()
	}
	r.mu.Lock()
	failed := r.fail != nil
	r.mu.Unlock()
	if failed {
		r.abort(nil)
	}
}

// goid is the calling goroutine's id (from its stack header).
func goid() uint64 {
	var b [32]byte
	n := runtime.Stack(b[:], false)
	f := strings.Fields(string(b[:n]))
	if len(f) < 2 {
		return 0
	}
	id, _ := strconv.ParseUint(f[1], 10, 64)
	return id
}

func isAttemptEnd(err error) bool {
	var se *SuspendError
	return errors.As(err, &se) || errors.Is(err, ErrJournalFenced) || errors.Is(err, errCrashed)
}

func (r *wfRun) RunID() string          { return r.id }
func (r *wfRun) Logger() zerolog.Logger { return r.log }

// next gives the next position and checks the journal's entry there.
func (r *wfRun) next(kind, name string) (int, []JournalEntry) {
	r.own()
	p := r.pos
	r.pos++
	r.mu.Lock()
	es, past := r.byPos[p], p > r.maxPos
	r.mu.Unlock()
	if r.replay && past {
		r.abort(errReplayEnd)
	}
	if len(es) > 0 && (es[0].Kind != kind || es[0].Name != name) {
		r.nonDeterministic(p, es[0], kind, name)
	}
	return p, es
}

func (r *wfRun) nonDeterministic(p int, e JournalEntry, kind, name string) {
	err := &NonDeterminismError{Run: r.id, Pos: p, Journaled: e.Kind + " " + quote(e.Name), Requested: kind + " " + quote(name)}
	r.mu.Lock()
	r.fail = &Error{Status: http.StatusConflict, Code: protocol.ErrNonDeterministic, Msg: err.Error()}
	r.mu.Unlock()
	r.doneOnce.Do(func() { close(r.done) })
	runtime.Goexit()
}

func find(es []JournalEntry, kind string) (JournalEntry, bool) {
	for _, e := range es {
		if e.Kind == kind {
			return e, true
		}
	}
	return JournalEntry{}, false
}

func entryResult(e JournalEntry) Result {
	if e.Error != "" {
		if e.Status != 0 {
			return Result{err: &Error{Status: e.Status, Code: e.Code, Msg: e.Error}}
		}
		return Result{err: errors.New(e.Error)}
	}
	return Result{raw: e.Result}
}

// append journals e; a failure ends the attempt (from the workflow
// goroutine) or is returned (from a branch).
func (r *wfRun) append(e JournalEntry) error {
	if r.crash != nil && r.crash(r.id, e.Pos, e.Name, false) {
		return errCrashed
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r), 30*time.Second)
	defer cancel()
	if err := r.store.Append(ctx, r.id, e); err != nil {
		return fmt.Errorf("journal %s %q: %w", e.Kind, e.Name, err)
	}
	r.mu.Lock()
	r.index(e)
	r.mu.Unlock()
	if r.crash != nil && r.crash(r.id, e.Pos, e.Name, true) {
		return errCrashed
	}
	return nil
}

func (r *wfRun) mustAppend(e JournalEntry) {
	if err := r.append(e); err != nil {
		r.abort(err)
	}
}

type stepCtx struct {
	context.Context
	key     string
	attempt int
}

func (s stepCtx) IdempotencyKey() string { return s.key }
func (s stepCtx) Attempt() int           { return s.attempt }

// runStep runs fn with retries and returns its journal entry; span
// (spanStep, spanCall or spanUndo) names its span.
func (r *wfRun) runStep(ctx context.Context, p int, kind, span, name string, fn StepFunc, opts []StepOption) (e JournalEntry) {
	o := stepOpts{attempts: 3, backoff: []time.Duration{100 * time.Millisecond, time.Second}}
	for _, f := range opts {
		f(&o)
	}
	ctx, sp := r.startSpan(ctx, span, name, p)
	defer func() { endStepSpan(sp, e) }()
	e = JournalEntry{Pos: p, Kind: kind, Name: name, Started: time.Now().UTC()}
	key := r.id + "-" + strconv.Itoa(p)
	var res any
	var err error
	for a := 1; ; a++ {
		e.Attempts = a
		if err = ctx.Err(); err != nil {
			break
		}
		res, err = callStep(fn, stepCtx{Context: ctx, key: key, attempt: a})
		var se *Error
		if err == nil || a >= o.attempts || (errors.As(err, &se) && se.Status >= 400 && se.Status < 500) {
			break
		}
		t := time.NewTimer(o.backoff[min(a-1, len(o.backoff)-1)])
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	e.Finished = time.Now().UTC()
	if err != nil {
		e.Error = err.Error()
		var se *Error
		if errors.As(err, &se) {
			e.Status, e.Code, e.Error = se.Status, se.Code, se.Msg
		}
		return e
	}
	b, merr := json.Marshal(res)
	if merr != nil {
		e.Error = "encode step result: " + merr.Error()
		return e
	}
	e.Result = b
	return e
}

func callStep(fn StepFunc, s StepContext) (res any, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("step panicked: %v", v)
		}
	}()
	return fn(s)
}

func (r *wfRun) Step(name string, fn StepFunc, opts ...StepOption) Result {
	p, es := r.next(KindStep, name)
	if e, ok := find(es, KindStep); ok {
		return entryResult(e)
	}
	if r.Err() != nil {
		return Result{err: context.Cause(r)}
	}
	e := r.runStep(r, p, KindStep, spanStep, name, fn, opts)
	if e.Error != "" && r.Err() != nil {
		return Result{err: context.Cause(r)} // cancelled mid-step: not journaled
	}
	r.mustAppend(e)
	return entryResult(e)
}

func (r *wfRun) Handle(deployment string) *Handle {
	if r.handle == nil {
		return &Handle{Deployment: deployment, err: &Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable,
			Msg: "no handles in a replay"}}
	}
	return r.handle(deployment)
}

func (r *wfRun) Call(h *Handle, method string, in any) Result {
	body, err := json.Marshal(in)
	if err != nil {
		return Result{err: fmt.Errorf("encode call input: %w", err)}
	}
	name := h.Deployment + "." + method
	p, es := r.next(KindStep, name)
	if e, ok := find(es, KindStep); ok {
		return entryResult(e)
	}
	e := r.runStep(r, p, KindStep, spanCall, name, func(s StepContext) (any, error) {
		resp, err := h.Call(s, &Request{Method: http.MethodPost, Path: "/" + method, Call: method, Body: body, RequestID: s.IdempotencyKey()})
		if err != nil {
			return nil, err
		}
		return json.RawMessage(resp.Body), nil
	}, nil)
	e.InputSize = len(body)
	r.mustAppend(e)
	return entryResult(e)
}

func (r *wfRun) Go(name string, fn StepFunc, opts ...StepOption) *Future {
	p, es := r.next(KindStep, name)
	f := &Future{r: r, pos: p, kind: KindStep, name: name, done: make(chan struct{})}
	if e, ok := find(es, KindStep); ok {
		f.res = entryResult(e)
		close(f.done)
		return f
	}
	r.branches.Add(1)
	go func() {
		defer r.branches.Done()
		defer close(f.done)
		e := r.runStep(r, p, KindStep, spanStep, name, fn, opts)
		if e.Error != "" && r.Err() != nil {
			f.res = Result{err: context.Cause(r)}
			return
		}
		if err := r.append(e); err != nil {
			r.mu.Lock()
			if r.fail == nil {
				r.fail = err
			}
			r.mu.Unlock()
			r.doneOnce.Do(func() { close(r.done) })
			f.res = Result{err: err}
			return
		}
		f.res = entryResult(e)
	}()
	return f
}

// ready returns a future's result if it is known without waiting: a
// finished branch, a journaled result, or an inbox event (journaled now).
func (r *wfRun) ready(f *Future) (Result, bool) {
	if f.done != nil {
		select {
		case <-f.done:
			return f.res, true
		default:
			return Result{}, false
		}
	}
	r.mu.Lock()
	es := r.byPos[f.pos]
	r.mu.Unlock()
	if e, ok := find(es, KindResult); ok {
		return entryResult(e), true
	}
	key := JobEventKey(f.ref)
	if f.kind == KindSleep {
		key = TimerEventKey(f.pos)
	}
	r.mu.Lock()
	var ev *InboxEvent
	for i := range r.inbox {
		if r.inbox[i].Key == key {
			ev = &r.inbox[i]
			break
		}
	}
	r.mu.Unlock()
	if ev == nil {
		return Result{}, false
	}
	now := time.Now().UTC()
	e := JournalEntry{Pos: f.pos, Kind: KindResult, Name: f.name, Result: ev.Result, Error: ev.Error, Code: ev.Code,
		Inbox: ev.Seq, Started: now, Finished: now}
	if ev.Error != "" && ev.Code != "" {
		e.Status = http.StatusUnprocessableEntity
	}
	r.mustAppend(e)
	return entryResult(e), true
}

func (f *Future) key() string {
	if f.kind == KindSleep {
		return TimerEventKey(f.pos)
	}
	return JobEventKey(f.ref)
}

func (r *wfRun) get(f *Future) Result {
	r.own()
	if res, ok := r.ready(f); ok {
		return res
	}
	if f.done != nil {
		select {
		case <-f.done:
			return f.res
		case <-r.done:
			r.abort(nil)
		}
	}
	return Result{err: r.suspend(f.key())}
}

func (r *wfRun) Gather(fs ...*Future) error {
	r.own()
	var first error
	var waiting []string
	for _, f := range fs {
		if f.done != nil {
			if err := f.Get(nil); err != nil && first == nil {
				first = err
			}
			continue
		}
		if res, ok := r.ready(f); ok {
			if res.err != nil && first == nil {
				first = res.err
			}
			continue
		}
		waiting = append(waiting, f.key())
	}
	if len(waiting) > 0 {
		if err := r.suspend(waiting...); err != nil {
			return err
		}
	}
	return first
}

func (r *wfRun) Select(fs ...*Future) int {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	name := fmt.Sprint(names)
	p, es := r.next(KindSelect, name)
	if e, ok := find(es, KindSelect); ok {
		var i int
		if err := json.Unmarshal(e.Result, &i); err == nil && i >= 0 && i < len(fs) {
			return i
		}
	}
	for {
		var local []chan struct{}
		var waiting []string
		for i, f := range fs {
			if _, ok := r.ready(f); ok {
				b, _ := json.Marshal(i)
				r.mustAppend(JournalEntry{Pos: p, Kind: KindSelect, Name: name, Result: b})
				return i
			}
			if f.done != nil {
				local = append(local, f.done)
			} else {
				waiting = append(waiting, f.key())
			}
		}
		if len(local) == 0 {
			_ = r.suspend(waiting...)
			return -1 // cancelled
		}
		r.waitAny(local)
	}
}

// waitAny waits for one of the channels to close (or the attempt to end).
func (r *wfRun) waitAny(chs []chan struct{}) {
	any := make(chan struct{}, len(chs))
	stop := make(chan struct{})
	defer close(stop)
	for _, c := range chs {
		go func() {
			select {
			case <-c:
				any <- struct{}{}
			case <-stop:
			}
		}()
	}
	select {
	case <-any:
	case <-r.done:
		r.abort(nil)
	}
}

func (r *wfRun) Submit(method string, args any) *Future {
	return r.start(KindSubmit, spanSubmit, method, args)
}

func (r *wfRun) Child(workflow string, in any) *Future {
	return r.start(KindSubmit, spanChild, workflow, in)
}

func (r *wfRun) start(kind, span, method string, in any) *Future {
	p, es := r.next(kind, method)
	id := r.id + "-" + strconv.Itoa(p)
	f := &Future{r: r, pos: p, kind: kind, name: method, ref: id}
	if _, ok := find(es, kind); ok {
		return f
	}
	args, err := ArgsOf(in)
	b, _ := json.Marshal(in)
	if err != nil {
		r.abort(&Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: fmt.Sprintf("submit %s: %v", method, err)})
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r), 30*time.Second)
	ctx, sp := r.startSpan(ctx, span, method, p)
	err = r.store.Submit(ctx, r.id, method, id, args) // the job's trace context: sp's
	cancel()
	endStepSpan(sp, JournalEntry{Attempts: 1, Error: errText(err)})
	if err != nil {
		r.abort(fmt.Errorf("submit %s: %w", method, err))
	}
	now := time.Now().UTC()
	r.mustAppend(JournalEntry{Pos: p, Kind: kind, Name: method, Ref: id, InputSize: len(b), Started: now, Finished: now})
	return f
}

func (r *wfRun) Sleep(d time.Duration) error {
	if d > MaxSleep {
		return fmt.Errorf("sleep %s: longer than %s", d, MaxSleep)
	}
	name := d.String()
	p, es := r.next(KindSleep, name)
	f := &Future{r: r, pos: p, kind: KindSleep, name: name}
	e, ok := find(es, KindSleep)
	if !ok {
		now := time.Now().UTC()
		e = JournalEntry{Pos: p, Kind: KindSleep, Name: name, Wake: now.Add(d), Started: now}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r), 30*time.Second)
		err := r.store.Timer(ctx, r.id, p, e.Wake)
		cancel()
		var se *Error
		if errors.As(err, &se) {
			return err // refused (longer than the run is kept): the workflow's to handle
		}
		if err != nil {
			r.abort(fmt.Errorf("sleep: %w", err))
		}
		r.mustAppend(e)
	}
	if _, ok := r.ready(f); ok {
		return nil
	}
	if !time.Now().Before(e.Wake) {
		now := time.Now().UTC()
		r.mustAppend(JournalEntry{Pos: p, Kind: KindResult, Name: name, Started: now, Finished: now})
		return nil
	}
	return r.suspend(f.key())
}

func (r *wfRun) Await(name string, v any) error {
	p, es := r.next(KindSignal, name)
	if e, ok := find(es, KindSignal); ok {
		return entryResult(e).Decode(v)
	}
	key := SignalEventKey(name)
	r.mu.Lock()
	var ev *InboxEvent
	for i := range r.inbox {
		if r.inbox[i].Key == key && !r.consumed[r.inbox[i].Seq] {
			ev = &r.inbox[i]
			break
		}
	}
	r.mu.Unlock()
	if ev == nil {
		return r.suspend(key)
	}
	now := time.Now().UTC()
	e := JournalEntry{Pos: p, Kind: KindSignal, Name: name, Result: ev.Result, Inbox: ev.Seq, Started: now, Finished: now}
	r.mustAppend(e)
	return entryResult(e).Decode(v)
}

func (r *wfRun) OnFailure(name string, fn StepFunc) {
	r.own()
	r.undos = append(r.undos, undo{name: name, fn: fn})
}

func (r *wfRun) Patched(id string) bool {
	r.own()
	p := r.pos
	r.mu.Lock()
	es, replaying := r.byPos[p], r.maxPos >= p
	r.mu.Unlock()
	if e, ok := find(es, KindPatch); ok && e.Name == id {
		r.pos++
		return true
	}
	if replaying {
		return false // the run was past this point with the code before the patch
	}
	if r.replay {
		r.abort(errReplayEnd)
	}
	r.pos++
	r.mustAppend(JournalEntry{Pos: p, Kind: KindPatch, Name: id})
	return true
}

// compensate runs the registered undos in reverse order, each journaled
// once, with a context that outlives a cancel.
func (r *wfRun) compensate(cause error) {
	if len(r.undos) == 0 {
		return
	}
	r.log.Info().Err(cause).Int("compensations", len(r.undos)).Msg("workflow failed; compensating")
	ctx := context.WithoutCancel(r.Context)
	for i := len(r.undos) - 1; i >= 0; i-- {
		u := r.undos[i]
		p, es := r.next(KindUndo, u.name)
		if _, ok := find(es, KindUndo); ok {
			continue
		}
		r.mustAppend(r.runStep(ctx, p, KindUndo, spanUndo, u.name, u.fn, nil))
	}
}

var errReplayEnd = errors.New("end of the recorded journal")

// ReplayWorkflow runs d against a recorded journal (a run's history, as
// the history endpoint or Local.WorkflowHistory gives it) without running
// any step: it returns a *NonDeterminismError when the code asks, at some
// position, for another step than the journal holds, and nil when the
// code replays the whole journal. What the run does after the journal's
// end is not run. Users check changed workflows against journals recorded
// from production in CI (servetest.ReplayJournal).
func ReplayWorkflow(ctx context.Context, d *WorkflowDef, args Args, journal []JournalEntry) error {
	r := &wfRun{Context: ctx, id: "replay", store: replayStore{}, log: zerolog.Nop(), replay: true,
		byPos: map[int][]JournalEntry{}, consumed: map[uint64]bool{}, maxPos: -1}
	for _, e := range journal {
		r.index(e)
	}
	_, err := r.execute(d, args)
	var se *Error
	switch {
	case err == nil, errors.Is(err, errReplayEnd):
		return nil
	case errors.As(err, &se) && se.Code == protocol.ErrNonDeterministic:
		return &NonDeterminismError{Run: r.id, Msg: se.Msg}
	case errors.As(err, &se):
		return nil // the workflow's own failure, replayed
	}
	return err
}

// replayStore refuses every write: a replay runs nothing.
type replayStore struct{}

func (replayStore) Load(context.Context, string) ([]JournalEntry, []InboxEvent, error) {
	return nil, nil, nil
}
func (replayStore) Append(context.Context, string, JournalEntry) error         { return errReplayEnd }
func (replayStore) Submit(context.Context, string, string, string, Args) error { return errReplayEnd }
func (replayStore) Timer(context.Context, string, int, time.Time) error        { return errReplayEnd }

// SortedHistory returns a journal ordered by position (then as written):
// what the history endpoint shows.
func SortedHistory(es []JournalEntry) []JournalEntry {
	out := append([]JournalEntry(nil), es...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pos < out[j].Pos })
	return out
}
