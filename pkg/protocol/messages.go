package protocol

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
)

// GPU is one accelerator of a worker.
type GPU struct {
	// Index is the device index as CUDA_VISIBLE_DEVICES counts it.
	Index int    `json:"index"`
	Type  string `json:"type"` // e.g. "h100", "a10g"
	// MemoryBytes is the device memory, 0 when unknown.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
}

// WorkerInfo is a worker's registration, re-put as its heartbeat into
// BucketWorkers under its id; the bucket TTL expires it when the worker dies.
type WorkerInfo struct {
	ID          string            `json:"id"`
	Host        string            `json:"host"`
	CPU         float64           `json:"cpu"`
	MemoryBytes int64             `json:"memory_bytes"`
	GPUs        []GPU             `json:"gpus,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Handlers lists the deployment handlers this worker can run.
	Handlers []string `json:"handlers"`
	// Runtimes lists the replica runtimes this worker runs: "go" (the
	// handlers above) and, unless its process_runtime option is off,
	// "process". Absent (a worker older than the field) means "go" only.
	Runtimes []string `json:"runtimes,omitempty"`
	// Async lists, per handler, its async methods with their SDK defaults.
	Async     map[string][]config.AsyncMethod `json:"async,omitempty"`
	Draining  bool                            `json:"draining,omitempty"`
	StartedAt time.Time                       `json:"started_at"`
	Heartbeat time.Time                       `json:"heartbeat"`
	// WrittenBy is the worker's NATS user JWT and Signature its nkey's
	// signature (base64url) of this document with Signature empty
	// (package provenance), when the worker has credentials. The
	// scheduler and the routers, with credentials, accept a registration
	// only signed by a worker user of their account — with a user per
	// worker, this worker's own — and find in it the key that signs the
	// worker's replica records.
	WrittenBy string `json:"written_by,omitempty"`
	Signature string `json:"signature,omitempty"`
}

// HandlerInfo is what the code of a deployment handler declares, put in
// BucketHandlers by each worker that registers it when the worker starts:
// its async methods with their SDK defaults. It outlives the workers, so an
// ingress knows a method the serve config only tunes while no worker runs.
type HandlerInfo struct {
	Handler string `json:"handler"`
	// Async lists the handler's async methods with their SDK defaults.
	Async []config.AsyncMethod `json:"async,omitempty"`
	// Worker is the worker that put this value, at UpdatedAt.
	Worker    string    `json:"worker"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ReplicaSpec is what the scheduler asks a worker to run: one replica of one
// deployment.
type ReplicaSpec struct {
	ID         string `json:"id"`
	App        string `json:"app"`
	Deployment string `json:"deployment"`
	Handler    string `json:"handler"`
	// Version is a hash of everything in the deployment's config that needs
	// a restart when it changes (all but num_replicas and user_config).
	Version            string          `json:"version"`
	UserConfig         json.RawMessage `json:"user_config,omitempty"`
	MaxOngoingRequests int             `json:"max_ongoing_requests"`
	CPU                float64         `json:"cpu"`
	GPU                float64         `json:"gpu,omitempty"`
	MemoryBytes        int64           `json:"memory_bytes,omitempty"`
	// GPUIndices are the devices given to this replica (CUDA_VISIBLE_DEVICES).
	GPUIndices              []int           `json:"gpu_indices,omitempty"`
	GracefulShutdownTimeout config.Duration `json:"graceful_shutdown_timeout"`
	// MaxModelsPerReplica caps the models a multiplexed replica keeps
	// loaded (the deployment's max_models_per_replica; 0 = the default).
	MaxModelsPerReplica int `json:"max_models_per_replica,omitempty"`
	// Runtime is how the replica runs: "go" (Handler, compiled into the
	// worker; "" means go) or "process" (Process says which program).
	Runtime string `json:"runtime,omitempty"`
	// Process is the child process of a process-runtime replica.
	Process *ProcessSpec `json:"process,omitempty"`
	// AsyncMethods are the deployment's async_methods from the serve
	// config, which override its handler's SDK defaults field by field. A
	// change is applied in place: the replica's job runner is replaced
	// (jobs running go on; the new runner takes the slots they free).
	AsyncMethods []config.AsyncMethod `json:"async_methods,omitempty"`
	// PinnedOnly marks a replica of an earlier version that a rolling
	// update keeps for the workflow runs pinned to its version: it takes
	// no requests (routers skip it) and runs only those runs, until the
	// last of them ends. Set and cleared in place.
	PinnedOnly bool `json:"pinned_only,omitempty"`
}

// IsProcess reports whether the replica runs as a child process.
func (s ReplicaSpec) IsProcess() bool { return s.Runtime == config.RuntimeProcess }

// ProcessSpec is the program a process-runtime replica runs, from the
// deployment's command, env, port, health_path, protocol and
// startup_timeout.
type ProcessSpec struct {
	// Command is the argv; Command[0] is looked up on the worker's PATH
	// unless it holds a slash.
	Command []string `json:"command"`
	// Env is added to the child's environment.
	Env map[string]string `json:"env,omitempty"`
	// Port is where the child listens on 127.0.0.1; 0 = the worker picks a
	// free port. Either way the child gets it as PORT.
	Port int `json:"port,omitempty"`
	// HealthPath is polled until it answers 2xx (start-up) and on every
	// health check.
	HealthPath string `json:"health_path"`
	// Protocol is "http" or "oip" (Open Inference Protocol v2).
	Protocol string `json:"protocol"`
	// StartupTimeout bounds start-up: a child not healthy by then is FAILED.
	StartupTimeout config.Duration `json:"startup_timeout"`
}

// ConfigVersion hashes the part of s a running replica applies in place —
// user_config, max_ongoing_requests, graceful_shutdown_timeout and
// async_methods — so that the replica's record can say which it applies
// (ReplicaInfo.ConfigVersion).
func (s ReplicaSpec) ConfigVersion() string {
	uc := []byte(s.UserConfig)
	var buf bytes.Buffer
	if len(uc) > 0 && json.Compact(&buf, uc) == nil {
		uc = buf.Bytes()
	}
	b, _ := json.Marshal(struct {
		UserConfig              string
		MaxOngoingRequests      int
		GracefulShutdownTimeout config.Duration
		AsyncMethods            []config.AsyncMethod
		PinnedOnly              bool `json:",omitempty"` // absent when false: earlier hashes stand
	}{string(uc), s.MaxOngoingRequests, s.GracefulShutdownTimeout, s.AsyncMethods, s.PinnedOnly})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:6])
}

