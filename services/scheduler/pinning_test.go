package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go/jetstream"
)

// keptReplica returns the deployment's RUNNING pinned_only replica of
// version ver, if its status lists one.
func keptReplica(s protocol.Status, dep, ver string) (protocol.ReplicaStatus, bool) {
	for _, r := range s.Applications["app"].Deployments[dep].Replicas {
		if r.PinnedOnly && r.Version == ver && r.State == protocol.ReplicaRunning {
			return r, true
		}
	}
	return protocol.ReplicaStatus{}, false
}

// TestKeptReplicaPlacedAgainWhenItsWorkerDies (workflow versioning): a
// workflow run is pinned to v1 when the deployment rolls to v2, and the
// scheduler keeps a v1 replica, pinned_only, beside v2's. The worker
// running it dies: while the run is pinned, a new v1 replica, pinned_only,
// runs on another worker, and the run is not asked to unpin (it waits
// for its version, as a pinned Temporal workflow waits for a worker of
// its build).
func TestKeptReplicaPlacedAgainWhenItsWorkerDies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns, b, f := startFleet(t, 0)
	for i := range 3 {
		f.addWorker(ctx, protocol.WorkerInfo{ID: fmt.Sprintf("w%d", i), CPU: 1, MemoryBytes: 8 << 30})
	}
	s := start(t, ns, "s1")
	const flow = "    async_methods: [{name: flow, workflow: true}]\n"
	put(t, s.url, appConfig(1, 5, flow))
	var v1 string
	eventually(t, 10*time.Second, func() (bool, string) {
		d := status(t, s.url).Applications["app"].Deployments["front"]
		v1 = d.Version
		return d.Status == protocol.DeploymentHealthy, fmt.Sprintf("front %s: %s", d.Status, d.Message)
	})

	// A run of the workflow, suspended on v1 and pinned to it.
	nc := natstest.Conn(t, ns)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := protocol.NewNames("")
	jn := jobs.Names{Names: names}
	var kv jetstream.KeyValue
	eventually(t, 10*time.Second, func() (bool, string) { // the scheduler creates the workflow's records bucket
		kv, err = js.KeyValue(ctx, jn.Records("app", "flow"))
		return err == nil, fmt.Sprintf("records bucket: %v", err)
	})
	rec, _ := json.Marshal(jobs.Record{ID: "p1", App: "app", Deployment: "front", Method: "flow", Workflow: true,
		Status: jobs.Suspended, Version: v1, PinnedUntil: time.Now().Add(time.Hour)})
	if _, err := kv.Put(ctx, "p1", rec); err != nil {
		t.Fatal(err)
	}
	unpins, err := nc.SubscribeSync(jn.UnpinSubject("app", "flow"))
	if err != nil {
		t.Fatal(err)
	}

	put(t, s.url, appConfig(1, 9, flow)) // v2
	var kept protocol.ReplicaStatus
	eventually(t, 20*time.Second, func() (bool, string) {
		st := status(t, s.url)
		d := st.Applications["app"].Deployments["front"]
		var ok bool
		kept, ok = keptReplica(st, "front", v1)
		return ok && d.Version != v1 && d.Status == protocol.DeploymentHealthy, fmt.Sprintf("front %s: %s", d.Status, d.Message)
	})

	f.killWorker(ctx, kept.WorkerID)
	var again protocol.ReplicaStatus
	eventually(t, 20*time.Second, func() (bool, string) {
		st := status(t, s.url)
		var ok bool
		again, ok = keptReplica(st, "front", v1)
		return ok && again.ID != kept.ID, fmt.Sprintf("front: %s", st.Applications["app"].Deployments["front"].Message)
	})
	if again.WorkerID == kept.WorkerID {
		t.Fatalf("the v1 replica was placed again on %s, the worker that died", again.WorkerID)
	}
	found := false
	for _, r := range assignment(t, b, again.WorkerID).Replicas {
		found = found || (r.ID == again.ID && r.PinnedOnly && r.Version == v1)
	}
	if !found {
		t.Fatalf("%s's assignment %+v, want the new v1 replica pinned_only", again.WorkerID, assignment(t, b, again.WorkerID))
	}
	if msg, err := unpins.NextMsg(2 * time.Second); err == nil {
		t.Fatalf("unpin request %s while a v1 replica runs again, want none", msg.Data)
	}
}
