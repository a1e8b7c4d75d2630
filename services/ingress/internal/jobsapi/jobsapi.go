// Package jobsapi serves the HTTP endpoints the platform generates for
// every async method of an application's deployments (the async-request
// RFC's Proposal 1), on top of a jobs.Queue:
//
//	POST {prefix}/{method}                         submit → 202 {request_id, status}; an existing id → 200 with its record
//	POST {prefix}/{method}/cancel?request_id=ID    → 200 record
//	GET  {prefix}/{method}/status?request_id=ID    → 200 record
//	GET  {prefix}/{method}/result?request_id=ID    → 200 result; 202 record while QUEUED/RUNNING; 409 FAILED/CANCELLED
//	GET  {prefix}/{method}/list?filter_status=S&limit=N&cursor=C → {"requests": [...], "next_cursor": "..."}
//
// Every job belongs to the principal that submitted it (Caller): the other
// operations show a caller only its own jobs, another's being answered
// like an unknown id (404), unless the caller has the operator scope; a
// submit naming another principal's request id is 409 request_id_in_use.
//
// A submit's arguments are its query parameters (as JSON strings; repeated
// ones as arrays of strings) and the fields of its JSON object body, the
// body winning; the request id is the argument named by the method's
// idempotency_key, or generated. Errors have the gateway's JSON shape
// {"error": code, "message": …}: unknown id 404, missing request_id or
// required argument, malformed JSON or a bad filter 400, queue full 429
// job_queue_full with Retry-After, a wrong HTTP method 405, JetStream without a leader for the job stream (a NATS
// node lost, seconds) 503 unavailable with Retry-After.
//
// The method table (fleetstate.AsyncFollower) follows the applied serve
// config and the SDK defaults handlers declare (recorded by workers in the
// Handlers bucket, kept when they go); before a method's first use after its
// effective config changed, the API calls Queue.Ensure. API is safe for
// concurrent use and starts no goroutines.
package jobsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Queue is the part of *jobs.Queue the API uses.
type Queue interface {
	Ensure(ctx context.Context, app, deployment string, m config.AsyncMethod) error
	Submit(ctx context.Context, app, deployment string, m config.AsyncMethod, id string, args serve.Args, opts ...jobs.SubmitOption) (jobs.Record, bool, error)
	Status(ctx context.Context, app, method, id string) (jobs.Record, error)
	Result(ctx context.Context, app, method, id string) (json.RawMessage, jobs.Record, error)
	Cancel(ctx context.Context, app, method, id string) (jobs.Record, error)
	List(ctx context.Context, app, method string, filter jobs.Status, limit int, cursor string, opts ...jobs.ListOption) ([]jobs.Record, string, error)
	Signal(ctx context.Context, app, wf, run, name, key string, payload json.RawMessage) (bool, error)
	History(ctx context.Context, app, wf, run string) ([]serve.JournalEntry, error)
}

// Caller is who asks: a job belongs to the principal that submitted it,
// and status, result, cancel and list show a caller only its own jobs —
// another's is "no such job" — unless it has the operator scope.
type Caller struct {
	Name     string
	Operator bool
}

// sees reports whether c may see rec.
func (c Caller) sees(rec jobs.Record) bool { return c.Operator || rec.Owner == c.Name }

// MaxIDLen bounds request ids.
const MaxIDLen = 256

// API serves the job endpoints.
type API struct {
	q     Queue
	table func() *fleetstate.AsyncTable
	log   zerolog.Logger

	mu      sync.Mutex
	ensured map[string]string // guarded by mu: app/method → JSON of the config Ensure succeeded with
}

// New returns the API over q with the methods table returns.
func New(q Queue, table func() *fleetstate.AsyncTable, log zerolog.Logger) *API {
	return &API{q: q, table: table, log: log, ensured: map[string]string{}}
}

