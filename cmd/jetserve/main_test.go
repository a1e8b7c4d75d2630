package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// adminStub records what the CLI sent and answers like the admin API and
// the ingress would. It is a fake HTTP peer, not a fake of jetserve's
// logic: the e2e suite runs the CLI against the real services.
func adminStub(t *testing.T) (*httptest.Server, *[]string) {
	t.Helper()
	var seen []string
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /api/serve/applications", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen = append(seen, "PUT "+string(b))
		if strings.Contains(string(b), "bad") {
			w.WriteHeader(400)
			_, _ = w.Write([]byte(`{"error":"invalid_config","message":"invalid config: applications[0].name: bad","fields":[{"field":"applications[0].name","message":"bad"}]}`))
			return
		}
		_, _ = w.Write([]byte(`{"applications":["text"]}`))
	})
	mux.HandleFunc("GET /api/serve/applications", func(w http.ResponseWriter, r *http.Request) {
		st := protocol.Status{Leader: "s1", Applications: map[string]protocol.AppStatus{"text": {Name: "text", RoutePrefix: "/text", Status: protocol.AppRunning,
			Deployments: map[string]protocol.DeploymentStatus{"P": {Name: "P", Status: protocol.DeploymentHealthy, TargetReplicas: 2,
				Replicas: []protocol.ReplicaStatus{{ID: "r1", State: protocol.ReplicaRunning}, {ID: "r2", State: protocol.ReplicaStarting}}}}}},
			Workers: []protocol.WorkerStatus{{ID: "w1", CPU: 2, CPUUsed: 0.5, Memory: 1 << 30}}, UpdatedAt: time.Now()}
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("DELETE /api/serve/applications/{name}", func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, "DELETE "+r.PathValue("name"))
		if r.PathValue("name") != "text" {
			w.WriteHeader(404)
			_, _ = w.Write([]byte(`{"error":"not_found","message":"no application nope"}`))
		}
	})
	mux.HandleFunc("POST /text/analyze", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append([]byte("got "), b...))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestCLI(t *testing.T) {
	srv, seen := adminStub(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(good, []byte("applications: []\n"), 0o600)
	_ = os.WriteFile(bad, []byte("bad\n"), 0o600)
	env := []string{"JETSERVE_ADMIN=" + srv.URL, "JETSERVE_URL=" + srv.URL}
	tests := []struct {
		name    string
		args    []string
		wantOut []string
		wantErr string
	}{
		{"deploy", []string{"deploy", good}, []string{"deployed: text"}, ""},
		{"deploy invalid names the field", []string{"deploy", bad}, nil, "applications[0].name"},
		{"deploy missing file", []string{"deploy", filepath.Join(dir, "none.yaml")}, nil, "none.yaml"},
		{"status table", []string{"status"}, []string{"leader: s1", "text", "HEALTHY", "1/2 running", "w1", "0.50/2.00"}, ""},
		{"status json", []string{"status", "-o", "json"}, []string{`"leader": "s1"`}, ""},
		{"status bad output", []string{"status", "-o", "xml"}, nil, "want table or json"},
		{"delete", []string{"delete", "text"}, []string{"deleted"}, ""},
		{"delete unknown", []string{"delete", "nope"}, nil, "404"},
		{"call", []string{"call", "/text/analyze", `{"text":"hi"}`}, []string{`got {"text":"hi"}`}, ""},
		{"version", []string{"--version"}, []string{"jetserve ", " go1."}, ""},
		{"version command", []string{"version"}, []string{"jetserve ", " go1."}, ""},
		{"unknown command", []string{"frobnicate"}, nil, "unknown command"},
		{"no command", nil, nil, "a command is required"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkRun(t, env, tc.args, "", tc.wantOut, tc.wantErr)
		})
	}
	// Each refused field once, on its own line (the server's message
	// lists them too).
	var out, errs bytes.Buffer
	err := run(context.Background(), []string{"deploy", bad}, env, nil, &out, &errs)
	if err == nil || strings.Count(err.Error(), "applications[0].name") != 1 || !strings.Contains(err.Error(), "\n  applications[0].name: bad") {
		t.Errorf("deploy of a refused config = %v, want the field once, on its own line", err)
	}
	if len(*seen) < 2 || !strings.HasPrefix((*seen)[0], "PUT applications: []") {
		t.Errorf("admin API saw %q, want the deploy body first", *seen)
	}
}

// TestBuild: `jetserve build text iris echo trips` writes examples/config.yaml
// and `build voice voice-graph` examples/voicesearch/config.yaml; no name
// builds every declared application, `-o` writes to a file, and an unknown
// application is an error naming the declared ones.
func TestBuild(t *testing.T) {
	for file, apps := range map[string][]string{"../../examples/config.yaml": {"text", "iris", "echo", "trips"},
		"../../examples/voicesearch/config.yaml": {"voice", "voice-graph"}} {
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var out, errs bytes.Buffer
		if err := run(context.Background(), append([]string{"build"}, apps...), nil, nil, &out, &errs); err != nil {
			t.Fatalf("jetserve build %v = %v (%s)", apps, err, errs.String())
		}
		if out.String() != string(want) {
			t.Errorf("jetserve build %v =\n%s\nwant %s\n%s", apps, out.String(), file, want)
		}
	}
	var all bytes.Buffer
	if err := run(context.Background(), []string{"build"}, nil, nil, &all, io.Discard); err != nil || strings.Count(all.String(), "\n  - name: ") != 6 {
		t.Errorf("jetserve build = %v, want all six declared applications:\n%s", err, all.String())
	}
	file := filepath.Join(t.TempDir(), "echo.yaml")
	if err := run(context.Background(), []string{"build", "echo", "-o", file}, nil, nil, io.Discard, io.Discard); err != nil {
		t.Fatalf("jetserve build echo -o = %v", err)
	}
	b, err := os.ReadFile(file)
	if err != nil || !strings.Contains(string(b), "name: echo") || strings.Contains(string(b), "name: text") {
		t.Errorf("jetserve build echo wrote %q (%v), want only app echo", b, err)
	}
	err = run(context.Background(), []string{"build", "nope"}, nil, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `no application "nope" is declared (declared: echo, iris, text, trips, voice, voice-graph)`) {
		t.Errorf("jetserve build nope = %v, want an error naming the declared applications", err)
	}
}

// checkRun runs the CLI with args, environ and stdin: it must fail with an
// error containing wantErr or, when wantErr is "", succeed and print every
// string of wantOut.
func checkRun(t *testing.T, environ, args []string, stdin string, wantOut []string, wantErr string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, environ, strings.NewReader(stdin), &out, &errb)
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("run(%v) = %v, want an error containing %q", args, err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("run(%v) = %v\nstderr: %s", args, err, errb.String())
	}
	for _, w := range wantOut {
		if !strings.Contains(out.String(), w) {
			t.Errorf("run(%v) output lacks %q:\n%s", args, w, out.String())
		}
	}
}
