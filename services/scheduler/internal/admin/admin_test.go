package admin_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/services/scheduler/internal/admin"
	"github.com/jetserve/jetserve/services/scheduler/internal/splits"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const valid = `
applications:
- name: a
  route_prefix: /a
  ingress: d
  deployments:
  - {name: d, handler: echo}
- name: b
  route_prefix: /b
  ingress: d
  deployments:
  - {name: d, handler: echo, num_replicas: 2}
`

func setup(t *testing.T, maxBody int64) (*httptest.Server, *fleetstate.Buckets) {
	t.Helper()
	b := natstest.NewFleet(t).Buckets
	srv := httptest.NewServer(admin.New(b.Apps, b.Status, maxBody, zerolog.New(io.Discard)))
	t.Cleanup(srv.Close)
	return srv, b
}

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, data, err)
	}
	return resp.StatusCode, out
}

func storedRevision(t *testing.T, b *fleetstate.Buckets) uint64 {
	t.Helper()
	ent, err := b.Apps.Get(context.Background(), admin.ConfigKey)
	if err != nil {
		return 0
	}
	return ent.Revision()
}

func TestPut(t *testing.T) {
	srv, b := setup(t, 4096)
	apps := srv.URL + "/api/serve/applications"
	code, body := do(t, http.MethodPut, apps, valid)
	if code != 200 || strings.Join(toStrings(body["applications"]), ",") != "a,b" {
		t.Fatalf("PUT valid = %d %v, want 200 {applications:[a b]}", code, body)
	}
	rev := storedRevision(t, b)
	if rev == 0 {
		t.Fatal("config not stored after a valid PUT")
	}
	jsonBody := `{"applications":[{"name":"a","route_prefix":"/a","ingress":"d","deployments":[{"name":"d","handler":"echo"}]}]}`

	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantError string
		wantField string
	}{
		{"invalid field value", strings.Replace(valid, "num_replicas: 2", "num_replicas: 2, max_ongoing_requests: -1", 1), 400, "invalid_config", "applications[1].deployments[0].max_ongoing_requests"},
		{"unknown field", strings.Replace(valid, "handler: echo}", "handler: echo, bogus: 1}", 1), 400, "invalid_config", "applications[0].deployments[0].bogus"},
		{"versioning on a plain async method", strings.Replace(valid, "num_replicas: 2}", "num_replicas: 2, async_methods: [{name: fit, versioning: pinned}]}", 1),
			400, "invalid_config", "applications[1].deployments[0].async_methods[0].versioning"},
		{"malformed JSON", `{"applications": [`, 400, "invalid_config", "(document)"},
		{"malformed YAML", "applications:\n  - name: a\n   bad: [", 400, "invalid_config", "(document)"},
		{"empty body", "", 400, "invalid_config", "applications"},
		{"oversized body", "#" + strings.Repeat("x", 5000) + "\n" + valid, 413, "body_too_large", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, http.MethodPut, apps, tt.body)
			if code != tt.wantCode || body["error"] != tt.wantError {
				t.Fatalf("PUT = %d %v, want %d error %s", code, body, tt.wantCode, tt.wantError)
			}
			if tt.wantField != "" {
				fields, _ := body["fields"].([]any)
				found := false
				for _, f := range fields {
					if m, _ := f.(map[string]any); m["field"] == tt.wantField {
						found = true
					}
				}
				if !found {
					t.Errorf("PUT fields = %v, want one naming %s", body["fields"], tt.wantField)
				}
			}
			if got := storedRevision(t, b); got != rev {
				t.Errorf("stored config revision = %d after a rejected PUT, want unchanged %d", got, rev)
			}
		})
	}

	// JSON bodies work too, and replace the whole config.
	if code, body := do(t, http.MethodPut, apps, jsonBody); code != 200 {
		t.Fatalf("PUT JSON = %d %v, want 200", code, body)
	}
	code, cfg := do(t, http.MethodGet, srv.URL+"/api/serve/config", "")
	if list, _ := cfg["applications"].([]any); code != 200 || len(list) != 1 {
		t.Errorf("GET config = %d %v, want only application a", code, cfg)
	}
}

