package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provision/provisiontest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/services/ingress/internal/jobsapi"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// jobsFleet is an ingress on a real embedded JetStream with the app "ml"
// (route /ml, deployment Trainer) whose async method "fit" is configured
// in the serve config (max_queued 2, max_running 1, required epochs) and
// whose method "embed" only the SDK defaults its handler declares (in the
// Handlers bucket, as a worker records them; no worker runs here);
// the app "echo" is served by the fake router (sync requests).
type jobsFleet struct {
	*fleet
	ns    *server.Server
	js    jetstream.JetStream
	names jobs.Names
}

func startJobsFleet(t *testing.T) *jobsFleet {
	t.Helper()
	return startJobsFleetWith(t, true)
}

// startJobsFleetWith is startJobsFleet, with the scheduler's creation of
// the job streams (provisiontest) or without.
func startJobsFleetWith(t *testing.T, provisioned bool) *jobsFleet {
	t.Helper()
	tf := natstest.NewFleet(t)
	ns, nc, names, js, b := tf.NS, tf.NC, tf.Names, tf.JS, tf.Buckets
	natstest.PutConfigText(t, b, `applications:
- {name: echo, route_prefix: /echo, ingress: E, deployments: [{name: E, handler: h}]}
- name: ml
  route_prefix: /ml
  ingress: Front
  deployments:
  - {name: Front, handler: front}
  - name: Trainer
    handler: trainer
    async_methods:
    - {name: fit, max_queued: 2, max_running: 1, required_args: [epochs], idempotency_key: job}
`)
	info, _ := json.Marshal(protocol.HandlerInfo{Handler: "trainer", Worker: "w1",
		Async: []config.AsyncMethod{{Name: "fit", MaxRunning: 7}, {Name: "embed", MaxQueued: 50}}})
	if _, err := b.Handlers.Put(context.Background(), protocol.HandlerKey("trainer"), info); err != nil {
		t.Fatal(err)
	}
	// The scheduler creates the job streams; the ingress binds to them.
	if provisioned {
		provisiontest.Start(t, nc, tf.JS, jobs.Names{Names: names}, b)
	}
	gate := make(chan struct{})
	fakeRouter(t, nc, names, gate)
	cfg := DefaultConfig()
	cfg.Router = RouterService // the fake router answers on the route subjects
	cfg.MaxBodyBytes = 1024
	f := &fleet{base: runIngress(t, ns, cfg), nc: nc, gate: gate}
	return &jobsFleet{fleet: f, ns: ns, js: js, names: jobs.Names{Names: names}}
}

func decode[T any](t *testing.T, body string) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("decode %q: %v", body, err)
	}
	return v
}

// Without the scheduler, a job endpoint waits jobsapi.ProvisionWait for
// the method's streams, then answers 503 saying they are not created yet,
// with Retry-After; the ingress creates nothing.
func TestJobQueueNotCreatedYet(t *testing.T) {
	f := startJobsFleetWith(t, false)
	start := time.Now()
	code, h, body := f.do(t, "POST", "/ml/fit?job=n1&epochs=1", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "not created yet") || h.Get("Retry-After") == "" {
		t.Fatalf("POST /ml/fit without the scheduler = %d %s (Retry-After %q), want 503 not created yet with Retry-After",
			code, body, h.Get("Retry-After"))
	}
	if took := time.Since(start); took < jobsapi.ProvisionWait {
		t.Errorf("answered after %v, want it to wait %v for the scheduler", took, jobsapi.ProvisionWait)
	}
	if _, err := f.js.Stream(context.Background(), f.names.Stream("ml", "fit")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("the ingress created the job stream (%v)", err)
	}
}