// Match reports whether rest (the path below an application's route
// prefix) names one of app's async methods, and which operation: "" for a
// submit, or cancel, status, result, list — and for a workflow signal and
// history.
func (a *API) Match(app, rest string) (fleetstate.AsyncMethod, string, bool) {
	seg := strings.Split(strings.Trim(rest, "/"), "/")
	if len(seg) == 0 || len(seg) > 2 || seg[0] == "" {
		return fleetstate.AsyncMethod{}, "", false
	}
	m, ok := a.table().Lookup(app, seg[0])
	if !ok {
		return fleetstate.AsyncMethod{}, "", false
	}
	if len(seg) == 1 {
		return m, "", true
	}
	if _, ok := OpMethod(seg[1]); !ok || seg[1] == "" {
		return fleetstate.AsyncMethod{}, "", false
	}
	if slices.Contains(WorkflowOps(), seg[1]) && !m.Config.Workflow {
		return fleetstate.AsyncMethod{}, "", false
	}
	return m, seg[1], true
}

// Ops lists the operations below a method's path ({prefix}/{method}/{op}).
func Ops() []string { return []string{"cancel", "status", "result", "list"} }

// WorkflowOps lists the operations only a workflow method has.
func WorkflowOps() []string { return []string{"signal", "history"} }

// OpMethod is the HTTP method of an operation ("" is the submit); ok is
// false for an unknown one.
func OpMethod(op string) (method string, ok bool) {
	switch op {
	case "", "cancel", "signal":
		return http.MethodPost, true
	case "status", "result", "list", "history":
		return http.MethodGet, true
	}
	return "", false
}

// Serve answers one job request for method m (from Match); body is the
// already read (size-checked) request body. It returns the error code
// written, "" on success.
func (a *API) Serve(w http.ResponseWriter, r *http.Request, m fleetstate.AsyncMethod, op string, body []byte, rid string, who Caller) protocol.ErrorCode {
	if want, _ := OpMethod(op); r.Method != want {
		w.Header().Set("Allow", want)
		return writeError(w, protocol.ErrMethodNotAllowed,
			fmt.Sprintf("%s %s/%s: use %s", r.Method, m.Config.Name, op, want), rid)
	}
	ctx := r.Context()
	if err := a.ensure(ctx, m); errors.Is(err, jobs.ErrNotProvisioned) {
		// The scheduler has not created it yet (a config just applied, a
		// handler just registered, or no scheduler running).
		a.log.Warn().Err(err).Str("app", m.App).Str("method", m.Config.Name).Msg("job queue not created yet")
		return writeError(w, protocol.ErrUnavailable,
			"the job queue of "+m.Config.Name+" is not created yet: the scheduler creates it when the config is applied; retry", rid)
	} else if err != nil {
		a.log.Error().Err(err).Str("app", m.App).Str("method", m.Config.Name).Msg("ensure job queue")
		return writeError(w, protocol.ErrUnavailable, "job queue unavailable", rid)
	}
	q := r.URL.Query()
	if op == "" {
		return a.submit(w, r, m, q, body, rid, who)
	}
	if op == "list" {
		return a.list(w, r, m, q, rid, who)
	}
	id := q.Get("request_id")
	if id == "" {
		return writeError(w, protocol.ErrBadRequest, "request_id is required", rid)
	}
	// Another principal's job is answered as an unknown one: its
	// existence is not revealed either.
	rec, err := a.q.Status(ctx, m.App, m.Config.Name, id)
	if err == nil && !who.sees(rec) {
		err = jobs.ErrNotFound
	}
	if err != nil {
		return a.fail(w, err, m, id, rid)
	}
	switch op {
	case "status":
		return writeJSON(w, http.StatusOK, rec)
	case "signal":
		return a.signal(w, r, m, id, body, rid)
	case "history":
		h, err := a.q.History(ctx, m.App, m.Config.Name, id)
		if err != nil {
			return a.fail(w, err, m, id, rid)
		}
		return writeJSON(w, http.StatusOK, historyBody{RequestID: id, Status: rec.Status, Waiting: rec.Waiting,
			Suspensions: rec.Suspensions, Entries: h})
	case "cancel":
		rec, err := a.q.Cancel(ctx, m.App, m.Config.Name, id)
		if err != nil {
			return a.fail(w, err, m, id, rid)
		}
		return writeJSON(w, http.StatusOK, rec)
	}
	res, rec, err := a.q.Result(ctx, m.App, m.Config.Name, id)
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Status", string(rec.Status))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(res)
		return ""
	case errors.Is(err, jobs.ErrNotFinished):
		w.Header().Set("Retry-After", "1")
		return writeJSON(w, http.StatusAccepted, rec)
	case rec.Status == jobs.Failed:
		return writeTerminal(w, protocol.ErrHandler, fmt.Sprintf("job %s FAILED after %d attempts: %s", id, rec.Attempts, rec.Error), rec)
	case rec.Status == jobs.Cancelled:
		return writeTerminal(w, protocol.ErrCancelled, "job "+id+" was CANCELLED", rec)
	}
	return a.fail(w, err, m, id, rid)
}

