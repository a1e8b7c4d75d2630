// Package config defines the serve config file — applications, their
// deployments and every option an operator tunes — and parses and validates it.
//
// The shape follows Ray Serve's config file (applications → deployments with
// num_replicas, max_ongoing_requests, max_queued_requests, resources,
// user_config, health checks, graceful shutdown). Defaults are Ray Serve's
// where a Ray field exists. Parse accepts YAML or JSON, rejects unknown
// fields, fills defaults and validates; every error names the field by its
// path (for example "applications[0].deployments[1].max_ongoing_requests").
// The package is pure: it does no I/O beyond what callers hand it.
package config

import (
	"encoding/json"
)

// Runtimes and protocols of a deployment.
const (
	RuntimeGo      = "go"
	RuntimeProcess = "process"
	ProtocolHTTP   = "http"
	ProtocolOIP    = "oip"
)

// OIPRoutePrefix is where the ingress serves the Open Inference Protocol
// v2 (GET /v2, /v2/health/..., /v2/models/{model}/...): no application may
// use it as its route_prefix or below it.
const OIPRoutePrefix = "/v2"

// Defaults, Ray Serve's where Ray has the option.
const (
	DefaultStartupTimeout          = Duration(60e9)
	DefaultMaxModelsPerReplica     = 3
	DefaultHealthPathHTTP          = "/healthz"
	DefaultHealthPathOIP           = "/v2/health/ready"
	DefaultMaxOngoingRequests      = 5
	DefaultMaxQueuedRequests       = -1 // unlimited
	DefaultNumReplicas             = 1
	DefaultCPU                     = 1.0
	DefaultHealthCheckPeriod       = Duration(10e9)
	DefaultHealthCheckTimeout      = Duration(30e9)
	DefaultGracefulShutdownTimeout = Duration(20e9)
	// DefaultMaxUnavailable is Kubernetes' default for a rolling update.
	DefaultMaxUnavailable IntOrPercent = "25%"
	// HealthCheckFailureThreshold is how many consecutive failed health
	// checks make a replica unhealthy and get it replaced (Ray's 3).
	HealthCheckFailureThreshold = 3
)

// ServeConfig is the whole declarative document: PUT it and the fleet
// converges to exactly these applications (absent ones are deleted).
type ServeConfig struct {
	Applications []Application `json:"applications" jsonschema:"description=Every application to run; applications absent from a PUT are deleted."`
}

// Application is a set of deployments with one ingress deployment behind a
// route prefix.
type Application struct {
	// Name is unique across the config.
	Name string `json:"name" jsonschema:"required,pattern=^[A-Za-z0-9_-]+$,description=Unique application name."`
	// RoutePrefix is the HTTP path prefix ("/text"); unique across the config.
	RoutePrefix string `json:"route_prefix" jsonschema:"required,pattern=^/,description=HTTP path prefix routed to the ingress deployment; unique."`
	// Ingress names the deployment that receives HTTP requests; required
	// unless the application has a Graph (whose root node receives them).
	Ingress     string       `json:"ingress,omitempty" jsonschema:"description=Name of the deployment that receives HTTP requests; required unless the application has a graph."`
	Deployments []Deployment `json:"deployments" jsonschema:"required,minItems=1"`
	// Graph, when set, is a declarative request flow over the
	// application's deployments (KServe InferenceGraph's node types) that
	// the ingress runs for every request of the application, instead of
	// sending it to an ingress deployment.
	Graph *Graph `json:"graph,omitempty"`
}

