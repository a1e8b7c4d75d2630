package test

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// span is what the test reads of an exported span.
type span struct {
	service, name         string
	traceID, id, parentID string
	start                 time.Time
	attrs                 map[string]string
}

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf)
// keeping every span it is sent. Safe for concurrent use.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []span // guarded by mu
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.Error(w, "not an OTLP trace export", http.StatusNotFound)
		return
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, "decode: "+err.Error(), http.StatusBadRequest)
		return
	}
	var got []span
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				got = append(got, spanOf(service, s))
			}
		}
	}
	o.mu.Lock()
	o.spans = append(o.spans, got...)
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func spanOf(service string, s *tracepb.Span) span {
	sp := span{service: service, name: s.GetName(), traceID: hex.EncodeToString(s.GetTraceId()),
		id: hex.EncodeToString(s.GetSpanId()), parentID: hex.EncodeToString(s.GetParentSpanId()),
		start: time.Unix(0, int64(s.GetStartTimeUnixNano())), attrs: map[string]string{}}
	for _, kv := range s.GetAttributes() {
		v := kv.GetValue()
		if v.GetStringValue() != "" {
			sp.attrs[kv.GetKey()] = v.GetStringValue()
		} else {
			sp.attrs[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		}
	}
	return sp
}

// trace returns the spans of traceID.
func (o *otlpReceiver) trace(traceID string) []span {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []span
	for _, s := range o.spans {
		if s.traceID == traceID {
			out = append(out, s)
		}
	}
	return out
}

// chainOf follows parent links from the span whose parent is parentID:
// the names of the spans in order, each the only child of the one before.
func chainOf(spans []span, parentID string) ([]span, error) {
	var out []span
	for {
		var kids []span
		for _, s := range spans {
			if s.parentID == parentID {
				kids = append(kids, s)
			}
		}
		switch len(kids) {
		case 0:
			return out, nil
		case 1:
			out = append(out, kids[0])
			parentID = kids[0].id
		default:
			return out, fmt.Errorf("span %s has %d children, want one", parentID, len(kids))
		}
	}
}

// TestTraceFollowsARequest runs the fleet exporting to an in-process
// OTLP/HTTP receiver and follows one request by its trace id: the client's
// traceparent → the ingress → routing → Front's replica → routing (its
// handle) → Middle's replica → routing → Back's replica, each span the
// child of the one before, the replicas' carrying the client's request
// id; and a job submitted with a traceparent runs in that trace, as the
// child of the ingress's span.
func TestTraceFollowsARequest(t *testing.T) {
	rcv := &otlpReceiver{}
	srv := httptest.NewServer(rcv)
	t.Cleanup(srv.Close)
	f := startFleetWith(t, "testdata/tracing-fleet.yaml", fleetOptions{otlpEndpoint: srv.URL})
	f.waitFor(t, 90*time.Second, "the chain", func() error {
		_, err := f.do(http.MethodPost, f.ingress+"/chain/", "warm", nil)
		return err
	})

	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	b, err := f.do(http.MethodPost, f.ingress+"/chain/x", "hello", map[string]string{
		"Traceparent": "00-" + traceID + "-" + clientSpan + "-01", "X-Request-Id": "trace-rid-1"})
	if err != nil || b != "hello" {
		t.Fatalf("POST /chain/x = %q, %v; want hello", b, err)
	}
	want := []struct{ service, name string }{
		{"jetserve-ingress", "HTTP POST /chain"},
		{"jetserve-ingress", "route chain/Front"},
		{"jetserve-worker", "serve chain/Front"},
		{"jetserve-worker", "route chain/Middle"},
		{"jetserve-worker", "serve chain/Middle"},
		{"jetserve-worker", "route chain/Back"},
		{"jetserve-worker", "serve chain/Back"},
	}
	f.waitFor(t, 30*time.Second, "the request's seven spans, one chain from the client's span", func() error {
		chain, err := chainOf(rcv.trace(traceID), clientSpan)
		if err != nil {
			return err
		}
		var got []string
		for _, s := range chain {
			got = append(got, s.service+": "+s.name)
		}
		if len(chain) != len(want) {
			return fmt.Errorf("chain of spans %q, want %d", got, len(want))
		}
		for i, w := range want {
			if chain[i].service != w.service || chain[i].name != w.name {
				return fmt.Errorf("chain of spans %q, want %s: %s at %d", got, w.service, w.name, i)
			}
			if strings.HasPrefix(w.name, "serve ") && chain[i].attrs["jetserve.request_id"] != "trace-rid-1" {
				return fmt.Errorf("span %s has request id %q, want trace-rid-1", w.name, chain[i].attrs["jetserve.request_id"])
			}
		}
		return nil
	})

	// A job: its attempt is the child of the span of the request that
	// submitted it.
	const jobTrace = "5bf92f3577b34da6a3ce929d0e0e4737"
	if _, err := f.do(http.MethodPost, f.ingress+"/text/train?request_id=traced&num_epochs=1", "",
		map[string]string{"Traceparent": "00-" + jobTrace + "-" + clientSpan + "-01"}); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, 60*time.Second, "the job's attempt in the submit's trace", func() error {
		spans := rcv.trace(jobTrace)
		var ingress, job *span
		for i, s := range spans {
			switch {
			case s.service == "jetserve-ingress" && strings.HasPrefix(s.name, "HTTP POST"):
				ingress = &spans[i]
			case s.name == "job text/train":
				job = &spans[i]
			}
		}
		switch {
		case ingress == nil || job == nil:
			return errors.New("no ingress or job span yet")
		case ingress.parentID != clientSpan:
			return fmt.Errorf("the submit's span has parent %s, want the client's %s", ingress.parentID, clientSpan)
		case job.parentID != ingress.id:
			return fmt.Errorf("the job's span has parent %s, want the submit's %s", job.parentID, ingress.id)
		case job.attrs["jetserve.request_id"] != "traced":
			return fmt.Errorf("the job's span has request id %q, want traced", job.attrs["jetserve.request_id"])
		}
		return nil
	})

	followWorkflow(t, f, rcv, clientSpan)
}

