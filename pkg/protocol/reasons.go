package protocol

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/jetserve/jetserve/pkg/config"
)

// ReasonCode says, in a word a program acts on, why the scheduler left a
// replica PENDING or removed one. The list is append-only: the codes cross
// the wire in the status (ReplicaStatus.Reason, DeploymentStatus.Pending),
// label the scheduler's replacement metric and are what the autoscaler
// reads; Reason.String renders the message humans read beside them.
type ReasonCode string

// Why a replica is PENDING: it fits on no worker (Reason.Need says what it
// asks for).
const (
	// ReasonNoWorkers: there is no live worker at all.
	ReasonNoWorkers ReasonCode = "no_workers"
	// ReasonNoHandler: no live worker registers the deployment's handler
	// (for runtime: process, none runs the process runtime).
	ReasonNoHandler ReasonCode = "no_handler"
	// ReasonNoLabels: workers run the deployment, but none matches its
	// label selector.
	ReasonNoLabels ReasonCode = "labels_unmatched"
	// ReasonNoRoom: workers that could run it lack the CPU, GPU or memory
	// (Reason.Short) for it now.
	ReasonNoRoom ReasonCode = "no_room"
)

// Why a replica was replaced: it was lost or broken; a successor is added
// at once and placed away from its worker when another fits.
const (
	// ReasonHealthCheck: its health checks failed Reason.Failures times in
	// a row; Reason.Detail is the last error.
	ReasonHealthCheck ReasonCode = "health_check"
	// ReasonWorkerLost: its worker's registration expired.
	ReasonWorkerLost ReasonCode = "worker_lost"
	// ReasonWorkerDraining: its worker is shutting down.
	ReasonWorkerDraining ReasonCode = "worker_draining"
	// ReasonRecordVanished: its record left the Replicas bucket while its
	// worker lives.
	ReasonRecordVanished ReasonCode = "record_vanished"
	// ReasonStartFailed: its record said FAILED for its start backoff;
	// Reason.Detail is the record's message.
	ReasonStartFailed ReasonCode = "start_failed"
	// ReasonStartTimeout: it was STARTING for longer than Reason.Timeout.
	ReasonStartTimeout ReasonCode = "start_timeout"
	// ReasonNotStarted: its worker did not report it within
	// Reason.Timeout of its assignment.
	ReasonNotStarted ReasonCode = "not_started"
)

// Why a replica was removed (or, for ReasonRebalanceStart, added) on
// purpose; it drains its requests and jobs.
const (
	// ReasonScaleDown: its deployment has more replicas than its target.
	ReasonScaleDown ReasonCode = "scale_down"
	// ReasonRollingUpdate: its deployment runs Reason.Version now, with
	// enough replicas RUNNING without it.
	ReasonRollingUpdate ReasonCode = "rolling_update"
	// ReasonMakeRoom: a rolling update with no room for a surge replica
	// drained it first to place a replica of Reason.Version.
	ReasonMakeRoom ReasonCode = "make_room"
	// ReasonRebalanceMoved: it was moved to Reason.WorkerID, where its
	// successor Reason.ReplicaID runs.
	ReasonRebalanceMoved ReasonCode = "rebalance_moved"
	// ReasonRebalanceStart: a replica added to take over from
	// Reason.ReplicaID on the crowded worker Reason.WorkerID.
	ReasonRebalanceStart ReasonCode = "rebalance_start"
	// ReasonRebalanceCancelled: a replica started by a move whose source,
	// Reason.ReplicaID, is no longer of its deployment's current version.
	ReasonRebalanceCancelled ReasonCode = "rebalance_cancelled"
	// ReasonDeleted: its application or deployment left the config.
	ReasonDeleted ReasonCode = "deleted"
	// ReasonPinnedUnplaced: a replica of Reason.Version, kept for the
	// workflow runs pinned to it, fit on no worker for Reason.Timeout
	// (Reason.Detail says why); the runs are unpinned and run on the
	// current version.
	ReasonPinnedUnplaced ReasonCode = "pinned_unplaced"
)