// Deployment is one model or stage: a registered handler run as N replicas.
type Deployment struct {
	Name string `json:"name" jsonschema:"required,pattern=^[A-Za-z0-9_-]+$"`
	// Handler is the name a Go deployment was registered under in the SDK
	// (required for runtime go, unused for runtime process).
	Handler string `json:"handler,omitempty" jsonschema:"description=Name of a deployment registered with the SDK (serve.Registry); required unless runtime is process."`
	// Runtime is how a replica runs: "go" (default: a handler compiled
	// into the worker) or "process" (any program speaking HTTP on a port
	// the worker gives it; see Command).
	Runtime string `json:"runtime,omitempty" jsonschema:"enum=go,enum=process,default=go"`
	// Command is the argv of a process-runtime replica's child process.
	Command []string `json:"command,omitempty" jsonschema:"description=argv of the child process (runtime process); required there."`
	// Env is added to the child's environment (runtime process).
	Env map[string]string `json:"env,omitempty"`
	// Port is where the child listens (runtime process); 0 (default) lets
	// the worker pick a free port, passed to the child as PORT.
	Port int `json:"port,omitempty" jsonschema:"minimum=0,maximum=65535"`
	// HealthPath is polled on the child until it answers 2xx (start-up)
	// and on every health check (runtime process); default
	// /v2/health/ready for protocol oip, /healthz for http.
	HealthPath string `json:"health_path,omitempty"`
	// StartupTimeout bounds how long a child may take to become healthy
	// before the replica is FAILED (runtime process); default 60s.
	StartupTimeout Duration `json:"startup_timeout,omitempty" jsonschema_extras:"default=60s"`
	// Protocol is what the deployment speaks: "http" (default) or "oip"
	// (Open Inference Protocol v2). An oip deployment is served on the
	// ingress's /v2 endpoints under its OIP model names; a process child is
	// passed the requests through, a Go handler gets typed tensors from the
	// SDK.
	Protocol string `json:"protocol,omitempty" jsonschema:"enum=http,enum=oip,default=http"`
	// OIPModels are the OIP model names routed to this deployment
	// (protocol oip); default: the deployment's name. A multiplexed
	// deployment lists every model it serves; the name travels as the
	// request's multiplexed model id.
	OIPModels []string `json:"oip_models,omitempty"`
	// MaxModelsPerReplica caps the models a multiplexed deployment keeps
	// loaded per replica (Ray's max_num_models_per_replica); default 3.
	MaxModelsPerReplica int `json:"max_models_per_replica,omitempty" jsonschema:"minimum=1,default=3"`
	// NumReplicas is the number of replicas to run (default 1).
	NumReplicas *int `json:"num_replicas,omitempty" jsonschema:"minimum=0,default=1"`
	// MaxOngoingRequests caps in-flight requests per replica (default 5).
	MaxOngoingRequests int `json:"max_ongoing_requests,omitempty" jsonschema:"minimum=1,default=5"`
	// MaxQueuedRequests caps requests waiting for a replica at each router;
	// -1 (default) is unlimited. Overflow is answered 503 + Retry-After.
	MaxQueuedRequests int       `json:"max_queued_requests,omitempty" jsonschema:"minimum=-1,default=-1"`
	Resources         Resources `json:"resources,omitzero"`
	// UserConfig is handed to the constructor and to Reconfigure; changing
	// only it reconfigures running replicas in place.
	UserConfig              json.RawMessage `json:"user_config,omitempty" jsonschema:"type=object"`
	HealthCheckPeriod       Duration        `json:"health_check_period,omitempty" jsonschema_extras:"default=10s"`
	HealthCheckTimeout      Duration        `json:"health_check_timeout,omitempty" jsonschema_extras:"default=30s"`
	GracefulShutdownTimeout Duration        `json:"graceful_shutdown_timeout,omitempty" jsonschema_extras:"default=20s"`
	// RequestTimeout bounds one request end to end at the router; 0 (default)
	// means no timeout beyond the caller's own.
	RequestTimeout Duration `json:"request_timeout,omitempty"`
	// MaxUnavailable bounds how far below its target of RUNNING replicas
	// a rolling update may go when no worker has room for a surge replica
	// and old replicas are replaced one at a time instead: a count or a
	// percentage of the target (rounded down, at least 1 unless 0%);
	// default "25%". 0 never goes below the target: without room for a
	// surge replica the update waits (its status says why).
	MaxUnavailable IntOrPercent `json:"max_unavailable,omitempty" jsonschema:"oneof_type=integer;string,default=25%"`
	// AutoscalingConfig, when set, lets the autoscaler choose the replica
	// count between its bounds; num_replicas must then be unset or "auto".
	AutoscalingConfig *AutoscalingConfig `json:"autoscaling_config,omitempty"`
	// AsyncMethods overrides the SDK defaults of the deployment's async
	// methods (durable, cancellable jobs; see pkg/jobs).
	AsyncMethods []AsyncMethod `json:"async_methods,omitempty"`
	// Uses lists the deployments of the same application this one calls
	// through handles (its edges). Each must be a deployment of the
	// application; when the list is set, a handle the deployment's
	// constructor takes to a deployment not in it fails the replica's
	// start. Unset: edges are not declared (any deployment of the
	// application may be called).
	Uses []string `json:"uses,omitempty" jsonschema:"description=Deployments of the same application this one calls through handles."`
}

