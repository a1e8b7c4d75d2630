package protocol_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// TestReasonMessages: every code renders the message users read, from
// its values; the table covers every code of ReasonCodes.
func TestReasonMessages(t *testing.T) {
	h := &protocol.Need{Handler: "h", CPU: 1}
	proc := &protocol.Need{Runtime: config.RuntimeProcess, CPU: 1}
	sel := map[string]string{"zone": "a", "gpu.type": "h100"}
	tests := []struct {
		r    protocol.Reason
		want string
	}{
		{protocol.Reason{Code: protocol.ReasonNoWorkers, Need: h}, "no live workers"},
		{protocol.Reason{Code: protocol.ReasonNoHandler, Need: h}, `no worker registers handler "h"`},
		{protocol.Reason{Code: protocol.ReasonNoHandler, Need: proc},
			"no worker runs the process runtime (workers with process_runtime: false take no process deployments)"},
		{protocol.Reason{Code: protocol.ReasonNoLabels, Need: &protocol.Need{Handler: "h", Labels: sel}},
			`no worker with handler "h" matches labels gpu.type=h100,zone=a`},
		{protocol.Reason{Code: protocol.ReasonNoLabels, Need: &protocol.Need{Runtime: config.RuntimeProcess, Labels: sel}},
			"no worker with the process runtime matches labels gpu.type=h100,zone=a"},
		{protocol.Reason{Code: protocol.ReasonNoRoom, Need: &protocol.Need{Handler: "h", CPU: 0.5, GPU: 1, MemoryBytes: 2 << 30, Labels: sel},
			Short: []protocol.Resource{protocol.ResourceCPU, protocol.ResourceGPU, protocol.ResourceMemory}},
			"no worker has 0.5 CPU, 1 GPU, 2Gi memory free with gpu.type=h100,zone=a"},
		{protocol.Reason{Code: protocol.ReasonNoRoom, Need: &protocol.Need{Handler: "h", CPU: 1, MemoryBytes: 1000},
			Short: []protocol.Resource{protocol.ResourceMemory}}, "no worker has 1000 memory free"},
		{protocol.Reason{Code: protocol.ReasonHealthCheck, Failures: 3, Detail: "context deadline exceeded"},
			"health check failed 3 times: context deadline exceeded"},
		{protocol.Reason{Code: protocol.ReasonWorkerLost, WorkerID: "w1"}, "worker w1 lost"},
		{protocol.Reason{Code: protocol.ReasonWorkerDraining, WorkerID: "w1"}, "worker w1 draining"},
		{protocol.Reason{Code: protocol.ReasonRecordVanished}, "replica record vanished while its worker lives"},
		{protocol.Reason{Code: protocol.ReasonStartFailed, Detail: "exec: no such file"}, "FAILED: exec: no such file"},
		{protocol.Reason{Code: protocol.ReasonStartTimeout, Timeout: config.Duration(time.Minute)}, "still STARTING after 1m0s"},
		{protocol.Reason{Code: protocol.ReasonNotStarted, Timeout: config.Duration(30 * time.Second)}, "worker did not start it within 30s"},
		{protocol.Reason{Code: protocol.ReasonScaleDown}, "scale down"},
		{protocol.Reason{Code: protocol.ReasonRollingUpdate, Version: "abc123"}, "rolling update: replaced by version abc123"},
		{protocol.Reason{Code: protocol.ReasonMakeRoom, Version: "abc123"}, "rolling update: drained first to make room for version abc123"},
		{protocol.Reason{Code: protocol.ReasonRebalanceMoved, WorkerID: "w2", ReplicaID: "r2"}, "rebalance: moved to worker w2 as r2"},
		{protocol.Reason{Code: protocol.ReasonRebalanceStart, WorkerID: "w1", ReplicaID: "r1"}, "rebalance: replaces r1 on worker w1"},
		{protocol.Reason{Code: protocol.ReasonRebalanceCancelled, ReplicaID: "r1"}, "rebalance cancelled: r1 is no longer of the current version"},
		{protocol.Reason{Code: protocol.ReasonDeleted}, "deleted from the config"},
		{protocol.Reason{Code: protocol.ReasonPinnedUnplaced, Version: "abc123", Timeout: config.Duration(30 * time.Second), Detail: `no worker registers handler "h"`},
			`kept for the workflow runs pinned to version abc123, it fit on no worker for 30s (no worker registers handler "h"): the runs are unpinned`},
		{protocol.Reason{}, ""},
		{protocol.Reason{Code: "from_the_future"}, "from_the_future"},
	}
	covered := map[protocol.ReasonCode]bool{}
	for _, tt := range tests {
		if got := tt.r.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.r, got, tt.want)
		}
		covered[tt.r.Code] = true
	}
	for _, c := range protocol.ReasonCodes() {
		if !covered[c] {
			t.Errorf("code %s has no message test", c)
		}
	}
}

// TestReasonCodeClasses: each code is in exactly one class — pending,
// replaced, or removed on purpose — and only no_workers and no_room ask
// for more workers.
func TestReasonCodeClasses(t *testing.T) {
	seen := map[protocol.ReasonCode]bool{}
	pending, replaced := 0, 0
	for _, c := range protocol.ReasonCodes() {
		if seen[c] {
			t.Errorf("ReasonCodes() lists %s twice", c)
		}
		seen[c] = true
		if c.Pending() && c.Replaced() {
			t.Errorf("%s is both a pending and a replacement code", c)
		}
		if c.Pending() {
			pending++
		}
		if c.Replaced() {
			replaced++
		}
		want := c == protocol.ReasonNoWorkers || c == protocol.ReasonNoRoom
		if c.NeedsWorkers() != want {
			t.Errorf("%s.NeedsWorkers() = %v, want %v", c, c.NeedsWorkers(), want)
		}
	}
	if pending != 4 || replaced != 7 {
		t.Errorf("pending codes %d, replacement codes %d; want 4 and 7", pending, replaced)
	}
}

// TestReasonJSON: a reason crosses the wire whole, its code a plain
// string, unset fields left out.
func TestReasonJSON(t *testing.T) {
	r := protocol.Reason{Code: protocol.ReasonNoRoom, Need: &protocol.Need{Handler: "h", CPU: 2, Labels: map[string]string{"zone": "a"}},
		Short: []protocol.Resource{protocol.ResourceCPU}}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"code":"no_room","need":{"handler":"h","cpu":2,"labels":{"zone":"a"}},"short":["cpu"]}`
	if string(b) != want {
		t.Errorf("json.Marshal(%+v) = %s, want %s", r, b, want)
	}
	var back protocol.Reason
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("decoded %+v (err %v), want %+v", back, err, r)
	}
	d, _ := json.Marshal(protocol.Reason{Code: protocol.ReasonStartTimeout, Timeout: config.Duration(time.Minute)})
	if string(d) != `{"code":"start_timeout","timeout":"1m0s"}` {
		t.Errorf("start_timeout = %s, want the timeout as a duration string", d)
	}
}
