// Package serve is jetserve's SDK: what a deployment author writes against.
//
// A deployment is a Handler built by a Constructor from its user_config and
// registered under a name in a Registry. It may also implement Reconfigurer
// (user_config changes applied in place), HealthChecker, Closer and
// StreamHandler. Deployments call each other through a Handle, which a
// Caller backs: NewLocal runs a whole application in-process (plain go test,
// no NATS); in the fleet a router embedded in the worker (package routing)
// sends each call straight to a replica over NATS, or in-process to a
// replica of the same worker.
//
// An application is declared in code beside the registrations (App,
// Deploy; Registry.DeclareApp) and built into the serve config
// (Registry.Build, BuildYAML) that operators edit and deploy.
//
// Handlers are called concurrently, up to the deployment's
// max_ongoing_requests at once per replica; a Handler must be safe for that.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Request is one call to a deployment: an HTTP request routed to it by
// ingress, or a call from another deployment through a Handle.
type Request struct {
	// Method is the HTTP method ("POST" for handle calls).
	Method string
	// Path is the path below the application's route prefix ("/" at least).
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
	// Call names the deployment method for handle calls; "" is the default.
	Call      string
	RequestID string
}

// Decode unmarshals the JSON body into v; a malformed body is a 400 Error.
func (r *Request) Decode(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return &Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: "malformed JSON body: " + err.Error()}
	}
	return nil
}

// Response is what a deployment answers.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON makes a 200 response with v encoded as JSON.
func JSON(v any) (*Response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode response: %w", err)
	}
	return &Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}, nil
}

// Decode unmarshals a JSON response body into v.
func (r *Response) Decode(v any) error {
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

// Error is an error with an HTTP status and a wire code. Handlers return it
// to choose the status; callers get it back from Handle calls.
type Error struct {
	Status int
	Code   protocol.ErrorCode
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Msg) }

// Errorf returns an *Error with the given HTTP status.
func Errorf(status int, format string, args ...any) error {
	code := protocol.ErrHandler
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		code = protocol.ErrBadRequest
	case http.StatusNotFound:
		code = protocol.ErrNotFound
	}
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// AsError turns any error into an *Error (500 handler_error if it is not
// one); nil stays nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Status: http.StatusGatewayTimeout, Code: protocol.ErrTimeout, Msg: err.Error()}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Status: 499, Code: protocol.ErrCancelled, Msg: err.Error()}
	}
	return &Error{Status: http.StatusInternalServerError, Code: protocol.ErrHandler, Msg: err.Error()}
}

