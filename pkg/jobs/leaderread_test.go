package jobs

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
)

// A job message delivered for the first time long after it was stored —
// what a new consumer leader does with a job whose ack it never saw — is
// not run when its record (read from the bucket's leader) says it
// finished, even for a generated id, which the fast path would otherwise
// run without reading anything.
func TestStaleFirstDeliveryOfAFinishedJobDoesNotRun(t *testing.T) {
	e := newEnv(t)
	m := method("train")
	if err := e.q.Ensure(ctxT(t), testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	h, err := e.q.ensure(ctxT(t), testApp, testDep, withDefaults(m))
	if err != nil {
		t.Fatal(err)
	}
	// The finished job's record, as the run that the lost ack belonged to
	// wrote it, and its message, still in the stream.
	rec := Record{ID: "done-1", App: testApp, Deployment: testDep, Method: "train", Status: Succeeded, Attempts: 1}
	b, _ := json.Marshal(rec)
	if _, err := h.kv.Create(ctxT(t), rec.ID, b); err != nil {
		t.Fatal(err)
	}
	queued := Record{ID: "done-1", App: testApp, Deployment: testDep, Method: "train", Status: Queued}
	qb, _ := json.Marshal(queued)
	if _, err := e.js.PublishMsg(ctxT(t), &nats.Msg{Subject: e.names.JobSubject(testApp, "train", "done-1"),
		Header: nats.Header{HdrUnique: []string{"1"}}, Data: qb}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(staleFirstDelivery + 200*time.Millisecond) // the message must be older than the fast path trusts
	runs := newCounter()
	_, stop := startRunner(t, e, e.nc, 1, handlerFunc(func(_ serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		return "again", nil
	}), "r1", m)
	defer stop()
	// The message is settled (removed from the work queue) without a run.
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := e.js.Stream(context.Background(), e.names.Stream(testApp, "train"))
		if err != nil {
			t.Fatal(err)
		}
		if info, err := st.Info(context.Background()); err == nil && info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stale job message was never settled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := runs.get("done-1"); n != 0 {
		t.Fatalf("a finished job ran again %d time(s)", n)
	}
}
