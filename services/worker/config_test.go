package worker_test

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/worker"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c := worker.DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatalf("DefaultConfig().Validate() = %v, want nil", err)
	}
	if c.OpsAddr != ":9102" || c.GPUDetect != worker.GPUDetectAuto || c.Resources.CPU != 0 || c.ID != "" {
		t.Errorf("DefaultConfig() = %+v", c)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*worker.Config)
		wantKey string // "" = valid
	}{
		{"memory quantity", func(c *worker.Config) { c.Resources.Memory = "16Gi" }, ""},
		{"labels", func(c *worker.Config) { c.Labels = "zone=a,gpu.type=h100" }, ""},
		{"declared gpus", func(c *worker.Config) {
			c.Resources.GPUs = []worker.GPU{{Index: 0, Type: "h100", Memory: "80Gi"}, {Index: 1, Type: "h100"}}
		}, ""},
		{"bad id", func(c *worker.Config) { c.ID = "a b" }, "id:"},
		{"negative cpu", func(c *worker.Config) { c.Resources.CPU = -1 }, "resources.cpu:"},
		{"bad memory", func(c *worker.Config) { c.Resources.Memory = "lots" }, "resources.memory:"},
		{"gpu without type", func(c *worker.Config) { c.Resources.GPUs = []worker.GPU{{Index: 0}} }, "resources.gpus[0].type:"},
		{"duplicate gpu", func(c *worker.Config) {
			c.Resources.GPUs = []worker.GPU{{Index: 0, Type: "a"}, {Index: 0, Type: "a"}}
		}, "resources.gpus[1].index:"},
		{"bad gpu memory", func(c *worker.Config) { c.Resources.GPUs = []worker.GPU{{Index: 0, Type: "a", Memory: "x"}} }, "resources.gpus[0].memory:"},
		{"bad labels", func(c *worker.Config) { c.Labels = "zone" }, "labels:"},
		{"bad gpu_detect", func(c *worker.Config) { c.GPUDetect = "nvml" }, "gpu_detect:"},
		{"no nvidia_smi", func(c *worker.Config) { c.NvidiaSMI = "" }, "nvidia_smi:"},
		{"no nats url", func(c *worker.Config) { c.NATS.URL = "" }, "nats.url:"},
		{"router service", func(c *worker.Config) { c.Router = worker.RouterService }, ""},
		{"bad router", func(c *worker.Config) { c.Router = "direct" }, "router:"},
		{"bad liveness", func(c *worker.Config) { c.Liveness.ProbeAfter = time.Millisecond }, "liveness.probe_after:"},
		{"no probe failures", func(c *worker.Config) { c.Liveness.MaxProbeFailures = 0 }, "liveness.max_probe_failures:"},
		{"gc_min_heap off", func(c *worker.Config) { c.GCMinHeap = "0" }, ""},
		{"gc_min_heap bytes", func(c *worker.Config) { c.GCMinHeap = "268435456" }, ""},
		{"bad gc_min_heap", func(c *worker.Config) { c.GCMinHeap = "big" }, "gc_min_heap:"},
		{"negative gc_min_heap", func(c *worker.Config) { c.GCMinHeap = "-1Mi" }, "gc_min_heap:"},
		{"short body_stall_timeout", func(c *worker.Config) { c.BodyStallTimeout = 300 * time.Millisecond }, ""},
		{"no body_stall_timeout", func(c *worker.Config) { c.BodyStallTimeout = 0 }, "body_stall_timeout:"},
		{"negative body_stall_timeout", func(c *worker.Config) { c.BodyStallTimeout = -time.Second }, "body_stall_timeout:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := worker.DefaultConfig()
			tt.mutate(&c)
			err := c.Validate()
			switch {
			case tt.wantKey == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantKey != "" && (err == nil || !strings.Contains(err.Error(), tt.wantKey)):
				t.Errorf("Validate() = %v, want an error naming %q", err, tt.wantKey)
			}
		})
	}
}