// historyBody is the history endpoint's answer: the run's journal, each
// entry with its kind, name, input size, result or error, attempts and
// timings (schemas/workflow-journal-entry.schema.json).
type historyBody struct {
	RequestID   string               `json:"request_id"`
	Status      jobs.Status          `json:"status"`
	Waiting     []string             `json:"waiting,omitempty"`
	Suspensions int                  `json:"suspensions,omitempty"`
	Entries     []serve.JournalEntry `json:"entries"`
}

// signalBody is the signal endpoint's answer.
type signalBody struct {
	RequestID string `json:"request_id"`
	Signal    string `json:"signal"`
	// Sent is false when the idempotency key was seen before: nothing was
	// sent again.
	Sent bool `json:"sent"`
}

// signal sends the signal ?name= with the body (any JSON, or empty) as
// its payload; ?key= is its idempotency key.
func (a *API) signal(w http.ResponseWriter, r *http.Request, m fleetstate.AsyncMethod, id string, body []byte, rid string) protocol.ErrorCode {
	q := r.URL.Query()
	name, key := q.Get("name"), q.Get("key")
	if name == "" {
		return writeError(w, protocol.ErrBadRequest, "name (the signal's) is required", rid)
	}
	var payload json.RawMessage
	if len(strings.TrimSpace(string(body))) > 0 {
		if !json.Valid(body) {
			return writeError(w, protocol.ErrBadRequest, "malformed JSON body: the signal's payload must be JSON", rid)
		}
		payload = body
	}
	if len(key) > MaxIDLen {
		return writeError(w, protocol.ErrBadRequest, fmt.Sprintf("key: at most %d characters", MaxIDLen), rid)
	}
	sent, err := a.q.Signal(r.Context(), m.App, m.Config.Name, id, name, key, payload)
	if err != nil {
		return a.fail(w, err, m, id, rid)
	}
	return writeJSON(w, http.StatusAccepted, signalBody{RequestID: id, Signal: name, Sent: sent})
}

// terminalBody is the result endpoint's answer for a failed or cancelled
// job.
type terminalBody struct {
	httperr.Body
	Status jobs.Status `json:"status"`
	Record jobs.Record `json:"record"`
}

// writeTerminal answers the result of a job that ended without one: 409
// (the request was fine; the job's state conflicts with a result), the
// code saying how it ended (handler_error, cancelled), and its record.
func writeTerminal(w http.ResponseWriter, code protocol.ErrorCode, msg string, rec jobs.Record) protocol.ErrorCode {
	httperr.WriteBody(w, http.StatusConflict, code, terminalBody{
		Body: httperr.Body{Error: code, Message: msg, RequestID: rec.ID}, Status: rec.Status, Record: rec,
	})
	return code
}

// ProvisionWait is how long a job request waits for the scheduler to
// create its method's streams before it is answered 503; provisionPoll is
// how often it looks meanwhile.
const (
	ProvisionWait = 5 * time.Second
	provisionPoll = 100 * time.Millisecond
)

func (a *API) ensure(ctx context.Context, m fleetstate.AsyncMethod) error {
	key := m.App + "/" + m.Config.Name
	cfg, _ := json.Marshal(m)
	a.mu.Lock()
	done := a.ensured[key] == string(cfg)
	a.mu.Unlock()
	if done {
		return nil
	}
	// The scheduler creates a method's streams once it reads the config
	// that names it (a deploy just applied): wait for them a little.
	deadline := time.Now().Add(ProvisionWait)
	for {
		err := a.q.Ensure(ctx, m.App, m.Deployment, m.Config)
		if err == nil {
			break
		}
		if !errors.Is(err, jobs.ErrNotProvisioned) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(provisionPoll):
		}
	}
	a.mu.Lock()
	a.ensured[key] = string(cfg)
	a.mu.Unlock()
	a.log.Info().Str("app", m.App).Str("deployment", m.Deployment).Str("method", m.Config.Name).Msg("job queue ensured")
	return nil
}

