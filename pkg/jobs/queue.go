package jobs

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"
)

// More errors callers match with errors.Is (Result wraps them).
var (
	ErrJobFailed    = errors.New("job failed")    // 409
	ErrJobCancelled = errors.New("job cancelled") // 409
)

// HdrRevision is the header of a job message carrying the records-bucket
// revision its publisher wrote; a runner whose compare-and-set on that
// revision succeeds starts the job without reading the record first.
const HdrRevision = "Jetserve-Job-Revision"

// HdrUnique marks the message of a job whose id Submit generated: no
// earlier run can have had that id, so a runner need not read its record
// before running its first delivery (see ClaimAfter).
const HdrUnique = "Jetserve-Job-Unique"

// DLQ retention.
const dlqMaxAge = 30 * 24 * time.Hour

// List limits.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,128}$`)

// Queue is the submit/inspect side of jobs (used by ingress, the CLI's
// server side and deployments directly). It caches the JetStream handles
// of each method it has seen.
type Queue struct {
	js    jetstream.JetStream
	names Names
	log   zerolog.Logger

	mu       sync.Mutex             // guards methods, ensuring, dlq
	methods  map[string]*handle     // by app + "/" + method
	ensuring map[string]*ensureCall // attempts of ensure under way, by app + "/" + method
	dlq      jetstream.Stream

	ensureMu sync.Mutex // serialises Ensure's JetStream calls on a cache miss

	dedupWindow time.Duration // the job streams' Duplicates window
	submitWait  time.Duration // how long Submit repeats an unanswered publish
	replicas    int           // of every stream, bucket and object store it creates
	metrics     *Metrics      // nil: none
	bind        bool          // Bind: never create, update, purge or delete

	// beforeSubmitRead, when set (tests), runs before Submit's record read,
	// concurrently with its publish.
	beforeSubmitRead func(id string)
}

// QueueOption tunes a Queue.
type QueueOption func(*Queue)

// Replicas sets the replica count of the streams, buckets and object
// stores the Queue creates (nats.replicas; default 1). Existing ones with
// more replicas are adopted as they are (package streams).
func Replicas(n int) QueueOption { return func(q *Queue) { q.replicas = max(n, 1) } }

// Bind makes a Queue that only binds to the streams, buckets, object
// stores and consumers of a method: it creates and updates none (a missing
// one is ErrNotProvisioned; the scheduler creates them, Queue.Ensure of a
// Queue without Bind), and deletes no job message (a cancelled job's
// message is dropped by the runner that takes it) — the rights the
// ingress and worker NATS users no longer have (deploy/auth).
func Bind() QueueOption { return func(q *Queue) { q.bind = true } }

// WithMetrics counts the jobs Submit stores in m (MetricSubmitted).
func WithMetrics(m *Metrics) QueueOption { return func(q *Queue) { q.metrics = m } }

// DedupWindow is the job streams' duplicate window: a repeated id within it
// is refused by the stream itself; after it, by the records bucket.
const DedupWindow = 2 * time.Minute

// handle holds one method's JetStream objects.
type handle struct {
	app, method string
	ensured     *ensured // the config of the last Ensure, nil if only opened
	met         *methodMetrics
	stream      jetstream.Stream
	kv          *records
	obj         jetstream.ObjectStore
	wf          *wfHandle // a workflow's stream; nil for a plain method (or only opened)
}

// deadLetter is the payload of a DLQ message.
type deadLetter struct {
	Record Record `json:"record"`
	Error  string `json:"error"`
}

// NewQueue returns a Queue on js.
func NewQueue(js jetstream.JetStream, names Names, log zerolog.Logger, opts ...QueueOption) *Queue {
	q := &Queue{js: js, names: names, log: log, methods: map[string]*handle{}, ensuring: map[string]*ensureCall{}, dedupWindow: DedupWindow, replicas: 1, submitWait: DefaultSubmitWait}
	for _, o := range opts {
		o(q)
	}
	return q
}

func withDefaults(m config.AsyncMethod) config.AsyncMethod {
	m.RequiredArgs = slices.Clone(m.RequiredArgs)
	m.Backoff = slices.Clone(m.Backoff)
	m.ApplyDefaults()
	return m
}

// ensured is what an Ensure call was given.
type ensured struct {
	app, deployment string
	m               config.AsyncMethod
}

func (h *handle) ensuredWith(e ensured) bool {
	return h != nil && h.ensured != nil && reflect.DeepEqual(*h.ensured, e)
}

// Ensure creates or updates, idempotently, everything one async method
// needs: its work-queue stream, the "runners" consumer, the records bucket,
// the object store and the shared dead-letter stream. A second call with
// the same config costs a map lookup.
func (q *Queue) Ensure(ctx context.Context, app, deployment string, m config.AsyncMethod) error {
	_, err := q.ensure(ctx, app, deployment, withDefaults(m))
	return err
}

// ensure is Ensure for a config with its defaults applied; it returns the
// method's handle. Concurrent calls for one method share one attempt: a
// caller that finds one under way waits for it and takes its error,
// rather than queueing an attempt of its own behind it (while a stream
// elects a leader each attempt waits for its bound, and a burst of
// submits would otherwise wait for one attempt each).
func (q *Queue) ensure(ctx context.Context, app, deployment string, m config.AsyncMethod) (*handle, error) {
	want := ensured{app, deployment, m}
	key := app + "/" + m.Name
	for {
		q.mu.Lock()
		h := q.methods[key]
		if h.ensuredWith(want) {
			q.mu.Unlock()
			return h, nil
		}
		c := q.ensuring[key]
		if c == nil {
			c = &ensureCall{done: make(chan struct{})}
			q.ensuring[key] = c
			q.mu.Unlock()
			h, c.err = q.ensureNow(ctx, key, want)
			q.mu.Lock()
			delete(q.ensuring, key)
			q.mu.Unlock()
			close(c.done)
			return h, c.err
		}
		q.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("ensure async method %s: %w", key, ctx.Err())
		}
		if c.err != nil && !errors.Is(c.err, context.Canceled) {
			return nil, c.err // (its caller leaving is no answer: try again)
		}
		// It succeeded (for this config or another one) or its caller
		// left: look again.
	}
}

