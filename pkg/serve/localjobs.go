package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
)

// The in-process job runner of Local: the async methods of an application
// run by a small in-memory queue that honours what the fleet's job API
// (pkg/jobs) promises and tests look at — a repeated id returns the
// existing job and never runs it twice; max_queued (queued plus running
// beyond max_queued + max_running is refused 429 job_queue_full, nothing
// stored) and max_running (per method); required_args; attempts up to
// max_attempts with the method's backoff, a 4xx *Error failing the job at
// once; the attempt's timeout; cancel of a queued job at once and of a
// running one through its context; progress; checkpoints that the next
// attempt reads back with LastCheckpoint. Nothing is durable: it is for
// tests, not a replacement for the fleet.

// JobStatus is an async job's state, of the in-process runner and of the
// fleet's job records alike (pkg/jobs Status is this type).
type JobStatus string

// Job states.
const (
	JobQueued    JobStatus = "QUEUED"
	JobRunning   JobStatus = "RUNNING"
	JobSucceeded JobStatus = "SUCCEEDED"
	JobFailed    JobStatus = "FAILED"
	JobCancelled JobStatus = "CANCELLED"
	// JobSuspended: a workflow run waiting for an event (no slot held).
	JobSuspended JobStatus = "SUSPENDED"
)

// Terminal reports whether s is final.
func (s JobStatus) Terminal() bool { return s == JobSucceeded || s == JobFailed || s == JobCancelled }

// JobRecord is a job of the in-process runner: the fields of the fleet's
// job record (pkg/jobs Record, the status endpoint's body) it keeps, with
// the same JSON names.
type JobRecord struct {
	ID              string          `json:"request_id"`
	App             string          `json:"app"`
	Deployment      string          `json:"deployment"`
	Method          string          `json:"method"`
	Args            json.RawMessage `json:"args,omitempty"`
	Status          JobStatus       `json:"status"`
	Retrying        bool            `json:"retrying,omitempty"`
	Attempts        int             `json:"attempts"`
	MaxAttempts     int             `json:"max_attempts"`
	Priority        int             `json:"priority"`
	Progress        float64         `json:"progress"`
	Message         string          `json:"message,omitempty"`
	Error           string          `json:"error,omitempty"`
	CancelRequested bool            `json:"cancel_requested,omitempty"`
	Result          json.RawMessage `json:"result,omitempty"`
	// Workflow runs: what a suspended run waits for, how often it was
	// suspended, and the run that started it (a child's or job's parent).
	Waiting     []string  `json:"waiting,omitempty"`
	Suspensions int       `json:"suspensions,omitempty"`
	Parent      string    `json:"parent,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// ErrJobNotFinished is returned by JobResult for a job still queued or
// running (the fleet's result endpoint answers 202 then).
var ErrJobNotFinished = errors.New("job not finished")

var jobIDRE = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,128}$`)

type localJobs struct {
	l      *Local
	ctx    context.Context // ends on Close: every attempt's parent
	cancel context.CancelFunc
	wg     sync.WaitGroup // attempts running

	mu      sync.Mutex
	methods map[string]*localMethod // fixed at creation; their fields guarded by mu
	closed  bool                    // guarded by mu

	wf *localWorkflows
}

type localMethod struct {
	cfg     config.AsyncMethod
	wf      *WorkflowDef // nil: a plain async method
	dep     string
	jobs    map[string]*localJob // guarded by localJobs.mu
	queue   []*localJob          // guarded by localJobs.mu: ready to start, FIFO
	running int                  // guarded by localJobs.mu
}

type localJob struct {
	m    *localMethod
	rec  JobRecord // guarded by localJobs.mu
	args Args
	// cancel ends the running attempt; timer starts the next one. Guarded
	// by localJobs.mu.
	cancel     context.CancelFunc
	timer      *time.Timer
	checkpoint []byte // guarded by localJobs.mu; nil none
	done       chan struct{}
}