// Args merges a submit's query parameters and JSON object body (body
// wins). A body that is not a JSON object, and an argument name or value
// that is not valid UTF-8 (it would be stored, then served back as JSON
// that strict clients cannot decode), are a 400 *serve.Error naming it.
func Args(q map[string][]string, body []byte) (serve.Args, error) {
	args := serve.Args{}
	for k, vs := range q {
		if !utf8.ValidString(k) {
			return nil, badArg(k, "its name is not valid UTF-8")
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return nil, badArg(k, "not valid UTF-8")
			}
		}
		var b []byte
		if len(vs) == 1 {
			b, _ = json.Marshal(vs[0])
		} else {
			b, _ = json.Marshal(vs)
		}
		args[k] = b
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return args, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		msg := "malformed JSON body: want an object of arguments"
		if err != nil {
			msg += ": " + err.Error()
		}
		return nil, &serve.Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: msg}
	}
	if !utf8.Valid(body) {
		// json.Unmarshal replaces invalid bytes in keys with U+FFFD and
		// keeps raw values as they are: find the argument to name.
		for k, v := range fields {
			if !utf8.ValidString(k) || strings.ContainsRune(k, utf8.RuneError) {
				return nil, badArg(k, "its name is not valid UTF-8")
			}
			if !utf8.Valid(v) {
				return nil, badArg(k, "not valid UTF-8")
			}
		}
		return nil, &serve.Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: "malformed JSON body: not valid UTF-8"}
	}
	for k, v := range fields {
		args[k] = v
	}
	return args, nil
}

func badArg(name, why string) error {
	return &serve.Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: fmt.Sprintf("argument %q: %s", name, why)}
}

// requestID is the id argument: a string, or a number's text.
func requestID(args serve.Args, key string) (string, error) {
	raw, ok := args[key]
	if !ok || string(raw) == "null" {
		return "", nil
	}
	var id string
	if err := json.Unmarshal(raw, &id); err != nil {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", fmt.Errorf("argument %s (the request id): want a string or a number, got %s", key, raw)
		}
		id = n.String()
	}
	if id == "" || len(id) > MaxIDLen {
		return "", fmt.Errorf("argument %s (the request id): want 1..%d characters", key, MaxIDLen)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '=') {
			return "", fmt.Errorf("argument %s (the request id): only letters, digits, '-', '_' and '=' are allowed, got %q", key, id)
		}
	}
	return id, nil
}

func (a *API) submit(w http.ResponseWriter, r *http.Request, m fleetstate.AsyncMethod, q map[string][]string, body []byte, rid string, who Caller) protocol.ErrorCode {
	args, err := Args(q, body)
	if err != nil {
		e := serve.AsError(err)
		return writeError(w, e.Code, e.Msg, rid)
	}
	id, err := requestID(args, m.Config.IdempotencyKey)
	if err != nil {
		return writeError(w, protocol.ErrBadRequest, err.Error(), rid)
	}
	rec, created, err := a.q.Submit(r.Context(), m.App, m.Deployment, m.Config, id, args, jobs.Owner(who.Name),
		jobs.Trace(r.Header.Get("Traceparent"), r.Header.Get("Tracestate")))
	if err != nil {
		return a.fail(w, err, m, id, rid)
	}
	if !created && !who.sees(rec) {
		// The id is another principal's job: never run twice, never shown.
		return writeError(w, protocol.ErrRequestIDInUse,
			fmt.Sprintf("request id %q is taken by another caller's job; choose another", id), rid)
	}
	if !created {
		return writeJSON(w, http.StatusOK, rec)
	}
	return writeJSON(w, http.StatusAccepted, struct {
		RequestID string      `json:"request_id"`
		Status    jobs.Status `json:"status"`
	}{rec.ID, rec.Status})
}

// DefaultListLimit and MaxListLimit bound list pages.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

