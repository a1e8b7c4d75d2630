package plan

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func worker(id string, cpu float64, mem int64, gpus ...string) protocol.WorkerInfo {
	w := protocol.WorkerInfo{ID: id, CPU: cpu, MemoryBytes: mem, Handlers: []string{"h"}}
	for i, t := range gpus {
		w.GPUs = append(w.GPUs, protocol.GPU{Index: i, Type: t})
	}
	return w
}

func TestClusterPlace(t *testing.T) {
	const gi = int64(1 << 30)
	labeled := worker("w-zone", 4, 8*gi)
	labeled.Labels = map[string]string{"zone": "a"}
	other := worker("w-other", 4, 8*gi)
	other.Handlers = []string{"other"}
	tests := []struct {
		name    string
		workers []protocol.WorkerInfo
		reqs    []Request
		want    []Placement // one per request; WorkerID "" = no fit
		reason  string      // reason of the last no-fit
	}{
		{
			name:    "three 0.3-GPU replicas share one device",
			workers: []protocol.WorkerInfo{worker("w1", 8, 8*gi, "a10g", "a10g")},
			reqs:    []Request{{Key: "a/d", Handler: "h", GPU: 0.3}, {Key: "a/d", Handler: "h", GPU: 0.3}, {Key: "a/d", Handler: "h", GPU: 0.3}, {Key: "a/d", Handler: "h", GPU: 0.3}},
			want:    []Placement{{"w1", []int{0}}, {"w1", []int{0}}, {"w1", []int{0}}, {"w1", []int{1}}},
		},
		{
			name:    "whole GPUs take whole free devices",
			workers: []protocol.WorkerInfo{worker("w1", 8, 8*gi, "a", "a", "a")},
			reqs:    []Request{{Key: "a/x", Handler: "h", GPU: 0.5}, {Key: "a/y", Handler: "h", GPU: 2}, {Key: "a/z", Handler: "h", GPU: 2}},
			want:    []Placement{{"w1", []int{0}}, {"w1", []int{1, 2}}, {}},
			reason:  "no worker has 2 GPU free",
		},
		{
			name:    "gpu.type selector picks the h100 worker and device",
			workers: []protocol.WorkerInfo{worker("w-a10", 8, 8*gi, "a10g"), worker("w-mixed", 8, 8*gi, "a10g", "h100")},
			reqs:    []Request{{Key: "a/d", Handler: "h", GPU: 1, Labels: map[string]string{"gpu.type": "h100"}}, {Key: "a/d", Handler: "h", GPU: 1, Labels: map[string]string{"gpu.type": "h100"}}},
			want:    []Placement{{"w-mixed", []int{1}}, {}},
			reason:  "no worker has 1 GPU free with gpu.type=h100",
		},
		{
			name:    "no worker has the GPU type",
			workers: []protocol.WorkerInfo{worker("w1", 8, 8*gi, "a10g")},
			reqs:    []Request{{Key: "a/d", Handler: "h", GPU: 1, Labels: map[string]string{"gpu.type": "h100"}}},
			want:    []Placement{{}},
			reason:  `no worker with handler "h" matches labels gpu.type=h100`,
		},
		{
			name:    "spread across workers",
			workers: []protocol.WorkerInfo{worker("w1", 8, 8*gi), worker("w2", 2, 8*gi)},
			reqs:    []Request{{Key: "a/d", Handler: "h", CPU: 1}, {Key: "a/d", Handler: "h", CPU: 1}, {Key: "a/d", Handler: "h", CPU: 1}, {Key: "a/e", Handler: "h", CPU: 1}},
			want:    []Placement{{WorkerID: "w1"}, {WorkerID: "w2"}, {WorkerID: "w1"}, {WorkerID: "w1"}},
		},
		{
			name:    "memory limits",
			workers: []protocol.WorkerInfo{worker("w1", 8, 2*gi)},
			reqs:    []Request{{Key: "a/d", Handler: "h", Memory: gi}, {Key: "a/d", Handler: "h", Memory: gi}, {Key: "a/d", Handler: "h", Memory: gi}},
			want:    []Placement{{WorkerID: "w1"}, {WorkerID: "w1"}, {}},
			reason:  "no worker has 1Gi memory free",
		},
		{
			name:    "fractional CPU",
			workers: []protocol.WorkerInfo{worker("w1", 1, gi)},
			reqs:    []Request{{Key: "a/d", Handler: "h", CPU: 0.1}, {Key: "a/d", Handler: "h", CPU: 0.2}, {Key: "a/d", Handler: "h", CPU: 0.7}, {Key: "a/d", Handler: "h", CPU: 0.5}},
			want:    []Placement{{WorkerID: "w1"}, {WorkerID: "w1"}, {WorkerID: "w1"}, {}},
			reason:  "no worker has 0.5 CPU free",
		},
		{
			name:    "labels must all match",
			workers: []protocol.WorkerInfo{worker("w1", 8, gi), labeled},
			reqs:    []Request{{Key: "a/d", Handler: "h", Labels: map[string]string{"zone": "a"}}, {Key: "a/d", Handler: "h", Labels: map[string]string{"zone": "a", "disk": "ssd"}}},
			want:    []Placement{{WorkerID: "w-zone"}, {}},
			reason:  `no worker with handler "h" matches labels disk=ssd,zone=a`,
		},
		{
			name:    "only workers with the handler",
			workers: []protocol.WorkerInfo{other},
			reqs:    []Request{{Key: "a/d", Handler: "h"}},
			want:    []Placement{{}},
			reason:  `no worker registers handler "h"`,
		},
		{
			name:   "no workers",
			reqs:   []Request{{Key: "a/d", Handler: "h"}},
			want:   []Placement{{}},
			reason: "no live workers",
		},
		{
			name:    "peers draw a replica to their worker over free CPU",
			workers: []protocol.WorkerInfo{worker("w1", 4, gi), worker("w2", 4.5, gi)},
			reqs: []Request{{Key: "a/c1", Handler: "h", CPU: 1}, {Key: "a/c2", Handler: "h", CPU: 1, Peers: []string{"a/c1"}},
				{Key: "a/c3", Handler: "h", CPU: 1, Peers: []string{"a/c2"}}},
			want: []Placement{{WorkerID: "w2"}, {WorkerID: "w2"}, {WorkerID: "w2"}},
		},
		{
			name:    "a deployment's own spread comes before its peers",
			workers: []protocol.WorkerInfo{worker("w1", 8, gi), worker("w2", 8, gi)},
			reqs: []Request{{Key: "a/f", Handler: "h", CPU: 1}, {Key: "a/b", Handler: "h", CPU: 1, Peers: []string{"a/f"}},
				{Key: "a/b", Handler: "h", CPU: 1, Peers: []string{"a/f"}}},
			want: []Placement{{WorkerID: "w1"}, {WorkerID: "w1"}, {WorkerID: "w2"}},
		},
		{
			name:    "peers only where the replica fits",
			workers: []protocol.WorkerInfo{worker("w1", 2, gi), worker("w2", 1, gi)},
			reqs:    []Request{{Key: "a/c1", Handler: "h", CPU: 2}, {Key: "a/c2", Handler: "h", CPU: 1, Peers: []string{"a/c1"}}},
			want:    []Placement{{WorkerID: "w1"}, {WorkerID: "w2"}},
		},
		{
			name:    "avoid a worker when another fits",
			workers: []protocol.WorkerInfo{worker("w1", 8, gi), worker("w2", 1, gi)},
			reqs:    []Request{{Key: "a/d", Handler: "h", CPU: 1, Avoid: map[string]bool{"w1": true}}, {Key: "a/d", Handler: "h", CPU: 1, Avoid: map[string]bool{"w2": true}}},
			want:    []Placement{{WorkerID: "w2"}, {WorkerID: "w1"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCluster(tt.workers)
			var lastReason string
			for i, r := range tt.reqs {
				got, err := c.Place(r, protocol.ReplicaSpec{ID: fmt.Sprint(i)})
				var nf *NoFitError
				if err != nil && !errors.As(err, &nf) {
					t.Fatalf("Place(%d) error %v is not a NoFitError", i, err)
				}
				if err != nil {
					lastReason = nf.Error()
				}
				if got.WorkerID != tt.want[i].WorkerID || !slices.Equal(got.GPUIndices, tt.want[i].GPUIndices) {
					t.Errorf("Place(%d) = %+v (err %v), want %+v", i, got, err, tt.want[i])
				}
			}
			if lastReason != tt.reason {
				t.Errorf("no-fit reason = %q, want %q", lastReason, tt.reason)
			}
		})
	}
}
