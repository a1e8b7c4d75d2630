package config

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseValidAppliesDefaults(t *testing.T) {
	b, err := os.ReadFile("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(valid.yaml) = %v, want nil", err)
	}
	app, ok := cfg.App("text")
	if !ok {
		t.Fatal("App(text) not found")
	}
	p, _ := app.Deployment("Pipeline")
	s, _ := app.Deployment("Sentiment")
	checks := []struct {
		name      string
		got, want any
	}{
		{"Pipeline.Replicas", p.Replicas(), 2},
		{"Pipeline.MaxOngoingRequests (default)", p.MaxOngoingRequests, DefaultMaxOngoingRequests},
		{"Pipeline.MaxQueuedRequests (default)", p.MaxQueuedRequests, -1},
		{"Pipeline.Resources.CPU", p.Resources.CPUOrDefault(), 0.5},
		{"Pipeline.Resources.Memory", int64(p.Resources.Memory), int64(256 << 20)},
		{"Pipeline.HealthCheckPeriod (default)", p.HealthCheckPeriod.D(), 10 * time.Second},
		{"Pipeline.GracefulShutdownTimeout (default)", p.GracefulShutdownTimeout.D(), 20 * time.Second},
		{"Sentiment.Replicas (default)", s.Replicas(), 1},
		{"Sentiment.Resources.CPU (default)", s.Resources.CPUOrDefault(), 1.0},
		{"Sentiment.Resources.GPU", s.Resources.GPU, 0.3},
		{"Sentiment.Labels", s.Resources.Labels["gpu.type"], "h100"},
		{"Sentiment.HealthCheckTimeout (number of seconds)", s.HealthCheckTimeout.D(), 1500 * time.Millisecond},
		{"Sentiment.RequestTimeout", s.RequestTimeout.D(), 30 * time.Second},
		{"Sentiment.MaxQueuedRequests", s.MaxQueuedRequests, 100},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	var uc map[string]int
	if err := json.Unmarshal(p.UserConfig, &uc); err != nil || uc["summary_sentences"] != 2 {
		t.Errorf("Pipeline.UserConfig = %s, want {summary_sentences: 2}", p.UserConfig)
	}
}

