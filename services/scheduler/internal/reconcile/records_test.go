package reconcile

import (
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
)

// TestStaleRecordsDropped: a replica record this instance has not seen
// refreshed for StaleRecord is dropped as expired (its delete marker was
// lost); a fresh one stays.
func TestStaleRecordsDropped(t *testing.T) {
	now := time.Now()
	l := &leader{log: zerolog.Nop(),
		records: map[string]protocol.ReplicaInfo{
			"a.d.fresh": {ID: "fresh", WorkerID: "w1", State: protocol.ReplicaRunning},
			"a.d.stale": {ID: "stale", WorkerID: "w2", State: protocol.ReplicaRunning},
		},
		recordSeen: map[string]time.Time{"a.d.fresh": now.Add(-time.Second), "a.d.stale": now.Add(-StaleRecord - time.Second)},
	}
	got := l.liveRecords(now)
	if _, ok := got["fresh"]; !ok || len(got) != 1 {
		t.Errorf("liveRecords() = %v, want only the fresh record", got)
	}
	if _, ok := l.records["a.d.stale"]; ok {
		t.Errorf("the stale record is still kept: %v", l.records)
	}
	if got := l.liveRecords(now.Add(StaleRecord - 2*time.Second)); len(got) != 1 {
		t.Errorf("liveRecords() a little later = %v, want the fresh record still", got)
	}
}
