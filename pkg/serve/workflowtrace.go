package serve

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/jetserve/jetserve/pkg/tracing"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Workflow spans. A run's attempt runs in its backend's attempt span (the
// fleet's "job <app>/<method>", the child of the request that started the
// run): each step that runs — Step, Go, Call, a compensation — and each
// Submit or Child gets a span, its child, made by that span's own
// TracerProvider (none is passed around: tracing off, or a trace not
// sampled, leaves the attempt's span non-recording and nothing is done
// here). A journaled step replays without a span: the attempt's span
// counts what it replayed (AttrReplayed) and says how the attempt ended
// (AttrOutcome: succeeded, failed, suspended, cancelled, fenced, error).
// A step's span is the parent of what the step calls: its handle calls
// (wf.Call's too) inherit its trace context, and a submitted job or child
// run is traced as the child of the Submit or Child span.

// Span names of the workflow's calls, by the kind a span attribute names.
const (
	spanStep   = "step"
	spanCall   = "call"
	spanUndo   = "undo"
	spanSubmit = "submit"
	spanChild  = "child"
)

// startSpan starts the span of one workflow call at position pos (kind:
// spanStep…) as a child of ctx's span, and returns ctx carrying it — and
// carrying it as the trace context of the request being served, so that
// handle calls made with ctx are its children. With ctx's span not
// recording it returns ctx and a non-recording span.
func (r *wfRun) startSpan(ctx context.Context, kind, name string, pos int) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, tracing.Off()
	}
	ctx, span := parent.TracerProvider().Tracer(tracing.InstrumentationName).Start(ctx, kind+" "+name,
		trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(
			tracing.AttrRequestID.String(r.id), tracing.AttrStep.String(name),
			tracing.AttrStepPosition.Int(pos), tracing.AttrStepKind.String(kind)))
	req := &Request{Header: http.Header{}}
	if in, ok := RequestFromContext(ctx); ok {
		req.RequestID = in.RequestID
	}
	tracing.Inject(ctx, req.Header)
	return ContextWithRequest(ctx, req), span
}

// endStepSpan ends a step's span with its journal entry's outcome.
func endStepSpan(span trace.Span, e JournalEntry) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(tracing.AttrStepAttempts.Int(e.Attempts))
	if e.Error != "" {
		span.SetAttributes(tracing.AttrOutcome.String("error"))
		if e.Code != "" {
			span.SetAttributes(tracing.AttrErrorCode.String(string(e.Code)))
		}
		span.SetStatus(codes.Error, e.Error)
	} else {
		span.SetAttributes(tracing.AttrOutcome.String("ok"))
	}
	span.End()
}

// traceAttempt puts what an attempt of the run did on the attempt's span
// (ctx's): how many journal entries it replayed and how it ended.
func traceAttempt(ctx context.Context, replayed int, err error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(tracing.AttrReplayed.Int(replayed), tracing.AttrOutcome.String(attemptOutcome(ctx, err)))
	var se *SuspendError
	if errors.As(err, &se) {
		span.SetAttributes(tracing.AttrWaiting.String(strings.Join(se.Waiting, " ")))
	}
}

// attemptOutcome names how an attempt ended (runWorkflow's error).
func attemptOutcome(ctx context.Context, err error) string {
	var se *SuspendError
	var e *Error
	switch {
	case err == nil:
		return "succeeded"
	case errors.As(err, &se):
		return "suspended"
	case errors.Is(err, ErrJournalFenced):
		return "fenced"
	case errors.Is(context.Cause(ctx), ErrCancelled):
		return "cancelled"
	case errors.As(err, &e) && e.Status >= 400 && e.Status < 500:
		return "failed"
	}
	return "error" // the attempt is retried
}

// errText is err's text ("" for nil).
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