func newLocalJobs(l *Local) *localJobs {
	ctx, cancel := context.WithCancel(context.WithoutCancel(l.ctx))
	lj := &localJobs{l: l, ctx: ctx, cancel: cancel, methods: map[string]*localMethod{}}
	lj.wf = newLocalWorkflows(lj)
	for _, name := range l.names {
		defs := map[string]*WorkflowDef{}
		for _, d := range l.reg.Workflows(l.deps[name].cfg.Handler) {
			defs[d.Name()] = d
		}
		for _, m := range l.deps[name].async {
			lj.methods[m.Name] = &localMethod{cfg: m, dep: name, jobs: map[string]*localJob{}, wf: defs[m.Name]}
		}
	}
	return lj
}

func (lj *localJobs) method(name string) (*localMethod, error) {
	if m, ok := lj.methods[name]; ok {
		return m, nil
	}
	return nil, &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound,
		Msg: fmt.Sprintf("no async method %q in application %q", name, lj.l.app.Name)}
}

func (lj *localJobs) job(method, id string) (*localJob, error) {
	m, err := lj.method(method)
	if err != nil {
		return nil, err
	}
	lj.mu.Lock()
	j := m.jobs[id]
	lj.mu.Unlock()
	if j == nil {
		return nil, &Error{Status: http.StatusNotFound, Code: protocol.ErrNotFound, Msg: fmt.Sprintf("no job %q of %s", id, method)}
	}
	return j, nil
}

// SubmitJob queues a job of the async method with args; id "" gets a
// generated id. A repeated id returns the existing job (created false)
// and never runs it again. Errors are *Error values as the fleet's submit
// answers: 404 for an unknown method, 400 for a missing required argument
// or a malformed id, 429 job_queue_full beyond max_queued (nothing stored).
func (l *Local) SubmitJob(ctx context.Context, method, id string, args Args) (rec JobRecord, created bool, err error) {
	return l.jobs.submit(method, id, args, "")
}

// submit queues a job; parent, if not "", is the workflow run told when
// it ends.
func (lj *localJobs) submit(method, id string, args Args, parent string) (rec JobRecord, created bool, err error) {
	l := lj.l
	m, err := lj.method(method)
	if err != nil {
		return JobRecord{}, false, err
	}
	for _, a := range m.cfg.RequiredArgs {
		if _, ok := args[a]; !ok {
			return JobRecord{}, false, &Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: fmt.Sprintf("missing required argument %q", a)}
		}
	}
	if id == "" {
		id = nuid.Next()
	} else if !jobIDRE.MatchString(id) {
		return JobRecord{}, false, &Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest,
			Msg: fmt.Sprintf("%s %q: must be 1-128 letters, digits, '-', '_' or '='", m.cfg.IdempotencyKey, id)}
	}
	var raw json.RawMessage
	if len(args) > 0 {
		if raw, err = json.Marshal(args); err != nil {
			return JobRecord{}, false, &Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: "arguments: " + err.Error()}
		}
	}
	lj.mu.Lock()
	defer lj.mu.Unlock()
	if lj.closed {
		return JobRecord{}, false, &Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable, Msg: "the in-process runner is closed"}
	}
	if j, ok := m.jobs[id]; ok {
		return j.rec, false, nil
	}
	open := 0
	for _, j := range m.jobs {
		if !j.rec.Status.Terminal() {
			open++
		}
	}
	if open >= m.cfg.MaxQueued+m.cfg.MaxRunning {
		return JobRecord{}, false, &Error{Status: http.StatusTooManyRequests, Code: protocol.ErrJobQueueFull,
			Msg: fmt.Sprintf("too many jobs of %s queued (max_queued %d)", method, m.cfg.MaxQueued)}
	}
	now := time.Now().UTC()
	j := &localJob{m: m, args: args, done: make(chan struct{}), rec: JobRecord{
		ID: id, App: l.app.Name, Deployment: m.dep, Method: method, Args: raw, Status: JobQueued,
		MaxAttempts: m.cfg.MaxAttempts, Priority: *m.cfg.Priority, CreatedAt: now, UpdatedAt: now, Parent: parent,
	}}
	m.jobs[id] = j
	m.queue = append(m.queue, j)
	lj.pumpLocked(m)
	return j.rec, true, nil
}

// JobStatus returns a job's record.
func (l *Local) JobStatus(method, id string) (JobRecord, error) {
	j, err := l.jobs.job(method, id)
	if err != nil {
		return JobRecord{}, err
	}
	l.jobs.mu.Lock()
	defer l.jobs.mu.Unlock()
	return j.rec, nil
}