func TestDelete(t *testing.T) {
	srv, b := setup(t, 0)
	apps := srv.URL + "/api/serve/applications"
	if code, body := do(t, http.MethodPut, apps, valid); code != 200 {
		t.Fatalf("PUT = %d %v", code, body)
	}
	tests := []struct {
		name     string
		path     string
		wantCode int
		wantApps []string
	}{
		{"unknown app", "/x", 404, []string{"a", "b"}},
		{"one app", "/a", 200, []string{"b"}},
		{"same app again", "/a", 404, []string{"b"}},
		{"all", "", 200, nil},
		{"all again", "", 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, http.MethodDelete, apps+tt.path, "")
			if code != tt.wantCode {
				t.Fatalf("DELETE %s = %d %v, want %d", tt.path, code, body, tt.wantCode)
			}
			if code == 404 && body["error"] != "not_found" {
				t.Errorf("DELETE %s error = %v, want not_found", tt.path, body["error"])
			}
			_, cfg := do(t, http.MethodGet, srv.URL+"/api/serve/config", "")
			var names []string
			list, _ := cfg["applications"].([]any)
			for _, a := range list {
				names = append(names, a.(map[string]any)["name"].(string))
			}
			if strings.Join(names, ",") != strings.Join(tt.wantApps, ",") {
				t.Errorf("after DELETE %s config apps = %v, want %v", tt.path, names, tt.wantApps)
			}
		})
	}
	_ = b
}

func TestGetStatus(t *testing.T) {
	srv, b := setup(t, 0)
	apps := srv.URL + "/api/serve/applications"
	code, body := do(t, http.MethodGet, apps, "")
	if code != 200 || len(body["applications"].(map[string]any)) != 0 {
		t.Fatalf("GET empty = %d %v, want 200 with no applications", code, body)
	}
	do(t, http.MethodPut, apps, valid)
	// The leader has reported a only: b is NOT_STARTED.
	st := protocol.Status{Leader: "s1", Applications: map[string]protocol.AppStatus{
		"a": {Name: "a", Status: protocol.AppRunning}}}
	data, _ := json.Marshal(st)
	if _, err := b.Status.Put(context.Background(), admin.StatusKey, data); err != nil {
		t.Fatal(err)
	}
	_, body = do(t, http.MethodGet, apps, "")
	got := body["applications"].(map[string]any)
	if body["leader"] != "s1" || got["a"].(map[string]any)["status"] != "RUNNING" || got["b"].(map[string]any)["status"] != "NOT_STARTED" {
		t.Errorf("GET status = %v, want leader s1, a RUNNING, b NOT_STARTED", body)
	}
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		s, _ := e.(string)
		out = append(out, s)
	}
	return out
}

func configApps(t *testing.T, srv *httptest.Server) []string {
	t.Helper()
	status, out := do(t, http.MethodGet, srv.URL+"/api/serve/config", "")
	if status != http.StatusOK {
		t.Fatalf("GET /api/serve/config = %d %v", status, out)
	}
	var names []string
	apps, _ := out["applications"].([]any)
	for _, a := range apps {
		names = append(names, a.(map[string]any)["name"].(string))
	}
	return names
}

func TestPutOneIfAbsentNeverReplaces(t *testing.T) {
	srv, _ := setup(t, 4096)
	c := "applications:\n- {name: c, route_prefix: /c, ingress: d, deployments: [{name: d, handler: echo}]}\n"
	status, out := do(t, http.MethodPut, srv.URL+"/api/serve/applications/c?if_absent=true", c)
	if status != http.StatusOK || out["applied"] != true {
		t.Fatalf("PUT c ?if_absent=true on an empty fleet = %d %v, want 200 applied", status, out)
	}
	changed := "applications:\n- {name: c, route_prefix: /c2, ingress: d, deployments: [{name: d, handler: echo}]}\n"
	status, out = do(t, http.MethodPut, srv.URL+"/api/serve/applications/c?if_absent=true", changed)
	if status != http.StatusOK || out["applied"] != false {
		t.Fatalf("PUT c ?if_absent=true when c exists = %d %v, want 200 not applied", status, out)
	}
	_, cfg := do(t, http.MethodGet, srv.URL+"/api/serve/config", "")
	if p := cfg["applications"].([]any)[0].(map[string]any)["route_prefix"]; p != "/c" {
		t.Fatalf("c's route prefix after a refused if_absent PUT = %v, want /c unchanged", p)
	}
	if status, _ := do(t, http.MethodPut, srv.URL+"/api/serve/applications/c?if_absent=maybe", c); status != http.StatusBadRequest {
		t.Fatalf("PUT ?if_absent=maybe = %d, want 400", status)
	}
}