// Assignment is the complete set of replicas one worker must run, written by
// the leading scheduler into BucketAssignments under the worker id.
type Assignment struct {
	WorkerID string        `json:"worker_id"`
	Replicas []ReplicaSpec `json:"replicas"`
	// Epoch is the scheduler leadership epoch that wrote it (fencing): the
	// revision of its lease in BucketLeases, so never above that bucket's
	// last revision (workers refuse one that is).
	Epoch uint64 `json:"epoch"`
	// WrittenBy is the writing scheduler's NATS user JWT and Signature
	// its nkey's signature (base64url) of this document with Signature
	// empty (package provenance), when the scheduler has credentials. A
	// worker with credentials obeys only an assignment signed by the user
	// "scheduler" of its own account.
	WrittenBy string `json:"written_by,omitempty"`
	Signature string `json:"signature,omitempty"`
}

// ReplicaState is a replica's lifecycle state, as in Ray Serve.
type ReplicaState string

// Replica states.
const (
	ReplicaPending  ReplicaState = "PENDING"
	ReplicaStarting ReplicaState = "STARTING"
	ReplicaRunning  ReplicaState = "RUNNING"
	ReplicaStopping ReplicaState = "STOPPING"
	// ReplicaFailed: the replica cannot start (a process runtime command
	// that does not exist, a child that never became healthy); the record's
	// message says why. Routers never send it requests; the scheduler
	// replaces it with backoff.
	ReplicaFailed ReplicaState = "FAILED"
)