// followWorkflow follows two runs of the trip booking workflow through
// their steps by trace id. The first books, suspends awaiting a signal,
// and is resumed by it: two attempts, each the child of the start's span;
// the first has a span per step (hotel, car, flight: each its child, with
// its position and outcome), the second replays them without a span and
// ends the run. The second fails at the flight: its compensations have
// spans too, after the failed step's.
func followWorkflow(t *testing.T, f *fleet, rcv *otlpReceiver, clientSpan string) {
	t.Helper()
	const okTrace, failTrace = "6bf92f3577b34da6a3ce929d0e0e4738", "7bf92f3577b34da6a3ce929d0e0e4739"
	start := func(trace, id, body string) {
		if _, err := f.do(http.MethodPost, f.ingress+"/trips/book?request_id="+id, body,
			map[string]string{"Traceparent": "00-" + trace + "-" + clientSpan + "-01"}); err != nil {
			t.Fatal(err)
		}
	}
	waitStatus := func(id, status string) {
		f.waitFor(t, 60*time.Second, "run "+id+" "+status, func() error {
			b, err := f.do(http.MethodGet, f.ingress+"/trips/book/status?request_id="+id, "", nil)
			if err == nil && !strings.Contains(b, `"`+status+`"`) {
				err = errors.New(b)
			}
			return err
		})
	}
	start(okTrace, "wf-ok", `{"trip_id": "wf-ok", "await_confirm": true}`)
	waitStatus("wf-ok", "SUSPENDED")
	if _, err := f.do(http.MethodPost, f.ingress+"/trips/book/signal?request_id=wf-ok&name=confirm&key=k1", `{"by": "ann"}`, nil); err != nil {
		t.Fatal(err)
	}
	waitStatus("wf-ok", "SUCCEEDED")
	start(failTrace, "wf-fail", `{"trip_id": "wf-fail", "fail_flight": true}`)
	waitStatus("wf-fail", "FAILED")

	f.waitFor(t, 30*time.Second, "the run's attempts and steps in the start's trace", func() error {
		return checkRunTrace(rcv.trace(okTrace), clientSpan, [][]string{
			{"suspended", "step book-hotel ok", "step book-car ok", "step book-flight ok"},
			{"succeeded"},
		})
	})
	f.waitFor(t, 30*time.Second, "the failed run's steps and compensations in its trace", func() error {
		return checkRunTrace(rcv.trace(failTrace), clientSpan, [][]string{
			{"failed", "step book-hotel ok", "step book-car ok", "step book-flight error", "undo cancel-car ok", "undo cancel-hotel ok"},
		})
	})
}

// checkRunTrace checks the spans of one workflow run's trace: the
// ingress's span, the child of the client's; one "job trips/book" span
// per attempt, its children, in order; and under each attempt the spans
// of its steps. want has per attempt its outcome then "<span name>
// <outcome>" per step span, in start order.
func checkRunTrace(spans []span, clientSpan string, want [][]string) error {
	var ingress *span
	for i, s := range spans {
		if s.service == "jetserve-ingress" && strings.HasPrefix(s.name, "HTTP POST") {
			ingress = &spans[i]
		}
	}
	if ingress == nil || ingress.parentID != clientSpan {
		return errors.New("no ingress span, the child of the client's, yet")
	}
	var attempts []span
	for _, s := range spans {
		if s.name == "job trips/book" && s.parentID == ingress.id {
			attempts = append(attempts, s)
		}
	}
	if len(attempts) != len(want) {
		return fmt.Errorf("%d attempt spans under the start's, want %d", len(attempts), len(want))
	}
	slices.SortFunc(attempts, func(a, b span) int { return strings.Compare(a.attrs["jetserve.attempt"], b.attrs["jetserve.attempt"]) })
	for i, a := range attempts {
		if got := a.attrs["jetserve.outcome"]; got != want[i][0] {
			return fmt.Errorf("attempt %s ended %q, want %q", a.attrs["jetserve.attempt"], got, want[i][0])
		}
		if i > 0 && a.attrs["jetserve.workflow.replayed"] == "0" {
			return fmt.Errorf("attempt %s replayed nothing, want the journal of the attempts before", a.attrs["jetserve.attempt"])
		}
		var steps []span
		for _, s := range spans {
			if s.parentID == a.id {
				steps = append(steps, s)
			}
		}
		slices.SortFunc(steps, func(x, y span) int { return x.start.Compare(y.start) })
		var got []string
		for _, s := range steps {
			got = append(got, s.name+" "+s.attrs["jetserve.outcome"])
			if s.attrs["jetserve.request_id"] != a.attrs["jetserve.request_id"] || s.attrs["jetserve.step.position"] == "" {
				return fmt.Errorf("span %q has run id %q and position %q, want %q and one", s.name,
					s.attrs["jetserve.request_id"], s.attrs["jetserve.step.position"], a.attrs["jetserve.request_id"])
			}
		}
		if !slices.Equal(got, want[i][1:]) {
			return fmt.Errorf("attempt %s has the step spans %q, want %q", a.attrs["jetserve.attempt"], got, want[i][1:])
		}
	}
	return nil
}