// JobResult returns a succeeded job's JSON result; ErrJobNotFinished
// while it is queued or running; an *Error (409) for a failed or
// cancelled job, as the fleet's result endpoint.
func (l *Local) JobResult(method, id string) (json.RawMessage, JobRecord, error) {
	rec, err := l.JobStatus(method, id)
	if err != nil {
		return nil, rec, err
	}
	switch rec.Status {
	case JobSucceeded:
		return rec.Result, rec, nil
	case JobFailed:
		return nil, rec, &Error{Status: http.StatusConflict, Code: protocol.ErrHandler,
			Msg: fmt.Sprintf("job %s FAILED after %d attempts: %s", id, rec.Attempts, rec.Error)}
	case JobCancelled:
		return nil, rec, &Error{Status: http.StatusConflict, Code: protocol.ErrCancelled, Msg: "job " + id + " was CANCELLED"}
	}
	return nil, rec, fmt.Errorf("job %s is %s: %w", id, rec.Status, ErrJobNotFinished)
}

// CancelJob cancels a job: a queued one (or one waiting for its next
// attempt) at once, a running one through its context (CANCELLED once
// its handler returned an error; a handler that returns a result anyway
// succeeded). A finished job is left as it is.
func (l *Local) CancelJob(method, id string) (JobRecord, error) {
	lj := l.jobs
	j, err := lj.job(method, id)
	if err != nil {
		return JobRecord{}, err
	}
	lj.mu.Lock()
	defer lj.mu.Unlock()
	switch {
	case j.rec.Status.Terminal():
	case j.rec.Status == JobRunning:
		j.rec.CancelRequested, j.rec.UpdatedAt = true, time.Now().UTC()
		j.cancel()
	case j.rec.Status == JobSuspended:
		// The run replays with a cancelled context: its compensations run.
		j.rec.CancelRequested, j.rec.Status, j.rec.UpdatedAt = true, JobQueued, time.Now().UTC()
		j.m.queue = append(j.m.queue, j)
		lj.pumpLocked(j.m)
	default: // queued, or waiting for its next attempt
		if j.timer != nil {
			j.timer.Stop()
			j.timer = nil
		}
		for i, q := range j.m.queue {
			if q == j {
				j.m.queue = append(j.m.queue[:i:i], j.m.queue[i+1:]...)
				break
			}
		}
		lj.endLocked(j, JobCancelled)
	}
	return j.rec, nil
}

// WaitJob waits until a job is finished and returns its record; it fails
// when ctx ends or the Local is closed first.
func (l *Local) WaitJob(ctx context.Context, method, id string) (JobRecord, error) {
	j, err := l.jobs.job(method, id)
	if err != nil {
		return JobRecord{}, err
	}
	select {
	case <-j.done:
		return l.JobStatus(method, id)
	case <-ctx.Done():
		rec, _ := l.JobStatus(method, id)
		return rec, fmt.Errorf("wait for job %s (%s): %w", id, rec.Status, ctx.Err())
	case <-l.jobs.ctx.Done():
		rec, _ := l.JobStatus(method, id)
		return rec, fmt.Errorf("wait for job %s (%s): the in-process runner is closed", id, rec.Status)
	}
}

// pumpLocked starts queued jobs of m while it is under max_running.
func (lj *localJobs) pumpLocked(m *localMethod) {
	for !lj.closed && m.running < m.cfg.MaxRunning && len(m.queue) > 0 {
		j := m.queue[0]
		m.queue = m.queue[1:]
		lj.startLocked(j)
	}
}