func TestParseLabels(t *testing.T) {
	tests := []struct {
		in      string
		want    map[string]string
		wantErr bool
	}{
		{"", map[string]string{}, false},
		{"zone=a, gpu.type=h100 ,", map[string]string{"zone": "a", "gpu.type": "h100"}, false},
		{"empty=", map[string]string{"empty": ""}, false},
		{"=v", nil, true},
		{"a=1,a=2", nil, true},
	}
	for _, tt := range tests {
		got, err := worker.ParseLabels(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && !reflect.DeepEqual(got, tt.want)) {
			t.Errorf("ParseLabels(%q) = %v, %v, want %v (error %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestGenerateID(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]+-[0-9a-f]{6}$`)
	for _, host := range []string{"gpu-node-1.cluster.local", "weird host!", ""} {
		a, err := worker.GenerateID(host)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := worker.GenerateID(host)
		if !re.MatchString(a) || a == b {
			t.Errorf("GenerateID(%q) = %q then %q, want distinct ids matching %s", host, a, b, re)
		}
	}
	if id, _ := worker.GenerateID("gpu-node-1.cluster.local"); !strings.HasPrefix(id, "gpu-node-1-") {
		t.Errorf("GenerateID(gpu-node-1.cluster.local) = %q, want prefix gpu-node-1-", id)
	}
}

// TestLoadFromFileAndEnv checks the options through service.Load, the way
// the binary reads them.
func TestLoadFromFileAndEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "worker.yaml")
	yaml := `
id: gpu-1
resources:
  cpu: 8
  memory: 64Gi
  gpus:
    - {index: 0, type: h100, memory: 80Gi}
    - {index: 1, type: h100, memory: 80Gi}
labels: "zone=eu-1,gpu.type=h100"
gpu_detect: "off"
`
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := worker.DefaultConfig()
	err := service.Load(&cfg, "worker", []string{"--config", path}, []string{"JETSERVE_NATS_URL=nats://n:4222"}, io.Discard)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	want := []worker.GPU{{Index: 0, Type: "h100", Memory: "80Gi"}, {Index: 1, Type: "h100", Memory: "80Gi"}}
	if cfg.ID != "gpu-1" || cfg.Resources.CPU != 8 || cfg.Resources.Memory != "64Gi" || !reflect.DeepEqual(cfg.Resources.GPUs, want) ||
		cfg.Labels != "zone=eu-1,gpu.type=h100" || cfg.GPUDetect != "off" || cfg.NATS.URL != "nats://n:4222" || cfg.OpsAddr != ":9102" {
		t.Errorf("Load = %+v", cfg)
	}
}

func TestLoadProcessRuntimeOption(t *testing.T) {
	for _, tc := range []struct {
		env     string
		want    bool
		wantErr string
	}{
		{"", true, ""},
		{"JETSERVE_PROCESS_RUNTIME=false", false, ""},
		{"JETSERVE_PROCESS_RUNTIME=true", true, ""},
		{"JETSERVE_PROCESS_RUNTIME=maybe", false, "process_runtime"},
	} {
		cfg := worker.DefaultConfig()
		var env []string
		if tc.env != "" {
			env = []string{tc.env}
		}
		err := service.Load(&cfg, "worker", nil, env, io.Discard)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("Load(%q) = %v, want an error naming %s", tc.env, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("Load(%q) = %v", tc.env, err)
		case tc.wantErr == "" && cfg.ProcessRuntime != tc.want:
			t.Errorf("Load(%q): ProcessRuntime = %v, want %v", tc.env, cfg.ProcessRuntime, tc.want)
		}
	}
}

// TestLoadRouterOptions: the embedded router's options load from the
// environment and flags, and a bad value is refused naming the option.
func TestLoadRouterOptions(t *testing.T) {
	cfg := worker.DefaultConfig()
	err := service.Load(&cfg, "worker", []string{"--liveness.max_probe_failures", "5"},
		[]string{"JETSERVE_ROUTER=service", "JETSERVE_LIVENESS_PROBE_AFTER=250ms"}, io.Discard)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Router != worker.RouterService || cfg.Liveness.ProbeAfter != 250*time.Millisecond || cfg.Liveness.MaxProbeFailures != 5 {
		t.Errorf("Load: router %q, liveness %+v; want service, probe_after 250ms, max_probe_failures 5", cfg.Router, cfg.Liveness)
	}
	cfg = worker.DefaultConfig()
	if err := service.Load(&cfg, "worker", nil, []string{"JETSERVE_ROUTER=nearby"}, io.Discard); err == nil {
		if err = cfg.Validate(); err == nil || !strings.Contains(err.Error(), "router:") {
			t.Errorf("router=nearby: Validate() = %v, want an error naming router", err)
		}
	}
}