// ReasonCodes lists every code, in the order they were added.
func ReasonCodes() []ReasonCode {
	return []ReasonCode{
		ReasonNoWorkers, ReasonNoHandler, ReasonNoLabels, ReasonNoRoom,
		ReasonHealthCheck, ReasonWorkerLost, ReasonWorkerDraining, ReasonRecordVanished,
		ReasonStartFailed, ReasonStartTimeout, ReasonNotStarted,
		ReasonScaleDown, ReasonRollingUpdate, ReasonMakeRoom,
		ReasonRebalanceMoved, ReasonRebalanceStart, ReasonRebalanceCancelled, ReasonDeleted,
		ReasonPinnedUnplaced,
	}
}

// Pending reports whether c says why a replica is PENDING.
func (c ReasonCode) Pending() bool {
	switch c {
	case ReasonNoWorkers, ReasonNoHandler, ReasonNoLabels, ReasonNoRoom:
		return true
	}
	return false
}

// Replaced reports whether c says a replica was lost or broken, and so
// replaced (rather than removed on purpose).
func (c ReasonCode) Replaced() bool {
	switch c {
	case ReasonHealthCheck, ReasonWorkerLost, ReasonWorkerDraining, ReasonRecordVanished,
		ReasonStartFailed, ReasonStartTimeout, ReasonNotStarted:
		return true
	}
	return false
}

// NeedsWorkers reports whether more workers would place a replica PENDING
// for c: there is none, or those that could run it are full. A missing
// handler or unmatched labels need other workers, not more of them.
func (c ReasonCode) NeedsWorkers() bool { return c == ReasonNoWorkers || c == ReasonNoRoom }

// Resource is a worker resource a replica can lack.
type Resource string

// Resources.
const (
	ResourceCPU    Resource = "cpu"
	ResourceGPU    Resource = "gpu"
	ResourceMemory Resource = "memory"
)

// Need is what one replica asks of a worker: the shape of worker that
// would run it.
type Need struct {
	// Handler is the deployment's handler (runtime go); Runtime "process"
	// asks for a worker running the process runtime instead.
	Handler string  `json:"handler,omitempty"`
	Runtime string  `json:"runtime,omitempty"`
	CPU     float64 `json:"cpu"`
	GPU     float64 `json:"gpu,omitempty"`
	// MemoryBytes is 0 when the deployment asks for none.
	MemoryBytes int64 `json:"memory_bytes,omitempty"`
	// Labels is the deployment's selector (gpu.type also matches a
	// worker's GPU type).
	Labels map[string]string `json:"labels,omitempty"`
}

// Reason is why the scheduler left a replica PENDING, or replaced or
// removed it: a code and the values its message is rendered from. Only
// the fields its code's comment names are set.
type Reason struct {
	Code ReasonCode `json:"code"`
	// Need is what a PENDING replica asks of a worker.
	Need *Need `json:"need,omitempty"`
	// Short names the resources no worker that could run it has free
	// (no_room), in the order cpu, gpu, memory.
	Short []Resource `json:"short,omitempty"`
	// WorkerID is the worker lost or draining, the one a replica moved
	// to (rebalance_moved) or is moved off (rebalance_start).
	WorkerID string `json:"worker_id,omitempty"`
	// ReplicaID is the other replica of a rebalancing move.
	ReplicaID string `json:"replica_id,omitempty"`
	// Version is the version a rolling update moves to.
	Version string `json:"version,omitempty"`
	// Timeout is the start timeout exceeded (start_timeout, not_started).
	Timeout config.Duration `json:"timeout,omitempty"`
	// Failures counts the health checks failed in a row (health_check).
	Failures int `json:"failures,omitempty"`
	// Detail is the last health check's error (health_check) or the
	// FAILED record's message (start_failed).
	Detail string `json:"detail,omitempty"`
}