// ensureCall is one attempt of ensure under way; err is set before done
// is closed.
type ensureCall struct {
	done chan struct{}
	err  error
}

// ensureNow creates or updates a method's JetStream objects for want and
// caches its handle.
func (q *Queue) ensureNow(ctx context.Context, key string, want ensured) (*handle, error) {
	q.ensureMu.Lock()
	defer q.ensureMu.Unlock()
	create := q.create
	if q.bind {
		create = q.bindMethod
	}
	nh, err := create(ctx, want.app, want.deployment, want.m)
	if err != nil {
		return nil, fmt.Errorf("ensure async method %s/%s: %w", want.app, want.m.Name, err)
	}
	nh.ensured = &want
	nh.met = q.metrics.forMethod(want.app, want.m.Name)
	q.mu.Lock()
	q.methods[key] = nh
	q.mu.Unlock()
	return nh, nil
}

func (q *Queue) create(ctx context.Context, app, deployment string, m config.AsyncMethod) (*handle, error) {
	lease := m.LeaseTimeout.D()
	retention := m.Retention.D()
	desc := fmt.Sprintf("jetserve jobs of %s/%s (deployment %s)", app, m.Name, deployment)
	methodJSON, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode async method: %w", err)
	}
	stream, err := q.ensureStream(ctx, jetstream.StreamConfig{
		Name:        q.names.Stream(app, m.Name),
		Description: desc,
		Subjects:    []string{q.names.JobWildcard(app, m.Name)},
		Retention:   jetstream.WorkQueuePolicy,
		Discard:     jetstream.DiscardNew,
		MaxMsgs:     int64(m.MaxQueued + m.MaxRunning),
		// One message per job id: while a job is queued or running a
		// second publish of its id is refused, whatever the dedup window.
		MaxMsgsPerSubject:    1,
		DiscardNewPerSubject: true,
		// Status and List read queued jobs with direct gets.
		AllowDirect: true,
		Storage:     jetstream.FileStorage,
		Duplicates:  q.dedupWindow,
		// SubmitTo (a workflow submitting a job of another deployment)
		// reads the method's deployment and settings here.
		Metadata: map[string]string{metaDeployment: deployment, metaMethod: string(methodJSON)},
	})
	if err != nil {
		return nil, fmt.Errorf("job stream: %w", err)
	}
	if err := ensureConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable:       Consumer,
		Description:   desc,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       lease,
		MaxAckPending: m.MaxRunning,
		MaxDeliver:    -1,
		FilterSubject: q.names.JobWildcard(app, m.Name),
	}); err != nil {
		return nil, fmt.Errorf("job consumer: %w", err)
	}
	kv, err := q.ensureKV(ctx, jetstream.KeyValueConfig{
		Bucket:      q.names.Records(app, m.Name),
		Description: desc,
		History:     1,
		TTL:         retention,
		// Per-message TTLs: a record that is not final outlives the
		// bucket's TTL (writeRecord).
		LimitMarkerTTL: recordMarkerTTL,
		Storage:        jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("job records bucket: %w", err)
	}
	obj, err := q.ensureObjects(ctx, jetstream.ObjectStoreConfig{
		Bucket:      q.names.Objects(app, m.Name),
		Description: desc,
		TTL:         retention,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("job object store: %w", err)
	}
	dlq, err := q.ensureStream(ctx, jetstream.StreamConfig{
		Name:        q.names.DLQStream(),
		Description: "jetserve dead-lettered jobs",
		Subjects:    []string{q.names.Prefix() + ".dlq.>"},
		Retention:   jetstream.LimitsPolicy,
		// -1 as the server reports "no limit": 0 would differ from what
		// it stores and update the stream on every Ensure.
		MaxMsgs:    -1,
		MaxAge:     dlqMaxAge,
		Storage:    jetstream.FileStorage,
		Duplicates: 2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream: %w", err)
	}
	q.mu.Lock()
	q.dlq = dlq
	q.mu.Unlock()
	nh := &handle{app: app, method: m.Name, stream: stream, kv: &records{KeyValue: kv, js: q.js}, obj: obj}
	if m.Workflow {
		if nh.wf, err = q.ensureWorkflow(ctx, app, m); err != nil {
			return nil, err
		}
	}
	return nh, nil
}

// bindMethod opens what create creates for m (a Bind queue's ensure):
// ErrNotProvisioned if any of it is missing.
func (q *Queue) bindMethod(ctx context.Context, app, _ string, m config.AsyncMethod) (*handle, error) {
	q.mu.Lock()
	delete(q.methods, app+"/"+m.Name) // open anew: the stream may have been created since
	q.mu.Unlock()
	h, err := q.open(ctx, app, m.Name)
	if err == nil {
		_, err = h.stream.Consumer(ctx, Consumer)
	}
	if err == nil && m.Workflow {
		var wf *wfHandle
		if wf, err = q.openWorkflow(ctx, app, m.Name); err == nil {
			_, err = wf.stream.Consumer(ctx, WakersConsumer)
		}
		h = &handle{app: h.app, method: h.method, stream: h.stream, kv: h.kv, obj: h.obj, wf: wf}
	}
	if err == nil {
		_, err = q.dlqStream(ctx)
	}
	if errors.Is(err, ErrUnknownMethod) || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", app, m.Name, ErrNotProvisioned)
	}
	if err != nil {
		return nil, err
	}
	return h, nil
}

// open returns the handle of a method, opening (not creating) its
// JetStream objects on first use; ErrUnknownMethod if they do not exist.
func (q *Queue) open(ctx context.Context, app, method string) (*handle, error) {
	key := app + "/" + method
	q.mu.Lock()
	h := q.methods[key]
	q.mu.Unlock()
	if h != nil {
		return h, nil
	}
	stream, err := q.js.Stream(ctx, q.names.Stream(app, method))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", app, method, ErrUnknownMethod)
	}
	if err != nil {
		return nil, fmt.Errorf("open job stream: %w", err)
	}
	kv, err := q.js.KeyValue(ctx, q.names.Records(app, method))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", app, method, ErrUnknownMethod)
	}
	if err != nil {
		return nil, fmt.Errorf("open job records: %w", err)
	}
	obj, err := q.js.ObjectStore(ctx, q.names.Objects(app, method))
	if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", app, method, ErrUnknownMethod)
	}
	if err != nil {
		return nil, fmt.Errorf("open job objects: %w", err)
	}
	h = &handle{app: app, method: method, stream: stream, kv: &records{KeyValue: kv, js: q.js}, obj: obj, met: q.metrics.forMethod(app, method)}
	q.mu.Lock()
	if old := q.methods[key]; old != nil {
		h = old
	} else {
		q.methods[key] = h
	}
	q.mu.Unlock()
	return h, nil
}