// AutoscalingConfig has Ray Serve's fields and defaults.
type AutoscalingConfig struct {
	MinReplicas *int `json:"min_replicas,omitempty" jsonschema:"minimum=0,default=1"`
	MaxReplicas int  `json:"max_replicas,omitempty" jsonschema:"minimum=1,default=1"`
	// InitialReplicas defaults to min_replicas.
	InitialReplicas *int `json:"initial_replicas,omitempty" jsonschema:"minimum=0"`
	// TargetOngoingRequests is the desired ongoing+queued requests per replica.
	TargetOngoingRequests float64   `json:"target_ongoing_requests,omitempty" jsonschema:"default=2"`
	UpscaleDelay          *Duration `json:"upscale_delay,omitempty" jsonschema_extras:"default=30s"`
	DownscaleDelay        *Duration `json:"downscale_delay,omitempty" jsonschema_extras:"default=600s"`
	// DownscaleToZeroDelay applies to the 1 → 0 step; default downscale_delay.
	DownscaleToZeroDelay *Duration `json:"downscale_to_zero_delay,omitempty"`
	UpscalingFactor      float64   `json:"upscaling_factor,omitempty" jsonschema:"default=1"`
	DownscalingFactor    float64   `json:"downscaling_factor,omitempty" jsonschema:"default=1"`
	LookBackPeriod       Duration  `json:"look_back_period,omitempty" jsonschema_extras:"default=30s"`
	MetricsInterval      Duration  `json:"metrics_interval,omitempty" jsonschema_extras:"default=1s"`
	// TargetBacklogPerReplica is, for async methods, the queued+running
	// jobs one replica should carry.
	TargetBacklogPerReplica float64 `json:"target_backlog_per_replica,omitempty" jsonschema:"default=1"`
}

