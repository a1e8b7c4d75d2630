package control

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDesiredWorkers(t *testing.T) {
	cpu := func(f float64) *float64 { return &f }
	cfg := config.ServeConfig{Applications: []config.Application{{Name: "a", Deployments: []config.Deployment{
		{Name: "small", Resources: config.Resources{CPU: cpu(1)}},
		{Name: "gpu", Resources: config.Resources{CPU: cpu(1), GPU: 1}},
	}}}}
	pending := func(dep, msg string, n int) protocol.DeploymentStatus {
		ds := protocol.DeploymentStatus{Name: dep}
		for range n {
			ds.Replicas = append(ds.Replicas, protocol.ReplicaStatus{State: protocol.ReplicaPending, Message: msg})
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
	tests := []struct {
		name string
		st   protocol.Status
		want int
	}{
		{"nothing pending: the live workers", status(workers(2, 4, 0)), 2},
		{"no worker at all: one", status(nil, pending("small", "no live workers", 5)), 1},
		{"cpu: enough average workers", status(workers(2, 4, 0), pending("small", "no worker has 1 CPU free", 9)), 2 + 3},
		{"gpu: one per gpu", status(workers(1, 64, 1), pending("gpu", "no worker has 1 GPU free", 2)), 1 + 2},
		{"a missing handler is not capacity", status(workers(1, 4, 0), pending("small", `no worker registers handler "x"`, 3)), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DesiredWorkers(tc.st, cfg); got != tc.want {
				t.Fatalf("DesiredWorkers() = %d, want %d", got, tc.want)
			}
		})
	}
}
