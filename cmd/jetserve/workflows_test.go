package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestWorkflowsCLI runs the workflows commands against a stub of the
// ingress's workflow endpoints (the real ones are tested in the ingress
// and e2e).
func TestWorkflowsCLI(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /trips/book", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(202)
		_, _ = io.WriteString(w, `{"request_id":"`+r.URL.Query().Get("request_id")+`","status":"QUEUED"}`)
	})
	mux.HandleFunc("GET /trips/book/history", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("request_id") != "t1" {
			w.WriteHeader(404)
			_, _ = io.WriteString(w, `{"error":"not_found","message":"no job \"x\" of method book"}`)
			return
		}
		_, _ = io.WriteString(w, `{"request_id":"t1","status":"SUSPENDED","waiting":["signal:confirm"],"suspensions":1,"entries":[
			{"pos":0,"kind":"step","name":"book-hotel","result":"h1","attempts":1,"started":"2026-12-04T10:00:00Z","finished":"2026-12-04T10:00:00.002Z"},
			{"pos":1,"kind":"step","name":"book-flight","error":"no seat","attempts":3,"started":"2026-12-04T10:00:00Z","finished":"2026-12-04T10:00:01Z"},
			{"pos":2,"kind":"submit","name":"train","ref":"t1-2","input_size":12}]}`)
	})
	mux.HandleFunc("POST /trips/book/signal", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen = append(seen, r.URL.RawQuery+" "+string(b))
		first := len(seen) == 1
		mu.Unlock()
		w.WriteHeader(202)
		if first {
			_, _ = io.WriteString(w, `{"request_id":"t1","signal":"confirm","sent":true}`)
			return
		}
		_, _ = io.WriteString(w, `{"request_id":"t1","signal":"confirm","sent":false}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	env := []string{"JETSERVE_URL=" + srv.URL}
	runCLICases(t, env, []cliCase{
		{"start", []string{"workflows", "start", "trips/book", "--id", "t1", "--body", `{"fail_flight":true}`}, "", []string{"t1 QUEUED"}, ""},
		{"history", []string{"workflows", "history", "trips/book", "t1"}, "", []string{"t1 SUSPENDED waiting for signal:confirm (suspended 1 times)",
			"book-hotel", `"h1"`, "2ms", "error: no seat", "started t1-2"}, ""},
		{"history json", []string{"workflows", "history", "trips/book", "t1", "-o", "json"}, "", []string{`"kind": "submit"`}, ""},
		{"history unknown", []string{"workflows", "history", "trips/book", "x"}, "", nil, "404 no job"},
		{"signal", []string{"workflows", "signal", "trips/book", "t1", "--name", "confirm", "--key", "k1", "--payload", "-"}, `{"ok":true}`, []string{"signal confirm sent to t1"}, ""},
		{"signal again", []string{"workflows", "signal", "trips/book", "t1", "--name", "confirm", "--key", "k1"}, "", []string{"already sent with key k1"}, ""},
		{"signal without name", []string{"workflows", "signal", "trips/book", "t1"}, "", nil, "--name is required"},
		{"signal bad payload", []string{"workflows", "signal", "trips/book", "t1", "--name", "x", "--payload", "{"}, "", nil, "--payload: not valid JSON"},
		{"unknown", []string{"workflows", "frob"}, "", nil, `unknown workflows command "frob"`},
		{"none", []string{"workflows"}, "", nil, "a workflows command is required"},
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 1 || seen[0] != `key=k1&name=confirm&request_id=t1 {"ok":true}` {
		t.Errorf("signals sent = %q", seen)
	}
}
