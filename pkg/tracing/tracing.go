// Package tracing is jetserve's OpenTelemetry tracing: a TracerProvider
// per service (exporting over OTLP/HTTP when configured, a no-op one
// otherwise) and the W3C trace context carried in a request's headers.
//
// A request's trace context travels as the HTTP headers Traceparent and
// Tracestate of serve.Request.Header, which pkg/wire forwards over NATS
// (and sets as the native traceparent header too). Each hop extracts the
// caller's context from them, starts its span, and injects its own before
// calling on: the ingress (span "HTTP <method> <prefix>"), the routing
// library wherever it runs ("route <app>/<deployment>"), the replica
// ("serve <app>/<deployment>"), handle calls (routing again, from the
// replica's span), job attempts ("job <app>/<method>", from the
// traceparent stored with the job at submit) and a workflow run's steps
// (package serve: "step <name>", "call …", "undo …", "submit …",
// "child …", children of their attempt's span). With the no-op provider no
// span is recorded and a request's traceparent passes through unchanged.
//
// Providers are passed in (service.Deps.Tracer), never global. Functions
// are safe for concurrent use.
package tracing

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Config is the tracing part of every service's configuration.
type Config struct {
	// OTLPEndpoint is the base URL of an OTLP/HTTP receiver (an
	// OpenTelemetry Collector, Jaeger, Tempo): spans are POSTed to
	// <endpoint>/v1/traces. Empty: nothing is recorded or exported.
	OTLPEndpoint string `koanf:"otlp_endpoint" help:"OTLP/HTTP receiver spans are exported to, e.g. http://otel-collector:4318 (empty: no spans; traceparent still passed on)"`
	// SampleRatio is the fraction of traces started here that are
	// sampled; a caller's sampling decision is always followed.
	SampleRatio float64 `koanf:"sample_ratio" help:"fraction of the traces this service starts that are recorded (a caller's decision is followed)"`
	// BatchTimeout is the longest a finished span waits before export.
	BatchTimeout time.Duration `koanf:"batch_timeout" help:"longest a finished span waits before it is exported"`
}

// DefaultConfig is tracing off, every trace sampled once it is on.
func DefaultConfig() Config { return Config{SampleRatio: 1, BatchTimeout: 5 * time.Second} }

// Validate checks the values.
func (c Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("tracing.sample_ratio: want 0..1, got %g", c.SampleRatio)
	}
	if c.BatchTimeout < 0 {
		return fmt.Errorf("tracing.batch_timeout: want >= 0, got %s", c.BatchTimeout)
	}
	return nil
}

// InstrumentationName names jetserve's tracers.
const InstrumentationName = "github.com/jetserve/jetserve"

// NewProvider returns the TracerProvider of the service called service
// (its service.name is jetserve-<service>) and
// the function that flushes and stops it. Without an endpoint it is a
// no-op provider and shutdown does nothing.
func NewProvider(c Config, service string) (trace.TracerProvider, func(context.Context) error, error) {
	if c.OTLPEndpoint == "" {
		return noop.NewTracerProvider(), func(context.Context) error { return nil }, nil
	}
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(c.OTLPEndpoint+"/v1/traces"))
	if err != nil {
		return nil, nil, fmt.Errorf("otlp exporter %s: %w", c.OTLPEndpoint, err)
	}
	var batch []sdktrace.BatchSpanProcessorOption
	if c.BatchTimeout > 0 {
		batch = append(batch, sdktrace.WithBatchTimeout(c.BatchTimeout))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, batch...),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(c.SampleRatio))),
		sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", "jetserve-"+strings.TrimPrefix(service, "jetserve-")))),
	)
	return tp, tp.Shutdown, nil
}

// Tracer returns tp's jetserve tracer, or nil — tracing off — when tp is
// nil or a no-op provider: the hops then skip their spans altogether and
// a request's trace context passes through unchanged, at the cost of a
// nil check.
func Tracer(tp trace.TracerProvider) trace.Tracer {
	if _, off := tp.(noop.TracerProvider); off || tp == nil {
		return nil
	}
	return tp.Tracer(InstrumentationName)
}

// Off is the span of a hop when tracing is off: it records nothing and
// has no span context.
func Off() trace.Span { return noop.Span{} }

// Extract returns ctx carrying the remote span context of h's
// Traceparent and Tracestate headers (ctx unchanged when there is none).
func Extract(ctx context.Context, h http.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(h))
}

// Inject sets h's Traceparent and Tracestate to ctx's span context; with
// no valid span context in ctx it leaves h as it is.
func Inject(ctx context.Context, h http.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(h))
}

// Attribute keys jetserve's spans carry.
const (
	AttrRequestID  = attribute.Key("jetserve.request_id")
	AttrApp        = attribute.Key("jetserve.application")
	AttrDeployment = attribute.Key("jetserve.deployment")
	AttrReplica    = attribute.Key("jetserve.replica")
	AttrMethod     = attribute.Key("jetserve.method")
	AttrErrorCode  = attribute.Key("jetserve.error_code")
	// AttrAttempt is a job's (a workflow run's) attempt, 1-based.
	AttrAttempt = attribute.Key("jetserve.attempt")
	// AttrOutcome is how a job attempt or a workflow step ended.
	AttrOutcome = attribute.Key("jetserve.outcome")
	// The workflow spans' (serve's wf.Step, Call, Go, Submit, Child and
	// compensations): the step's name, its position in the run, its kind
	// (step, call, undo, submit, child) and how many times it ran.
	AttrStep         = attribute.Key("jetserve.step")
	AttrStepPosition = attribute.Key("jetserve.step.position")
	AttrStepKind     = attribute.Key("jetserve.step.kind")
	AttrStepAttempts = attribute.Key("jetserve.step.attempts")
	// AttrReplayed counts the journal entries an attempt of a run loaded
	// (steps it replays without running them).
	AttrReplayed = attribute.Key("jetserve.workflow.replayed")
	// AttrWaiting is what a suspended run awaits.
	AttrWaiting = attribute.Key("jetserve.workflow.waiting")
)

// natsCarrier reads and writes the trace context of a request's NATS
// headers: the native traceparent (which nats-server's message tracing
// reads too) and the forwarded HTTP headers Http-Traceparent and
// Http-Tracestate, which the replica reads (pkg/wire). NATS headers are
// case-sensitive, so the keys are exact.
type natsCarrier nats.Header

func (c natsCarrier) Get(key string) string {
	h := nats.Header(c)
	switch key {
	case "traceparent":
		if v := h.Get(protocol.HdrHTTPPrefix + "Traceparent"); v != "" {
			return v
		}
		return h.Get(protocol.HdrTraceParent)
	case "tracestate":
		return h.Get(protocol.HdrHTTPPrefix + "Tracestate")
	}
	return ""
}

func (c natsCarrier) Set(key, value string) {
	h := nats.Header(c)
	switch key {
	case "traceparent":
		h.Set(protocol.HdrTraceParent, value)
		h.Set(protocol.HdrHTTPPrefix+"Traceparent", value)
	case "tracestate":
		h.Set(protocol.HdrHTTPPrefix+"Tracestate", value)
	}
}

func (c natsCarrier) Keys() []string { return []string{"traceparent", "tracestate"} }

// ExtractNATS is Extract for a request's NATS headers.
func ExtractNATS(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, natsCarrier(h))
}

// InjectNATS is Inject for a request's NATS headers (h must not be nil).
func InjectNATS(ctx context.Context, h nats.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagation.TraceContext{}.Inject(ctx, natsCarrier(h))
}