func (q *Queue) dlqStream(ctx context.Context) (jetstream.Stream, error) {
	q.mu.Lock()
	s := q.dlq
	q.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := q.js.Stream(ctx, q.names.DLQStream())
	if err != nil {
		return nil, fmt.Errorf("open dead-letter stream: %w", err)
	}
	q.mu.Lock()
	q.dlq = s
	q.mu.Unlock()
	return s, nil
}

func badRequest(format string, args ...any) error {
	return &serve.Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: fmt.Sprintf(format, args...)}
}

// isQueueFull reports a DiscardNew rejection for the whole stream
// (err_code 10077, "maximum messages exceeded" or "maximum bytes exceeded").
func isQueueFull(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == errStoreRefused && strings.Contains(api.Description, "maximum") &&
		!strings.Contains(api.Description, "per subject")
}

// isJobInStream reports a DiscardNewPerSubject rejection (err_code 10077,
// "maximum messages per subject exceeded"): the id's job message is still
// in the stream, queued or running.
func isJobInStream(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && api.ErrorCode == errStoreRefused && strings.Contains(api.Description, "per subject")
}

// SubmitOption tunes one Submit.
type SubmitOption func(*Record)

// Owner records who submits the job (Record.Owner).
func Owner(principal string) SubmitOption { return func(r *Record) { r.Owner = principal } }

// Trace records the submitting request's W3C trace context (its
// Traceparent and Tracestate headers): the job's attempts are traced as
// its children.
func Trace(traceparent, tracestate string) SubmitOption {
	return func(r *Record) { r.TraceParent, r.TraceState = traceparent, tracestate }
}

// ListOption tunes one List.
type ListOption func(*listOptions)

type listOptions struct {
	owner    string
	ownerSet bool
}

// OwnedBy lists only the jobs principal submitted.
func OwnedBy(principal string) ListOption {
	return func(o *listOptions) { o.owner, o.ownerSet = principal, true }
}