func TestParseJSONEqualsYAML(t *testing.T) {
	y, err := Parse([]byte("applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	j, err := Parse([]byte(`{"applications":[{"name":"a","route_prefix":"/a","ingress":"d","deployments":[{"name":"d","handler":"h"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	yb, _ := json.Marshal(y)
	jb, _ := json.Marshal(j)
	if string(yb) != string(jb) {
		t.Fatalf("YAML and JSON parse differently:\n%s\n%s", yb, jb)
	}
}

func TestParseRejectsWithFieldNamed(t *testing.T) {
	const ok = `{name: d, handler: h}`
	app := func(dep string) string {
		return "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [" + dep + "]}\n"
	}
	tests := []struct {
		name, doc, field string
	}{
		{"empty", "", "applications"},
		{"not yaml", "applications: [", "(document)"},
		{"scalar document", "42", "(document)"},
		{"unknown top-level field", "applicationz: []", "applicationz"},
		{"unknown deployment field", app(`{name: d, handler: h, max_ongoing: 3}`), "applications[0].deployments[0].max_ongoing"},
		{"wrong type", app(`{name: d, handler: h, max_ongoing_requests: many}`), "max_ongoing_requests"},
		{"max_ongoing_requests < 1", app(`{name: d, handler: h, max_ongoing_requests: -2}`), "applications[0].deployments[0].max_ongoing_requests"},
		{"max_queued_requests < -1", app(`{name: d, handler: h, max_queued_requests: -5}`), "applications[0].deployments[0].max_queued_requests"},
		{"negative replicas", app(`{name: d, handler: h, num_replicas: -1}`), "applications[0].deployments[0].num_replicas"},
		{"bad duration", app(`{name: d, handler: h, health_check_period: soon}`), "applications[0].deployments[0].health_check_period"},
		{"bad memory", app(`{name: d, handler: h, resources: {memory: lots}}`), "applications[0].deployments[0].resources.memory"},
		{"fractional gpu above 1", app(`{name: d, handler: h, resources: {gpu: 1.5}}`), "applications[0].deployments[0].resources.gpu"},
		{"missing handler", app(`{name: d}`), "applications[0].deployments[0].handler"},
		{"ingress names no deployment", "applications:\n- {name: a, route_prefix: /a, ingress: x, deployments: [" + ok + "]}\n", "applications[0].ingress"},
		{"route without slash", "applications:\n- {name: a, route_prefix: a, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"reserved route", "applications:\n- {name: a, route_prefix: /-/x, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"route /v2 is OIP's", "applications:\n- {name: a, route_prefix: /v2, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"route below /v2 is OIP's", "applications:\n- {name: a, route_prefix: /v2/models, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"duplicate app", "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [" + ok + "]}\n- {name: a, route_prefix: /b, ingress: d, deployments: [" + ok + "]}\n", "applications[1].name"},
		{"duplicate route", "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [" + ok + "]}\n- {name: b, route_prefix: /a, ingress: d, deployments: [" + ok + "]}\n", "applications[1].route_prefix"},
		{"duplicate deployment", app(ok + ", " + ok), "applications[0].deployments[1].name"},
		{"no deployments", "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: []}\n", "applications[0].deployments"},
		{"unknown runtime", app(`{name: d, handler: h, runtime: docker}`), "applications[0].deployments[0].runtime"},
		{"route with dot segments", "applications:\n- {name: a, route_prefix: /../../etc, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"route with a space", "applications:\n- {name: a, route_prefix: /a b, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"route with an encoded dot", "applications:\n- {name: a, route_prefix: /a%2e%2e, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"route with an empty segment", "applications:\n- {name: a, route_prefix: /a//b, ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"route with a query", "applications:\n- {name: a, route_prefix: '/a?b', ingress: d, deployments: [" + ok + "]}\n", "applications[0].route_prefix"},
		{"process without command", app(`{name: d, runtime: process}`), "applications[0].deployments[0].command"},
		{"process port out of range", app(`{name: d, runtime: process, command: [x], port: 70000}`), "applications[0].deployments[0].port"},
		{"process health path relative", app(`{name: d, runtime: process, command: [x], health_path: ready}`), "applications[0].deployments[0].health_path"},
		{"process env name with =", app(`{name: d, runtime: process, command: [x], env: {"A=B": c}}`), "applications[0].deployments[0].env"},
		{"command on a go deployment", app(`{name: d, handler: h, command: [x]}`), "applications[0].deployments[0].command"},
		{"unknown protocol", app(`{name: d, handler: h, protocol: grpc}`), "applications[0].deployments[0].protocol"},
		{"oip_models without oip", app(`{name: d, handler: h, oip_models: [m]}`), "applications[0].deployments[0].oip_models"},
		{"bad oip model name", app(`{name: d, handler: h, protocol: oip, oip_models: ["a/b"]}`), "applications[0].deployments[0].oip_models[0]"},
		{"duplicate oip model", "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h, protocol: oip}]}\n- {name: b, route_prefix: /b, ingress: d, deployments: [{name: d, handler: h, protocol: oip}]}\n", "applications[1].deployments[0].name"},
		{"max_models_per_replica < 1", app(`{name: d, handler: h, max_models_per_replica: -1}`), "applications[0].deployments[0].max_models_per_replica"},
		{"negative max_unavailable", app(`{name: d, handler: h, max_unavailable: -1}`), "applications[0].deployments[0].max_unavailable"},
		{"max_unavailable over 100%", app(`{name: d, handler: h, max_unavailable: "150%"}`), "applications[0].deployments[0].max_unavailable"},
		{"max_unavailable not a number", app(`{name: d, handler: h, max_unavailable: some}`), "applications[0].deployments[0].max_unavailable"},
		{"fractional max_unavailable", app(`{name: d, handler: h, max_unavailable: 1.5}`), "applications[0].deployments[0].max_unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			errs, isErrs := err.(Errors)
			if !isErrs {
				t.Fatalf("Parse() = %v (%T), want config.Errors", err, err)
			}
			found := false
			for _, e := range errs {
				if strings.Contains(e.Field, tc.field) {
					found = true
				}
			}
			if !found {
				t.Fatalf("Parse() = %v, want an error naming %q", err, tc.field)
			}
		})
	}
}

func TestProcessRuntimeDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`applications:
- name: a
  route_prefix: /a
  ingress: http
  deployments:
  - {name: http, runtime: process, command: [python3, server.py]}
  - {name: digits, runtime: process, command: [python3, oip.py], protocol: oip, oip_models: [digits, digits-v2]}
  - {name: go, handler: h, protocol: oip}
`))
	if err != nil {
		t.Fatalf("Parse() = %v, want nil", err)
	}
	a := cfg.Applications[0]
	h, o, g := a.Deployments[0], a.Deployments[1], a.Deployments[2]
	checks := []struct {
		name      string
		got, want any
	}{
		{"http.HealthPath", h.HealthPath, DefaultHealthPathHTTP},
		{"http.StartupTimeout", h.StartupTimeout, DefaultStartupTimeout},
		{"http.Protocol", h.Protocol, ProtocolHTTP},
		{"http.ModelNames", len(h.ModelNames()), 0},
		{"digits.HealthPath", o.HealthPath, DefaultHealthPathOIP},
		{"digits.ModelNames", strings.Join(o.ModelNames(), ","), "digits,digits-v2"},
		{"go.Runtime", g.Runtime, RuntimeGo},
		{"go.ModelNames", strings.Join(g.ModelNames(), ","), "go"},
		{"go.HealthPath (unused)", g.HealthPath, ""},
		{"go.MaxModelsPerReplica", g.MaxModelsPerReplica, DefaultMaxModelsPerReplica},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want Bytes
	}{{"1024", 1024}, {"1Ki", 1024}, {"2Gi", 2 << 30}, {"1G", 1e9}, {"1.5Mi", 1536 << 10}}
	for _, tc := range tests {
		got, err := ParseBytes(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v, want %d", tc.in, got, err, tc.want)
		}
	}
	if _, err := ParseBytes("-1"); err == nil {
		t.Error("ParseBytes(-1) = nil error, want one")
	}
}

func TestAutoscalingAndAsyncDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`applications:
- name: a
  route_prefix: /a
  ingress: d
  deployments:
  - name: d
    handler: h
    num_replicas: auto
  - name: e
    handler: h
    autoscaling_config: {min_replicas: 0, max_replicas: 4, upscale_delay: 0}
    async_methods: [{name: train, max_running: 2, priority: 5}]
`))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := cfg.App("a")
	d, _ := a.Deployment("d")
	if d.AutoscalingConfig == nil || *d.AutoscalingConfig.MinReplicas != 1 || d.AutoscalingConfig.MaxReplicas != 100 ||
		d.AutoscalingConfig.TargetOngoingRequests != 2 || d.Replicas() != 1 {
		t.Fatalf("num_replicas: auto = %+v, replicas %d; want Ray's auto (1..100, target 2)", d.AutoscalingConfig, d.Replicas())
	}
	e, _ := a.Deployment("e")
	ac := e.AutoscalingConfig
	if e.Replicas() != 0 || ac.UpscaleDelay.D() != 0 || ac.DownscaleDelay.D() != 600*time.Second || ac.DownscaleToZeroDelay.D() != 600*time.Second {
		t.Fatalf("autoscaling defaults = %+v (replicas %d), want explicit 0 upscale delay kept, 600s downscale", ac, e.Replicas())
	}
	m := e.AsyncMethods[0]
	if m.MaxRunning != 2 || *m.Priority != 5 || m.MaxQueued != 0 || m.IdempotencyKey != "" {
		t.Fatalf("async method = %+v, want only the written fields set (they override SDK defaults field by field)", m)
	}
	m.ApplyDefaults()
	if m.MaxQueued != DefaultMaxQueued || m.IdempotencyKey != "request_id" || m.MaxAttempts != 3 ||
		m.LeaseTimeout != DefaultLeaseTimeout || len(m.Backoff) != 3 {
		t.Fatalf("ApplyDefaults() = %+v, want platform defaults", m)
	}
	if m.Versioning != "" || m.PinnedFor != 0 || m.Pinned() {
		t.Fatalf("ApplyDefaults() of a plain async method = versioning %q, pinned_for %s, want none (workflows only)", m.Versioning, m.PinnedFor.D())
	}
	wf := AsyncMethod{Name: "w", Workflow: true}
	wf.ApplyDefaults()
	if wf.Versioning != VersioningPinned || wf.PinnedFor != DefaultPinnedFor || !wf.Pinned() {
		t.Fatalf("ApplyDefaults() of a workflow = versioning %q, pinned_for %s, want pinned for %s", wf.Versioning, wf.PinnedFor.D(), DefaultPinnedFor.D())
	}
	wf.Versioning = VersioningAutoUpgrade
	if wf.Pinned() {
		t.Fatalf("Pinned() of an auto_upgrade workflow = true, want false")
	}
}

