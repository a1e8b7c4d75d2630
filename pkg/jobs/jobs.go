// Package jobs is jetserve's durable async-request (job) library — the
// TaskQueue of the async-request RFC's Proposal 2, on JetStream alone — and
// what the generated HTTP endpoints (Proposal 1) are built on.
//
// Per async method (app, method) there are:
//   - a work-queue stream Names.Stream(app, method), subject
//     Names.JobSubject(app, method, id) (one subject per job), DiscardNew,
//     MaxMsgs = max_queued + max_running, MaxMsgsPerSubject = 1 with
//     DiscardNewPerSubject (one message per id while it is queued or
//     running), Nats-Msg-Id = job id, AllowDirect;
//   - one durable pull consumer "runners" on it: AckExplicit,
//     AckWait = lease_timeout, MaxAckPending = max_running (the fleet-wide
//     cap), MaxDeliver unlimited (attempts are counted and capped by the
//     runner, so a worker crashing on the last attempt still ends FAILED);
//   - a KV bucket Names.Records(app, method) holding one Record per job id
//     once a runner claimed it, TTL = retention (records and inline
//     results expire together);
//   - an object store Names.Objects(app, method) holding large results
//     ("result/<id>.<attempt>") and checkpoints ("checkpoint/<id>");
//   - the shared dead-letter stream Names.DLQStream(), subject
//     Names.DLQSubject(app, method, id).
//
// Submit publishes the job message, whose payload is the QUEUED record,
// and reads the records bucket while the publish is in flight (a generated
// id skips the read): one round trip. The pub-ack comes after the message
// is stored, so 202 is never answered for a job that could be lost. A
// repeated id is refused three ways, none of which runs it twice: by the
// dedup window (2 min), by the one-message-per-id limit while the job is
// queued or running, and by its record afterwards (for the retention). A
// full stream (DiscardNew) refuses the message: nothing is stored and
// Submit returns ErrQueueFull. Status, Result, Cancel and List read a job
// that no runner has claimed yet from its message (a direct get).
//
// A runner claims a job by creating its record RUNNING (KV Create: of two
// runners, or a runner and Cancel, exactly one wins); a requeued or
// resumed job, whose record already exists, carries the record's revision
// in HdrRevision and is claimed by compare-and-set on it. Only the first
// delivery of a generated id, within staleFirstDelivery of its submit,
// runs before its claim (ClaimAfter). What starts a job is always a write,
// never a read: a NATS node back from a partition may answer a read as the
// leader it no longer is, but cannot commit a write. A record left
// QUEUED or RUNNING without a message (a crash between a requeue's record
// reset and its publish) is republished by ResumeAll.
//
// Record updates are compare-and-set on the KV revision. A runner writes
// RUNNING with Attempts one more than the record had, and every later
// write checks that Attempts is still its own: a slow runner whose lease
// was lost (the job was redelivered to another) cannot overwrite the newer
// attempt's record or result (fencing by attempt).
//
// Where to read: lifecycle.go is the job's state machine — its phases, the
// named transitions that are the only way a record changes (one table),
// the one function that writes records, and what a runner does with a
// delivered job (nextAction); runner.go claims delivered jobs (a typed
// outcome) and settles their messages; attempt.go runs one attempt
// (heartbeat, progress, checkpoints, outcome); puller.go asks JetStream
// for exactly as many jobs as there are free slots; queue.go is the
// submit/inspect side.
//
// Everything here is safe for concurrent use; a Runner's Run owns every
// goroutine it starts and returns only once they ended.
package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
)

// Status is a job's state; the SDK's in-process runner (serve.Local) and
// the fleet share its values and Terminal.
type Status = serve.JobStatus

// Job states.
const (
	Queued    = serve.JobQueued
	Running   = serve.JobRunning
	Succeeded = serve.JobSucceeded
	Failed    = serve.JobFailed
	Cancelled = serve.JobCancelled
	// Suspended: a workflow run waiting for an event in its inbox; it
	// holds no slot and no message until a waker queues it again.
	Suspended = serve.JobSuspended
)

