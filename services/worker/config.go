package worker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/worker/internal/gpu"
)

// GPU detection modes (Config.GPUDetect).
const (
	// GPUDetectAuto runs nvidia-smi when it is installed; its GPUs replace
	// the declared ones. Without it the declared GPUs are advertised.
	GPUDetectAuto = "auto"
	// GPUDetectOff advertises only the declared GPUs.
	GPUDetectOff = "off"
)

// Config is the worker's configuration.
type Config struct {
	service.Common `koanf:",squash"`
	// ID names the worker in the Workers and Assignments buckets; "" (the
	// default) is "<hostname>-<6 random hex digits>".
	ID string `koanf:"id" help:"worker id (default: <hostname>-<random>)"`
	// Resources the worker advertises to the scheduler.
	Resources Resources `koanf:"resources"`
	// Labels are free-form "key=value" pairs, comma-separated, that the
	// deployments' label selectors match, e.g. "zone=eu-1,gpu.type=h100".
	// (A string rather than a map so that label keys may hold dots and the
	// option works as one environment variable, JETSERVE_LABELS.)
	Labels string `koanf:"labels" help:"key=value,... matched by deployments' label selectors"`
	// GPUDetect is "auto" (default) or "off".
	GPUDetect string `koanf:"gpu_detect" help:"auto (nvidia-smi when installed) or off"`
	// NvidiaSMI is the nvidia-smi program (a name looked up on PATH, or a path).
	NvidiaSMI string `koanf:"nvidia_smi" help:"the nvidia-smi program"`
	// ProcessRuntime lets the worker run process-runtime replicas (any
	// program as a child process); default true. Off, the worker does not
	// advertise the runtime and the scheduler places none here.
	ProcessRuntime bool `koanf:"process_runtime" help:"run runtime: process deployments (child processes)"`
	// Router picks how the handles of the worker's replicas reach the
	// deployments they call: "embedded" (default) runs a router
	// (pkg/routing) inside the worker that sends each call straight to the
	// chosen replica — one NATS round trip, or none to a replica of this
	// worker, which is preferred when no more loaded; "service" sends it
	// through the router service's queue group (two more messages a hop).
	Router string `koanf:"router" help:"embedded (handles routed from the worker) or service (through the router service)"`
	// Liveness configures the embedded router's probes of replicas that
	// hold its requests.
	Liveness routing.Liveness `koanf:"liveness"`
	// DeploymentCreds, when set, is the NATS credentials file of the
	// connection deployment code gets (serve.Init.NC): a user allowed
	// handle calls only (deploy/auth's "deployment"). Unset, deployment
	// code gets the worker's own connection.
	DeploymentCreds string `koanf:"deployment_creds" help:"NATS credentials file of the connection deployment code gets (handle calls only)"`
	// AssignmentWriter is the NATS user whose signature an assignment
	// must carry when the worker has credentials (nats.creds): a user of
	// the account that issued the worker's own (package provenance). ""
	// obeys unsigned assignments.
	AssignmentWriter string `koanf:"assignment_writer" help:"NATS user whose signature assignments must carry when nats.creds is set (empty: unsigned obeyed)"`
	// SecretsDir holds the files "${secret:NAME}" references in a
	// deployment's user_config or env resolve to (one file per secret).
	SecretsDir string `koanf:"secrets_dir" help:"directory of the files ${secret:NAME} references resolve to"`
	// GCMinHeap is the heap size below which the worker process's garbage
	// collector does not run (package gcfloor): a worker's live heap is
	// small and its requests allocate, so with Go's default it collects
	// many times a second; above the floor GOGC applies unchanged. "0"
	// turns it off. Applied by the worker binary (Command), not by Run.
	GCMinHeap string `koanf:"gc_min_heap" help:"heap size below which the worker's Go garbage collector does not run (e.g. 64Mi; 0: Go's default)"`
	// BodyStallTimeout is how long the replicas' side of a chunked body
	// transfer waits for its peer (a chunk of a request body, credit for
	// a response body) before it fails the request (504) or drops the
	// response.
	BodyStallTimeout time.Duration `koanf:"body_stall_timeout" help:"how long a chunked body transfer waits for the ingress before the request fails (504)"`
	// ChildEnv is the environment process-runtime children start from
	// (less its JETSERVE_* variables): main passes the worker's own. Not
	// an option.
	ChildEnv []string `koanf:"-"`
}