func TestAutoscalingAndAsyncRejected(t *testing.T) {
	dep := func(extra string) string {
		return "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h, " + extra + "}]}\n"
	}
	tests := []struct{ name, doc, field string }{
		{"num_replicas with autoscaling", dep("num_replicas: 2, autoscaling_config: {max_replicas: 3}"), "deployments[0].num_replicas"},
		{"max below min", dep("autoscaling_config: {min_replicas: 3, max_replicas: 2}"), "autoscaling_config.max_replicas"},
		{"initial out of bounds", dep("autoscaling_config: {min_replicas: 1, max_replicas: 2, initial_replicas: 5}"), "autoscaling_config.initial_replicas"},
		{"negative target", dep("autoscaling_config: {max_replicas: 2, target_ongoing_requests: -1}"), "autoscaling_config.target_ongoing_requests"},
		{"unknown autoscaling field", dep("autoscaling_config: {max_replica: 2}"), "autoscaling_config.max_replica"},
		{"priority out of range", dep("async_methods: [{name: t, priority: 12}]"), "async_methods[0].priority"},
		{"duplicate method", dep("async_methods: [{name: t}, {name: t}]"), "async_methods[1].name"},
		{"bad method name", dep("async_methods: [{name: 't/x'}]"), "async_methods[0].name"},
		{"unknown versioning", dep("async_methods: [{name: t, workflow: true, versioning: latest}]"), "async_methods[0].versioning: must be"},
		{"negative pinned_for", dep("async_methods: [{name: t, workflow: true, pinned_for: -1h}]"), "async_methods[0].pinned_for: must"},
		{"versioning on a plain method", dep("async_methods: [{name: t, versioning: pinned}]"),
			"applications[0].deployments[0].async_methods[0].versioning: only workflows are versioned"},
		{"pinned_for on a plain method", dep("async_methods: [{name: u}, {name: t, pinned_for: 1h}]"),
			"applications[0].deployments[0].async_methods[1].pinned_for: only workflows are versioned"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Parse() = %v, want an error naming %q", err, tc.field)
			}
		})
	}
}