// AsyncMethod is the per-method config of an async (job) method. Unset
// fields take the SDK defaults the deployment registered, then these
// package defaults.
type AsyncMethod struct {
	Name string `json:"name" jsonschema:"required,pattern=^[A-Za-z0-9_-]+$"`
	// MaxQueued caps waiting jobs; a submit beyond gets 429 + Retry-After.
	MaxQueued int `json:"max_queued,omitempty" jsonschema:"minimum=1,default=1000"`
	// MaxRunning caps running jobs fleet-wide (across all replicas).
	MaxRunning int `json:"max_running,omitempty" jsonschema:"minimum=1,default=100"`
	// Priority: higher-priority methods' jobs start first when replicas
	// are busy (lower ones are not starved).
	Priority *int `json:"priority,omitempty" jsonschema:"minimum=0,maximum=9,default=0"`
	// IdempotencyKey names the argument that is the request id.
	IdempotencyKey string `json:"idempotency_key,omitempty" jsonschema:"default=request_id"`
	MaxAttempts    int    `json:"max_attempts,omitempty" jsonschema:"minimum=1,default=3"`
	// Backoff between attempts after a failure (the last one repeats).
	Backoff []Duration `json:"backoff,omitempty"`
	// Timeout bounds one attempt.
	Timeout Duration `json:"timeout,omitempty" jsonschema_extras:"default=1h"`
	// Retention keeps a finished job's record and result (a workflow
	// run's journal) this long after it ended; an unfinished one is kept.
	Retention Duration `json:"retention,omitempty" jsonschema_extras:"default=168h"`
	// LeaseTimeout is how long a job whose worker stopped heartbeating
	// waits before another replica takes it.
	LeaseTimeout Duration `json:"lease_timeout,omitempty" jsonschema_extras:"default=15s"`
	// RequiredArgs are arguments a submit must carry (400 otherwise).
	RequiredArgs []string `json:"required_args,omitempty"`
	// Workflow marks a durable workflow (serve.NewWorkflow): its runs are
	// jobs of this method, journaled in the workflow's stream, with the
	// signal and history endpoints besides the async-request ones. Set by
	// the SDK (WithWorkflows), not by operators.
	Workflow bool `json:"workflow,omitempty"`
	// Versioning (workflows only) says which code a run's later attempts
	// run: "pinned" (the default) keeps a run on the deployment version
	// that started it — a rolling update keeps one replica of that version,
	// taking no requests, until its last pinned run ends —; "auto_upgrade"
	// replays suspended runs on the current version's code (guard changes
	// with wf.Patched). Set on a plain async method, the config is
	// refused.
	Versioning string `json:"versioning,omitempty" jsonschema:"enum=pinned,enum=auto_upgrade,default=pinned"`
	// PinnedFor (workflows only) bounds a pin: a run stays on its version
	// at most this long after it started on it; its next attempt after
	// that runs on the current version's code.
	PinnedFor Duration `json:"pinned_for,omitempty" jsonschema_extras:"default=24h"`
}

// Versioning of workflow runs (AsyncMethod.Versioning).
const (
	VersioningPinned      = "pinned"
	VersioningAutoUpgrade = "auto_upgrade"
)

// Pinned reports whether the runs of m are pinned to the deployment
// version that started them: a workflow not set to auto_upgrade.
func (m AsyncMethod) Pinned() bool { return m.Workflow && m.Versioning != VersioningAutoUpgrade }

// Resources a replica needs on a worker. CPU and GPU are fractional: three
// replicas asking for 0.3 GPU share one GPU.
type Resources struct {
	CPU    *float64 `json:"cpu,omitempty" jsonschema:"minimum=0,default=1"`
	GPU    float64  `json:"gpu,omitempty" jsonschema:"minimum=0"`
	Memory Bytes    `json:"memory,omitempty" jsonschema:"description=Bytes; an integer or a quantity such as 512Mi or 2G."`
	// Labels is a selector: every key must equal the worker's label
	// (e.g. gpu.type: h100).
	Labels map[string]string `json:"labels,omitempty"`
}

// CPUOrDefault returns the CPU request, 1 when unset (Ray's default).
func (r Resources) CPUOrDefault() float64 {
	if r.CPU == nil {
		return DefaultCPU
	}
	return *r.CPU
}

// Replicas returns the configured replica count: num_replicas, else for
// an autoscaled deployment its initial (or min) replicas, else 1. The
// autoscaler's decision, when there is one, overrides it.
func (d Deployment) Replicas() int {
	switch {
	case d.NumReplicas != nil:
		return *d.NumReplicas
	case d.AutoscalingConfig != nil && d.AutoscalingConfig.InitialReplicas != nil:
		return *d.AutoscalingConfig.InitialReplicas
	case d.AutoscalingConfig != nil && d.AutoscalingConfig.MinReplicas != nil:
		return *d.AutoscalingConfig.MinReplicas
	}
	return DefaultNumReplicas
}