// Resources is what the worker offers.
type Resources struct {
	// CPU is the number of CPUs offered; 0 (the default) = the machine's
	// CPUs, or the CPU limit of the worker's cgroup (a container's --cpus)
	// when lower.
	CPU float64 `koanf:"cpu" help:"CPUs offered (0: min(machine, cgroup limit))"`
	// Memory offered, as bytes or a quantity ("16Gi"); "" = MemTotal from
	// /proc/meminfo, or the memory limit of the worker's cgroup (a
	// container's --memory) when lower.
	Memory string `koanf:"memory" help:"memory offered, bytes or 16Gi (empty: min(machine, cgroup limit))"`
	// GPUs declared, used when none is detected.
	GPUs []GPU `koanf:"gpus" help:"GPUs declared when none is detected (config file only)"`
}

// GPU is a declared GPU.
type GPU struct {
	Index int    `koanf:"index"`
	Type  string `koanf:"type"`
	// Memory as bytes or a quantity ("80Gi"); optional.
	Memory string `koanf:"memory"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Common:           service.DefaultCommon(":9102"),
		GPUDetect:        GPUDetectAuto,
		NvidiaSMI:        gpu.DefaultCommand,
		ProcessRuntime:   true,
		Router:           RouterEmbedded,
		Liveness:         routing.DefaultLiveness(),
		SecretsDir:       DefaultSecretsDir,
		AssignmentWriter: "scheduler",
		GCMinHeap:        DefaultGCMinHeap,
		BodyStallTimeout: wire.DefaultBodyStall,
	}
}

// Router modes (Config.Router).
const (
	RouterEmbedded = "embedded"
	RouterService  = "service"
)

// DefaultGCMinHeap is the default gc_min_heap.
const DefaultGCMinHeap = "64Mi"

// DefaultSecretsDir is where Docker and Kubernetes mount secrets.
const DefaultSecretsDir = "/run/secrets"

// CommonConfig returns the shared part.
func (c Config) CommonConfig() service.Common { return c.Common }

// Validate checks every option; each error names its key.
func (c Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.ID != "" {
		if err := protocol.ValidWorkerID(c.ID); err != nil {
			errs = append(errs, fmt.Errorf("id: %w", err))
		}
	}
	if c.Resources.CPU < 0 {
		errs = append(errs, fmt.Errorf("resources.cpu: must be positive (or 0: detect), got %v", c.Resources.CPU))
	}
	if c.Resources.Memory != "" {
		if _, err := config.ParseBytes(c.Resources.Memory); err != nil {
			errs = append(errs, fmt.Errorf("resources.memory: %w", err))
		}
	}
	if _, err := config.ParseBytes(c.GCMinHeap); err != nil {
		errs = append(errs, fmt.Errorf("gc_min_heap: %w", err))
	}
	if c.BodyStallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("body_stall_timeout: must be > 0, got %v", c.BodyStallTimeout))
	}
	if _, err := c.declaredGPUs(); err != nil {
		errs = append(errs, err)
	}
	if _, err := ParseLabels(c.Labels); err != nil {
		errs = append(errs, fmt.Errorf("labels: %w", err))
	}
	switch c.GPUDetect {
	case GPUDetectAuto, GPUDetectOff:
	default:
		errs = append(errs, fmt.Errorf("gpu_detect: must be %q or %q, got %q", GPUDetectAuto, GPUDetectOff, c.GPUDetect))
	}
	if c.Router != RouterEmbedded && c.Router != RouterService {
		errs = append(errs, fmt.Errorf("router: must be %q or %q, got %q", RouterEmbedded, RouterService, c.Router))
	}
	errs = append(errs, c.Liveness.Validate("liveness"))
	if c.GPUDetect == GPUDetectAuto && c.NvidiaSMI == "" {
		errs = append(errs, errors.New("nvidia_smi: is required when gpu_detect is auto"))
	}
	return errors.Join(errs...)
}

// declaredGPUs converts resources.gpus.
func (c Config) declaredGPUs() ([]protocol.GPU, error) {
	var out []protocol.GPU
	seen := map[int]bool{}
	for i, g := range c.Resources.GPUs {
		key := fmt.Sprintf("resources.gpus[%d]", i)
		if g.Index < 0 {
			return nil, fmt.Errorf("%s.index: must not be negative, got %d", key, g.Index)
		}
		if seen[g.Index] {
			return nil, fmt.Errorf("%s.index: %d declared twice", key, g.Index)
		}
		seen[g.Index] = true
		if g.Type == "" {
			return nil, fmt.Errorf("%s.type: is required", key)
		}
		pg := protocol.GPU{Index: g.Index, Type: g.Type}
		if g.Memory != "" {
			b, err := config.ParseBytes(g.Memory)
			if err != nil {
				return nil, fmt.Errorf("%s.memory: %w", key, err)
			}
			pg.MemoryBytes = int64(b)
		}
		out = append(out, pg)
	}
	return out, nil
}

// ParseLabels parses "k=v,k2=v2" (spaces around items are ignored).
func ParseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want key=value", item)
		}
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("%q: key %q given twice", item, k)
		}
		out[k] = v
	}
	return out, nil
}