// Errors callers match with errors.Is.
var (
	ErrQueueFull     = errors.New("job queue full")       // 429 + Retry-After
	ErrNotFound      = errors.New("no such job")          // 404
	ErrNotFinished   = errors.New("job not finished")     // result asked too early
	ErrUnknownMethod = errors.New("unknown async method") // 404
	ErrLeaseLost     = errors.New("job lease lost to a newer attempt")
	// ErrTooLarge: the job message (its QUEUED record, arguments
	// included) does not fit one NATS message (max_payload); 413.
	ErrTooLarge = errors.New("job too large")
	// ErrUnavailable: JetStream did not answer a submit in time (the job
	// stream electing a leader after a NATS node was lost); 503 +
	// Retry-After. The same request_id may be submitted again.
	ErrUnavailable = errors.New("job queue unavailable")
	// ErrNotProvisioned: a Bind queue found a method's streams missing —
	// the scheduler creates them when it reads the method in the applied
	// config (and the handlers' declarations); is ErrUnavailable (503 +
	// Retry-After).
	ErrNotProvisioned = fmt.Errorf("%w: its streams are not created yet (the scheduler creates them when the config is applied)", ErrUnavailable)
)

// Record is a job's durable record (JSON in the records bucket; what the
// status endpoint returns).
type Record struct {
	ID         string          `json:"request_id"`
	App        string          `json:"app"`
	Deployment string          `json:"deployment"`
	Method     string          `json:"method"`
	Args       json.RawMessage `json:"args,omitempty"`
	// Owner is the principal that submitted the job (the ingress's
	// authenticated caller: "key:<name>", "jwt:<sub>"); "" when submitted
	// without one. The job API shows a job only to its owner, or to a
	// caller with the operator scope.
	Owner string `json:"owner,omitempty"`
	// TraceParent and TraceState are the W3C trace context of the request
	// that submitted the job: each attempt's span is their child, and the
	// job's handle calls carry it.
	TraceParent string `json:"traceparent,omitempty"`
	TraceState  string `json:"tracestate,omitempty"`
	Status      Status `json:"status"`
	// Retrying is set while a failed attempt waits for the next one.
	Retrying    bool    `json:"retrying,omitempty"`
	Attempts    int     `json:"attempts"`
	MaxAttempts int     `json:"max_attempts"`
	Priority    int     `json:"priority"`
	Progress    float64 `json:"progress"`
	Message     string  `json:"message,omitempty"`
	Error       string  `json:"error,omitempty"`
	Worker      string  `json:"worker,omitempty"`
	Replica     string  `json:"replica,omitempty"`
	// CancelRequested is set by Cancel on a running job until its runner
	// stops it.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Result is the JSON result when it is small (≤ InlineResultMax);
	// larger ones are in the object store and ResultSize says how big.
	Result     json.RawMessage `json:"result,omitempty"`
	ResultSize int64           `json:"result_size,omitempty"`
	// ResultObject names the object holding a large result (it is per
	// attempt, so a fenced-off attempt cannot overwrite it).
	ResultObject string `json:"result_object,omitempty"`
	// Seq is the stream sequence of the job message the current attempt
	// runs (a stray duplicate message of a running job is dropped).
	Seq uint64 `json:"seq,omitempty"`
	// Requeued counts operator requeues from the dead-letter stream.
	Requeued int `json:"requeued,omitempty"`
	// Workflow marks a workflow run (a job of a method of kind workflow).
	Workflow bool `json:"workflow,omitempty"`
	// Workflow runs: Waiting is what a suspended run awaits (inbox event
	// keys: job:<id>, timer:<pos>, signal:<name>); Suspensions counts its
	// suspensions (an attempt that suspended is not a lost one: attempts
	// spent are Attempts - Suspensions); CancelWorkflow is set when a
	// suspended run was cancelled: it runs once more, cancelled, to
	// compensate. Parent is the run ("<workflow>/<run id>", same app)
	// that submitted this job and is told when it ends.
	Waiting        []string `json:"waiting,omitempty"`
	Suspensions    int      `json:"suspensions,omitempty"`
	CancelWorkflow bool     `json:"cancel_workflow,omitempty"`
	Parent         string   `json:"parent,omitempty"`
	// Version is the deployment version (protocol.ReplicaSpec.Version) of
	// the replica that claimed the job's last attempt. A workflow run of a
	// pinned workflow (config versioning: pinned) is pinned to it until
	// PinnedUntil: only replicas of that version run it (PinnedTo).
	Version     string    `json:"version,omitempty"`
	PinnedUntil time.Time `json:"pinned_until,omitzero"`
	CreatedAt   time.Time `json:"created_at"`
	StartedAt   time.Time `json:"started_at,omitzero"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// PinnedTo is the deployment version the job's attempts must run on at
// now: Version while the run is pinned (not finished, before
// PinnedUntil); "" when any version may run it.
func (r Record) PinnedTo(now time.Time) string {
	if r.Version == "" || r.Status.Terminal() || !now.Before(r.PinnedUntil) {
		return ""
	}
	return r.Version
}

// spent is how many attempts were lost to failures and crashes.
func (r Record) spent() int { return r.Attempts - r.Suspensions }

// InlineResultMax is the largest result kept inside the record.
const InlineResultMax = 64 << 10

// Names derives the JetStream names of async methods from the fleet's
// prefix.
type Names struct{ protocol.Names }

// Stream is the work-queue stream of one async method.
func (n Names) Stream(app, method string) string {
	return n.Prefix() + "_JOBS_" + protocol.Token(app) + "_" + protocol.Token(method)
}

// JobSubject is the subject of one job's message.
func (n Names) JobSubject(app, method, id string) string {
	return n.Prefix() + ".jobs." + protocol.Token(app) + "." + protocol.Token(method) + "." + protocol.Token(id)
}

// JobWildcard matches every job of one method.
func (n Names) JobWildcard(app, method string) string {
	return n.Prefix() + ".jobs." + protocol.Token(app) + "." + protocol.Token(method) + ".*"
}

// Consumer is the durable consumer every runner of a method pulls from.
const Consumer = "runners"

// Records is the KV bucket of one method's records.
func (n Names) Records(app, method string) string {
	return n.Prefix() + "_jobs_" + protocol.Token(app) + "_" + protocol.Token(method)
}

// Objects is the object store of one method's large results and checkpoints.
func (n Names) Objects(app, method string) string {
	return n.Prefix() + "_jobobj_" + protocol.Token(app) + "_" + protocol.Token(method)
}

// DLQStream is the dead-letter stream of every method.
func (n Names) DLQStream() string { return n.Prefix() + "_JOBS_DLQ" }

// DLQSubject is the dead-letter subject of one job.
func (n Names) DLQSubject(app, method, id string) string {
	return n.Prefix() + ".dlq." + protocol.Token(app) + "." + protocol.Token(method) + "." + protocol.Token(id)
}

// CancelSubject carries cancel requests (payload: job id) to the runners
// of one method.
func (n Names) CancelSubject(app, method string) string {
	return n.Prefix() + ".jobcancel." + protocol.Token(app) + "." + protocol.Token(method)
}

// UnpinSubject carries unpin requests (payload: UnpinRequest) to the
// runners of one workflow, queue group "unpin": the scheduler asks, a
// runner writes the record.
func (n Names) UnpinSubject(app, method string) string {
	return n.Prefix() + ".jobunpin." + protocol.Token(app) + "." + protocol.Token(method)
}

// ResultObject and CheckpointObject name a job's objects.
func ResultObject(id string) string     { return "result/" + id }
func CheckpointObject(id string) string { return "checkpoint/" + id }