// IsZero reports whether r holds no reason.
func (r Reason) IsZero() bool { return r.Code == "" }

// String renders the message users read: "no live workers", "no worker has
// 1 GPU free with gpu.type=h100", "worker w1 lost", "scale down", …; "" for
// no reason.
func (r Reason) String() string {
	var n Need
	if r.Need != nil {
		n = *r.Need
	}
	process := n.Runtime == config.RuntimeProcess
	switch r.Code {
	case "":
		return ""
	case ReasonNoWorkers:
		return "no live workers"
	case ReasonNoHandler:
		if process {
			return "no worker runs the process runtime (workers with process_runtime: false take no process deployments)"
		}
		return fmt.Sprintf("no worker registers handler %q", n.Handler)
	case ReasonNoLabels:
		if process {
			return "no worker with the process runtime matches labels " + labelString(n.Labels)
		}
		return fmt.Sprintf("no worker with handler %q matches labels %s", n.Handler, labelString(n.Labels))
	case ReasonNoRoom:
		var parts []string
		for _, res := range r.Short {
			switch res {
			case ResourceCPU:
				parts = append(parts, formatFloat(n.CPU)+" CPU")
			case ResourceGPU:
				parts = append(parts, formatFloat(n.GPU)+" GPU")
			case ResourceMemory:
				parts = append(parts, formatBytes(n.MemoryBytes)+" memory")
			}
		}
		s := "no worker has " + strings.Join(parts, ", ") + " free"
		if len(n.Labels) > 0 {
			s += " with " + labelString(n.Labels)
		}
		return s
	case ReasonHealthCheck:
		return fmt.Sprintf("health check failed %d times: %s", r.Failures, r.Detail)
	case ReasonWorkerLost:
		return "worker " + r.WorkerID + " lost"
	case ReasonWorkerDraining:
		return "worker " + r.WorkerID + " draining"
	case ReasonRecordVanished:
		return "replica record vanished while its worker lives"
	case ReasonStartFailed:
		return "FAILED: " + r.Detail
	case ReasonStartTimeout:
		return fmt.Sprintf("still STARTING after %s", r.Timeout.D())
	case ReasonNotStarted:
		return fmt.Sprintf("worker did not start it within %s", r.Timeout.D())
	case ReasonScaleDown:
		return "scale down"
	case ReasonRollingUpdate:
		return "rolling update: replaced by version " + r.Version
	case ReasonMakeRoom:
		return "rolling update: drained first to make room for version " + r.Version
	case ReasonRebalanceMoved:
		return "rebalance: moved to worker " + r.WorkerID + " as " + r.ReplicaID
	case ReasonRebalanceStart:
		return "rebalance: replaces " + r.ReplicaID + " on worker " + r.WorkerID
	case ReasonRebalanceCancelled:
		return "rebalance cancelled: " + r.ReplicaID + " is no longer of the current version"
	case ReasonDeleted:
		return "deleted from the config"
	case ReasonPinnedUnplaced:
		return fmt.Sprintf("kept for the workflow runs pinned to version %s, it fit on no worker for %s (%s): the runs are unpinned",
			r.Version, r.Timeout.D(), r.Detail)
	}
	return string(r.Code) // a code newer than this reader
}

// labelString renders a selector as "k1=v1,k2=v2", keys sorted.
func labelString(m map[string]string) string {
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// formatBytes renders b in the largest binary unit dividing it (1Gi,
// 512Mi), else in bytes.
func formatBytes(b int64) string {
	units := []string{"Ki", "Mi", "Gi", "Ti"}
	s := strconv.FormatInt(b, 10)
	for i := len(units) - 1; i >= 0; i-- {
		m := int64(1) << (10 * (i + 1))
		if b >= m && b%m == 0 {
			s = strconv.FormatInt(b/m, 10) + units[i]
			break
		}
	}
	return s
}