func (lj *localJobs) startLocked(j *localJob) {
	m := j.m
	now := time.Now().UTC()
	j.rec.Status, j.rec.Retrying, j.rec.UpdatedAt = JobRunning, false, now
	j.rec.Attempts++
	if j.rec.StartedAt.IsZero() {
		j.rec.StartedAt = now
	}
	m.running++
	cctx, cancelCause := context.WithCancelCause(lj.ctx)
	ctx, cancelT := context.WithTimeoutCause(cctx, m.cfg.Timeout.D(), fmt.Errorf("timed out after %s", m.cfg.Timeout.D()))
	cancel := func() { cancelCause(ErrCancelled); cancelT() }
	if j.rec.CancelRequested {
		cancel() // a suspended workflow run cancelled: it replays to compensate
	}
	j.cancel = cancel
	jc := &localJobContext{Context: ctx, lj: lj, j: j,
		job: &Job{ID: j.rec.ID, Method: m.cfg.Name, Attempt: j.rec.Attempts, Args: j.args},
		log: lj.l.log.With().Str("deployment", m.dep).Str("method", m.cfg.Name).Str("job_id", j.rec.ID).Int("attempt", j.rec.Attempts).Logger()}
	lj.wg.Add(1)
	go func() {
		defer lj.wg.Done()
		res, err := lj.run(m.dep, jc)
		if err != nil && cctx.Err() == nil && ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", context.Cause(ctx), err) // as the fleet's runner says it
		}
		lj.finish(j, res, err)
	}()
}

func (lj *localJobs) run(dep string, jc *localJobContext) (res any, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("job handler panicked: %v", v)
		}
	}()
	if d := jc.j.m.wf; d != nil {
		return runWorkflow(jc, lj.wf, d, jc.job, lj.wf.crashHook, lj.l.Handle)
	}
	h, err := lj.l.handler(dep)
	if err != nil {
		return nil, err
	}
	jh, ok := h.(JobHandler)
	if !ok {
		return nil, fmt.Errorf("deployment %s does not implement serve.JobHandler", dep)
	}
	return jh.RunJob(jc, jc.job)
}

// finish records an attempt's outcome.
func (lj *localJobs) finish(j *localJob, res any, err error) {
	var result json.RawMessage
	if err == nil {
		if b, merr := json.Marshal(res); merr != nil {
			err = fmt.Errorf("encode result: %w", merr)
		} else {
			result = b
		}
	}
	lj.mu.Lock()
	defer lj.mu.Unlock()
	m := j.m
	j.cancel()
	j.cancel = nil
	m.running--
	defer lj.pumpLocked(m)
	now := time.Now().UTC()
	j.rec.UpdatedAt = now
	var se *Error
	permanent := errors.As(err, &se) && se.Status >= 400 && se.Status < 500
	var susp *SuspendError
	switch {
	case errors.As(err, &susp) && !j.rec.CancelRequested:
		j.rec.Status, j.rec.Waiting, j.rec.Error = JobSuspended, susp.Waiting, ""
		j.rec.Suspensions++
		if lj.wf.newerThan(j.rec.ID, susp.InboxSeq) {
			lj.wakeLocked(j) // an event came while the attempt ended
		}
	case errors.Is(err, errCrashed):
		// The attempt's worker "died": the next attempt starts at once
		// (the fleet redelivers after the lease).
		if j.rec.Attempts-j.rec.Suspensions >= m.cfg.MaxAttempts {
			j.rec.Error = "attempts exhausted: its worker stopped"
			lj.endLocked(j, JobFailed)
			break
		}
		j.rec.Status = JobQueued
		m.queue = append(m.queue, j)
	case err == nil:
		j.rec.Result, j.rec.Progress, j.rec.Error, j.checkpoint = result, 1, "", nil
		lj.endLocked(j, JobSucceeded)
	case j.rec.CancelRequested:
		lj.endLocked(j, JobCancelled)
	case lj.closed:
		j.rec.Status, j.rec.Message = JobQueued, "handed back: the in-process runner closed"
	case permanent || j.rec.Attempts-j.rec.Suspensions >= m.cfg.MaxAttempts:
		j.rec.Error = err.Error()
		lj.endLocked(j, JobFailed)
	default:
		j.rec.Status, j.rec.Retrying, j.rec.Error = JobQueued, true, err.Error()
		delay := jobBackoff(m.cfg, j.rec.Attempts)
		lj.l.log.Info().Str("method", m.cfg.Name).Str("job_id", j.rec.ID).Err(err).Dur("backoff", delay).Msg("job attempt failed; will retry")
		var t *time.Timer
		t = time.AfterFunc(delay, func() {
			lj.mu.Lock()
			defer lj.mu.Unlock()
			if j.timer != t || lj.closed {
				return // cancelled meanwhile
			}
			j.timer = nil
			m.queue = append(m.queue, j)
			lj.pumpLocked(m)
		})
		j.timer = t
	}
}