// Handler serves sync requests.
type Handler interface {
	ServeRequest(ctx context.Context, req *Request) (*Response, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (*Response, error)

// ServeRequest calls f.
func (f HandlerFunc) ServeRequest(ctx context.Context, req *Request) (*Response, error) {
	return f(ctx, req)
}

// StreamWriter sends a streamed response: the head once, then chunks.
type StreamWriter interface {
	// WriteHead sends status and headers; called at most once, before the
	// first Write (a Write without it sends 200).
	WriteHead(status int, h http.Header) error
	// Write sends one chunk to the client as soon as possible.
	Write(chunk []byte) error
}

// StreamHandler is implemented by deployments that stream their answer
// (chunked transfer over HTTP). Requests with ?stream=1 or an
// Accept: text/event-stream header are sent to ServeStream.
type StreamHandler interface {
	ServeStream(ctx context.Context, req *Request, w StreamWriter) error
}

// Reconfigurer is implemented by deployments that apply a changed
// user_config without a restart.
type Reconfigurer interface {
	Reconfigure(ctx context.Context, userConfig json.RawMessage) error
}

// HealthChecker is implemented by deployments with their own health check;
// an error (or no answer within health_check_timeout) counts as a failure.
type HealthChecker interface {
	CheckHealth(ctx context.Context) error
}

// Closer is implemented by deployments that release resources on stop.
type Closer interface {
	Close(ctx context.Context) error
}

// Init is what a Constructor gets.
type Init struct {
	App        string
	Deployment string
	ReplicaID  string
	UserConfig json.RawMessage
	Logger     zerolog.Logger
	// Caller backs the handles returned by Handle.
	Caller Caller
	// CheckDeployment, if set, says whether name is a deployment of the
	// application (nil) or not (an *Error, 404 not_found, naming it): a
	// Handle to a name it refuses fails every call at once with that
	// error. The backends set it, and a constructor that takes a handle to
	// a name that is not a deployment of the application fails the
	// replica's start (FAILED in the fleet, an error from NewLocal) with
	// the message naming it.
	CheckDeployment func(name string) error
	// GPUs are the device indices (as CUDA_VISIBLE_DEVICES counts them)
	// the worker gave this replica; empty for a CPU-only replica.
	GPUs []int
	// NC is the worker's NATS connection (nil in the in-process backend):
	// a deployment may use the jobs library (pkg/jobs Queue: Submit,
	// Status, Result, Cancel, List, ResumeAll) directly with it, the RFC's
	// Proposal 2, or anything else NATS offers.
	NC *nats.Conn
	// MaxModelsPerReplica is the deployment's max_models_per_replica: the
	// capacity of a Multiplexer made from this Init (0 = the default, 3).
	MaxModelsPerReplica int
	// Metrics are this replica's SDK series (batch sizes, model loads and
	// evictions); nil in the in-process backend, where nothing is recorded.
	Metrics *ReplicaMetrics
	// ReportModels, if set, is told the multiplexed model ids the replica
	// holds whenever they change (a Multiplexer calls it); the replica
	// adds them to its load reports. It must not block. Each call replaces
	// the previous ids: one Multiplexer per replica reports. nil in the
	// in-process backend.
	ReportModels func(ids []string)
}

// Environ is the environment a deployment gives the child processes it
// starts (a model server in another language, a CUDA program):
// CUDA_VISIBLE_DEVICES set to the GPUs the scheduler assigned this replica
// — empty, so that none is visible, when it was assigned none. A Go
// deployment in the worker's process uses GPUs directly instead.
func (i Init) Environ() []string {
	s := make([]string, len(i.GPUs))
	for k, n := range i.GPUs {
		s[k] = strconv.Itoa(n)
	}
	return []string{"CUDA_VISIBLE_DEVICES=" + strings.Join(s, ",")}
}

// Handle returns a handle to another deployment of the same application.
// A name that is not one of its deployments fails the replica's start
// when the handle is taken by the constructor (see CheckDeployment); a
// handle taken later fails every call at once with 404 not_found.
func (i Init) Handle(deployment string) *Handle {
	h := &Handle{App: i.App, Deployment: deployment, caller: i.Caller}
	if i.CheckDeployment != nil {
		h.err = i.CheckDeployment(deployment)
	}
	return h
}

// DecodeUserConfig unmarshals the user_config into v; no user_config leaves
// v unchanged (its defaults).
func (i Init) DecodeUserConfig(v any) error {
	if len(i.UserConfig) == 0 || string(i.UserConfig) == "null" {
		return nil
	}
	if err := json.Unmarshal(i.UserConfig, v); err != nil {
		return fmt.Errorf("user_config: %w", err)
	}
	return nil
}

// Constructor builds one replica of a deployment.
type Constructor func(ctx context.Context, init Init) (Handler, error)

// Registry maps handler names (the config's `handler`) to constructors.
// It is filled before the worker starts and read-only afterwards; Register
// and Lookup are safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	ctors     map[string]Constructor          // guarded by mu
	async     map[string][]config.AsyncMethod // guarded by mu: handler → its async methods
	workflows map[string][]*WorkflowDef       // guarded by mu: handler → its workflows
	apps      []App                           // guarded by mu: declared applications (app.go)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{ctors: map[string]Constructor{}, async: map[string][]config.AsyncMethod{}, workflows: map[string][]*WorkflowDef{}}
}

// Register adds a constructor under name; registering a name twice is an
// error. WithAsync declares the deployment's async methods.
func (r *Registry) Register(name string, ctor Constructor, opts ...RegisterOption) error {
	if name == "" || ctor == nil {
		return errors.New("register deployment: name and constructor are required")
	}
	reg := registration{ctor: ctor}
	for _, o := range opts {
		o(&reg)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.ctors[name]; dup {
		return fmt.Errorf("register deployment %q: already registered", name)
	}
	r.ctors[name] = ctor
	if len(reg.async) > 0 {
		r.async[name] = reg.async
	}
	if len(reg.workflows) > 0 {
		r.workflows[name] = reg.workflows
	}
	return nil
}

// Lookup returns the constructor registered under name.
func (r *Registry) Lookup(name string) (Constructor, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.ctors[name]
	return c, ok
}

// Names lists every registered handler name, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.ctors))
	for n := range r.ctors {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
