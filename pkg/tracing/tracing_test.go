package tracing

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{SampleRatio: 1.5}, "tracing.sample_ratio"},
		{Config{SampleRatio: -0.1}, "tracing.sample_ratio"},
		{Config{SampleRatio: 1, BatchTimeout: -1}, "tracing.batch_timeout"},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v.Validate() = %v, want an error naming %s", tc.c, err, tc.want)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
	if _, _, err := NewProvider(Config{OTLPEndpoint: "http://127.0.0.1:1", SampleRatio: 2}, "x"); err == nil {
		t.Error("NewProvider with sample_ratio 2 succeeded")
	}
}

// TestOff: without an endpoint the provider is a no-op one and its
// tracer nil (the hops skip their spans); Off records nothing.
func TestOff(t *testing.T) {
	tp, shutdown, err := NewProvider(DefaultConfig(), "ingress")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = shutdown(context.Background()) }()
	if tr := Tracer(tp); tr != nil {
		t.Errorf("Tracer(the no-op provider) = %v, want nil (off)", tr)
	}
	if tr := Tracer(nil); tr != nil {
		t.Errorf("Tracer(nil) = %v, want nil (off)", tr)
	}
	if s := Off(); s.IsRecording() || s.SpanContext().IsValid() {
		t.Error("Off() records or has a span context")
	}
	on, stop, err := NewProvider(Config{OTLPEndpoint: "http://127.0.0.1:1", SampleRatio: 1}, "ingress")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop(context.Background()) }()
	ctx, span := Tracer(on).Start(Extract(context.Background(), http.Header{"Traceparent": {parent}}), "x")
	defer span.End()
	out := http.Header{}
	Inject(ctx, out)
	if got := trace.SpanContextFromContext(Extract(context.Background(), out)); got.TraceID() != span.SpanContext().TraceID() ||
		got.SpanID() != span.SpanContext().SpanID() || got.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("Inject wrote %v, want the span %v in the caller's trace", out, span.SpanContext())
	}
	out = http.Header{}
	Inject(context.Background(), out)
	if len(out) != 0 {
		t.Errorf("Inject without a span context set %v", out)
	}
}

// TestNATSCarrier: the NATS headers carry the context as the native
// traceparent and the forwarded Http-Traceparent, which wins when read.
func TestNATSCarrier(t *testing.T) {
	h := nats.Header{}
	ctx := Extract(context.Background(), http.Header{"Traceparent": {parent}, "Tracestate": {"v=1"}})
	InjectNATS(ctx, h)
	if h.Get("traceparent") != parent || h.Get("Http-Traceparent") != parent || h.Get("Http-Tracestate") != "v=1" {
		t.Fatalf("InjectNATS wrote %v", h)
	}
	sc := trace.SpanContextFromContext(ExtractNATS(context.Background(), h))
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || sc.SpanID().String() != "00f067aa0ba902b7" || sc.TraceState().Get("v") != "1" {
		t.Errorf("ExtractNATS = %v", sc)
	}
	native := nats.Header{"traceparent": {parent}} // a NATS client's own
	if sc := trace.SpanContextFromContext(ExtractNATS(context.Background(), native)); !sc.IsValid() {
		t.Error("ExtractNATS ignored the native traceparent")
	}
	if ctx := ExtractNATS(context.Background(), nil); trace.SpanContextFromContext(ctx).IsValid() {
		t.Error("ExtractNATS(nil) made a span context")
	}
}
