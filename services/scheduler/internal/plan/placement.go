package plan

import (
	"math"
	"slices"
	"sort"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// GPUTypeLabel is the implicit label every worker carries for each type of
// GPU it has: a deployment selecting gpu.type=h100 lands only on workers
// with an h100 and is given only h100 devices.
const GPUTypeLabel = "gpu.type"

// eps absorbs float rounding when fractions add up (0.1+0.2+0.7 ≤ 1).
const eps = 1e-9

// Request is what one replica needs from a worker.
type Request struct {
	// Key is "<app>/<deployment>": replicas with the same key are spread.
	Key     string
	Handler string
	// Runtime "process" needs a worker that runs the process runtime
	// instead of one that registers Handler.
	Runtime string
	CPU     float64
	GPU     float64
	Memory  int64
	Labels  map[string]string
	// Avoid names workers to use only when no other fits (a replica being
	// replaced should land elsewhere if possible).
	Avoid map[string]bool
	// Only, if set, is the one worker to consider (a rebalancing move).
	Only string
	// Peers are the keys of the deployments joined to this one by uses
	// edges (Input.Colocate): among workers equal for the spread of Key,
	// the one holding the most of their replicas is preferred.
	Peers []string
}

// Placement is where a replica goes.
type Placement struct {
	WorkerID   string
	GPUIndices []int
}

// NoFitError says why a replica fits on no worker: Reason holds one of
// the PENDING codes (protocol.ReasonCode.Pending) and what the replica
// asks for.
type NoFitError struct {
	Reason protocol.Reason
}

func (e *NoFitError) Error() string { return e.Reason.String() }

// NoRoom reports whether some worker could run the replica (handler,
// labels) but lacks CPU, GPU or memory for it now.
func (e *NoFitError) NoRoom() bool { return e.Reason.Code == protocol.ReasonNoRoom }

type node struct {
	info    protocol.WorkerInfo
	cpuUsed float64
	memUsed int64
	gpuUsed map[int]float64 // by GPU index
	count   map[string]int  // replicas per Request.Key
	total   int
}

// Cluster is the capacity model of the live workers: what each has and
// what the replicas placed on it use. It is pure bookkeeping (no I/O) and
// not safe for concurrent use.
type Cluster struct {
	nodes []*node // sorted by worker ID
	byID  map[string]*node
}

// NewCluster models workers with nothing placed yet.
func NewCluster(workers []protocol.WorkerInfo) *Cluster {
	c := &Cluster{byID: map[string]*node{}}
	for _, w := range workers {
		n := &node{info: w, gpuUsed: map[int]float64{}, count: map[string]int{}}
		c.nodes = append(c.nodes, n)
		c.byID[w.ID] = n
	}
	sort.Slice(c.nodes, func(i, j int) bool { return c.nodes[i].info.ID < c.nodes[j].info.ID })
	return c
}

// Add accounts for a replica already placed on workerID; it reports false
// when the worker is not in the cluster.
func (c *Cluster) Add(workerID, key string, s protocol.ReplicaSpec) bool {
	n, ok := c.byID[workerID]
	if !ok {
		return false
	}
	n.cpuUsed += s.CPU
	n.memUsed += s.MemoryBytes
	switch {
	case s.GPU <= 0:
	case s.GPU <= 1:
		for _, i := range s.GPUIndices {
			n.gpuUsed[i] += s.GPU
		}
	default:
		for _, i := range s.GPUIndices {
			n.gpuUsed[i] += 1
		}
	}
	n.count[key]++
	n.total++
	return true
}

// Remove undoes Add: the replica s no longer uses workerID's resources.
func (c *Cluster) Remove(workerID, key string, s protocol.ReplicaSpec) {
	n, ok := c.byID[workerID]
	if !ok {
		return
	}
	n.cpuUsed -= s.CPU
	n.memUsed -= s.MemoryBytes
	switch {
	case s.GPU <= 0:
	case s.GPU <= 1:
		for _, i := range s.GPUIndices {
			n.gpuUsed[i] -= s.GPU
		}
	default:
		for _, i := range s.GPUIndices {
			n.gpuUsed[i]--
		}
	}
	n.count[key]--
	n.total--
}

// Count returns how many replicas of key are placed on workerID.
func (c *Cluster) Count(workerID, key string) int {
	if n, ok := c.byID[workerID]; ok {
		return n.count[key]
	}
	return 0
}

// Usage is what is used on one worker.
type Usage struct {
	CPU      float64
	Memory   int64
	GPU      []float64 // parallel to WorkerInfo.GPUs
	Replicas int
}

// Usage returns what is used on workerID.
func (c *Cluster) Usage(workerID string) Usage {
	n, ok := c.byID[workerID]
	if !ok {
		return Usage{}
	}
	u := Usage{CPU: n.cpuUsed, Memory: n.memUsed, Replicas: n.total}
	for _, g := range n.info.GPUs {
		u.GPU = append(u.GPU, n.gpuUsed[g.Index])
	}
	return u
}

// Place picks a worker for r and accounts for it. Among the workers that
// fit it prefers those not in r.Avoid, then the one with the fewest
// replicas of r.Key (spread), then the one with the most replicas of
// r.Peers (co-location of deployments that call each other), then the most
// free CPU, then the most free memory, then the lowest ID. Fractional GPUs go to the fullest device that
// still has room (so three 0.3-GPU replicas share one device); whole GPUs
// above one take whole free devices.
func (c *Cluster) Place(r Request, spec protocol.ReplicaSpec) (Placement, error) {
	type cand struct {
		n    *node
		gpus []int
	}
	var cands []cand
	var haveHandler, haveLabels int
	var short []protocol.Resource // resources some matching worker lacked
	for _, n := range c.nodes {
		if r.Only != "" && n.info.ID != r.Only {
			continue
		}
		if !canRun(n.info, r) {
			continue
		}
		haveHandler++
		gpuType, ok := matchLabels(n.info, r.Labels)
		if !ok {
			continue
		}
		haveLabels++
		gpus, lack := fits(n, r, gpuType)
		if len(lack) > 0 {
			short = append(short, lack...)
			continue
		}
		cands = append(cands, cand{n, gpus})
	}
	if len(cands) == 0 {
		return Placement{}, &NoFitError{Reason: noFitReason(len(c.nodes), haveHandler, haveLabels, r, short)}
	}
	sort.SliceStable(cands, func(i, j int) bool {
		a, b := cands[i].n, cands[j].n
		if av, bv := r.Avoid[a.info.ID], r.Avoid[b.info.ID]; av != bv {
			return !av
		}
		if a.count[r.Key] != b.count[r.Key] {
			return a.count[r.Key] < b.count[r.Key]
		}
		if pa, pb := a.peerCount(r.Peers), b.peerCount(r.Peers); pa != pb {
			return pa > pb
		}
		if fa, fb := a.info.CPU-a.cpuUsed, b.info.CPU-b.cpuUsed; math.Abs(fa-fb) > eps {
			return fa > fb
		}
		if fa, fb := a.info.MemoryBytes-a.memUsed, b.info.MemoryBytes-b.memUsed; fa != fb {
			return fa > fb
		}
		return a.info.ID < b.info.ID
	})
	best := cands[0]
	p := Placement{WorkerID: best.n.info.ID, GPUIndices: best.gpus}
	spec.GPUIndices = best.gpus
	spec.CPU, spec.GPU, spec.MemoryBytes = r.CPU, r.GPU, r.Memory
	c.Add(p.WorkerID, r.Key, spec)
	return p, nil
}

// peerCount is how many replicas of the deployments keys n holds.
func (n *node) peerCount(keys []string) int {
	c := 0
	for _, k := range keys {
		c += n.count[k]
	}
	return c
}

// canRun reports whether w runs r's runtime: the process runtime for a
// process deployment, else r's handler.
func canRun(w protocol.WorkerInfo, r Request) bool {
	if r.Runtime == config.RuntimeProcess {
		return slices.Contains(w.Runtimes, config.RuntimeProcess)
	}
	return slices.Contains(w.Handlers, r.Handler)
}

// matchLabels reports whether every selector label equals the worker's
// label; gpu.type also matches any of the worker's GPU types, and is then
// returned so that only devices of that type are used.
func matchLabels(w protocol.WorkerInfo, sel map[string]string) (gpuType string, ok bool) {
	for k, v := range sel {
		if w.Labels[k] == v {
			continue
		}
		if k == GPUTypeLabel && slices.ContainsFunc(w.GPUs, func(g protocol.GPU) bool { return g.Type == v }) {
			gpuType = v
			continue
		}
		return "", false
	}
	return gpuType, true
}

// fits returns the GPU indices r would get on n, or the resources n lacks.
func fits(n *node, r Request, gpuType string) (gpus []int, lack []protocol.Resource) {
	if n.cpuUsed+r.CPU > n.info.CPU+eps {
		lack = append(lack, protocol.ResourceCPU)
	}
	if r.Memory > 0 && n.memUsed+r.Memory > n.info.MemoryBytes {
		lack = append(lack, protocol.ResourceMemory)
	}
	if r.GPU > 0 {
		var devs []protocol.GPU
		for _, g := range n.info.GPUs {
			if gpuType == "" || g.Type == gpuType {
				devs = append(devs, g)
			}
		}
		if r.GPU <= 1 {
			best, bestUsed := -1, -1.0
			for _, g := range devs {
				used := n.gpuUsed[g.Index]
				if used+r.GPU <= 1+eps && used > bestUsed {
					best, bestUsed = g.Index, used
				}
			}
			if best < 0 {
				lack = append(lack, protocol.ResourceGPU)
			} else {
				gpus = []int{best}
			}
		} else {
			need := int(math.Round(r.GPU))
			for _, g := range devs {
				if n.gpuUsed[g.Index] <= eps && len(gpus) < need {
					gpus = append(gpus, g.Index)
				}
			}
			if len(gpus) < need {
				lack = append(lack, protocol.ResourceGPU)
				gpus = nil
			}
		}
	}
	if len(lack) > 0 {
		return nil, lack
	}
	return gpus, nil
}

// noFitReason says why r fits on none of the workers, given how many
// there are, how many run its handler (or runtime), how many of those
// match its labels, and what the matching ones lacked.
func noFitReason(workers, haveHandler, haveLabels int, r Request, short []protocol.Resource) protocol.Reason {
	reason := protocol.Reason{Need: &protocol.Need{Handler: r.Handler, Runtime: r.Runtime, CPU: r.CPU, GPU: r.GPU,
		MemoryBytes: r.Memory, Labels: r.Labels}}
	switch {
	case workers == 0:
		reason.Code = protocol.ReasonNoWorkers
	case haveHandler == 0:
		reason.Code = protocol.ReasonNoHandler
	case haveLabels == 0:
		reason.Code = protocol.ReasonNoLabels
	default:
		reason.Code = protocol.ReasonNoRoom
		for _, res := range []protocol.Resource{protocol.ResourceCPU, protocol.ResourceGPU, protocol.ResourceMemory} {
			if slices.Contains(short, res) {
				reason.Short = append(reason.Short, res)
			}
		}
	}
	return reason
}