// Submit persists a job and returns its record. id "" generates one. A
// new job's record is returned as submitted (QUEUED, created=true), even
// when a worker claimed it — or it ended — before Submit's own read of
// it answered: the answer is the submission's, the same however fast the
// worker. A repeated id returns the existing record with created=false
// and never runs the job twice (whoever owns it: the caller compares
// Owner). A full queue returns ErrQueueFull with nothing stored; a
// missing required argument a *serve.Error 400.
func (q *Queue) Submit(ctx context.Context, app, deployment string, m config.AsyncMethod, id string, args serve.Args, opts ...SubmitOption) (rec Record, created bool, err error) {
	m = withDefaults(m)
	for _, a := range m.RequiredArgs {
		if _, ok := args[a]; !ok {
			return Record{}, false, badRequest("missing required argument %q", a)
		}
	}
	generated := id == ""
	if generated {
		id = nuid.Next()
	} else if !idRE.MatchString(id) {
		return Record{}, false, badRequest("%s %q: must be 1-128 letters, digits, '-', '_' or '='", m.IdempotencyKey, id)
	}
	h, err := q.ensure(ctx, app, deployment, m) // m has its defaults
	if err != nil {
		return Record{}, false, err
	}
	var rawArgs json.RawMessage
	if len(args) > 0 {
		if rawArgs, err = json.Marshal(args); err != nil {
			return Record{}, false, badRequest("arguments: %v", err)
		}
	}
	rec = submitted(id, app, deployment, m.Name, rawArgs, m.MaxAttempts, *m.Priority, time.Now().UTC())
	rec.Workflow = m.Workflow
	for _, o := range opts {
		o(&rec)
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return Record{}, false, fmt.Errorf("encode job record: %w", err)
	}
	// The job message is the QUEUED record: the runner that claims it
	// creates the record in the bucket. The record read runs while the
	// publish is in flight, so a submit costs one round trip; a generated
	// id (a NUID) has no earlier record to read.
	//
	// Each publish attempt has its own bound: while the job stream elects
	// a leader (a NATS node lost) a publish gets no responders, or, from
	// a leader cut off from the network, no answer at all. The publish is
	// repeated with the same message id (the stream drops a copy of one it
	// stored) against the new leader until q.submitWait has passed, then
	// the submit is ErrUnavailable.
	deadline := time.Now().Add(q.submitWait)
	msgID := id
	// mine: an earlier attempt of this call may have stored msgID without
	// its acknowledgement reaching us; a record with this call's creation
	// time and owner is then ours.
	mine := false
	// sameSubmit: r was created from this call's QUEUED record (a runner
	// copies CreatedAt and Owner from the job message). A job that ran
	// fast may already be SUCCEEDED or SUSPENDED when the read answers,
	// with its Seq cleared, so Seq alone cannot tell it is ours.
	sameSubmit := func(r Record) bool { return r.CreatedAt.Equal(rec.CreatedAt) && r.Owner == rec.Owner }
	ours := func(r Record) bool { return mine && sameSubmit(r) }
	for incarnations := 0; incarnations < 3; {
		msg := q.jobMsg(h, id, data, 0)
		if generated {
			msg.Header = nats.Header{HdrUnique: []string{"1"}}
		}
		if mp := q.js.Conn().MaxPayload(); mp > 0 && int64(len(msg.Data)) > mp {
			return Record{}, false, fmt.Errorf("%w: the job message of %d bytes (its arguments in a QUEUED record) exceeds the NATS max_payload of %d bytes",
				ErrTooLarge, len(msg.Data), mp)
		}
		got := make(chan recordRead, 1)
		if generated {
			got <- recordRead{err: ErrNotFound}
		} else {
			go func() {
				if q.beforeSubmitRead != nil {
					q.beforeSubmitRead(id)
				}
				gctx, cancel := context.WithTimeout(ctx, submitReadTimeout)
				defer cancel()
				r, _, err := q.get(gctx, h, id)
				got <- recordRead{r, err}
			}()
		}
		pctx, cancel := context.WithTimeout(ctx, submitAttemptTimeout)
		ack, perr := q.js.PublishMsg(pctx, msg, jetstream.WithMsgID(msgID))
		cancel()
		read := <-got
		existing, gerr := read.rec, read.err
		if errors.Is(perr, nats.ErrMaxPayload) {
			return Record{}, false, fmt.Errorf("%w: the job message of %d bytes (its arguments in a QUEUED record) exceeds the NATS max_payload of %d bytes",
				ErrTooLarge, len(msg.Data), q.js.Conn().MaxPayload())
		}
		if perr != nil && ctx.Err() == nil && publishUnanswered(perr) {
			mine = mine || publishMayBeStored(perr)
			if wait := time.Until(deadline); wait > submitRetryWait {
				sleep(ctx, submitRetryWait)
				continue
			}
			return Record{}, false, unavailable(id, generated && mine, perr)
		}
		stored := perr == nil && !ack.Duplicate
		if gerr == nil && (stored && (existing.Seq == ack.Sequence || sameSubmit(existing)) || perr == nil && ours(existing)) {
			inc(h.met.submitted)
			return rec, true, nil // ours, claimed (or cancelled) already: answered as submitted
		}
		if gerr == nil {
			// The id was claimed or finished before: never a second run.
			if stored && existing.Status.Terminal() {
				q.deleteJobMsg(ctx, h, id, ack.Sequence) // a stray copy (its runner would drop it)
			}
			return existing, false, nil
		}
		switch {
		case stored:
			inc(h.met.submitted)
			return rec, true, nil
		case perr == nil || isJobInStream(perr):
			// A job of this id is queued or running (or was, within the
			// dedup window): return it — ours if an earlier attempt of
			// this call stored it.
			existing, _, _, err := q.lookup(ctx, h, id)
			if errors.Is(err, ErrNotFound) {
				// Direct gets, which a lagging replica (a node back from a
				// partition) answers "not found": the bucket's leader
				// says whether the record is gone.
				existing, err = q.leaderRecord(ctx, h, id)
			}
			if errors.Is(err, ErrNotFound) {
				// It ended and its record is gone (expired) while the
				// dedup window still remembers the id: a new incarnation.
				msgID = id + "-" + nuid.Next()
				mine = false
				incarnations++
				continue
			}
			if err == nil && ours(existing) {
				inc(h.met.submitted)
				return rec, true, nil
			}
			return existing, false, err
		case isQueueFull(perr):
			return Record{}, false, ErrQueueFull
		case !errors.Is(gerr, ErrNotFound):
			return Record{}, false, gerr
		default:
			return Record{}, false, fmt.Errorf("publish job: %w", perr)
		}
	}
	return Record{}, false, fmt.Errorf("submit job %s: its earlier incarnation keeps changing; retry", id)
}

// Bounds of one Submit against JetStream (see Submit).
const (
	// DefaultSubmitWait is how long Submit repeats a publish that JetStream
	// does not answer (SubmitWait).
	DefaultSubmitWait = 2 * time.Second
	// submitAttemptTimeout bounds one publish: a leader answers in
	// milliseconds, well under a second on two loaded cores.
	submitAttemptTimeout = time.Second
	// submitReadTimeout bounds the read of an existing record (a direct
	// get, which any replica answers).
	submitReadTimeout = time.Second
	// submitRetryWait is the pause between attempts (nats.go already
	// waits 2 × 250 ms on no responders).
	submitRetryWait = 50 * time.Millisecond
)

// SubmitWait sets how long Submit repeats a job's publish while
// JetStream cannot answer it (its stream electing a leader) before it
// returns ErrUnavailable; default DefaultSubmitWait.
func SubmitWait(d time.Duration) QueueOption { return func(q *Queue) { q.submitWait = max(d, 0) } }

// recordRead is the result of a record read run beside a publish.
type recordRead struct {
	rec Record
	err error
}

// publishUnanswered reports a publish that JetStream did not answer yet:
// no stream (leader) listening, no answer within the attempt's bound, a
// 503 from the API (no leader, no quorum) other than a store refusal
// (err_code 10077: a full queue, or the id's job in the stream), or
// "duplicate message id is in process" (10158: an earlier attempt's
// publish of the same id is still being replicated — a new leader waiting
// for its quorum; repeated, it is answered as a duplicate once stored).
func publishUnanswered(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &api) && (api.Code == 503 && api.ErrorCode != errStoreRefused || api.ErrorCode == errDupInProcess)
}

