package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
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
	b := trainRecord("done-1", Succeeded)
	if _, err := h.kv.Create(ctxT(t), "done-1", b); err != nil {
		t.Fatal(err)
	}
	qb := trainRecord("done-1", Queued)
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

// A replica that lags (a node cut off from its peers) answers a direct
// get of a job's record with "not found". A job message of a finished
// job with a client-chosen id, delivered as a first delivery at once (not
// old enough to be taken for a redelivery), is not run again on that
// answer: the runner reads the record from the bucket's leader. The
// runner's JetStream API goes through a relay on the real server that
// answers every direct get as the lagging replica would and forwards the
// rest (natstest.APIRelay).
func TestLaggingReplicasViewDoesNotRerunAFinishedJob(t *testing.T) {
	e, m, h := trainEnv(t)
	js := natstest.APIRelay(t, e.nc, e.nc, laggingDirectGets)

	// The finished job's record, and a message of its id, just stored.
	id := "done-2"
	if _, err := h.kv.Create(ctxT(t), id, trainRecord(id, Succeeded)); err != nil {
		t.Fatal(err)
	}
	// The relay's view first: the record is "not there".
	lkv, err := js.KeyValue(ctxT(t), e.names.Records(testApp, "train"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lkv.Get(ctxT(t), id); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a direct get through the lagging relay = %v, want not found (the stale view)", err)
	}
	if _, _, found, err := leaderGet(ctxT(t), e.js, h.kv.Bucket(), id); err != nil || !found {
		t.Fatalf("leaderGet() found = %v, %v; want true (the leader's view)", found, err)
	}
	if _, err := e.js.Publish(ctxT(t), e.names.JobSubject(testApp, "train", id), trainRecord(id, Queued)); err != nil {
		t.Fatal(err)
	}
	runs := newCounter()
	defer relayedRunner(t, e, js, m, runs)()
	deadline := time.Now().Add(10 * time.Second)
	for streamMsgs(t, e, "train") != 0 {
		if n := runs.get(id); n != 0 {
			t.Fatalf("a finished job ran again %d time(s) on a lagging replica's view", n)
		}
		if time.Now().After(deadline) {
			t.Fatal("the finished job's message was never settled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := runs.get(id); n != 0 {
		t.Fatalf("a finished job ran again %d time(s) on a lagging replica's view", n)
	}
}

// A NATS node back from a partition may take itself for the records
// bucket's leader for a moment and answer even a leader read
// ($JS.API.STREAM.MSG.GET) from its stale state: "no record" for a job that
// SUCCEEDED meanwhile under the new leader. Its job message, redelivered
// as a first delivery (by a consumer leader as stale), is not run again on
// that answer: the runner claims it with a create-only write, which the
// real leader refuses (a deposed one cannot commit it), and leaves the
// record as it was. The runner's JetStream API goes through a relay that
// answers every read of the bucket as the stale leader would while stale
// is set, and forwards the rest (writes reach the real server).
func TestStaleLeadersReadDoesNotRerunAFinishedJob(t *testing.T) {
	for _, tc := range []struct {
		name      string
		generated bool // HdrUnique, and the message older than staleFirstDelivery
	}{
		{name: "client-chosen id"},
		{name: "generated id, stored over 2 s ago", generated: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, m, h := trainEnv(t)
			stream := "KV_" + h.kv.Bucket()
			var stale atomic.Bool
			stale.Store(true)
			js := natstest.APIRelay(t, e.nc, e.nc, func(api string, msg *nats.Msg) bool {
				if !stale.Load() {
					return false
				}
				switch {
				case api == "STREAM.MSG.GET."+stream:
					_ = msg.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}`))
				case strings.HasPrefix(api, "DIRECT.GET."+stream):
					directNotFound(msg)
				default:
					return false
				}
				return true
			})
			if _, _, found, err := leaderGet(ctxT(t), js, h.kv.Bucket(), "x"); err != nil || found {
				t.Fatalf("leaderGet() through the stale relay: found %v, %v; want not found", found, err)
			}

			id := "done-3"
			rev, err := h.kv.Create(ctxT(t), id, trainRecord(id, Succeeded))
			if err != nil {
				t.Fatal(err)
			}
			qb := trainRecord(id, Queued)
			msg := &nats.Msg{Subject: e.names.JobSubject(testApp, "train", id), Data: qb}
			if tc.generated {
				msg.Header = nats.Header{HdrUnique: []string{"1"}}
			}
			if _, err := e.js.PublishMsg(ctxT(t), msg); err != nil {
				t.Fatal(err)
			}
			if tc.generated {
				time.Sleep(staleFirstDelivery + 200*time.Millisecond)
			}
			runs := newCounter()
			defer relayedRunner(t, e, js, m, runs)()

			// While the stale leader answers: the job does not run, and
			// its record stays as the new leader has it.
			for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
				if n := runs.get(id); n != 0 {
					t.Fatalf("a SUCCEEDED job ran again %d time(s) on a stale leader's read", n)
				}
				time.Sleep(20 * time.Millisecond)
			}
			// The stale leader steps down: the message is settled, unrun.
			stale.Store(false)
			deadline := time.Now().Add(10 * time.Second)
			for streamMsgs(t, e, "train") != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the finished job's message was never settled")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if n := runs.get(id); n != 0 {
				t.Fatalf("a SUCCEEDED job ran again %d time(s) on a stale leader's read", n)
			}
			cur, err := h.kv.Get(ctxT(t), id)
			if err != nil {
				t.Fatal(err)
			}
			if cur.Revision() != rev {
				t.Fatalf("the SUCCEEDED record was overwritten: revision %d, want %d: %s", cur.Revision(), rev, cur.Value())
			}
		})
	}
}

// A repeated submit of a client-chosen id whose job SUCCEEDED, within the
// dedup window, through an ingress whose direct gets a lagging replica
// answers ("not found": a node back from a partition), returns the
// finished job (created false): it does not start a new incarnation of
// the id, whose message a runner would take for a job never run. The
// Queue's JetStream API goes through a relay that answers every direct
// get as the lagging replica would.
func TestLaggingReplicasViewStartsNoNewIncarnation(t *testing.T) {
	e := newEnv(t)
	m := method("train")
	id := "inc-1"
	if _, created, err := e.q.Submit(ctxT(t), testApp, testDep, m, id, nil); err != nil || !created {
		t.Fatalf("submit: created %v, %v", created, err)
	}
	stop := relayedRunner(t, e, e.js, m, newCounter())
	waitfor.True(t, 10*time.Second, "the job SUCCEEDED and its message is settled", func() bool {
		rec, err := e.q.Status(ctxT(t), testApp, "train", id)
		return err == nil && rec.Status == Succeeded && streamMsgs(t, e, "train") == 0
	})
	stop()

	js := natstest.APIRelay(t, e.nc, e.nc, laggingDirectGets)
	lagging := NewQueue(js, e.names, zerolog.Nop(), SubmitWait(10*time.Second))
	rec, created, err := lagging.Submit(ctxT(t), testApp, testDep, m, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if created || rec.Status != Succeeded {
		t.Fatalf("a repeated submit of a SUCCEEDED job on a lagging replica's view: created %v, status %s; want the finished job (created false)", created, rec.Status)
	}
	if n := streamMsgs(t, e, "train"); n != 0 {
		t.Fatalf("%d job message(s) in the stream after the repeated submit, want none", n)
	}
}

// laggingDirectGets is a natstest.APIRelay hook that answers every direct
// get "not found", as a lagging replica does, and forwards the rest.
func laggingDirectGets(api string, msg *nats.Msg) bool {
	if !strings.HasPrefix(api, "DIRECT.GET.") {
		return false
	}
	directNotFound(msg)
	return true
}

// directNotFound answers the direct get msg "not found".
func directNotFound(msg *nats.Msg) {
	nf := nats.NewMsg(msg.Reply)
	nf.Header.Set("Status", "404")
	nf.Header.Set("Description", "Message Not Found")
	_ = msg.RespondMsg(nf)
}

// relayedRunner starts a runner of m whose JetStream API is js; its
// handler counts each job's runs in runs; knobs set its test-only fields.
func relayedRunner(t *testing.T, e *testEnv, js jetstream.JetStream, m config.AsyncMethod, runs *counter, knobs ...func(*Runner)) (stop func()) {
	t.Helper()
	r := NewRunner(e.nc, js, e.names, RunnerConfig{
		App: testApp, Deployment: testDep, Worker: "w-r1", Replica: "r1", Slots: 1, Methods: []config.AsyncMethod{m},
		Log: zerolog.Nop(), Handler: handlerFunc(func(_ serve.JobContext, job *serve.Job) (any, error) {
			runs.add(job.ID)
			return "ran", nil
		}),
	})
	for _, k := range knobs {
		k(r)
	}
	return runRunner(t, r)
}

// A requeued job (its message carries the record's revision at the
// requeue) whose compare-and-set claim fails (the record moved on) and
// whose leader read is then answered by a leader deposed while it was cut
// off — with the record as it was before the requeue, SUCCEEDED — is not
// dropped as finished: a record read at a revision below the message's is
// stale. Once the deposed leader is no longer heard, the job runs, once.
func TestStaleLeadersReadDoesNotDropARequeuedJob(t *testing.T) {
	e, m, h := trainEnv(t)
	id := "requeued-1"
	ob := trainRecord(id, Succeeded)
	oldRev, err := h.kv.Create(ctxT(t), id, ob)
	if err != nil {
		t.Fatal(err)
	}
	// The requeue, which the deposed leader never heard of: the record
	// QUEUED again and a message carrying its revision; then the record
	// moves on, so that the claim's compare-and-set fails.
	qb := trainRecord(id, Queued)
	rev, err := h.kv.Update(ctxT(t), id, qb, oldRev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.PublishMsg(ctxT(t), e.q.jobMsg(h, id, qb, rev)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv.Update(ctxT(t), id, qb, rev); err != nil {
		t.Fatal(err)
	}

	stream := "KV_" + h.kv.Bucket()
	staleMsg, _ := json.Marshal(map[string]any{"type": "io.nats.jetstream.api.v1.stream_msg_get_response",
		"message": map[string]any{"subject": "$KV." + h.kv.Bucket() + "." + id, "seq": oldRev, "data": ob, "time": time.Now()}})
	var stale atomic.Bool
	stale.Store(true)
	var staleReads atomic.Int64
	js := natstest.APIRelay(t, e.nc, e.nc, func(api string, msg *nats.Msg) bool {
		if !stale.Load() || api != "STREAM.MSG.GET."+stream {
			return false
		}
		staleReads.Add(1)
		_ = msg.Respond(staleMsg)
		return true
	})
	runs := newCounter()
	defer relayedRunner(t, e, js, m, runs)()

	waitfor.True(t, 10*time.Second, "the claim read the deposed leader's record", func() bool { return staleReads.Load() > 0 })
	time.Sleep(300 * time.Millisecond) // what the claim decided on it
	if n := streamMsgs(t, e, "train"); n != 1 {
		t.Fatalf("the requeued job's message was settled on a deposed leader's read (%d left in the stream): dropped as finished", n)
	}
	if n := runs.get(id); n != 0 {
		t.Fatalf("the requeued job ran %d time(s) on a deposed leader's read", n)
	}
	stale.Store(false)
	waitfor.True(t, 15*time.Second, "the requeued job ran and SUCCEEDED", func() bool {
		rec, err := e.q.Status(ctxT(t), testApp, "train", id)
		return err == nil && rec.Status == Succeeded && runs.get(id) > 0 && streamMsgs(t, e, "train") == 0
	})
	if n := runs.get(id); n != 1 {
		t.Fatalf("the requeued job ran %d times, want 1", n)
	}
}

// A requeued job whose record a leader read does not find, with nothing
// written since the revision its message carries: either a deposed
// leader's view, or the record expired (its delete marker gone too). The
// job is dropped as expired only when goneReads reads, goneAfter apart,
// all say so — longer than a deposed leader answers.
func TestRequeuedJobWhoseRecordIsGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stale bool // the relay answers "not found" for a while; the record is there
	}{
		{name: "a deposed leader's not found", stale: true},
		{name: "the record expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, m, h := trainEnv(t)
			id := "requeued-2"
			qb := trainRecord(id, Queued)
			rev, err := h.kv.Create(ctxT(t), id, qb)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.js.PublishMsg(ctxT(t), e.q.jobMsg(h, id, qb, rev)); err != nil {
				t.Fatal(err)
			}
			// The claim's compare-and-set fails: the record moved on, or is gone.
			if tc.stale {
				if _, err := h.kv.Update(ctxT(t), id, qb, rev); err != nil {
					t.Fatal(err)
				}
			} else if err := h.kv.Purge(ctxT(t), id); err != nil {
				t.Fatal(err)
			}
			stream := "KV_" + h.kv.Bucket()
			var stale atomic.Bool
			stale.Store(tc.stale)
			var notFound atomic.Int64
			js := natstest.APIRelay(t, e.nc, e.nc, func(api string, msg *nats.Msg) bool {
				if api != "STREAM.MSG.GET."+stream {
					return false
				}
				notFound.Add(1)
				if !stale.Load() {
					if tc.stale {
						return false
					}
					// No record and no marker: as after an expiry.
				}
				_ = msg.Respond([]byte(`{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}`))
				return true
			})
			const gone = 200 * time.Millisecond
			runs := newCounter()
			defer relayedRunner(t, e, js, m, runs, func(r *Runner) { r.goneAfter = gone })()

			waitfor.True(t, 10*time.Second, "the claim read no record", func() bool { return notFound.Load() > 0 })
			time.Sleep(gone / 2) // what the claim decided on it (the next read is gone later)
			if n := streamMsgs(t, e, "train"); n != 1 {
				t.Fatalf("the requeued job was dropped on the first read that found no record (%d message(s) left)", n)
			}
			if tc.stale {
				stale.Store(false)
				waitfor.True(t, 10*time.Second, "the requeued job ran and SUCCEEDED", func() bool {
					rec, err := e.q.Status(ctxT(t), testApp, "train", id)
					return err == nil && rec.Status == Succeeded && streamMsgs(t, e, "train") == 0
				})
				if n := runs.get(id); n != 1 {
					t.Fatalf("the requeued job ran %d times, want 1", n)
				}
				return
			}
			start := time.Now()
			waitfor.True(t, 10*time.Second, "the job whose record is gone was dropped", func() bool { return streamMsgs(t, e, "train") == 0 })
			if took := time.Since(start) + gone/2; took < gone {
				t.Errorf("dropped %v after the first read found no record, want ≥ %v (%d reads %v apart)", took, gone, goneReads, gone)
			}
			if n := notFound.Load(); n < goneReads {
				t.Errorf("dropped after %d reads, want %d", n, goneReads)
			}
			if n := runs.get(id); n != 0 {
				t.Fatalf("a job whose record is gone ran %d times", n)
			}
		})
	}
}

// trainRecord is the JSON record of job id of method train in status st
// (one that finished, after one attempt).
func trainRecord(id string, st Status) []byte {
	r := Record{ID: id, App: testApp, Deployment: testDep, Method: "train", Status: st}
	if st.Terminal() {
		r.Attempts = 1
	}
	b, _ := json.Marshal(r)
	return b
}

// trainEnv is a test environment with method train's stream, consumer and
// records bucket made.
func trainEnv(t *testing.T) (*testEnv, config.AsyncMethod, *handle) {
	t.Helper()
	e := newEnv(t)
	m := method("train")
	h, err := e.q.ensure(ctxT(t), testApp, testDep, withDefaults(m))
	if err != nil {
		t.Fatal(err)
	}
	return e, m, h
}

// A retry's claim is a compare-and-set of the job's record. For a few
// hundred milliseconds after a partition heals, the bucket's deposed
// leader answers such a write from its stale state — "wrong last
// sequence" below the revision the claim expects — while the real leader
// commits it (README: High availability, measured on a 3-node cluster).
// Read back, the claim is the runner's own, not an earlier attempt that
// died: the attempt runs. Before, the claim took it for a dead attempt and
// claimed again — with the last attempt, the attempts looked spent and the
// job FAILED without running it. The relay forwards the claim to the
// server (which commits it) and answers the runner as the deposed leader.
func TestDeposedLeadersRefusalOfACommittedClaim(t *testing.T) {
	e, m, h := trainEnv(t)
	m.MaxAttempts = 2
	subject := "$KV." + h.kv.Bucket() + "."
	var refused atomic.Int32
	js := natstest.APIRelay(t, e.nc, e.nc, func(api string, msg *nats.Msg) bool {
		var r Record
		if !strings.HasPrefix(api, subject) || json.Unmarshal(msg.Data, &r) != nil ||
			r.Status != Running || r.Attempts != 2 || !refused.CompareAndSwap(0, 1) {
			return false
		}
		prev, err := strconv.ParseUint(msg.Header.Get("Nats-Expected-Last-Subject-Sequence"), 10, 64)
		if err != nil || prev == 0 {
			refused.Store(0)
			return false
		}
		_ = e.nc.PublishMsg(&nats.Msg{Subject: api, Reply: nats.NewInbox(), Header: msg.Header, Data: msg.Data}) // committed; its ack goes nowhere
		_ = msg.Respond(fmt.Appendf(nil, `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: %d"}}`, prev-1))
		return true
	})
	runs := newCounter()
	r := NewRunner(e.nc, js, e.names, RunnerConfig{
		App: testApp, Deployment: testDep, Worker: "w-r1", Replica: "r1", Slots: 1, Methods: []config.AsyncMethod{m},
		Log: zerolog.Nop(), Handler: handlerFunc(func(_ serve.JobContext, job *serve.Job) (any, error) {
			if runs.add(job.ID) == 1 {
				return nil, errors.New("first attempt fails")
			}
			return "ran", nil
		}),
	})
	defer runRunner(t, r)()
	mustSubmit(t, e.q, m, "retried", nil)
	var rec Record
	waitfor.True(t, 20*time.Second, "job retried ends", func() bool {
		var err error
		rec, err = e.q.Status(context.Background(), testApp, "train", "retried")
		return err == nil && rec.Status.Terminal()
	})
	if refused.Load() != 1 {
		t.Fatalf("the second attempt's claim never went through the relay: nothing tested (%s after %d attempts, %d runs)", rec.Status, rec.Attempts, runs.get("retried"))
	}
	if rec.Status != Succeeded || rec.Attempts != 2 || runs.get("retried") != 2 {
		t.Fatalf("job after its second claim was refused by a deposed leader (and committed): %s after %d attempts, %d runs; want SUCCEEDED, 2, 2 (%s)",
			rec.Status, rec.Attempts, runs.get("retried"), rec.Error)
	}
}
