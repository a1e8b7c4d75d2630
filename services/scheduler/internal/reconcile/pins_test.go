package reconcile

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/services/scheduler/internal/plan"
	"github.com/rs/zerolog"
)

// TestPinnedRunsCounted: while a deployment has a replica of an earlier
// version, the leader counts its application's runs pinned to a version
// (reading the workflow's records in a real JetStream), keeps the counts
// of the versions that have replicas, asks for the runs of a version with
// none to be unpinned, and forgets the counts once the deployment is at
// its version (so that the next update counts afresh).
func TestPinnedRunsCounted(t *testing.T) {
	tf := natstest.NewFleet(t)
	nc, js, names := tf.NC, tf.JS, jobs.Names{Names: tf.Names}
	q := jobs.NewQueue(js, names, zerolog.Nop())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := q.Ensure(ctx, "app", "d", config.AsyncMethod{Name: "flow", Workflow: true}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, names.Records("app", "flow"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for id, r := range map[string]jobs.Record{
		"kept":  {Status: jobs.Suspended, Version: "v1", PinnedUntil: now.Add(time.Hour)},
		"kept2": {Status: jobs.Queued, Version: "v1", PinnedUntil: now.Add(time.Hour)},
		"lost":  {Status: jobs.Suspended, Version: "v0", PinnedUntil: now.Add(time.Hour)},
		"ended": {Status: jobs.Succeeded, Version: "v1", PinnedUntil: now.Add(time.Hour)},
		"past":  {Status: jobs.Suspended, Version: "v1", PinnedUntil: now.Add(-time.Minute)},
		"auto":  {Status: jobs.Suspended, Version: "v1"},
	} {
		r.ID, r.App, r.Deployment, r.Method, r.Workflow = id, "app", "d", "flow", true
		b, _ := json.Marshal(r)
		if _, err := kv.Put(ctx, id, b); err != nil {
			t.Fatal(err)
		}
	}
	unpins, err := nc.SubscribeSync(names.UnpinSubject("app", "flow"))
	if err != nil {
		t.Fatal(err)
	}

	sc, err := config.Parse([]byte("applications:\n- {name: app, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h, max_ongoing_requests: 7}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cur := plan.Version(sc.Applications[0].Deployments[0])
	l := &leader{Reconciler: New(Options{Jobs: q}), log: zerolog.Nop(), cfg: sc, st: plan.NewState(),
		pinned: map[string]map[string]int{}, pinResults: make(chan pinResult, 1)}
	l.st.Replicas["new"] = &plan.Replica{Spec: protocol.ReplicaSpec{ID: "new", App: "app", Deployment: "d", Version: cur}}
	l.st.Replicas["old"] = &plan.Replica{Spec: protocol.ReplicaSpec{ID: "old", App: "app", Deployment: "d", Version: "v1", PinnedOnly: true}}

	l.startPinCount(ctx, now)
	l.wg.Wait()
	l.pinCounted(<-l.pinResults)
	if got := l.pinned["app/d"]; len(got) != 1 || got["v1"] != 2 {
		t.Fatalf("pinned = %v, want app/d: v1 2 (not the ended, expired or auto_upgrade runs; v0 has no replica)", l.pinned)
	}
	msg, err := unpins.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatalf("no unpin request for the run of v0 (no replica left): %v", err)
	}
	var req jobs.PinnedRun
	if err := json.Unmarshal(msg.Data, &req); err != nil || req.ID != "lost" || req.Version != "v0" {
		t.Fatalf("unpin request %s (%v), want run lost of v0", msg.Data, err)
	}
	if msg, err := unpins.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a second unpin request %s, want only the run of v0", msg.Data)
	}

	// A second count waits PinScanEvery.
	l.startPinCount(ctx, now.Add(time.Second))
	if l.pinCounting {
		t.Fatalf("a count %v after the last started, want none before %v", time.Second, PinScanEvery)
	}

	// The last replica of v1 went (lost, and given up for lack of room):
	// the application is counted again, and its runs of v1 and v0 are
	// asked to be unpinned, until a count finds none.
	delete(l.st.Replicas, "old")
	l.startPinCount(ctx, now.Add(PinScanEvery))
	if !l.pinCounting {
		t.Fatalf("no count once the last replica of an earlier version went, want one (its runs wait for an unpin)")
	}
	l.wg.Wait()
	l.pinCounted(<-l.pinResults)
	asked := map[string]jobs.PinnedRun{}
	for range 3 {
		msg, err := unpins.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("unpin requests %v, want kept, kept2 and lost: %v", asked, err)
		}
		var req jobs.PinnedRun
		_ = json.Unmarshal(msg.Data, &req)
		asked[req.ID] = req
	}
	if asked["kept"].Version != "v1" || asked["kept2"].Version != "v1" || asked["lost"].Version != "v0" {
		t.Fatalf("unpin requests %v, want kept and kept2 of v1 (no replica now) and lost of v0", asked)
	}
	for _, run := range asked { // as a runner does
		if err := q.Unpin(ctx, "app", run); err != nil {
			t.Fatal(err)
		}
	}
	l.startPinCount(ctx, now.Add(2*PinScanEvery))
	if !l.pinCounting {
		t.Fatalf("no count after one that asked for unpins, want the application counted until none is asked")
	}
	l.wg.Wait()
	l.pinCounted(<-l.pinResults)
	if msg, err := unpins.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("unpin request %s once every run was unpinned, want none", msg.Data)
	}
	// At its version with nothing left to unpin, the counts go.
	l.startPinCount(ctx, now.Add(3*PinScanEvery))
	if _, ok := l.pinned["app/d"]; ok || l.pinCounting {
		t.Fatalf("at its version: pinned = %v (counting %v), want forgotten and no count", l.pinned, l.pinCounting)
	}
}

// TestNewLeaderCountsEveryApplication: a new leader counts each
// application once, old replicas or not, so that a run pinned to a
// version whose replica went under the last leader (a kept replica
// waiting for room is in no assignment) is unpinned.
func TestNewLeaderCountsEveryApplication(t *testing.T) {
	tf := natstest.NewFleet(t)
	q := jobs.NewQueue(tf.JS, jobs.Names{Names: tf.Names}, zerolog.Nop())
	sc, err := config.Parse([]byte("applications:\n- {name: app, route_prefix: /a, ingress: d, deployments: [{name: d, handler: h}]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := &leader{Reconciler: New(Options{Jobs: q}), log: zerolog.Nop(), cfg: sc, st: plan.NewState(),
		pinned: map[string]map[string]int{}, pinResults: make(chan pinResult, 1), pinAll: true}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l.startPinCount(ctx, time.Now())
	if !l.pinCounting {
		t.Fatalf("a new leader with no old replica counted nothing, want app counted once")
	}
	l.wg.Wait()
	l.pinCounted(<-l.pinResults)
	l.startPinCount(ctx, time.Now().Add(PinScanEvery))
	if l.pinCounting || len(l.pinned) != 0 {
		t.Fatalf("after the first count: counting %v, pinned %v; want no more counts, none kept", l.pinCounting, l.pinned)
	}
}