// ReplicaInfo is a replica's live record in BucketReplicas, put by its
// worker on every state change and as a heartbeat.
type ReplicaInfo struct {
	ID                 string       `json:"id"`
	App                string       `json:"app"`
	Deployment         string       `json:"deployment"`
	WorkerID           string       `json:"worker_id"`
	Version            string       `json:"version"`
	State              ReplicaState `json:"state"`
	Message            string       `json:"message,omitempty"`
	MaxOngoingRequests int          `json:"max_ongoing_requests"`
	// ConfigVersion is the ReplicaSpec.ConfigVersion of the config the
	// replica applies now: it changes once an in-place change (user_config,
	// limits, async_methods) took effect.
	ConfigVersion string `json:"config_version,omitempty"`
	// PinnedOnly: the replica is kept only for the workflow runs pinned to
	// its version (ReplicaSpec.PinnedOnly); routers send it no request.
	PinnedOnly bool `json:"pinned_only,omitempty"`
	// Subject is the replica's micro service subject prefix.
	Subject   string    `json:"subject"`
	StartedAt time.Time `json:"started_at"`
	Heartbeat time.Time `json:"heartbeat"`
	// Process describes the child of a process-runtime replica.
	Process *ProcessStatus `json:"process,omitempty"`
	// Signer is the public key (U…) of the worker's NATS user and
	// Signature its signature (base64url) of this document with Signature
	// empty (package provenance), when the worker has credentials. The
	// user's JWT is not attached (it is several KiB, and records are
	// rewritten every heartbeat): readers find it in the registration of
	// the worker WorkerID, signed and checked there.
	Signer    string `json:"signer,omitempty"`
	Signature string `json:"signature,omitempty"`
}

// ProcessStatus is the child process behind a process-runtime replica.
type ProcessStatus struct {
	// PID is the running child's process id (0 while none runs).
	PID int `json:"pid,omitempty"`
	// Port is where the child listens on 127.0.0.1.
	Port int `json:"port"`
	// Restarts counts the times the child exited and was started again.
	Restarts int `json:"restarts"`
	// LastExit is how the last child ended ("exit status 1",
	// "signal: killed"); LastExitAt when.
	LastExit   string    `json:"last_exit,omitempty"`
	LastExitAt time.Time `json:"last_exit_time,omitzero"`
}

// LoadReport is a replica's current load: without the request totals on
// RouteLoadSubject on every change (coalesced to 20 ms), for the routers;
// with them on LoadSubject at most every 250 ms while it changes, for the
// autoscaler, the dashboard and the routers, and at least once a second.
type LoadReport struct {
	ReplicaID  string `json:"replica_id"`
	App        string `json:"app"`
	Deployment string `json:"deployment"`
	Ongoing    int    `json:"ongoing"`
	Max        int    `json:"max"`
	// Draining replicas take no new requests.
	Draining bool `json:"draining,omitempty"`
	// Models are the multiplexed model ids the replica holds (loaded or
	// loading), sorted; a report is sent whenever they change. Routers
	// prefer a replica holding a request's model.
	Models []string `json:"models,omitempty"`
	// Served counts the requests the replica finished since it started,
	// Errors those that failed, and LatencyMSSum their processing time in
	// milliseconds; LatencyBuckets counts them by processing time, bucket
	// i holding those ≤ LatencyBoundsMS[i] (and above the bound before),
	// the last one those above every bound. All are totals since the
	// replica started: a reader takes the difference of two reports of
	// one replica for a window's rate, mean and quantiles.
	Served         uint64    `json:"served,omitempty"`
	Errors         uint64    `json:"errors,omitempty"`
	LatencyMSSum   float64   `json:"latency_ms_sum,omitempty"`
	LatencyBuckets []uint64  `json:"latency_buckets,omitempty"`
	At             time.Time `json:"at"`
}

// LatencyBoundsMS are the upper bounds, in milliseconds, of
// LoadReport.LatencyBuckets (a last bucket holds what exceeds them).
var LatencyBoundsMS = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000}

// LatencyBucket is the index in LoadReport.LatencyBuckets of a request
// that took ms milliseconds.
func LatencyBucket(ms float64) int {
	for i, b := range LatencyBoundsMS {
		if ms <= b {
			return i
		}
	}
	return len(LatencyBoundsMS)
}