// TestRoutePrefixV2Boundary: only /v2 and paths below it are reserved, on
// whole segments ("/v2x" and "/v20" are ordinary prefixes).
func TestRoutePrefixV2Boundary(t *testing.T) {
	for _, prefix := range []string{"/v2x", "/v20", "/api/v2"} {
		doc := "applications:\n- {name: a, route_prefix: " + prefix + ", ingress: d, deployments: [{name: d, handler: h}]}\n"
		if _, err := Parse([]byte(doc)); err != nil {
			t.Errorf("Parse(route_prefix %s) = %v, want accepted", prefix, err)
		}
	}
}

func TestCleanPrefix(t *testing.T) {
	for _, p := range []string{"/", "/text", "/a/b-c_d.e~f", "/v1/models", "/a.b"} {
		if !cleanPrefix(p) {
			t.Errorf("cleanPrefix(%q) = false, want true", p)
		}
	}
	for _, p := range []string{"", "a", "/a/", "//", "/..", "/a/../b", "/./a", "/a%2fb", "/a b", "/é", "/a\x00", "/" + strings.Repeat("a", 300)} {
		if cleanPrefix(p) {
			t.Errorf("cleanPrefix(%q) = true, want false", p)
		}
	}
}

func TestMaxUnavailable(t *testing.T) {
	parse := func(t *testing.T, v string) Deployment {
		t.Helper()
		doc := "applications:\n- {name: a, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h" + v + "}]}\n"
		c, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("Parse(%s) = %v", doc, err)
		}
		return c.Applications[0].Deployments[0]
	}
	tests := []struct {
		field string
		want  IntOrPercent
		of    map[int]int // target → resolved
	}{
		{"", DefaultMaxUnavailable, map[int]int{1: 1, 2: 1, 4: 1, 8: 2, 10: 2}},
		{", max_unavailable: 2", "2", map[int]int{1: 2, 10: 2}},
		{", max_unavailable: 0", "0", map[int]int{1: 0, 10: 0}},
		{`, max_unavailable: "50%"`, "50%", map[int]int{1: 1, 3: 1, 4: 2}},
		{`, max_unavailable: "0%"`, "0%", map[int]int{4: 0}},
		{`, max_unavailable: "3"`, "3", map[int]int{5: 3}},
	}
	for _, tt := range tests {
		d := parse(t, tt.field)
		if d.MaxUnavailable != tt.want {
			t.Errorf("max_unavailable%s parsed as %q, want %q", tt.field, d.MaxUnavailable, tt.want)
		}
		for target, want := range tt.of {
			if got := d.MaxUnavailable.Of(target); got != want {
				t.Errorf("IntOrPercent(%q).Of(%d) = %d, want %d", d.MaxUnavailable, target, got, want)
			}
		}
	}
	// A count marshals as a number, a percentage as a string.
	b, err := json.Marshal(struct{ A, B IntOrPercent }{"2", "25%"})
	if err != nil || string(b) != `{"A":2,"B":"25%"}` {
		t.Errorf("json.Marshal = %s, %v, want {\"A\":2,\"B\":\"25%%\"}", b, err)
	}
}

// Every invalid field is reported at once, each with its full path (list
// indexes included), not only the first type error.
func TestParseReportsEveryFieldAtOnce(t *testing.T) {
	_, err := Parse([]byte(`applications:
- name: a
  route_prefix: /a
  ingress: d
  deployments:
  - {name: d, handler: h, max_ongoing_requests: many, num_replicas: 1.5}
  - {name: e, handler: h, max_ongoing_requests: 0, resources: {cpu: fast}, async_methods: [{name: m, max_attempts: "3"}]}
`))
	errs, ok := err.(Errors)
	if !ok {
		t.Fatalf("Parse() = %v, want config.Errors", err)
	}
	want := []string{
		"applications[0].deployments[0].max_ongoing_requests",
		"applications[0].deployments[0].num_replicas",
		"applications[0].deployments[1].max_ongoing_requests",
		"applications[0].deployments[1].resources.cpu",
		"applications[0].deployments[1].async_methods[0].max_attempts",
	}
	got := map[string]bool{}
	for _, e := range errs {
		got[e.Field] = true
	}
	for _, f := range want {
		if !got[f] {
			t.Errorf("Parse() errors %v lack %s", errs, f)
		}
	}
}