// Async method defaults (where the SDK registered none).
const (
	DefaultMaxQueued      = 1000
	DefaultMaxRunning     = 100
	DefaultIdempotencyKey = "request_id"
	DefaultMaxAttempts    = 3
	DefaultJobTimeout     = Duration(3600e9)
	DefaultRetention      = Duration(7 * 24 * 3600e9)
	DefaultLeaseTimeout   = Duration(15e9)
	// DefaultPinnedFor bounds how long a pinned workflow run keeps an old
	// deployment version running.
	DefaultPinnedFor = Duration(24 * 3600e9)
)

// DefaultBackoff is the wait before attempts 2, 3, … (the last repeats).
func DefaultBackoff() []Duration { return []Duration{Duration(1e9), Duration(10e9), Duration(60e9)} }

func (m *AsyncMethod) applyDefaults() {
	if m.MaxQueued == 0 {
		m.MaxQueued = DefaultMaxQueued
	}
	if m.MaxRunning == 0 {
		m.MaxRunning = DefaultMaxRunning
	}
	if m.Priority == nil {
		p := 0
		m.Priority = &p
	}
	if m.IdempotencyKey == "" {
		m.IdempotencyKey = DefaultIdempotencyKey
	}
	if m.MaxAttempts == 0 {
		m.MaxAttempts = DefaultMaxAttempts
	}
	if len(m.Backoff) == 0 {
		m.Backoff = DefaultBackoff()
	}
	if m.Timeout == 0 {
		m.Timeout = DefaultJobTimeout
	}
	if m.Retention == 0 {
		m.Retention = DefaultRetention
	}
	if m.LeaseTimeout == 0 {
		m.LeaseTimeout = DefaultLeaseTimeout
	}
	if m.Workflow && m.Versioning == "" {
		m.Versioning = VersioningPinned
	}
	if m.Workflow && m.PinnedFor == 0 {
		m.PinnedFor = DefaultPinnedFor
	}
}

// ApplyDefaults fills the unset fields of m (exported for the SDK, which
// merges registered defaults first).
func (m *AsyncMethod) ApplyDefaults() { m.applyDefaults() }

func (a *AutoscalingConfig) applyDefaults() {
	if a.MinReplicas == nil {
		n := 1
		a.MinReplicas = &n
	}
	if a.MaxReplicas == 0 {
		a.MaxReplicas = max(1, *a.MinReplicas)
	}
	if a.TargetOngoingRequests == 0 {
		a.TargetOngoingRequests = 2
	}
	if a.UpscaleDelay == nil {
		d := Duration(30e9)
		a.UpscaleDelay = &d
	}
	if a.DownscaleDelay == nil {
		d := Duration(600e9)
		a.DownscaleDelay = &d
	}
	if a.DownscaleToZeroDelay == nil {
		d := *a.DownscaleDelay
		a.DownscaleToZeroDelay = &d
	}
	if a.UpscalingFactor == 0 {
		a.UpscalingFactor = 1
	}
	if a.DownscalingFactor == 0 {
		a.DownscalingFactor = 1
	}
	if a.LookBackPeriod == 0 {
		a.LookBackPeriod = Duration(30e9)
	}
	if a.MetricsInterval == 0 {
		a.MetricsInterval = Duration(1e9)
	}
	if a.TargetBacklogPerReplica == 0 {
		a.TargetBacklogPerReplica = 1
	}
}

// App returns the application named name, or false.
func (c ServeConfig) App(name string) (Application, bool) {
	for _, a := range c.Applications {
		if a.Name == name {
			return a, true
		}
	}
	return Application{}, false
}

// ModelNames returns the OIP model names of an oip deployment (its
// oip_models, else its name); nil for other protocols.
func (d Deployment) ModelNames() []string {
	if d.Protocol != ProtocolOIP {
		return nil
	}
	if len(d.OIPModels) > 0 {
		return d.OIPModels
	}
	return []string{d.Name}
}

// Deployment returns the deployment named name, or false.
func (a Application) Deployment(name string) (Deployment, bool) {
	for _, d := range a.Deployments {
		if d.Name == name {
			return d, true
		}
	}
	return Deployment{}, false
}