func TestJobEndpoints(t *testing.T) {
	f := startJobsFleet(t)
	type submitted struct {
		RequestID string      `json:"request_id"`
		Status    jobs.Status `json:"status"`
	}

	t.Run("submit merges query and body, body wins; the id is the idempotency key", func(t *testing.T) {
		code, _, body := f.do(t, "POST", "/ml/fit?job=a1&epochs=3&lr=0.1", `{"epochs":5,"data":{"n":1}}`)
		if code != 202 {
			t.Fatalf("POST /ml/fit = %d %s, want 202", code, body)
		}
		if s := decode[submitted](t, body); s.RequestID != "a1" || s.Status != jobs.Queued {
			t.Fatalf("POST /ml/fit = %s, want a1 QUEUED", body)
		}
		code, _, body = f.do(t, "GET", "/ml/fit/status?request_id=a1", "")
		rec := decode[jobs.Record](t, body)
		if code != 200 || rec.Status != jobs.Queued || rec.Deployment != "Trainer" {
			t.Fatalf("GET status = %d %s, want 200 QUEUED of Trainer", code, body)
		}
		args := decode[map[string]json.RawMessage](t, string(rec.Args))
		if string(args["epochs"]) != "5" || string(args["lr"]) != `"0.1"` || string(args["data"]) != `{"n":1}` {
			t.Errorf("stored args = %s, want epochs 5 (body), lr \"0.1\" (query), data", rec.Args)
		}
	})
	t.Run("a duplicate submit returns the existing job with 200", func(t *testing.T) {
		code, _, body := f.do(t, "POST", "/ml/fit?job=a1&epochs=9", "")
		if rec := decode[jobs.Record](t, body); code != 200 || rec.ID != "a1" || string(rec.Args) == "" {
			t.Fatalf("POST again = %d %s, want 200 with the record of a1", code, body)
		}
	})
	t.Run("result while queued is 202 with the status", func(t *testing.T) {
		code, h, body := f.do(t, "GET", "/ml/fit/result?request_id=a1", "")
		if rec := decode[jobs.Record](t, body); code != 202 || rec.Status != jobs.Queued || h.Get("Retry-After") == "" {
			t.Fatalf("GET result = %d %s, want 202 QUEUED with Retry-After", code, body)
		}
	})
	t.Run("a generated id", func(t *testing.T) {
		code, _, body := f.do(t, "POST", "/ml/fit", `{"epochs":1}`)
		if s := decode[submitted](t, body); code != 202 || s.RequestID == "" {
			t.Fatalf("POST without id = %d %s, want 202 with a generated id", code, body)
		}
	})
	t.Run("queue full is 429 with Retry-After and stores nothing", func(t *testing.T) {
		// max_queued 2 + max_running 1: the third fits, the fourth not.
		if code, _, body := f.do(t, "POST", "/ml/fit?job=a3&epochs=1", ""); code != 202 {
			t.Fatalf("third submit = %d %s, want 202", code, body)
		}
		code, h, body := f.do(t, "POST", "/ml/fit?job=a4&epochs=1", "")
		if code != 429 || h.Get("Retry-After") == "" || !strings.Contains(body, "queue_full") {
			t.Fatalf("fourth submit = %d %v %s, want 429 queue_full with Retry-After", code, h, body)
		}
		if code, _, body := f.do(t, "GET", "/ml/fit/status?request_id=a4", ""); code != 404 {
			t.Fatalf("status of the refused job = %d %s, want 404", code, body)
		}
	})
	t.Run("cancel a queued job; its result says so", func(t *testing.T) {
		code, _, body := f.do(t, "POST", "/ml/fit/cancel?request_id=a3", "")
		if rec := decode[jobs.Record](t, body); code != 200 || rec.Status != jobs.Cancelled {
			t.Fatalf("cancel = %d %s, want 200 CANCELLED", code, body)
		}
		code, _, body = f.do(t, "GET", "/ml/fit/result?request_id=a3", "")
		if code != 409 || !strings.Contains(body, "CANCELLED") {
			t.Fatalf("result of cancelled = %d %s, want 409 CANCELLED", code, body)
		}
	})
	t.Run("list is newest first, filtered and paged", func(t *testing.T) {
		code, _, body := f.do(t, "GET", "/ml/fit/list", "")
		type page struct {
			Requests   []jobs.Record `json:"requests"`
			NextCursor string        `json:"next_cursor"`
		}
		p := decode[page](t, body)
		if code != 200 || len(p.Requests) != 3 || p.Requests[0].ID != "a3" || p.Requests[2].ID != "a1" {
			t.Fatalf("list = %d %s, want a3, (generated), a1", code, body)
		}
		_, _, body = f.do(t, "GET", "/ml/fit/list?filter_status=cancelled", "")
		if p := decode[page](t, body); len(p.Requests) != 1 || p.Requests[0].ID != "a3" {
			t.Errorf("list CANCELLED = %s, want a3", body)
		}
		_, _, body = f.do(t, "GET", "/ml/fit/list?limit=2", "")
		p = decode[page](t, body)
		if len(p.Requests) != 2 || p.NextCursor == "" {
			t.Fatalf("list limit 2 = %s, want 2 and a cursor", body)
		}
		_, _, body = f.do(t, "GET", "/ml/fit/list?limit=2&cursor="+p.NextCursor, "")
		if p := decode[page](t, body); len(p.Requests) != 1 || p.Requests[0].ID != "a1" {
			t.Errorf("list page 2 = %s, want a1", body)
		}
	})
	t.Run("a method only the SDK declares is served with its defaults", func(t *testing.T) {
		code, _, body := f.do(t, "POST", "/ml/embed?request_id=e1", "")
		if code != 202 {
			t.Fatalf("POST /ml/embed = %d %s, want 202", code, body)
		}
	})
	t.Run("sync requests still reach the ingress deployment", func(t *testing.T) {
		code, _, body := f.do(t, "POST", "/echo/fit", "x")
		if code != 201 || !strings.Contains(body, `"path":"/fit"`) {
			t.Fatalf("POST /echo/fit = %d %s, want the echo", code, body)
		}
	})
	bad := []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"unknown request id", "GET", "/ml/fit/status?request_id=nope", "", 404, "not_found"},
		{"unknown request id result", "GET", "/ml/fit/result?request_id=nope", "", 404, "not_found"},
		{"unknown request id cancel", "POST", "/ml/fit/cancel?request_id=nope", "", 404, "not_found"},
		{"missing request_id", "GET", "/ml/fit/status", "", 400, "request_id is required"},
		{"missing required argument", "POST", "/ml/fit?job=b1", `{"x":1}`, 400, "epochs"},
		{"malformed JSON", "POST", "/ml/fit?job=b2&epochs=1", `{"epochs":`, 400, "malformed JSON"},
		{"JSON not an object", "POST", "/ml/fit?job=b3&epochs=1", `[1]`, 400, "malformed JSON"},
		{"bad request id", "POST", "/ml/fit?job=a.b&epochs=1", "", 400, "request id"},
		{"oversized body", "POST", "/ml/fit?job=b4", `{"epochs":1,"pad":"` + strings.Repeat("x", 2048) + `"}`, 413, "body_too_large"},
		{"bad filter", "GET", "/ml/fit/list?filter_status=DONE", "", 400, "filter_status"},
		{"bad limit", "GET", "/ml/fit/list?limit=0", "", 400, "limit"},
		{"wrong HTTP method", "GET", "/ml/fit", "", 405, "use POST"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := f.do(t, tc.method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(body, tc.want) {
				t.Fatalf("%s %s = %d %s, want %d containing %q", tc.method, tc.path, code, body, tc.code, tc.want)
			}
		})
	}
	t.Run("the effective config merges the serve config over the SDK defaults", func(t *testing.T) {
		// fit: max_running 1 from the config, not the SDK's 7 → consumer MaxAckPending 1.
		s, err := f.js.Stream(context.Background(), f.names.Stream("ml", "fit"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.Consumer(context.Background(), jobs.Consumer)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.CachedInfo().Config.MaxAckPending; got != 1 {
			t.Errorf("fit consumer MaxAckPending = %d, want 1 (max_running from the config)", got)
		}
		s, err = f.js.Stream(context.Background(), f.names.Stream("ml", "embed"))
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.MaxMsgs; got != 50+config.DefaultMaxRunning {
			t.Errorf("embed stream MaxMsgs = %d, want %d (SDK max_queued + default max_running)", got, 50+config.DefaultMaxRunning)
		}
	})
}

// TestJobSubmitsConcurrent: 40 concurrent submits over 10 ids through
// HTTP make exactly 10 jobs; each id is created once (202) and answered
// 200 otherwise.
func TestJobSubmitsConcurrent(t *testing.T) {
	f := startJobsFleet(t)
	var mu sync.Mutex
	created := map[string]int{}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			id := fmt.Sprintf("c%d", i%10)
			req, _ := http.NewRequest("POST", f.base+"/ml/embed?request_id="+id, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			switch resp.StatusCode {
			case 202:
				created[id]++
			case 200:
			default:
				t.Errorf("submit %s = %d", id, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if len(created) != 10 {
		t.Errorf("created %d ids, want 10: %v", len(created), created)
	}
	for id, n := range created {
		if n != 1 {
			t.Errorf("id %s created %d times, want once", id, n)
		}
	}
}

// TestJobSubmitWhileTheStreamCannotAnswer: a submit JetStream cannot
// store this moment (here no stream answers the job's subject at all, as
// while a lost node's stream elects a leader) is 503 unavailable with
// Retry-After, naming the method; nothing is stored.
func TestJobSubmitWhileTheStreamCannotAnswer(t *testing.T) {
	f := startJobsFleet(t)
	if code, _, body := f.do(t, "POST", "/ml/fit?job=u1&epochs=1", ""); code != 202 {
		t.Fatalf("first submit = %d %s, want 202", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.js.DeleteStream(ctx, f.names.Stream("ml", "fit")); err != nil {
		t.Fatal(err)
	}
	code, h, body := f.do(t, "POST", "/ml/fit?job=u2&epochs=1", "")
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, `"unavailable"`) || !strings.Contains(body, "fit") {
		t.Errorf("submit without a stream = %d %v %s, want 503 unavailable naming fit, with Retry-After", code, h, body)
	}
}

// TestWorkflowEndpoints: a workflow (an async method of kind workflow,
// run here by a real jobs.Runner) is started, signalled and inspected
// through the ingress; signal and history exist for workflows only, and
// bad signals get clear errors.
func TestWorkflowEndpoints(t *testing.T) {
	f := startJobsFleet(t)
	info, _ := json.Marshal(protocol.HandlerInfo{Handler: "trainer", Worker: "w1",
		Async: []config.AsyncMethod{{Name: "fit", MaxRunning: 7}, {Name: "approve", Workflow: true}}})
	kv, err := f.js.KeyValue(context.Background(), f.names.BucketHandlers())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(context.Background(), protocol.HandlerKey("trainer"), info); err != nil {
		t.Fatal(err)
	}
	approve := serve.NewWorkflow("approve", func(wf serve.Workflow, in struct{ Amount int }) (string, error) {
		if err := wf.Step("check", func(serve.StepContext) (any, error) { return in.Amount < 100, nil }).Err(); err != nil {
			return "", err
		}
		var ok struct{ By string }
		if err := wf.Await("ok", &ok); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d approved by %s", in.Amount, ok.By), nil
	})
	r := jobs.NewRunner(f.nc, f.js, f.names, jobs.RunnerConfig{App: "ml", Deployment: "Trainer", Worker: "w1", Replica: "r1", Slots: 4,
		Methods: []config.AsyncMethod{{Name: "approve", Workflow: true}}, Handler: serve.WorkflowJobs(nil, []*serve.WorkflowDef{approve}),
		Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); r.Abort(); <-done })

	var code int
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if code, _, body = f.do(t, "POST", "/ml/approve?request_id=w1", `{"Amount":42}`); code == 202 || code == 200 {
			break // the ingress saw the workflow in the Handlers bucket
		}
	}
	if code != 202 {
		t.Fatalf("POST /ml/approve = %d %s, want 202", code, body)
	}
	var rec jobs.Record
	for deadline := time.Now().Add(10 * time.Second); rec.Status != jobs.Suspended && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		_, _, body = f.do(t, "GET", "/ml/approve/status?request_id=w1", "")
		rec = decode[jobs.Record](t, body)
	}
	if rec.Status != jobs.Suspended || len(rec.Waiting) != 1 || rec.Waiting[0] != "signal:ok" {
		t.Fatalf("status = %s, want SUSPENDED waiting for signal:ok", body)
	}
	if code, _, body := f.do(t, "GET", "/ml/approve/list?filter_status=SUSPENDED", ""); code != 200 || !strings.Contains(body, `"request_id":"w1"`) {
		t.Errorf("GET list?filter_status=SUSPENDED = %d %s, want 200 listing w1", code, body)
	}
	for _, tc := range []struct {
		name, path, body string
		code             int
		errCode          protocol.ErrorCode
	}{
		{"no signal name", "/ml/approve/signal?request_id=w1", `{}`, 400, protocol.ErrBadRequest},
		{"payload not JSON", "/ml/approve/signal?request_id=w1&name=ok", `{by`, 400, protocol.ErrBadRequest},
		{"unknown run", "/ml/approve/signal?request_id=nope&name=ok", `{}`, 404, protocol.ErrNotFound},
	} {
		if code, h, body := f.do(t, "POST", tc.path, tc.body); code != tc.code || h.Get("X-Jetserve-Error") != string(tc.errCode) {
			t.Errorf("%s: POST %s = %d %s, want %d %s", tc.name, tc.path, code, body, tc.code, tc.errCode)
		}
	}
	if code, _, body := f.do(t, "GET", "/ml/approve/signal?request_id=w1&name=ok", ""); code != 405 {
		t.Errorf("GET signal = %d %s, want 405", code, body)
	}
	code, _, body = f.do(t, "POST", "/ml/approve/signal?request_id=w1&name=ok&key=k1", `{"By":"ann"}`)
	if code != 202 || !strings.Contains(body, `"sent":true`) {
		t.Fatalf("POST signal = %d %s, want 202 sent", code, body)
	}
	if code, _, body := f.do(t, "POST", "/ml/approve/signal?request_id=w1&name=ok&key=k1", `{"By":"bob"}`); code != 202 || !strings.Contains(body, `"sent":false`) {
		t.Errorf("POST signal again = %d %s, want 202 not sent", code, body)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if code, _, body = f.do(t, "GET", "/ml/approve/result?request_id=w1", ""); code != 202 {
			break
		}
	}
	if code != 200 || body != `"42 approved by ann"` {
		t.Fatalf("GET result = %d %s, want 200 \"42 approved by ann\"", code, body)
	}
	code, _, body = f.do(t, "GET", "/ml/approve/history?request_id=w1", "")
	hist := decode[struct {
		Status  jobs.Status          `json:"status"`
		Entries []serve.JournalEntry `json:"entries"`
	}](t, body)
	if code != 200 || hist.Status != jobs.Succeeded || len(hist.Entries) < 2 || hist.Entries[0].Name != "check" ||
		hist.Entries[len(hist.Entries)-1].Kind != serve.KindSignal {
		t.Errorf("GET history = %d %s, want the check step and the signal", code, body)
	}
	if code, h, body := f.do(t, "POST", "/ml/approve/signal?request_id=w1&name=ok&key=k2", `{}`); code != 409 || h.Get("X-Jetserve-Error") != string(protocol.ErrRunFinished) {
		t.Errorf("signal to a finished run = %d %s, want 409 run_finished", code, body)
	}
}
