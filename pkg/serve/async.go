package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// Job is one run (attempt) of an async method.
type Job struct {
	ID      string
	Method  string
	Attempt int // 1-based; > 1 means an earlier attempt failed or its worker died
	Args    Args
}

// Args are a job's arguments: the query parameters and JSON body fields of
// the submit, merged (body wins).
type Args map[string]json.RawMessage

// ArgsOf turns v (a struct or map encoding to a JSON object, or nil) into
// Args, as a submit's JSON body becomes a job's arguments.
func ArgsOf(v any) (Args, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode arguments: %w", err)
	}
	var a Args
	if string(b) == "null" {
		return a, nil
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("arguments must be a JSON object: %w", err)
	}
	return a, nil
}

// Decode unmarshals every argument into the struct v (by JSON field names).
func (a Args) Decode(v any) error {
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode args: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return &Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: "arguments: " + err.Error()}
	}
	return nil
}

// JobContext is what a running job gets: the job's context (cancelled by
// Cancel or the method's timeout) plus durable progress and checkpoints.
type JobContext interface {
	context.Context
	Job() *Job
	Logger() zerolog.Logger
	// Checkpoint durably saves state (JetStream object store); after a
	// crash the next attempt reads it back with LastCheckpoint.
	Checkpoint(state []byte) error
	// LastCheckpoint returns the last saved state, or ok=false.
	LastCheckpoint() (state []byte, ok bool, err error)
	// Progress records how far the job is (0..1) with a message; status
	// shows it.
	Progress(fraction float64, message string) error
}

// JobHandler is implemented by deployments with async methods: RunJob runs
// one attempt of job and returns its JSON-encodable result. An error fails
// the attempt (retried with backoff until max_attempts); a *Error with a
// 4xx status fails the job at once (not retried).
type JobHandler interface {
	RunJob(ctx JobContext, job *Job) (any, error)
}

// RegisterOption adds metadata to a registration.
type RegisterOption func(*registration)

type registration struct {
	ctor      Constructor
	async     []config.AsyncMethod
	workflows []*WorkflowDef
}

// WithAsync declares the deployment's async methods with their SDK
// defaults (any field left zero takes the platform default; the serve
// config's async_methods override per field). The deployment must
// implement JobHandler.
func WithAsync(methods ...config.AsyncMethod) RegisterOption {
	return func(r *registration) { r.async = append(r.async, methods...) }
}

// AsyncMethods returns the async methods registered with handler.
func (r *Registry) AsyncMethods(handler string) []config.AsyncMethod {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]config.AsyncMethod(nil), r.async[handler]...)
}

// EffectiveAsync merges a deployment's config overrides onto the SDK
// defaults (field by field) and fills platform defaults. Methods named in
// either appear; the result is sorted as the SDK declared them, then the
// config's extra ones.
func EffectiveAsync(sdk []config.AsyncMethod, overrides []config.AsyncMethod) []config.AsyncMethod {
	out := make([]config.AsyncMethod, 0, len(sdk)+len(overrides))
	idx := map[string]int{}
	for _, m := range sdk {
		idx[m.Name] = len(out)
		out = append(out, m)
	}
	for _, o := range overrides {
		i, ok := idx[o.Name]
		if !ok {
			idx[o.Name] = len(out)
			out = append(out, o)
			continue
		}
		out[i] = mergeAsync(out[i], o)
	}
	for i := range out {
		out[i].ApplyDefaults()
	}
	return out
}

func mergeAsync(base, o config.AsyncMethod) config.AsyncMethod {
	if o.MaxQueued != 0 {
		base.MaxQueued = o.MaxQueued
	}
	if o.MaxRunning != 0 {
		base.MaxRunning = o.MaxRunning
	}
	if o.Priority != nil {
		base.Priority = o.Priority
	}
	if o.IdempotencyKey != "" {
		base.IdempotencyKey = o.IdempotencyKey
	}
	if o.MaxAttempts != 0 {
		base.MaxAttempts = o.MaxAttempts
	}
	if len(o.Backoff) > 0 {
		base.Backoff = o.Backoff
	}
	if o.Timeout != 0 {
		base.Timeout = o.Timeout
	}
	if o.Retention != 0 {
		base.Retention = o.Retention
	}
	if o.LeaseTimeout != 0 {
		base.LeaseTimeout = o.LeaseTimeout
	}
	if o.Versioning != "" {
		base.Versioning = o.Versioning
	}
	if o.PinnedFor != 0 {
		base.PinnedFor = o.PinnedFor
	}
	if len(o.RequiredArgs) > 0 {
		base.RequiredArgs = o.RequiredArgs
	}
	base.Workflow = base.Workflow || o.Workflow
	return base
}
