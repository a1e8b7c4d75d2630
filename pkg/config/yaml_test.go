package config

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// sample has a field of every kind the writer handles.
func sample() ServeConfig {
	return ServeConfig{Applications: []Application{
		{Name: "text", RoutePrefix: "/text", Ingress: "Pipeline", Deployments: []Deployment{
			{Name: "Pipeline", Handler: "text.Pipeline", NumReplicas: ptr(2), MaxOngoingRequests: 32,
				Resources:  Resources{CPU: ptr(0.25), Memory: 64 << 20, Labels: map[string]string{"zone": "a", "gpu.type": "h100"}},
				UserConfig: json.RawMessage(`{"summary_sentences":2,"version":"v1","n":"2","nested":{"a":[1,2]}}`),
				Uses:       []string{"Trainer"}, RequestTimeout: Duration(90 * time.Second)},
			{Name: "Trainer", Handler: "text.Trainer", MaxUnavailable: "1", GracefulShutdownTimeout: Duration(30 * time.Second),
				AutoscalingConfig: &AutoscalingConfig{MinReplicas: ptr(0), MaxReplicas: 4, UpscaleDelay: ptr(Duration(0))},
				AsyncMethods: []AsyncMethod{{Name: "train", MaxQueued: 100, Priority: ptr(1), Backoff: []Duration{Duration(time.Second), Duration(10 * time.Second)},
					Timeout: Duration(2 * time.Hour), RequiredArgs: []string{"num_epochs"}}}},
		}},
		{Name: "canary", RoutePrefix: "/canary", Deployments: []Deployment{
			{Name: "V1", Handler: "diag.Echo"}, {Name: "V2", Handler: "diag.Echo", Resources: Resources{CPU: ptr(0.0)}},
		}, Graph: &Graph{Nodes: []GraphNode{{Name: "root", Type: NodeSplitter, Steps: []GraphStep{
			{Deployment: "V1", Weight: ptr(95)}, {Deployment: "V2", Weight: ptr(5)}}}}}},
	}}
}

func TestYAMLRoundTrip(t *testing.T) {
	want := sample()
	b, err := YAML(want, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(YAML(c)) = %v\n%s", err, b)
	}
	want.ApplyDefaults()
	for i := range want.Applications {
		for j := range want.Applications[i].Deployments {
			d := &want.Applications[i].Deployments[j]
			var v any
			if len(d.UserConfig) > 0 && json.Unmarshal(d.UserConfig, &v) == nil {
				d.UserConfig, _ = json.Marshal(v) // Parse keeps user_config's value, not its key order
			}
		}
	}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("Parse(YAML(c)) differs from c with defaults:\n got %s\nwant %s\nYAML:\n%s", gj, wj, b)
	}
}

func TestYAMLShape(t *testing.T) {
	b, err := YAML(sample(), func(path string) string {
		switch path {
		case "":
			return "The config."
		case "applications[0].deployments[1]":
			return "The trainer."
		case "applications[0].deployments[1].max_unavailable":
			return "one at a time"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	const want = `# The config.

applications:
  - name: text
    route_prefix: /text
    ingress: Pipeline
    deployments:
      - name: Pipeline
        handler: text.Pipeline
        num_replicas: 2
        max_ongoing_requests: 32
        resources: {cpu: 0.25, memory: 64Mi, labels: {gpu.type: h100, zone: a}}
        user_config: {summary_sentences: 2, version: v1, n: "2", nested: {a: [1, 2]}}
        request_timeout: 1m30s
        uses: [Trainer]
      # The trainer.
      - name: Trainer
        handler: text.Trainer
        graceful_shutdown_timeout: 30s
        max_unavailable: 1 # one at a time
        autoscaling_config:
          min_replicas: 0
          max_replicas: 4
          upscale_delay: 0s
        async_methods:
          - name: train
            max_queued: 100
            priority: 1
            backoff: [1s, 10s]
            timeout: 2h
            required_args: [num_epochs]
  - name: canary
    route_prefix: /canary
    deployments:
      - name: V1
        handler: diag.Echo
      - name: V2
        handler: diag.Echo
        resources: {cpu: 0}
    graph:
      nodes:
        - name: root
          type: splitter
          steps:
            - {deployment: V1, weight: 95}
            - {deployment: V2, weight: 5}
`
	if string(b) != want {
		t.Errorf("YAML =\n%s\nwant\n%s", b, want)
	}
}

func TestFormatUnits(t *testing.T) {
	for d, want := range map[time.Duration]string{
		2 * time.Hour: "2h", time.Minute: "1m", 90 * time.Second: "1m30s", 168 * time.Hour: "168h",
		1500 * time.Millisecond: "1.5s", 0: "0s", 2*time.Hour + 30*time.Minute: "2h30m", 250 * time.Millisecond: "250ms",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for b, want := range map[Bytes]string{64 << 20: "64Mi", 2 << 30: "2Gi", 1536: "1536", 1 << 10: "1Ki", 1000: "1000", 3 << 40: "3Ti"} {
		if got := FormatBytes(b); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", b, got, want)
		}
	}
}

func TestYAMLRefusesBadUserConfig(t *testing.T) {
	c := sample()
	c.Applications[0].Deployments[0].UserConfig = json.RawMessage(`{not json`)
	if _, err := YAML(c, nil); err == nil || !strings.Contains(err.Error(), "applications[0].deployments[0].user_config") {
		t.Errorf("YAML(bad user_config) = %v, want an error naming the field", err)
	}
	if !reflect.DeepEqual(sample().Applications[1].Deployments[0], Deployment{Name: "V1", Handler: "diag.Echo"}) {
		t.Fatal("sample changed")
	}
}