func TestPutOneApplication(t *testing.T) {
	srv, _ := setup(t, 4096)
	if status, out := do(t, http.MethodPut, srv.URL+"/api/serve/applications", valid); status != http.StatusOK {
		t.Fatalf("PUT = %d %v", status, out)
	}
	c := "applications:\n- {name: c, route_prefix: /c, ingress: d, deployments: [{name: d, handler: echo}]}\n"
	if status, out := do(t, http.MethodPut, srv.URL+"/api/serve/applications/c", c); status != http.StatusOK {
		t.Fatalf("PUT /applications/c = %d %v, want 200", status, out)
	}
	if got := strings.Join(configApps(t, srv), ","); got != "a,b,c" {
		t.Fatalf("apps after adding c = %s, want a,b,c", got)
	}
	b2 := "applications:\n- {name: b, route_prefix: /b2, ingress: d, deployments: [{name: d, handler: echo}]}\n"
	if status, out := do(t, http.MethodPut, srv.URL+"/api/serve/applications/b", b2); status != http.StatusOK {
		t.Fatalf("PUT /applications/b = %d %v, want 200", status, out)
	}
	_, out := do(t, http.MethodGet, srv.URL+"/api/serve/config", "")
	apps := out["applications"].([]any)
	if len(apps) != 3 || apps[1].(map[string]any)["route_prefix"] != "/b2" {
		t.Fatalf("config after replacing b = %v, want a, b (at /b2), c in place", apps)
	}

	tests := []struct {
		name, path, body, field string
	}{
		{"name differs from the path", "/api/serve/applications/x", c, ""},
		{"two applications", "/api/serve/applications/a", valid, ""},
		{"route prefix taken by another app", "/api/serve/applications/d",
			"applications:\n- {name: d, route_prefix: /a, ingress: d, deployments: [{name: d, handler: echo}]}\n", "route_prefix"},
		{"invalid application", "/api/serve/applications/d",
			"applications:\n- {name: d, route_prefix: /d, ingress: d, deployments: [{name: d}]}\n", "applications[0].deployments[0].handler"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, out := do(t, http.MethodPut, srv.URL+tc.path, tc.body)
			if status != http.StatusBadRequest || out["error"] != string(protocol.ErrInvalidConfig) {
				t.Fatalf("PUT %s = %d %v, want 400 invalid_config", tc.path, status, out)
			}
			if tc.field != "" && !strings.Contains(out["message"].(string), tc.field) {
				t.Fatalf("PUT %s message %q, want it to name %q", tc.path, out["message"], tc.field)
			}
		})
	}
	if got := strings.Join(configApps(t, srv), ","); got != "a,b,c" {
		t.Fatalf("apps after refused PUTs = %s, want a,b,c unchanged", got)
	}
}

// TestConfigOverMaxPayload: a config under max_body_bytes that does not
// fit one NATS message (server max_payload 64 KiB here) is refused 413,
// not 500, and nothing changes.
func TestConfigOverMaxPayload(t *testing.T) {
	b := natstest.FleetOn(t, natstest.ServerWith(t, natsembed.Options{MaxPayload: 64 << 10}), nil).Buckets
	srv := httptest.NewServer(admin.New(b.Apps, b.Status, 1<<20, zerolog.New(io.Discard)))
	t.Cleanup(srv.Close)
	big := strings.Replace(valid, "handler: echo}", `handler: echo, user_config: {blob: "`+strings.Repeat("x", 100<<10)+`"}}`, 1)
	code, body := do(t, http.MethodPut, srv.URL+"/api/serve/applications", big)
	if code != http.StatusRequestEntityTooLarge || body["error"] != "body_too_large" {
		t.Fatalf("PUT of a 100 KiB config on a 64 KiB max_payload = %d %v, want 413 body_too_large", code, body)
	}
	if code, _ := do(t, http.MethodPut, srv.URL+"/api/serve/applications", valid); code != http.StatusOK {
		t.Fatalf("PUT of a small config after it = %d, want 200", code)
	}
}