// LatencyQuantile estimates the q-quantile, in ms, of counts per
// LatencyBoundsMS bucket, interpolating linearly within the
// bucket (the overflow bucket answers the last bound).
func LatencyQuantile(counts []uint64, q float64) float64 {
	var n uint64
	for _, c := range counts {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var seen float64
	bounds := LatencyBoundsMS
	for i, c := range counts {
		if c == 0 {
			continue
		}
		if seen+float64(c) >= rank {
			if i >= len(bounds) {
				return bounds[len(bounds)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = bounds[i-1]
			}
			return lo + (bounds[i]-lo)*(rank-seen)/float64(c)
		}
		seen += float64(c)
	}
	return bounds[len(bounds)-1]
}

// CallStats is the data of a replica's call endpoint in its NATS micro
// stats ($SRV.STATS): what its handler did. micro's own num_requests and
// processing_time time the admission of a request only — handlers run
// concurrently, after micro's callback returned — and miss the calls a
// worker's router makes to a replica of its own without NATS; these count
// every request the handler answered, and its time.
type CallStats struct {
	Served  uint64 `json:"served"`
	Errors  uint64 `json:"errors"`
	Ongoing int    `json:"ongoing"`
	// MaxOngoing is the replica's max_ongoing_requests.
	MaxOngoing int `json:"max_ongoing_requests"`
	// AverageMS is the handlers' mean time per request; P50MS, P95MS and
	// P99MS are estimated from LatencyBoundsMS buckets.
	AverageMS float64 `json:"average_ms"`
	P50MS     float64 `json:"p50_ms"`
	P95MS     float64 `json:"p95_ms"`
	P99MS     float64 `json:"p99_ms"`
}

// RouterStats is one router's queue per deployment, published once a second
// and on change; the autoscaler adds them to replica load.
type RouterStats struct {
	RouterID string         `json:"router_id"`
	Queued   map[string]int `json:"queued"` // key "<app>/<deployment>"
	At       time.Time      `json:"at"`
}

// GraphStats is one ingress's count of the choices of every splitter of
// the applications' graphs over the last WindowSeconds, published on
// GraphStatsSubject every second while a count is not zero (and once
// more when they all fall to zero). The admin API sums the fresh reports
// of every ingress into the applications' status (AppStatus.Graph).
type GraphStats struct {
	IngressID string `json:"ingress_id"`
	// Splits counts requests by application, splitter node and chosen
	// step.
	Splits        map[string]map[string]map[string]uint64 `json:"splits"`
	WindowSeconds int                                     `json:"window_seconds"`
	At            time.Time                               `json:"at"`
}

// GraphStatus is an application graph's live traffic split in the status.
type GraphStatus struct {
	Splitters []SplitterStatus `json:"splitters"`
}

// SplitterStatus is one splitter node: its configured weights and the
// requests each branch got over the last WindowSeconds at every ingress
// that reported.
type SplitterStatus struct {
	Node          string         `json:"node"`
	WindowSeconds int            `json:"window_seconds"`
	Requests      uint64         `json:"requests"`
	Branches      []BranchStatus `json:"branches"`
}

// BranchStatus is one step of a splitter.
type BranchStatus struct {
	Step string `json:"step"`
	// Target is the deployment (or graph node) the step calls.
	Target string `json:"target"`
	// Weight is the configured share, in percent.
	Weight int `json:"weight"`
	// Requests went to this branch in the window; Share is their
	// percentage of the node's requests (0 when there were none).
	Requests uint64  `json:"requests"`
	Share    float64 `json:"share"`
}

// Status is the fleet's state as the leading scheduler computes it, the
// body of GET /api/serve/applications.
type Status struct {
	Leader       string               `json:"leader"`
	Applications map[string]AppStatus `json:"applications"`
	Workers      []WorkerStatus       `json:"workers"`
	UpdatedAt    time.Time            `json:"updated_at"`
}

// AppState is an application's state, as in Ray Serve.
type AppState string

// Application states.
const (
	AppNotStarted   AppState = "NOT_STARTED"
	AppDeploying    AppState = "DEPLOYING"
	AppDeployFailed AppState = "DEPLOY_FAILED"
	AppRunning      AppState = "RUNNING"
	AppUnhealthy    AppState = "UNHEALTHY"
	AppDeleting     AppState = "DELETING"
)

// DeploymentState is a deployment's state, as in Ray Serve.
type DeploymentState string

// Deployment states.
const (
	DeploymentUpdating    DeploymentState = "UPDATING"
	DeploymentHealthy     DeploymentState = "HEALTHY"
	DeploymentUnhealthy   DeploymentState = "UNHEALTHY"
	DeploymentUpscaling   DeploymentState = "UPSCALING"
	DeploymentDownscaling DeploymentState = "DOWNSCALING"
	// DeploymentDeployFailed: replicas of the current version failed to
	// start (FAILED) several times in a row and none runs; the scheduler
	// keeps retrying with backoff, the message says why.
	DeploymentDeployFailed DeploymentState = "DEPLOY_FAILED"
)

// AppStatus is one application's status.
type AppStatus struct {
	Name        string                      `json:"name"`
	RoutePrefix string                      `json:"route_prefix"`
	Ingress     string                      `json:"ingress"`
	Status      AppState                    `json:"status"`
	Message     string                      `json:"message,omitempty"`
	Deployments map[string]DeploymentStatus `json:"deployments"`
	DeployedAt  time.Time                   `json:"last_deployed_time"`
	// Graph is the live traffic split of an application with a graph
	// (splitters only), filled in by the admin API that answers from the
	// ingresses' GraphStats; the leader's status in the Status bucket
	// does not carry it.
	Graph *GraphStatus `json:"graph,omitempty"`
}

// DeploymentStatus is one deployment's status.
type DeploymentStatus struct {
	Name           string          `json:"name"`
	Status         DeploymentState `json:"status"`
	Message        string          `json:"message,omitempty"`
	TargetReplicas int             `json:"target_num_replicas"`
	Version        string          `json:"version"`
	Replicas       []ReplicaStatus `json:"replicas"`
	// CurrentReplicas counts RUNNING replicas of the current version.
	CurrentReplicas int `json:"current_num_replicas"`
	// DesiredReplicas is what the deployment asks for: the autoscaler's
	// latest decision for an autoscaled deployment, else num_replicas.
	// TargetReplicas is the same clamped to the autoscaling bounds.
	DesiredReplicas int `json:"desired_num_replicas"`
	// Autoscaling is set for deployments with an autoscaling_config.
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`
	// Rollout is set while a rolling update runs (replicas of an earlier
	// version are still assigned). Its PENDING replicas are then new
	// replicas waiting for room, not a deployment that cannot run.
	Rollout *RolloutStatus `json:"rollout,omitempty"`
	// Pending holds why its PENDING replicas fit on no worker, each
	// distinct reason once, ordered by message; the message's "pending:"
	// part is rendered from them.
	Pending []Reason `json:"pending_reasons,omitempty"`
}

// RolloutStrategy is how a rolling update makes room for new replicas.
type RolloutStrategy string

// Rollout strategies.
const (
	// RolloutSurge: new replicas start beside the old ones; an old one
	// drains once a new one runs. The deployment never has fewer RUNNING
	// replicas than its target.
	RolloutSurge RolloutStrategy = "surge"
	// RolloutReplace: no worker has room for a surge replica, so old
	// replicas drain first, one at a time, and new ones start in the room
	// they free, never more than max_unavailable below the target. A
	// deployment of one replica has none RUNNING for a moment; routers
	// hold its requests meanwhile.
	RolloutReplace RolloutStrategy = "replace"
)

// RolloutStatus is a rolling update in progress.
type RolloutStatus struct {
	Strategy RolloutStrategy `json:"strategy"`
	// Reason says why the update replaces instead of surging: why the
	// surge replica fits nowhere (and, when max_unavailable is 0, that the
	// update waits for room).
	Reason string `json:"reason,omitempty"`
	// MaxUnavailable is the deployment's max_unavailable resolved against
	// its target: how many replicas fewer than the target may be RUNNING.
	MaxUnavailable int `json:"max_unavailable"`
	// OldReplicas counts replicas of earlier versions still assigned.
	OldReplicas int `json:"old_replicas"`
}

// AutoscalingStatus is an autoscaled deployment's scaling state in the
// status: its bounds and the autoscaler's last decision (none yet: only
// the bounds are set).
type AutoscalingStatus struct {
	MinReplicas           int     `json:"min_replicas"`
	MaxReplicas           int     `json:"max_replicas"`
	TargetOngoingRequests float64 `json:"target_ongoing_requests"`
	// Load is the smoothed ongoing+queued requests the decision saw.
	Load float64 `json:"load"`
	// LastReason and LastMessage are the last ScaleDecision's reason code
	// and explanation; LastDecisionAt when it was made.
	LastReason     ScaleReason `json:"last_scale_reason,omitempty"`
	LastMessage    string      `json:"last_scale_message,omitempty"`
	LastDecisionAt time.Time   `json:"last_scale_time,omitzero"`
}

// ScaleReason says why the autoscaler chose a replica count; the list is
// closed (it labels a metric).
type ScaleReason string

// Scale reasons.
const (
	// ScaleInitial: no previous decision; initial_replicas (or min).
	ScaleInitial ScaleReason = "initial"
	// ScaleUp and ScaleDown: the smoothed load asked for more or fewer
	// replicas for longer than upscale_delay or downscale_delay.
	ScaleUp   ScaleReason = "upscale"
	ScaleDown ScaleReason = "downscale"
	// ScaleToZero: idle for downscale_to_zero_delay at one replica.
	ScaleToZero ScaleReason = "scale_to_zero"
	// ScaleColdStart: requests queued for a deployment at zero replicas;
	// applied at once, without the upscale delay.
	ScaleColdStart ScaleReason = "cold_start"
	// ScaleBounds: the config's min/max changed and the previous decision
	// lay outside them.
	ScaleBounds ScaleReason = "bounds"
)

// ScaleDecision is the autoscaler's decision for one deployment, put into
// BucketScale under ScaleKey(app, deployment) by the leading autoscaler
// when it changes (and refreshed now and then with the current load). The
// scheduler runs Desired replicas (clamped to the config's bounds) of an
// autoscaled deployment; a restarted autoscaler reads its decisions back.
type ScaleDecision struct {
	App        string `json:"app"`
	Deployment string `json:"deployment"`
	// Desired is the replica count decided.
	Desired int `json:"desired"`
	// Current counts RUNNING replicas when the decision was made.
	Current int `json:"current"`
	// Target is the ongoing requests per replica aimed at
	// (target_ongoing_requests).
	Target float64 `json:"target"`
	// Load is the ongoing+queued requests averaged over look_back_period;
	// Ongoing and Queued the instantaneous values.
	Load    float64 `json:"load"`
	Ongoing int     `json:"ongoing"`
	Queued  int     `json:"queued"`
	// Backlog is async work (queued plus running jobs), when known.
	Backlog int         `json:"backlog,omitempty"`
	Reason  ScaleReason `json:"reason"`
	Message string      `json:"message,omitempty"`
	// Epoch is the autoscaler leadership epoch that wrote it.
	Epoch uint64    `json:"epoch"`
	At    time.Time `json:"at"`
}

// ReplicaStatus is one replica as status shows it.
type ReplicaStatus struct {
	ID        string       `json:"replica_id"`
	State     ReplicaState `json:"state"`
	WorkerID  string       `json:"worker_id,omitempty"`
	Version   string       `json:"version"`
	Message   string       `json:"message,omitempty"`
	StartedAt time.Time    `json:"start_time,omitzero"`
	// PinnedOnly: a replica of an earlier version kept, after a rolling
	// update, for the workflow runs pinned to its version; it takes no
	// requests.
	PinnedOnly bool `json:"pinned_only,omitempty"`
	// Process is the child of a process-runtime replica: restarts and the
	// last exit.
	Process *ProcessStatus `json:"process,omitempty"`
	// Reason says, as a code with its values, why a PENDING replica fits
	// on no worker, or why a STOPPING one was removed (when the leader
	// that removed it still leads); Message is rendered from it then.
	Reason *Reason `json:"reason,omitempty"`
}

// WorkerStatus is one worker's capacity and use.
type WorkerStatus struct {
	ID        string            `json:"id"`
	Host      string            `json:"host"`
	CPU       float64           `json:"cpu"`
	CPUUsed   float64           `json:"cpu_used"`
	Memory    int64             `json:"memory_bytes"`
	MemUsed   int64             `json:"memory_used_bytes"`
	GPUs      []GPU             `json:"gpus,omitempty"`
	GPUUsed   []float64         `json:"gpu_used,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Replicas  int               `json:"replicas"`
	Heartbeat time.Time         `json:"heartbeat"`
}

// Lease is a leader lease in BucketLeases.
type Lease struct {
	Holder   string    `json:"holder"`
	Acquired time.Time `json:"acquired"`
}