// JetStream error codes (nats-server's errors.json) Submit tells apart.
const (
	errStoreRefused = 10077 // JSStreamStoreFailedF: maximum messages (per subject) exceeded
	errDupInProcess = 10158 // duplicate message id is in process
)

// publishMayBeStored reports whether an unanswered publish may have been
// stored all the same (its acknowledgement lost, or still to come).
func publishMayBeStored(err error) bool {
	return !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders)
}

// unavailable is Submit's error when JetStream did not answer in time.
// maybeStored: a publish of a generated id may have been stored without
// its acknowledgement reaching us, so the caller is told the id.
func unavailable(id string, maybeStored bool, cause error) error {
	if maybeStored {
		return fmt.Errorf("%w: job %s may have been stored (its acknowledgement was lost); its status tells: %v", ErrUnavailable, id, cause)
	}
	return fmt.Errorf("%w: nothing stored: %v", ErrUnavailable, cause)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// jobMsg is the message of job id: its record (data) on the job's own
// subject, with the records-bucket revision the runner compare-and-sets
// (0: no record yet; the runner creates it).
func (q *Queue) jobMsg(h *handle, id string, data []byte, rev uint64) *nats.Msg {
	msg := &nats.Msg{Subject: q.names.JobSubject(h.app, h.method, id), Data: data}
	if rev != 0 {
		msg.Header = nats.Header{HdrRevision: []string{strconv.FormatUint(rev, 10)}}
	}
	return msg
}

// deleteJobMsg removes job id's message (sequence seq) from its stream,
// best effort: a runner drops a message whose record is final anyway.
func (q *Queue) deleteJobMsg(ctx context.Context, h *handle, id string, seq uint64) {
	if q.bind {
		return // not allowed (Bind): the runner drops it
	}
	if err := h.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		q.log.Warn().Err(err).Str("request_id", id).Msg("delete job message (its runner will drop it)")
	}
}

// publish sends a job message (payload: the record at revision rev) and
// waits for its acknowledgement. If
// msgID was already used within the dedup window by an earlier
// incarnation of the id (the record expired and was created again), it
// republishes with a revision-specific id.
func (q *Queue) publish(ctx context.Context, h *handle, id string, data []byte, rev uint64, msgID string) error {
	msg := q.jobMsg(h, id, data, rev)
	ack, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID))
	if isJobInStream(err) {
		return nil // a message of this job is there
	}
	if err != nil {
		return err
	}
	if !ack.Duplicate {
		return nil
	}
	if _, err := h.stream.GetLastMsgForSubject(ctx, msg.Subject); err == nil {
		return nil // the earlier publish of this job is there
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return err
	}
	_, err = q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(msgID+"-r"+strconv.FormatUint(rev, 10)))
	return err
}

func decodeRecord(e jetstream.KeyValueEntry) (Record, error) {
	var r Record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Record{}, fmt.Errorf("decode job record %s: %w", e.Key(), err)
	}
	return r, nil
}

func (q *Queue) get(ctx context.Context, h *handle, id string) (Record, uint64, error) {
	if !idRE.MatchString(id) {
		return Record{}, 0, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	e, err := h.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Record{}, 0, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Record{}, 0, fmt.Errorf("read job record: %w", err)
	}
	r, err := decodeRecord(e)
	return r, e.Revision(), err
}

// leaderRecord reads a job's record from the bucket's leader
// (leaderGet); ErrNotFound if there is none.
func (q *Queue) leaderRecord(ctx context.Context, h *handle, id string) (Record, error) {
	data, _, found, err := leaderGet(ctx, q.js, h.kv.Bucket(), id)
	if err != nil {
		return Record{}, err
	}
	if !found {
		return Record{}, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return Record{}, fmt.Errorf("decode job record %s: %w", id, err)
	}
	return r, nil
}

// lookup returns a job's record from the bucket, or, for a job no runner
// has claimed yet, from its message (rev 0, seq its stream sequence).
func (q *Queue) lookup(ctx context.Context, h *handle, id string) (r Record, rev, seq uint64, err error) {
	r, rev, err = q.get(ctx, h, id)
	if !errors.Is(err, ErrNotFound) || !idRE.MatchString(id) {
		return r, rev, 0, err
	}
	m, merr := h.stream.GetLastMsgForSubject(ctx, q.names.JobSubject(h.app, h.method, id))
	switch {
	case errors.Is(merr, jetstream.ErrMsgNotFound):
		// Claimed and finished between the two reads?
		r, rev, err = q.get(ctx, h, id)
		return r, rev, 0, err
	case merr != nil:
		return Record{}, 0, 0, fmt.Errorf("read job message: %w", merr)
	}
	if err := json.Unmarshal(m.Data, &r); err != nil || r.ID != id {
		return Record{}, 0, 0, fmt.Errorf("decode job message %s: %v: %w", id, err, ErrNotFound)
	}
	if m.Header.Get(HdrRevision) != "" {
		// A requeued or resumed job: its record is the truth.
		r, rev, err = q.get(ctx, h, id)
		return r, rev, 0, err
	}
	return r, 0, m.Sequence, nil
}

// Status returns a job's record; ErrNotFound if there is none (or it
// expired), ErrUnknownMethod if the method has never been ensured.
func (q *Queue) Status(ctx context.Context, app, method, id string) (Record, error) {
	h, err := q.open(ctx, app, method)
	if err != nil {
		return Record{}, err
	}
	r, _, _, err := q.lookup(ctx, h, id)
	return r, err
}

