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

// Defaults, Ray Serve's where Ray has the option.
const (
	DefaultMaxOngoingRequests      = 5
	DefaultMaxQueuedRequests       = -1 // unlimited
	DefaultNumReplicas             = 1
	DefaultCPU                     = 1.0
	DefaultHealthCheckPeriod       = Duration(10e9)
	DefaultHealthCheckTimeout      = Duration(30e9)
	DefaultGracefulShutdownTimeout = Duration(20e9)
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
	// Ingress names the deployment that receives HTTP requests.
	Ingress     string       `json:"ingress" jsonschema:"required,description=Name of the deployment that receives HTTP requests."`
	Deployments []Deployment `json:"deployments" jsonschema:"required,minItems=1"`
}

// Deployment is one model or stage: a registered handler run as N replicas.
type Deployment struct {
	Name string `json:"name" jsonschema:"required,pattern=^[A-Za-z0-9_-]+$"`
	// Handler is the name a Go deployment was registered under in the SDK.
	Handler string `json:"handler" jsonschema:"required,description=Name of a deployment registered with the SDK (serve.Registry)."`
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
	HealthCheckPeriod       Duration        `json:"health_check_period,omitempty" jsonschema:"type=string,default=10s"`
	HealthCheckTimeout      Duration        `json:"health_check_timeout,omitempty" jsonschema:"type=string,default=30s"`
	GracefulShutdownTimeout Duration        `json:"graceful_shutdown_timeout,omitempty" jsonschema:"type=string,default=20s"`
	// RequestTimeout bounds one request end to end at the router; 0 (default)
	// means no timeout beyond the caller's own.
	RequestTimeout Duration `json:"request_timeout,omitempty" jsonschema:"type=string"`
}

// Resources a replica needs on a worker. CPU and GPU are fractional: three
// replicas asking for 0.3 GPU share one GPU.
type Resources struct {
	CPU    *float64 `json:"cpu,omitempty" jsonschema:"minimum=0,default=1"`
	GPU    float64  `json:"gpu,omitempty" jsonschema:"minimum=0"`
	Memory Bytes    `json:"memory,omitempty" jsonschema:"type=string,description=Bytes; an integer or a quantity such as 512Mi or 2G."`
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

// Replicas returns the configured replica count, 1 when unset.
func (d Deployment) Replicas() int {
	if d.NumReplicas == nil {
		return DefaultNumReplicas
	}
	return *d.NumReplicas
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

// Deployment returns the deployment named name, or false.
func (a Application) Deployment(name string) (Deployment, bool) {
	for _, d := range a.Deployments {
		if d.Name == name {
			return d, true
		}
	}
	return Deployment{}, false
}
