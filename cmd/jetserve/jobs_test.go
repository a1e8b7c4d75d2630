package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// jobsStub answers like the ingress's job endpoints for /text/train: job
// "done" has succeeded, "bad" failed, "run" runs and finishes after three
// status polls; submits of id "full" are refused 429. It is a fake HTTP
// peer; the e2e suite runs the CLI against the real ingress.
type jobsStub struct {
	mu    sync.Mutex
	polls int      // guarded by mu
	seen  []string // guarded by mu: method, path and query of each request
}

func (s *jobsStub) handler() http.Handler {
	mux := http.NewServeMux()
	rec := func(id, status string, extra string) string {
		return `{"request_id":"` + id + `","status":"` + status + `","attempts":1,"max_attempts":3` + extra + `}`
	}
	notFound := func(w http.ResponseWriter, id string) {
		w.WriteHeader(404)
		_, _ = io.WriteString(w, `{"error":"not_found","message":"no job `+id+`"}`)
	}
	mux.HandleFunc("POST /text/train", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.seen = append(s.seen, "POST "+r.URL.RawQuery+" "+string(b))
		s.mu.Unlock()
		switch id := r.URL.Query().Get("request_id"); id {
		case "full":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(429)
			_, _ = io.WriteString(w, `{"error":"job_queue_full","message":"job queue full"}`)
		case "done":
			_, _ = io.WriteString(w, rec("done", "SUCCEEDED", ""))
		case "":
			w.WriteHeader(202)
			_, _ = io.WriteString(w, `{"request_id":"gen1","status":"QUEUED"}`)
		default:
			w.WriteHeader(202)
			_, _ = io.WriteString(w, `{"request_id":"`+id+`","status":"QUEUED"}`)
		}
	})
	mux.HandleFunc("GET /text/train/status", func(w http.ResponseWriter, r *http.Request) {
		switch id := r.URL.Query().Get("request_id"); id {
		case "done":
			_, _ = io.WriteString(w, rec(id, "SUCCEEDED", `,"progress":1,"message":"epoch 5/5"`))
		case "bad":
			_, _ = io.WriteString(w, rec(id, "FAILED", `,"error":"boom"`))
		case "run":
			s.mu.Lock()
			s.polls++
			n := s.polls
			s.mu.Unlock()
			switch {
			case n < 2:
				_, _ = io.WriteString(w, rec(id, "QUEUED", ""))
			case n < 3:
				_, _ = io.WriteString(w, rec(id, "RUNNING", `,"progress":0.5,"message":"epoch 1/2"`))
			default:
				_, _ = io.WriteString(w, rec(id, "SUCCEEDED", `,"progress":1,"message":"epoch 2/2"`))
			}
		default:
			notFound(w, id)
		}
	})
	mux.HandleFunc("GET /text/train/result", func(w http.ResponseWriter, r *http.Request) {
		switch id := r.URL.Query().Get("request_id"); id {
		case "done":
			_, _ = io.WriteString(w, `{"epochs":5,"heldout_accuracy":0.9}`)
		case "run":
			w.WriteHeader(202)
			_, _ = io.WriteString(w, rec(id, "RUNNING", ""))
		case "bad":
			w.WriteHeader(409)
			_, _ = io.WriteString(w, `{"error":"job_failed","message":"job bad FAILED: boom"}`)
		default:
			notFound(w, id)
		}
	})
	mux.HandleFunc("POST /text/train/cancel", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("request_id")
		if id != "run" {
			notFound(w, id)
			return
		}
		_, _ = io.WriteString(w, rec(id, "RUNNING", `,"cancel_requested":true`))
	})
	mux.HandleFunc("GET /text/train/list", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, "LIST "+r.URL.RawQuery)
		s.mu.Unlock()
		_, _ = io.WriteString(w, `{"requests":[`+rec("b", "RUNNING", `,"progress":0.25`)+`,`+rec("a", "SUCCEEDED", "")+`],"next_cursor":"c2"}`)
	})
	return mux
}