// Result returns the result JSON of a SUCCEEDED job. While it is QUEUED or
// RUNNING it returns the record and ErrNotFinished; FAILED and CANCELLED
// jobs return the record and an error wrapping ErrJobFailed or
// ErrJobCancelled.
func (q *Queue) Result(ctx context.Context, app, method, id string) (json.RawMessage, Record, error) {
	h, err := q.open(ctx, app, method)
	if err != nil {
		return nil, Record{}, err
	}
	r, _, _, err := q.lookup(ctx, h, id)
	if err != nil {
		return nil, Record{}, err
	}
	switch r.Status {
	case Succeeded:
		if r.ResultSize == 0 || len(r.Result) > 0 {
			res := r.Result
			if len(res) == 0 {
				res = json.RawMessage("null")
			}
			return res, r, nil
		}
		name := r.ResultObject
		if name == "" {
			name = ResultObject(id)
		}
		b, err := h.obj.GetBytes(ctx, name)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, r, fmt.Errorf("result of job %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return nil, r, fmt.Errorf("read result of job %s: %w", id, err)
		}
		return b, r, nil
	case Failed:
		return nil, r, fmt.Errorf("job %s failed after %d attempt(s): %s: %w", id, r.Attempts, r.Error, ErrJobFailed)
	case Cancelled:
		return nil, r, fmt.Errorf("job %s was cancelled: %w", id, ErrJobCancelled)
	default:
		return nil, r, fmt.Errorf("job %s is %s: %w", id, r.Status, ErrNotFinished)
	}
}

// Cancel cancels a job: a QUEUED one at once (its message is deleted), a
// RUNNING one by asking its runner (CancelRequested; the runner cancels
// the job's context and writes CANCELLED). A finished job is left as it
// is. ErrNotFound for an unknown id.
func (q *Queue) Cancel(ctx context.Context, app, method, id string) (Record, error) {
	h, err := q.open(ctx, app, method)
	if err != nil {
		return Record{}, err
	}
	for {
		r, rev, seq, err := q.lookup(ctx, h, id)
		if err != nil {
			return Record{}, err
		}
		switch r.Phase() {
		case PhaseSucceeded, PhaseFailed, PhaseCancelled:
			return r, nil
		case PhaseRunning:
			// Ask its runner, which records CANCELLED once the job stopped.
			next, err := r.apply(EventRequestCancel, change{})
			if err != nil {
				return Record{}, err
			}
			if _, err := writeRecord(ctx, h.kv, next, rev); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue
			} else if err != nil {
				return Record{}, err
			}
			r = next
			fallthrough
		case PhaseCancelling:
			if err := q.js.Conn().Publish(q.names.CancelSubject(app, method), []byte(id)); err != nil {
				return Record{}, fmt.Errorf("publish cancel: %w", err)
			}
			return r, nil
		case PhaseSuspended:
			// The run replays once more, cancelled, to compensate.
			if _, err := q.wake(ctx, h, id, EventWakeCancel); err != nil {
				return Record{}, err
			}
			r, _, err := q.get(ctx, h, id)
			return r, err
		}
		// Queued or retrying: cancelled at once. A job not claimed yet
		// (rev 0) gets its record created CANCELLED, naming the message
		// it cancels; a runner's claim, a create too, then fails and
		// drops the message.
		next, err := r.apply(EventCancel, change{seq: seq})
		if err != nil {
			return Record{}, err
		}
		if _, err := writeRecord(ctx, h.kv, next, rev); errors.Is(err, jetstream.ErrKeyExists) ||
			errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // claimed or changed meanwhile
		} else if err != nil {
			return Record{}, err
		}
		if rev == 0 {
			q.deleteJobMsg(ctx, h, id, seq)
		} else if m, err := h.stream.GetLastMsgForSubject(ctx, q.names.JobSubject(app, method, id)); err == nil {
			q.deleteJobMsg(ctx, h, id, m.Sequence)
		}
		if err := q.ended(ctx, next); err != nil {
			q.log.Warn().Err(err).Str("request_id", id).Msg("tell the parent run its job was cancelled")
		}
		return next, nil
	}
}

// records reads every record of a method with their revisions.
func (q *Queue) records(ctx context.Context, h *handle, keep func(*Record) bool) ([]Record, []uint64, error) {
	w, err := h.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, fmt.Errorf("read job records: %w", err)
	}
	defer w.Stop()
	var recs []Record
	var revs []uint64
	for {
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return nil, nil, errors.New("read job records: watcher closed")
			}
			if e == nil {
				return recs, revs, nil
			}
			r, err := decodeRecord(e)
			if err != nil {
				q.log.Warn().Err(err).Msg("skip undecodable job record")
				continue
			}
			if keep(&r) {
				recs = append(recs, r)
				revs = append(revs, e.Revision())
			}
		}
	}
}

// unclaimed returns the records carried by the messages of jobs no runner
// has claimed yet, reading the job stream (at most one message per id) in
// batched direct gets up to its last sequence at the start.
func (q *Queue) unclaimed(ctx context.Context, h *handle) ([]Record, error) {
	info, err := h.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("job stream info: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	nc := q.js.Conn()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("read job messages: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	api := "$JS.API.DIRECT.GET." + info.Config.Name
	var out []Record
	for next, last := info.State.FirstSeq, info.State.LastSeq; next <= last; {
		req, _ := json.Marshal(directBatch{Seq: next, NextFor: q.names.JobWildcard(h.app, h.method), Batch: 256})
		if err := nc.PublishRequest(api, inbox, req); err != nil {
			return nil, fmt.Errorf("read job messages: %w", err)
		}
	batch:
		for {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				return nil, fmt.Errorf("read job messages: %w", err)
			}
			switch m.Header.Get("Status") {
			case "":
				seq, _ := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
				if seq > last {
					return out, nil
				}
				next = seq + 1
				var r Record
				if m.Header.Get(HdrRevision) == "" && json.Unmarshal(m.Data, &r) == nil && r.ID != "" {
					out = append(out, r)
				}
			case "204": // end of this batch
				if m.Header.Get("Nats-Num-Pending") == "0" {
					return out, nil
				}
				break batch
			case "404": // nothing from next on
				return out, nil
			default:
				return nil, fmt.Errorf("read job messages: %s %s", m.Header.Get("Status"), m.Header.Get("Description"))
			}
		}
	}
	return out, nil
}

