package reconcile

import (
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStaleRecordsIgnored: a replica record this instance has not seen
// written (a new revision) for StaleRecord is taken as expired — its
// delete marker was lost — even while the follower's copy still holds it
// at the same revision; a fresh one stays, and a new revision of the
// stale one brings it back.
func TestStaleRecordsIgnored(t *testing.T) {
	now := time.Now()
	l := &leader{log: zerolog.Nop(), records: map[string]record{}}
	copyAt := func(revs map[string]uint64) map[string]stored[protocol.ReplicaInfo] {
		m := map[string]stored[protocol.ReplicaInfo]{}
		for k, rev := range revs {
			m[k] = stored[protocol.ReplicaInfo]{Value: protocol.ReplicaInfo{ID: k, WorkerID: "w1", State: protocol.ReplicaRunning}, Rev: rev}
		}
		return m
	}
	l.onReplicas(copyAt(map[string]uint64{"fresh": 1, "stale": 2}), now.Add(-StaleRecord-2*time.Second))
	// fresh is rewritten (a heartbeat); stale only comes again unchanged,
	// as a resync after a reconnect reads it.
	l.onReplicas(copyAt(map[string]uint64{"fresh": 3, "stale": 2}), now.Add(-time.Second))
	got := l.liveRecords(now)
	if _, ok := got["fresh"]; !ok || len(got) != 1 {
		t.Errorf("liveRecords() = %v, want only the fresh record", got)
	}
	if got := l.liveRecords(now.Add(StaleRecord - 2*time.Second)); len(got) != 1 {
		t.Errorf("liveRecords() a little later = %v, want the fresh record still", got)
	}
	l.onReplicas(copyAt(map[string]uint64{"fresh": 3, "stale": 4}), now)
	if got := l.liveRecords(now); len(got) != 2 {
		t.Errorf("liveRecords() after the stale record was written again = %v, want both", got)
	}
	l.onReplicas(copyAt(map[string]uint64{"stale": 4}), now)
	if _, ok := l.records["fresh"]; ok {
		t.Errorf("a record gone from the bucket is still kept: %v", l.records)
	}
}

// TestOnScaleKeysByDeployment: decisions are kept by deployment and a
// deleted one is forgotten.
func TestOnScaleKeysByDeployment(t *testing.T) {
	l := &leader{log: zerolog.Nop(), scale: map[string]protocol.ScaleDecision{}}
	dec := func(app, dep string, n int) stored[protocol.ScaleDecision] {
		return stored[protocol.ScaleDecision]{Value: protocol.ScaleDecision{App: app, Deployment: dep, Desired: n}}
	}
	l.onScale(map[string]stored[protocol.ScaleDecision]{"a.d": dec("a", "d", 3), "a.e": dec("a", "e", 1)})
	if l.scale["a/d"].Desired != 3 || l.scale["a/e"].Desired != 1 {
		t.Fatalf("scale = %v, want a/d 3 and a/e 1", l.scale)
	}
	l.onScale(map[string]stored[protocol.ScaleDecision]{"a.d": dec("a", "d", 4)})
	if _, ok := l.scale["a/e"]; ok || l.scale["a/d"].Desired != 4 || len(l.scale) != 1 {
		t.Errorf("scale = %v, want only a/d at 4", l.scale)
	}
}

// TestDecoders: a worker takes its key's id, a record without an ID
// takes the last part of its key; a registration or record under another
// worker's key, or a key of another shape, is refused (the key's worker
// token is what the NATS permissions let one worker write); a decision
// naming no deployment is refused.
func TestDecoders(t *testing.T) {
	w, err := decodeWorker(protocol.WorkerKey("w7"), []byte(`{"cpu":2}`))
	if err != nil || w.ID != "w7" || w.CPU != 2 {
		t.Errorf("decodeWorker = %+v, %v; want ID w7, 2 CPU", w, err)
	}
	for _, key := range []string{protocol.WorkerKey("w7"), "other", "other.assignment"} {
		if _, err := decodeWorker(key, []byte(`{"id":"other","cpu":2}`)); err == nil {
			t.Errorf("decodeWorker(%q, worker other) = nil error, want refused", key)
		}
	}
	r, err := decodeRecord("app.dep.w1.r1", []byte(`{"app":"app","deployment":"dep","worker_id":"w1","state":"RUNNING"}`))
	if err != nil || r.ID != "r1" {
		t.Errorf("decodeRecord = %+v, %v; want ID r1", r, err)
	}
	for _, key := range []string{"app.dep.w2.r1", "app.dep.r1", "app.other.w1.r1"} {
		if _, err := decodeRecord(key, []byte(`{"id":"r1","app":"app","deployment":"dep","worker_id":"w1"}`)); err == nil {
			t.Errorf("decodeRecord(%q, r1 of app/dep on w1) = nil error, want refused", key)
		}
	}
	if _, err := decodeDecision("a.d", []byte(`{"desired":2}`)); err == nil {
		t.Error("decodeDecision accepted a decision naming no deployment")
	}
	if _, err := decodeWorker("w", []byte(`{`)); err == nil {
		t.Error("decodeWorker accepted broken JSON")
	}
}