func (a *API) list(w http.ResponseWriter, r *http.Request, m fleetstate.AsyncMethod, q map[string][]string, rid string, who Caller) protocol.ErrorCode {
	get := func(k string) string {
		if vs := q[k]; len(vs) > 0 {
			return vs[0]
		}
		return ""
	}
	filter := jobs.Status(strings.ToUpper(get("filter_status")))
	switch filter {
	case "", jobs.Queued, jobs.Running, jobs.Suspended, jobs.Succeeded, jobs.Failed, jobs.Cancelled:
	default:
		return writeError(w, protocol.ErrBadRequest,
			fmt.Sprintf("filter_status: want QUEUED, RUNNING, SUSPENDED, SUCCEEDED, FAILED or CANCELLED, got %q", get("filter_status")), rid)
	}
	limit := DefaultListLimit
	if s := get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return writeError(w, protocol.ErrBadRequest, fmt.Sprintf("limit: want 1..%d, got %q", MaxListLimit, s), rid)
		}
		limit = n
	}
	var opts []jobs.ListOption
	if !who.Operator {
		opts = append(opts, jobs.OwnedBy(who.Name))
	}
	recs, next, err := a.q.List(r.Context(), m.App, m.Config.Name, filter, limit, get("cursor"), opts...)
	if err != nil {
		return a.fail(w, err, m, "", rid)
	}
	if recs == nil {
		recs = []jobs.Record{}
	}
	return writeJSON(w, http.StatusOK, struct {
		Requests   []jobs.Record `json:"requests"`
		NextCursor string        `json:"next_cursor"`
	}{recs, next})
}

// fail maps a Queue error to HTTP.
func (a *API) fail(w http.ResponseWriter, err error, m fleetstate.AsyncMethod, id, rid string) protocol.ErrorCode {
	var se *serve.Error
	switch {
	case errors.Is(err, jobs.ErrNotFound):
		return writeError(w, protocol.ErrNotFound, fmt.Sprintf("no job %q of method %s", id, m.Config.Name), rid)
	case errors.Is(err, jobs.ErrQueueFull):
		return writeError(w, protocol.ErrJobQueueFull,
			fmt.Sprintf("the job queue of %s is full (max_queued %d)", m.Config.Name, m.Config.MaxQueued), rid)
	case errors.Is(err, jobs.ErrTooLarge):
		return writeError(w, protocol.ErrBodyTooLarge, err.Error(), rid)
	case errors.Is(err, jobs.ErrUnknownMethod):
		return writeError(w, protocol.ErrMethodNotFound, err.Error(), rid)
	case errors.As(err, &se) && se.Status >= 400 && se.Status < 500:
		httperr.WriteBody(w, se.Status, se.Code, httperr.Body{Error: se.Code, Message: se.Msg, RequestID: rid})
		return se.Code
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return writeError(w, protocol.ErrTimeout, err.Error(), rid)
	case jetStreamUnavailable(err):
		// The job stream has no leader this moment (a NATS node was lost
		// and its Raft group is electing one, seconds): nothing was
		// stored; the same request_id may be sent again.
		return writeError(w, protocol.ErrUnavailable,
			"the job queue of "+m.Config.Name+" is unavailable for a moment (JetStream electing a leader): "+err.Error(), rid)
	}
	a.log.Error().Err(err).Str("request_id", rid).Str("app", m.App).Str("method", m.Config.Name).Str("job", id).Msg("job operation")
	return writeError(w, protocol.ErrInternal, "job operation failed", rid)
}

// jetStreamUnavailable reports whether err says JetStream could not
// answer for now: no stream answered the publish, no one at all, or an
// API error with status 503 (no leader, no quorum).
func jetStreamUnavailable(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jobs.ErrUnavailable) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.As(err, &api) && api.Code == http.StatusServiceUnavailable
}

// writeError answers code (httperr: the catalogue's status and
// Retry-After) and returns it.
func writeError(w http.ResponseWriter, code protocol.ErrorCode, msg, rid string) protocol.ErrorCode {
	httperr.Write(w, code, msg, rid)
	return code
}

func writeJSON(w http.ResponseWriter, status int, v any) protocol.ErrorCode {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal","message":"encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
	return ""
}