// directBatch is a batched direct-get request (JSApiMsgGetRequest).
type directBatch struct {
	Seq     uint64 `json:"seq"`
	NextFor string `json:"next_by_subj"`
	Batch   int    `json:"batch"`
}

// listBefore orders records newest first, then by id.
func listBefore(a, b Record) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

func encodeCursor(r Record) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(r.CreatedAt.UnixNano(), 10) + "|" + r.ID))
}

func decodeCursor(s string) (Record, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Record{}, badRequest("bad cursor")
	}
	ts, id, ok := strings.Cut(string(b), "|")
	n, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil {
		return Record{}, badRequest("bad cursor")
	}
	return Record{ID: id, CreatedAt: time.Unix(0, n).UTC()}, nil
}

// List returns records newest first (CreatedAt desc, then id), those with
// status filter only if filter is set (and OwnedBy's owner only, if
// given); limit defaults to 100 (max 1000); next is the cursor of the
// following page, "" after the last.
func (q *Queue) List(ctx context.Context, app, method string, filter Status, limit int, cursor string, opts ...ListOption) (recs []Record, next string, err error) {
	var lo listOptions
	for _, o := range opts {
		o(&lo)
	}
	mine := func(r Record) bool { return !lo.ownerSet || r.Owner == lo.owner }
	switch {
	case limit <= 0:
		limit = DefaultListLimit
	case limit > MaxListLimit:
		limit = MaxListLimit
	}
	var after *Record
	if cursor != "" {
		c, err := decodeCursor(cursor)
		if err != nil {
			return nil, "", err
		}
		after = &c
	}
	h, err := q.open(ctx, app, method)
	if err != nil {
		return nil, "", err
	}
	// Jobs no runner has claimed exist only as messages. Read them first:
	// one claimed after this read has its record in the read that follows.
	var unclaimed []Record
	if filter == "" || filter == Queued {
		if unclaimed, err = q.unclaimed(ctx, h); err != nil {
			return nil, "", err
		}
	}
	claimed := map[string]bool{}
	all, _, err := q.records(ctx, h, func(r *Record) bool {
		claimed[r.ID] = true
		if filter != "" && r.Status != filter || !mine(*r) {
			return false
		}
		if after != nil && listBefore(*r, *after) <= 0 {
			return false
		}
		r.Args = nil // keep pages small; Status has them
		return true
	})
	if err != nil {
		return nil, "", err
	}
	for _, r := range unclaimed {
		if !claimed[r.ID] && mine(r) && (after == nil || listBefore(r, *after) > 0) {
			r.Args = nil
			all = append(all, r)
		}
	}
	slices.SortFunc(all, listBefore)
	if len(all) > limit {
		all = all[:limit]
		next = encodeCursor(all[limit-1])
	}
	return all, next, nil
}

// ResumeAll republishes every QUEUED or RUNNING job whose record exists but
// whose message no longer does (a crash between Requeue's record reset and
// its publish, or a message an operator deleted); a RUNNING one is set back
// to QUEUED first. It returns how many it
// republished. Unacked jobs need nothing: JetStream redelivers them.
func (q *Queue) ResumeAll(ctx context.Context, app, method string) (int, error) {
	h, err := q.open(ctx, app, method)
	if err != nil {
		return 0, err
	}
	recs, revs, err := q.records(ctx, h, func(r *Record) bool { return !r.Status.Terminal() })
	if err != nil {
		return 0, err
	}
	n := 0
	for i, r := range recs {
		_, err := h.stream.GetLastMsgForSubject(ctx, q.names.JobSubject(app, method, r.ID))
		if err == nil {
			continue
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("look up job %s: %w", r.ID, err)
		}
		rev := revs[i]
		if ph := r.Phase(); ph == PhaseRunning || ph == PhaseCancelling {
			// Its worker is gone with its message: queue it again — or,
			// if cancel was asked, cancel it.
			ev := EventResume
			if ph == PhaseCancelling {
				ev = EventCancel
			}
			next, err := r.apply(ev, change{})
			if err != nil {
				return n, err
			}
			if rev, err = writeRecord(ctx, h.kv, next, rev); errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // it moved on: someone has it
			} else if err != nil {
				return n, fmt.Errorf("requeue job %s: %w", r.ID, err)
			}
			if next.Phase().Terminal() {
				continue
			}
			r = next
		}
		b, _ := json.Marshal(r)
		if err := q.publish(ctx, h, r.ID, b, rev, r.ID); err != nil {
			return n, fmt.Errorf("republish job %s: %w", r.ID, err)
		}
		q.log.Info().Str("app", app).Str("method", method).Str("request_id", r.ID).Msg("resumed job whose message was missing")
		n++
	}
	return n, nil
}

func (q *Queue) dlqFilter(app, method string) string {
	return strings.TrimSuffix(q.names.DLQSubject(app, method, "x"), "x") + "*"
}

