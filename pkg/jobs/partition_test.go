package jobs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// A NATS node cut off from its peers takes itself for the leader of the
// Raft groups it led until it notices it lost their quorum (10-20 s), and
// meanwhile answers its own clients from its state at the cut. On a real
// 3-node cluster whose node n1 leads the job stream, its consumer and the
// records bucket: jobs with client-chosen ids are queued, n1 is cut off
// (natstest.Partition), n2 and n3 elect new leaders and runner B (n2's
// client) runs the jobs to SUCCEEDED. Then, through n1: a leader read of a
// job's record answers "no record" (what the claim used to trust: in CI's
// chaos run with seed 1796520259152676010 a node just resumed answered so,
// and 5 SUCCEEDED jobs started again), while the write the claim makes
// now (the record created RUNNING) is not committed; and runner A, n1's
// client, is delivered nothing (a replicated consumer sends a message
// only once its delivered state has a quorum). No job starts twice and
// every record stays as B wrote it.
func TestPartitionedLeaderCannotStartAFinishedJob(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster and its elections: ~30 s")
	}
	k := natstest.KillableCluster(t, 3)
	n1, n2 := k.Nodes[0], k.Nodes[1]
	protoNames, err := protocol.NewNames("t")
	if err != nil {
		t.Fatal(err)
	}
	pn := Names{Names: protoNames}
	m := method("train", func(m *config.AsyncMethod) { m.MaxRunning = 10 })
	ncB := natstest.Conn(t, n2)
	jsB := natstest.JetStream(t, ncB)
	q := NewQueue(jsB, pn, zerolog.Nop(), Replicas(3), SubmitWait(10*time.Second))
	if err := q.Ensure(ctxT(t), testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	const acc = server.DEFAULT_GLOBAL_ACCOUNT
	stream, kvStream, objStream := pn.Stream(testApp, "train"), "KV_"+pn.Records(testApp, "train"), "OBJ_"+pn.Objects(testApp, "train")
	for _, s := range []string{stream, kvStream, objStream} {
		leadOn(t, ncB, n1, "$JS.API.STREAM.LEADER.STEPDOWN."+s, func(ns *server.Server) bool { return ns.JetStreamIsStreamLeader(acc, s) })
	}
	consumerLeads := func(ns *server.Server) bool { return ns.JetStreamIsConsumerLeader(acc, stream, Consumer) }
	leadOn(t, ncB, n1, "$JS.API.CONSUMER.LEADER.STEPDOWN."+stream+"."+Consumer, consumerLeads)

	// Both runners open their streams while the cluster is whole, with
	// every slot taken: they pull nothing yet.
	runs := newCounter()
	h := handlerFunc(func(_ serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		return "ok", nil
	})
	const jobs = 5
	runner := func(ns *server.Server, replica string) (*Runner, *Slots) {
		nc := natstest.Conn(t, ns)
		slots := NewSlots(jobs)
		for range jobs {
			slots.take()
		}
		r := NewRunner(nc, natstest.JetStream(t, nc), pn, RunnerConfig{App: testApp, Deployment: testDep,
			Worker: "w-" + replica, Replica: replica, Methods: []config.AsyncMethod{m}, Handler: h, Log: zerolog.Nop(), Shared: slots})
		return r, slots
	}
	rA, slotsA := runner(n1, "a")
	rB, slotsB := runner(n2, "b")
	stopA, stopB := runRunner(t, rA), runRunner(t, rB)
	defer stopB()
	defer stopA()
	opened := func(r *Runner) bool {
		r.q.mu.Lock()
		defer r.q.mu.Unlock()
		return len(r.q.methods) > 0
	}
	waitfor.True(t, 20*time.Second, "both runners opened the method", func() bool { return opened(rA) && opened(rB) })

	ids := make([]string, jobs)
	for i := range ids {
		ids[i] = fmt.Sprintf("twice-%d", i)
		if _, created, err := q.Submit(ctxT(t), testApp, testDep, m, ids[i], nil); err != nil || !created {
			t.Fatalf("submit %s: created %v, %v", ids[i], created, err)
		}
	}
	time.Sleep(200 * time.Millisecond) // replicated to the third node too

	cut := time.Now()
	k.Partition(t, n1)
	majority := k.Nodes[1:]
	waitfor.True(t, 30*time.Second, "new leaders on n2 or n3", func() bool {
		return anyNode(majority, func(ns *server.Server) bool { return ns.JetStreamIsStreamLeader(acc, stream) }) &&
			anyNode(majority, func(ns *server.Server) bool { return ns.JetStreamIsStreamLeader(acc, kvStream) }) &&
			anyNode(majority, consumerLeads)
	})
	elected := time.Since(cut)
	for range jobs {
		slotsB.release()
	}
	waitfor.True(t, 30*time.Second, "runner B ran every job to SUCCEEDED", func() bool {
		for _, id := range ids {
			rec, err := q.Status(ctxT(t), testApp, "train", id)
			if err != nil || rec.Status != Succeeded {
				return false
			}
		}
		return true
	})
	stale := time.Since(cut)
	if !consumerLeads(n1) || !n1.JetStreamIsStreamLeader(acc, kvStream) {
		// n1 noticed it lost its quorum before the jobs were done: the
		// window this test is about had closed (a very slow machine).
		t.Skipf("n1 stepped down %v after the cut (elections took %v): nothing stale to ask", stale.Round(time.Millisecond), elected.Round(time.Millisecond))
	}
	t.Logf("elections took %v; jobs SUCCEEDED %v after the cut, n1 still leads the consumer and the records bucket", elected.Round(time.Millisecond), stale.Round(time.Millisecond))
	hA, err := rA.q.open(ctxT(t), testApp, "train") // opened before the cut: cached
	if err != nil {
		t.Fatal(err)
	}
	hB, err := rB.q.open(ctxT(t), testApp, "train")
	if err != nil {
		t.Fatal(err)
	}
	revs := map[string]uint64{}
	for _, id := range ids {
		if _, revs[id], err = q.get(ctxT(t), hB, id); err != nil {
			t.Fatal(err)
		}
	}

	// A read through n1 — even the leader read — answers from n1's state
	// at the cut: "no record" for a job that SUCCEEDED. The runner's claim
	// trusted that answer before.
	if _, _, found, err := leaderGet(ctxT(t), rA.js, hA.kv.Bucket(), ids[0]); err != nil || found {
		t.Fatalf("a leader read through n1: found %v, %v; want n1's stale \"no record\"", found, err)
	}
	// The claim a runner makes instead, creating the record RUNNING, n1
	// cannot commit.
	sub := submitted(ids[0], testApp, testDep, "train", nil, m.MaxAttempts, *m.Priority, time.Now().UTC())
	next, err := sub.apply(EventClaim, change{worker: "w-a", replica: "a", maxAttempts: m.MaxAttempts, seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err = writeRecord(wctx, hA.kv, next, 0)
	cancel()
	if err == nil {
		t.Fatal("n1, cut off from its peers, committed the claim of a job")
	}
	t.Logf("the claim through n1: %v", err)

	// Nor does n1 deliver the jobs again: a replicated consumer sends a
	// message only once its delivered state has a quorum. Runner A, n1's
	// client, pulls until n1 steps down and starts nothing.
	for range jobs {
		slotsA.release()
	}
	waitfor.True(t, 40*time.Second, "n1 stepped down", func() bool {
		return !consumerLeads(n1) && !n1.JetStreamIsStreamLeader(acc, kvStream)
	})
	t.Logf("n1 stepped down %v after the cut", time.Since(cut).Round(time.Millisecond))
	time.Sleep(500 * time.Millisecond)
	for _, id := range ids {
		if n := runs.get(id); n != 1 {
			t.Errorf("job %s started %d times, want 1", id, n)
		}
		if rec, rev, err := q.get(ctxT(t), hB, id); err != nil || rec.Status != Succeeded || rev != revs[id] {
			t.Errorf("job %s: record %s at revision %d (%v), want SUCCEEDED at %d", id, rec.Status, rev, err, revs[id])
		}
	}
}

// leadOn moves the leadership of a Raft group to ns: api is the group's
// leader stepdown subject, leads whether a node leads the group.
func leadOn(t *testing.T, nc *nats.Conn, ns *server.Server, api string, leads func(*server.Server) bool) {
	t.Helper()
	req := []byte(fmt.Sprintf(`{"placement":{"preferred":%q}}`, ns.Name()))
	deadline := time.Now().Add(30 * time.Second)
	for !leads(ns) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s does not lead after 30 s", api, ns.Name())
		}
		if _, err := nc.Request(api, req, 2*time.Second); err != nil {
			t.Logf("%s: %v", api, err)
		}
		for end := time.Now().Add(3 * time.Second); !leads(ns) && time.Now().Before(end); {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func anyNode(nodes []*server.Server, f func(*server.Server) bool) bool {
	for _, ns := range nodes {
		if f(ns) {
			return true
		}
	}
	return false
}
