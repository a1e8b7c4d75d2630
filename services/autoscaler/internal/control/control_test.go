package control

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDesiredWorkers: the estimate counts the PENDING replicas whose
// reason code says more workers would place them, sized by the reason's
// Need; it never reads the message (a message that reads like "no room"
// under another code counts nothing, and one with no message counts).
func TestDesiredWorkers(t *testing.T) {
	need := func(cpu, gpu float64) *protocol.Need { return &protocol.Need{Handler: "h", CPU: cpu, GPU: gpu} }
	pending := func(dep string, why protocol.Reason, n int) protocol.DeploymentStatus {
		ds := protocol.DeploymentStatus{Name: dep}
		for range n {
			r := why
			ds.Replicas = append(ds.Replicas, protocol.ReplicaStatus{State: protocol.ReplicaPending, Message: why.String(), Reason: &r})
		}
		return ds
	}
	workers := func(n int, cpu float64, gpus int) []protocol.WorkerStatus {
		var ws []protocol.WorkerStatus
		for range n {
			ws = append(ws, protocol.WorkerStatus{CPU: cpu, GPUs: make([]protocol.GPU, gpus)})
		}
		return ws
	}
	status := func(ws []protocol.WorkerStatus, ds ...protocol.DeploymentStatus) protocol.Status {
		a := protocol.AppStatus{Name: "a", Deployments: map[string]protocol.DeploymentStatus{}}
		for _, d := range ds {
			a.Deployments[d.Name] = d
		}
		return protocol.Status{Workers: ws, Applications: map[string]protocol.AppStatus{"a": a}}
	}
	noRoom := func(n *protocol.Need, short ...protocol.Resource) protocol.Reason {
		return protocol.Reason{Code: protocol.ReasonNoRoom, Need: n, Short: short}
	}
	misleading := pending("small", protocol.Reason{Code: protocol.ReasonNoHandler, Need: need(1, 0)}, 3)
	for i := range misleading.Replicas {
		misleading.Replicas[i].Message = "no worker has 1 CPU free"
	}
	silent := pending("small", noRoom(need(1, 0), protocol.ResourceCPU), 9)
	for i := range silent.Replicas {
		silent.Replicas[i].Message = ""
	}
	tests := []struct {
		name string
		st   protocol.Status
		want int
	}{
		{"nothing pending: the live workers", status(workers(2, 4, 0)), 2},
		{"no worker at all: one", status(nil, pending("small", protocol.Reason{Code: protocol.ReasonNoWorkers, Need: need(1, 0)}, 5)), 1},
		{"cpu: enough average workers", status(workers(2, 4, 0), pending("small", noRoom(need(1, 0), protocol.ResourceCPU), 9)), 2 + 3},
		{"gpu: one per gpu", status(workers(1, 64, 1), pending("gpu", noRoom(need(1, 1), protocol.ResourceGPU), 2)), 1 + 2},
		{"memory: sized by the need", status([]protocol.WorkerStatus{{CPU: 64, Memory: 4 << 30}},
			pending("big", noRoom(&protocol.Need{Handler: "h", CPU: 1, MemoryBytes: 6 << 30}, protocol.ResourceMemory), 2)), 1 + 3},
		{"a missing handler is not capacity", status(workers(1, 4, 0), pending("small", protocol.Reason{Code: protocol.ReasonNoHandler, Need: need(1, 0)}, 3)), 1},
		{"unmatched labels are not capacity", status(workers(1, 4, 0), pending("small", protocol.Reason{Code: protocol.ReasonNoLabels, Need: need(1, 0)}, 3)), 1},
		{"the code decides, not a message that reads like capacity", status(workers(1, 4, 0), misleading), 1},
		{"the code counts with no message at all", status(workers(2, 4, 0), silent), 2 + 3},
		{"a PENDING replica with no reason (an older scheduler) counts nothing", status(workers(1, 4, 0),
			protocol.DeploymentStatus{Name: "small", Replicas: []protocol.ReplicaStatus{{State: protocol.ReplicaPending, Message: "no live workers"}}}), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DesiredWorkers(tc.st); got != tc.want {
				t.Fatalf("DesiredWorkers() = %d, want %d", got, tc.want)
			}
		})
	}
}