// endLocked makes j terminal with status s.
func (lj *localJobs) endLocked(j *localJob, s JobStatus) {
	now := time.Now().UTC()
	j.rec.Status, j.rec.Retrying, j.rec.FinishedAt, j.rec.UpdatedAt = s, false, now, now
	j.rec.Waiting = nil
	close(j.done)
	if j.rec.Parent != "" {
		ev := InboxEvent{Key: JobEventKey(j.rec.ID), Result: j.rec.Result}
		switch s {
		case JobFailed:
			ev.Error, ev.Code = j.rec.Error, protocol.ErrHandler
		case JobCancelled:
			ev.Error, ev.Code = "job "+j.rec.ID+" was cancelled", protocol.ErrCancelled
		}
		_, run, ok := strings.Cut(j.rec.Parent, "/")
		if !ok {
			run = j.rec.Parent
		}
		lj.postLocked(run, ev, "")
	}
}

// wakeLocked queues a suspended run again.
func (lj *localJobs) wakeLocked(j *localJob) {
	if j.rec.Status != JobSuspended || lj.closed {
		return
	}
	j.rec.Status, j.rec.Waiting, j.rec.UpdatedAt = JobQueued, nil, time.Now().UTC()
	j.m.queue = append(j.m.queue, j)
	lj.pumpLocked(j.m)
}

// postLocked adds ev to run's inbox (dedup: a repeated non-empty key adds
// nothing) and wakes the run if it is suspended.
func (lj *localJobs) postLocked(run string, ev InboxEvent, dedup string) bool {
	if !lj.wf.post(run, ev, dedup) {
		return false
	}
	for _, m := range lj.methods {
		if j := m.jobs[run]; j != nil && m.wf != nil {
			lj.wakeLocked(j)
		}
	}
	return true
}

func needsJobHandler(ms []config.AsyncMethod) bool {
	for _, m := range ms {
		if !m.Workflow {
			return true
		}
	}
	return false
}

func jobBackoff(m config.AsyncMethod, attempt int) time.Duration {
	if len(m.Backoff) == 0 {
		return time.Second
	}
	return m.Backoff[min(max(attempt-1, 0), len(m.Backoff)-1)].D()
}

// close cancels every running attempt and pending retry and waits for the
// attempts to return (bounded by ctx).
func (lj *localJobs) close(ctx context.Context) error {
	lj.mu.Lock()
	lj.closed = true
	for _, m := range lj.methods {
		for _, j := range m.jobs {
			if j.timer != nil {
				j.timer.Stop()
				j.timer = nil
			}
		}
		m.queue = nil
	}
	lj.mu.Unlock()
	lj.wf.close()
	lj.cancel()
	idle := make(chan struct{})
	go func() {
		lj.wg.Wait()
		close(idle)
	}()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close jobs: attempts still running: %w", ctx.Err())
	}
}

// localJobContext is the JobContext of one in-process attempt.
type localJobContext struct {
	context.Context
	lj  *localJobs
	j   *localJob
	job *Job
	log zerolog.Logger
}

func (c *localJobContext) Job() *Job              { return c.job }
func (c *localJobContext) Logger() zerolog.Logger { return c.log }

// Checkpoint keeps a copy of state for the job's next attempts.
func (c *localJobContext) Checkpoint(state []byte) error {
	c.lj.mu.Lock()
	defer c.lj.mu.Unlock()
	c.j.checkpoint = append([]byte{}, state...)
	return nil
}

// LastCheckpoint returns a copy of the last state saved by any attempt.
func (c *localJobContext) LastCheckpoint() ([]byte, bool, error) {
	c.lj.mu.Lock()
	defer c.lj.mu.Unlock()
	if c.j.checkpoint == nil {
		return nil, false, nil
	}
	return append([]byte{}, c.j.checkpoint...), true, nil
}

// Progress records how far the job is (clamped to 0..1).
func (c *localJobContext) Progress(fraction float64, message string) error {
	c.lj.mu.Lock()
	defer c.lj.mu.Unlock()
	c.j.rec.Progress, c.j.rec.Message, c.j.rec.UpdatedAt = min(max(fraction, 0), 1), message, time.Now().UTC()
	return nil
}
