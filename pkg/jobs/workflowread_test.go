package jobs

import (
	"encoding/json"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
)

// TestReadRun: a run's journal and inbox come back whole and in order —
// not the other runs' or the run's timers, nor a collected run's
// tombstone — with the journal's last sequence; a fresh run reads empty.
func TestReadRun(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	m := method("wf", func(c *config.AsyncMethod) { c.Workflow = true })
	if err := e.q.Ensure(ctx, testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	h, err := e.q.open(ctx, testApp, "wf")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(run, kind string, v any) uint64 {
		t.Helper()
		b, _ := json.Marshal(v)
		ack, err := e.js.Publish(ctx, e.names.WorkflowSubject(testApp, "wf", run, kind), b)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	var last uint64
	for i := range 25 {
		last = publish("r1", "j", serve.JournalEntry{Pos: i, Kind: serve.KindStep, Name: "s"})
		publish("r2", "j", serve.JournalEntry{Pos: i, Kind: serve.KindStep, Name: "other"})
		if i%5 == 0 {
			publish("r1", "in", serve.InboxEvent{Key: serve.SignalEventKey("s")})
			publish("r1", "t.9", serve.InboxEvent{Key: serve.TimerEventKey(9)})
		}
	}
	if _, err := e.js.Publish(ctx, e.names.WorkflowSubject(testApp, "wf", "r1", "j"), nil); err != nil { // a tombstone
		t.Fatal(err)
	}
	store := &runStore{q: e.q, h: h.wf}
	journal, inbox, err := store.Load(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if len(journal) != 25 || len(inbox) != 5 || store.lastSeq != last {
		t.Fatalf("Load = %d entries, %d events, last %d; want 25, 5, %d", len(journal), len(inbox), store.lastSeq, last)
	}
	for i, je := range journal {
		if je.Pos != i || je.Name != "s" {
			t.Fatalf("entry %d = %+v, want position %d of r1", i, je, i)
		}
	}
	for i := 1; i < len(inbox); i++ {
		if inbox[i].Seq <= inbox[i-1].Seq || inbox[i].Key != serve.SignalEventKey("s") {
			t.Fatalf("inbox %+v, want r1's signals in order", inbox)
		}
	}
	journal, inbox, err = store.Load(ctx, "fresh")
	if err != nil || len(journal) != 0 || len(inbox) != 0 {
		t.Fatalf("Load(fresh) = %d, %d, %v; want nothing", len(journal), len(inbox), err)
	}
}