// DeadLetters lists a method's dead-lettered jobs (newest first); each
// record's Error is the error it failed with.
func (q *Queue) DeadLetters(ctx context.Context, app, method string) ([]Record, error) {
	if _, err := q.open(ctx, app, method); err != nil {
		return nil, err
	}
	s, err := q.dlqStream(ctx)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(q.dlqFilter(app, method)))
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream info: %w", err)
	}
	var out []Record
	for subj := range info.State.Subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read dead letter: %w", err)
		}
		var dl deadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			q.log.Warn().Err(err).Str("subject", subj).Msg("skip undecodable dead letter")
			continue
		}
		dl.Record.Error = dl.Error
		out = append(out, dl.Record)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := b.UpdatedAt.Compare(a.UpdatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Requeue puts a dead-lettered job back in its queue: its record is reset
// to QUEUED with 0 attempts and the dead letter is deleted. ErrNotFound if
// the job is not dead-lettered.
func (q *Queue) Requeue(ctx context.Context, app, method, id string) (Record, error) {
	h, err := q.open(ctx, app, method)
	if err != nil {
		return Record{}, err
	}
	s, err := q.dlqStream(ctx)
	if err != nil {
		return Record{}, err
	}
	if !idRE.MatchString(id) {
		return Record{}, fmt.Errorf("%q: %w", id, ErrNotFound)
	}
	dm, err := s.GetLastMsgForSubject(ctx, q.names.DLQSubject(app, method, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Record{}, fmt.Errorf("dead letter %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Record{}, fmt.Errorf("read dead letter: %w", err)
	}
	var dl deadLetter
	if err := json.Unmarshal(dm.Data, &dl); err != nil {
		return Record{}, fmt.Errorf("decode dead letter %s: %w", id, err)
	}
	for {
		r, rev, err := q.get(ctx, h, id)
		if errors.Is(err, ErrNotFound) {
			r, rev = dl.Record, 0 // the record expired: recreate it from the dead letter
		} else if err != nil {
			return Record{}, err
		}
		if !r.Status.Terminal() {
			return r, fmt.Errorf("job %s is %s, not dead", id, r.Status)
		}
		r, err = r.apply(EventRequeue, change{})
		if err != nil {
			return Record{}, err
		}
		b, err := json.Marshal(r)
		if err != nil {
			return Record{}, fmt.Errorf("encode job record: %w", err)
		}
		rev, err = writeRecord(ctx, h.kv, r, rev)
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		if err != nil {
			return Record{}, fmt.Errorf("reset job record: %w", err)
		}
		if err := q.publish(ctx, h, id, b, rev, id+"-requeue-"+strconv.Itoa(r.Requeued)); err != nil {
			return r, fmt.Errorf("republish job %s: %w", id, err)
		}
		if err := s.DeleteMsg(ctx, dm.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return r, fmt.Errorf("delete dead letter: %w", err)
		}
		return r, nil
	}
}

// The ensure helpers create what is missing and update only what differs
// (package streams: existing state is adopted, never downgraded): every
// instance of every service calls Ensure, and a needless update is a
// meta-layer operation (and, on nats-server 2.15.2, an update racing a
// consumer create on the same stream is a data race inside the server).

func (q *Queue) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	return streams.Stream(ctx, q.js, cfg, q.replicas)
}

func ensureConsumer(ctx context.Context, s jetstream.Stream, cfg jetstream.ConsumerConfig) error {
	c, err := s.Consumer(ctx, cfg.Durable)
	if err == nil {
		have := c.CachedInfo().Config
		if have.AckWait == cfg.AckWait && have.MaxAckPending == cfg.MaxAckPending && have.FilterSubject == cfg.FilterSubject &&
			have.Description == cfg.Description {
			return nil
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	_, err = s.CreateOrUpdateConsumer(ctx, cfg)
	return err
}

func (q *Queue) ensureKV(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return streams.KeyValue(ctx, q.js, cfg, q.replicas)
}

func (q *Queue) ensureObjects(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	return streams.ObjectStore(ctx, q.js, cfg, q.replicas)
}

// Backlog is one method's queue as JetStream holds it.
type Backlog struct {
	// Queued are jobs no runner holds (the runners consumer's num_pending).
	Queued int `json:"queued"`
	// Running are jobs delivered and not acknowledged: running, or waiting
	// for a retry's backoff (num_ack_pending).
	Running int `json:"running"`
	// Oldest is when the oldest job still in the work-queue stream was
	// stored (zero when the stream is empty).
	Oldest time.Time `json:"oldest,omitzero"`
	// DeadLettered counts the method's jobs in the dead-letter stream.
	DeadLettered int `json:"dead_lettered"`
}

// Backlog reads one method's backlog: consumer info, stream info when it
// holds jobs, and the dead-letter stream's subjects of the method — three
// JetStream API requests at most. It is meant for one poller (a
// dashboard, an exporter), every few seconds, not for workers.
// ErrUnknownMethod if the method's stream does not exist.
func (q *Queue) Backlog(ctx context.Context, app, method string) (Backlog, error) {
	h, err := q.open(ctx, app, method)
	if err != nil {
		return Backlog{}, err
	}
	c, err := h.stream.Consumer(ctx, Consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return Backlog{}, fmt.Errorf("%s/%s: %w", app, method, ErrUnknownMethod)
	}
	if err != nil {
		return Backlog{}, fmt.Errorf("job consumer info: %w", err)
	}
	ci := c.CachedInfo()
	b := Backlog{Queued: int(ci.NumPending), Running: ci.NumAckPending}
	if b.Queued+b.Running > 0 {
		si, err := h.stream.Info(ctx)
		if err != nil {
			return Backlog{}, fmt.Errorf("job stream info: %w", err)
		}
		if si.State.Msgs > 0 {
			b.Oldest = si.State.FirstTime
		}
	}
	dlq, err := q.dlqStream(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return b, nil
	}
	if err != nil {
		return Backlog{}, err
	}
	di, err := dlq.Info(ctx, jetstream.WithSubjectFilter(q.dlqFilter(app, method)))
	if err != nil {
		return Backlog{}, fmt.Errorf("dead-letter stream info: %w", err)
	}
	b.DeadLettered = len(di.State.Subjects)
	return b, nil
}