func TestJobsCLI(t *testing.T) {
	stub := &jobsStub{}
	srv := httptest.NewServer(stub.handler())
	t.Cleanup(srv.Close)
	env := []string{"JETSERVE_URL=" + srv.URL}
	tests := []cliCase{
		{"submit", []string{"jobs", "submit", "text/train", "num_epochs=5", "--id", "j1"}, "", []string{"j1 QUEUED"}, ""},
		{"submit generated id", []string{"jobs", "submit", "/text/train/", "--body", `{"num_epochs":5}`}, "", []string{"gen1 QUEUED"}, ""},
		{"submit body from stdin, json", []string{"jobs", "submit", "text/train", "--body", "-", "-o", "json"}, `{"num_epochs":1}`, []string{`"request_id": "gen1"`}, ""},
		{"submit existing", []string{"jobs", "submit", "text/train", "--id", "done"}, "", []string{"done already exists: SUCCEEDED"}, ""},
		{"submit queue full", []string{"jobs", "submit", "text/train", "--id", "full"}, "", nil, "429 job queue full (retry after 1s)"},
		{"submit bad arg", []string{"jobs", "submit", "text/train", "num_epochs"}, "", nil, "want KEY=VALUE"},
		{"submit bad body", []string{"jobs", "submit", "text/train", "--body", "{"}, "", nil, "not valid JSON"},
		{"status", []string{"jobs", "status", "text/train", "done"}, "", []string{"SUCCEEDED", "100% epoch 5/5", "1/3"}, ""},
		{"status json", []string{"jobs", "status", "text/train", "done", "-o", "json"}, "", []string{`"status": "SUCCEEDED"`}, ""},
		{"status unknown", []string{"jobs", "status", "text/train", "nope"}, "", nil, "404 no job nope"},
		{"status without id", []string{"jobs", "status", "text/train"}, "", nil, "usage"},
		{"result", []string{"jobs", "result", "text/train", "done"}, "", []string{`"heldout_accuracy": 0.9`}, ""},
		{"result pending", []string{"jobs", "result", "text/train", "run"}, "", nil, "not finished: RUNNING"},
		{"result failed", []string{"jobs", "result", "text/train", "bad"}, "", nil, "409 job bad FAILED: boom"},
		{"cancel", []string{"jobs", "cancel", "text/train", "run"}, "", []string{"RUNNING (cancel requested)"}, ""},
		{"cancel unknown", []string{"jobs", "cancel", "text/train", "nope"}, "", nil, "404"},
		{"list", []string{"jobs", "list", "text/train", "--status", "running", "--limit", "2"}, "", []string{"REQUEST ID", "b ", "25%", "a ", "SUCCEEDED", "--cursor c2"}, ""},
		{"watch", []string{"jobs", "watch", "text/train", "run", "--interval", "10ms"}, "", []string{"QUEUED", "RUNNING  50% attempt 1 epoch 1/2", "SUCCEEDED 100%"}, ""},
		{"watch failed", []string{"jobs", "watch", "text/train", "bad", "--interval", "10ms"}, "", nil, "FAILED after 1 attempts: boom"},
		{"no route", []string{"jobs", "status"}, "", nil, "ROUTE/METHOD is required"},
		{"unknown", []string{"jobs", "frob", "text/train"}, "", nil, `unknown jobs command "frob"`},
		{"no subcommand", []string{"jobs"}, "", nil, "a jobs command is required"},
	}
	runCLICases(t, env, tests)
	stub.mu.Lock()
	defer stub.mu.Unlock()
	want := []string{"POST num_epochs=5&request_id=j1 ", `POST  {"num_epochs":5}`, `POST  {"num_epochs":1}`}
	for i, w := range want {
		if i >= len(stub.seen) || stub.seen[i] != w {
			t.Errorf("ingress saw %q, want %q first", stub.seen, want)
			break
		}
	}
	if last := stub.seen[len(stub.seen)-1]; last != "LIST filter_status=RUNNING&limit=2" {
		t.Errorf("list sent %q, want filter_status=RUNNING&limit=2", last)
	}
}

// cliCase is one CLI run: its arguments and stdin, and what its output
// must contain (or its error, when wantErr is set).
type cliCase struct {
	name    string
	args    []string
	stdin   string
	wantOut []string
	wantErr string
}

// runCLICases runs each case as a subtest.
func runCLICases(t *testing.T, env []string, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkRun(t, env, tc.args, tc.stdin, tc.wantOut, tc.wantErr)
		})
	}
}