const canaryApp = `
applications:
- name: canary
  route_prefix: /canary
  deployments: [{name: V1, handler: echo}, {name: V2, handler: echo}]
  graph:
    nodes:
    - {name: root, type: splitter, steps: [{deployment: V1, weight: 95}, {deployment: V2, weight: 5}]}
`

// TestGraphs: a bad graph is refused 400 with the field named and nothing
// stored; a good one is stored, and the status shows its live split.
func TestGraphs(t *testing.T) {
	b := natstest.NewFleet(t).Buckets
	live := splits.New(nil)
	srv := httptest.NewServer(admin.New(b.Apps, b.Status, 1<<20, zerolog.New(io.Discard)).WithGraphStatus(live.Status))
	t.Cleanup(srv.Close)
	apps := srv.URL + "/api/serve/applications"

	for _, tc := range []struct{ name, from, to, field, msg string }{
		{"weights not summing to 100", "weight: 5}", "weight: 10}", "applications[0].graph.nodes[0].steps", "sum to 105"},
		{"unknown deployment", "deployment: V2", "deployment: V3", "applications[0].graph.nodes[0].steps[1].deployment", `"V3"`},
		{"unknown node", "deployment: V2", "node: v2", "applications[0].graph.nodes[0].steps[1].node", `"v2"`},
		{"cycle", "deployment: V2", "node: root", "applications[0].graph.nodes[0]", "cycle: root → root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, http.MethodPut, apps, strings.Replace(canaryApp, tc.from, tc.to, 1))
			if code != 400 || body["error"] != "invalid_config" {
				t.Fatalf("PUT = %d %v, want 400 invalid_config", code, body)
			}
			fields, _ := body["fields"].([]any)
			for _, f := range fields {
				if m, _ := f.(map[string]any); m["field"] == tc.field && strings.Contains(m["message"].(string), tc.msg) {
					return
				}
			}
			t.Errorf("PUT fields = %v, want %s: …%s…", fields, tc.field, tc.msg)
		})
	}
	if rev := storedRevision(t, b); rev != 0 {
		t.Fatalf("a config was stored (revision %d) by rejected PUTs", rev)
	}
	if code, body := do(t, http.MethodPut, apps, canaryApp); code != 200 {
		t.Fatalf("PUT canary = %d %v, want 200", code, body)
	}
	live.Take(protocol.GraphStats{IngressID: "i1", WindowSeconds: 60, Splits: map[string]map[string]map[string]uint64{"canary": {"root": {"V1": 19, "V2": 1}}}})
	code, st := do(t, http.MethodGet, apps, "")
	if code != 200 {
		t.Fatalf("GET status = %d", code)
	}
	raw, _ := json.Marshal(st["applications"].(map[string]any)["canary"].(map[string]any)["graph"])
	var gs protocol.GraphStatus
	if err := json.Unmarshal(raw, &gs); err != nil || len(gs.Splitters) != 1 {
		t.Fatalf("status graph = %s (%v), want one splitter", raw, err)
	}
	s := gs.Splitters[0]
	if s.Requests != 20 || s.Branches[0].Weight != 95 || s.Branches[0].Share != 95 || s.Branches[1].Requests != 1 || s.Branches[1].Share != 5 {
		t.Errorf("split = %+v, want 95/5 configured and 19/1 live", s)
	}
}

// TestDecodeDropsPlainVersioning: a config stored before versioning on a
// plain async method was refused (it did nothing there) still loads, with
// those fields dropped; a workflow keeps its own.
func TestDecodeDropsPlainVersioning(t *testing.T) {
	stored := `{"applications":[{"name":"a","route_prefix":"/a","ingress":"d","deployments":[{"name":"d","handler":"echo",` +
		`"async_methods":[{"name":"fit","versioning":"pinned","pinned_for":"1h"},{"name":"flow","workflow":true,"versioning":"auto_upgrade"}]}]}]}`
	c, err := admin.Decode([]byte(stored))
	if err != nil {
		t.Fatalf("Decode(stored config with versioning on a plain method) = %v, want it loaded", err)
	}
	ms := c.Applications[0].Deployments[0].AsyncMethods
	if ms[0].Versioning != "" || ms[0].PinnedFor != 0 || ms[1].Versioning != config.VersioningAutoUpgrade {
		t.Fatalf("Decode() async methods = %+v, want fit's versioning dropped, flow's kept", ms)
	}
}
