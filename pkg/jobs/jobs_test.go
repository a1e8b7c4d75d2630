package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
)

func echo(ctx serve.JobContext, job *serve.Job) (any, error) {
	return map[string]any{"id": job.ID, "attempt": job.Attempt, "args": job.Args}, nil
}

func TestSubmitRunResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	rec := mustSubmit(t, e.q, m, "", serve.Args{"dataset": raw("foo1"), "epochs": raw(5)})
	if rec.ID == "" || rec.Status != Queued || rec.Attempts != 0 || rec.MaxAttempts != 3 {
		t.Fatalf("Submit() record = %+v, want a generated id, QUEUED, 0 of 3 attempts", rec)
	}
	if _, rr, err := e.q.Result(ctxT(t), testApp, "train", rec.ID); !errors.Is(err, ErrNotFinished) || rr.Status != Queued {
		t.Fatalf("Result(queued) = %+v, %v; want ErrNotFinished with the record", rr, err)
	}
	startRunner(t, e, e.nc, 2, handlerFunc(echo), "r1", m)
	got := waitStatus(t, e.q, "train", rec.ID, Succeeded, 10*time.Second)
	if got.Attempts != 1 || got.Worker != "w-r1" || got.Replica != "r1" || got.Progress != 1 ||
		got.StartedAt.IsZero() || got.FinishedAt.IsZero() || got.Retrying {
		t.Fatalf("Status() = %+v, want SUCCEEDED by r1 in 1 attempt", got)
	}
	res, _, err := e.q.Result(ctxT(t), testApp, "train", rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		ID   string
		Args map[string]any
	}
	if err := json.Unmarshal(res, &out); err != nil || out.ID != rec.ID || out.Args["dataset"] != "foo1" || out.Args["epochs"] != 5.0 {
		t.Fatalf("Result() = %s, %v; want the echoed job", res, err)
	}
	// The work queue is empty once the job is acked.
	waitfor.True(t, 5*time.Second, "empty job stream", func() bool {
		info, err := e.js.Stream(ctxT(t), e.names.Stream(testApp, "train"))
		return err == nil && info.CachedInfo().State.Msgs == 0 || streamMsgs(t, e, "train") == 0
	})
}

func streamMsgs(t testing.TB, e *testEnv, m string) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), e.names.Stream(testApp, m))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestBadInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.RequiredArgs = []string{"dataset"} })
	ctx := ctxT(t)
	if err := e.q.Ensure(ctx, testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	submits := []struct {
		name, id string
		args     serve.Args
		want     string
	}{
		{"missing required argument", "a", serve.Args{"epochs": raw(1)}, `"dataset"`},
		{"id with a dot", "a.b", serve.Args{"dataset": raw("x")}, "request_id"},
		{"id too long", strings.Repeat("x", 129), serve.Args{"dataset": raw("x")}, "request_id"},
	}
	for _, tc := range submits {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := e.q.Submit(ctx, testApp, testDep, m, tc.id, tc.args)
			var se *serve.Error
			if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(se.Msg, tc.want) {
				t.Fatalf("Submit(%q, %v) = %v, want a 400 naming %s", tc.id, tc.args, err, tc.want)
			}
			if _, err := e.q.Status(ctx, testApp, "train", tc.id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Status(%q) = %v, want ErrNotFound (nothing stored)", tc.id, err)
			}
		})
	}
	lookups := []struct {
		name, method, id string
		want             error
	}{
		{"unknown id", "train", "nope", ErrNotFound},
		{"unknown method", "nomethod", "x", ErrUnknownMethod},
	}
	for _, tc := range lookups {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.q.Status(ctx, testApp, tc.method, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("Status(%s, %s) = %v, want %v", tc.method, tc.id, err, tc.want)
			}
			if _, _, err := e.q.Result(ctx, testApp, tc.method, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("Result(%s, %s) = %v, want %v", tc.method, tc.id, err, tc.want)
			}
			if _, err := e.q.Cancel(ctx, testApp, tc.method, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("Cancel(%s, %s) = %v, want %v", tc.method, tc.id, err, tc.want)
			}
			if _, err := e.q.Requeue(ctx, testApp, tc.method, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("Requeue(%s, %s) = %v, want %v", tc.method, tc.id, err, tc.want)
			}
		})
	}
	if _, _, err := e.q.List(ctx, testApp, "nomethod", "", 0, ""); !errors.Is(err, ErrUnknownMethod) {
		t.Errorf("List(nomethod) = %v, want ErrUnknownMethod", err)
	}
	if _, _, err := e.q.List(ctx, testApp, "train", "", 0, "!!"); err == nil {
		t.Errorf("List(bad cursor) = nil error, want one")
	}
}

func TestConcurrentSubmitsWithDuplicates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	runs := newCounter()
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		return nil, nil
	})
	startRunner(t, e, natstest.Conn(t, e.ns), 8, h, "r1", m)
	startRunner(t, e, natstest.Conn(t, e.ns), 8, h, "r2", m)

	// 200 submits: ids 0..149, and 50 of them (0..49) submitted twice.
	var created, existing atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 200 {
		wg.Go(func() {
			id := fmt.Sprintf("job-%d", i%150)
			_, c, err := e.q.Submit(ctx, testApp, testDep, m, id, serve.Args{"i": raw(i)})
			if err != nil {
				errs <- err
				return
			}
			if c {
				created.Add(1)
			} else {
				existing.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Submit() = %v", err)
	}
	if created.Load() != 150 || existing.Load() != 50 {
		t.Fatalf("created, existing = %d, %d; want 150, 50", created.Load(), existing.Load())
	}
	waitfor.True(t, 30*time.Second, "150 succeeded jobs", func() bool {
		recs, _, err := e.q.List(ctx, testApp, "train", Succeeded, 1000, "")
		return err == nil && len(recs) == 150
	})
	all, _, err := e.q.List(ctx, testApp, "train", "", 1000, "")
	if err != nil || len(all) != 150 {
		t.Fatalf("List() = %d records, %v; want 150", len(all), err)
	}
	if ids, n := runs.total(); ids != 150 || n != 150 {
		t.Fatalf("runs: %d ids, %d runs; want 150 ids run once each", ids, n)
	}
}

func TestMaxRunningFleetWide(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.MaxRunning = 3 })
	var cur, peak atomic.Int32
	var doneN atomic.Int32
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(40 * time.Millisecond) // simulated work
		cur.Add(-1)
		doneN.Add(1)
		return nil, nil
	})
	for i := range 3 {
		startRunner(t, e, natstest.Conn(t, e.ns), 5, h, fmt.Sprintf("r%d", i), m)
	}
	for i := range 24 {
		mustSubmit(t, e.q, m, fmt.Sprintf("j%d", i), nil)
	}
	waitfor.True(t, 30*time.Second, "24 jobs done", func() bool { return doneN.Load() == 24 })
	if p := peak.Load(); p > 3 || p < 2 {
		t.Fatalf("peak concurrent jobs = %d, want <= max_running 3 (and the cap reached)", p)
	}
}

func TestPriorityOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	hi, lo := method("hi", prio(5)), method("lo", prio(0))
	for _, m := range []config.AsyncMethod{hi, lo} {
		if err := e.q.Ensure(ctxT(t), testApp, testDep, m); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	var mu sync.Mutex
	var order []string
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		mu.Lock()
		order = append(order, job.ID)
		mu.Unlock()
		if job.ID == "block" {
			<-release
		}
		return nil, nil
	})
	startRunner(t, e, e.nc, 1, h, "r1", lo, hi)
	mustSubmit(t, e.q, hi, "block", nil)
	waitStatus(t, e.q, "hi", "block", Running, 10*time.Second)
	for i := range 3 {
		mustSubmit(t, e.q, lo, fmt.Sprintf("lo%d", i), nil)
	}
	for i := range 6 {
		mustSubmit(t, e.q, hi, fmt.Sprintf("hi%d", i), nil)
	}
	close(release)
	waitfor.True(t, 20*time.Second, "all 10 jobs run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) == 10
	})
	// Picks 1..3 prefer the highest priority, every 4th the lowest.
	want := []string{"block", "hi0", "hi1", "lo0", "hi2", "hi3", "hi4", "lo1", "hi5", "lo2"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Fatalf("run order = %v, want %v", order, want)
	}
}

func TestCancelQueued(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	mustSubmit(t, e.q, m, "c1", nil)
	mustSubmit(t, e.q, m, "c2", nil)
	rec, err := e.q.Cancel(ctx, testApp, "train", "c1")
	if err != nil || rec.Status != Cancelled || rec.FinishedAt.IsZero() {
		t.Fatalf("Cancel(queued) = %+v, %v; want CANCELLED", rec, err)
	}
	if n := streamMsgs(t, e, "train"); n != 1 {
		t.Fatalf("job stream holds %d messages after cancel, want 1 (the cancelled one deleted)", n)
	}
	runs := newCounter()
	startRunner(t, e, e.nc, 2, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		return "ok", nil
	}), "r1", m)
	waitStatus(t, e.q, "train", "c2", Succeeded, 10*time.Second)
	if runs.get("c1") != 0 {
		t.Fatalf("cancelled job ran %d times, want 0", runs.get("c1"))
	}
	if _, r, err := e.q.Result(ctx, testApp, "train", "c1"); !errors.Is(err, ErrJobCancelled) || r.Status != Cancelled {
		t.Fatalf("Result(cancelled) = %+v, %v; want ErrJobCancelled", r, err)
	}
	// Cancelling a finished job changes nothing.
	if r, err := e.q.Cancel(ctx, testApp, "train", "c2"); err != nil || r.Status != Succeeded {
		t.Fatalf("Cancel(succeeded) = %+v, %v; want the SUCCEEDED record", r, err)
	}
}

func TestCancelRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.LeaseTimeout = config.Duration(30 * time.Second) })
	started := make(chan struct{})
	var sawCancel atomic.Bool
	startRunner(t, e, e.nc, 1, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		close(started)
		<-ctx.Done()
		sawCancel.Store(true)
		return nil, ctx.Err()
	}), "r1", m)
	mustSubmit(t, e.q, m, "c1", nil)
	recv(t, started, "the job to start")
	waitStatus(t, e.q, "train", "c1", Running, 5*time.Second)
	rec, err := e.q.Cancel(ctxT(t), testApp, "train", "c1")
	if err != nil || rec.Status != Running || !rec.CancelRequested {
		t.Fatalf("Cancel(running) = %+v, %v; want RUNNING with cancel requested", rec, err)
	}
	got := waitStatus(t, e.q, "train", "c1", Cancelled, 5*time.Second) // well before the 30 s lease
	if !sawCancel.Load() || got.Attempts != 1 {
		t.Fatalf("record = %+v, handler saw cancel %v; want the context cancelled, 1 attempt", got, sawCancel.Load())
	}
	waitfor.True(t, 5*time.Second, "job message removed", func() bool { return streamMsgs(t, e, "train") == 0 })
	if _, _, err := e.q.Result(ctxT(t), testApp, "train", "c1"); !errors.Is(err, ErrJobCancelled) {
		t.Fatalf("Result(cancelled) = %v, want ErrJobCancelled", err)
	}
}

func TestRetentionExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.Retention = config.Duration(2 * time.Second) })
	runs := newCounter()
	startRunner(t, e, e.nc, 1, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		return strings.Repeat("x", InlineResultMax+10), nil // in the object store
	}), "r1", m)
	mustSubmit(t, e.q, m, "old", nil)
	waitStatus(t, e.q, "train", "old", Succeeded, 10*time.Second)
	if res, _, err := e.q.Result(ctxT(t), testApp, "train", "old"); err != nil || len(res) != InlineResultMax+12 {
		t.Fatalf("Result(large) = %d bytes, %v; want %d", len(res), err, InlineResultMax+12)
	}
	waitfor.True(t, 10*time.Second, "record expired", func() bool {
		_, err := e.q.Status(ctxT(t), testApp, "train", "old")
		return errors.Is(err, ErrNotFound)
	})
	h, _ := e.q.open(ctxT(t), testApp, "train")
	waitfor.True(t, 10*time.Second, "result object expired", func() bool {
		_, err := h.obj.GetInfo(ctxT(t), ResultObject("old")+".1")
		return errors.Is(err, jetstream.ErrObjectNotFound)
	})
	// After expiry the id is free again: a new job (its message id is
	// still inside the stream's dedup window, which must not swallow it).
	mustSubmit(t, e.q, m, "old", nil)
	waitStatus(t, e.q, "train", "old", Succeeded, 10*time.Second)
	if runs.get("old") != 2 {
		t.Fatalf("runs of the reused id = %d, want 2", runs.get("old"))
	}
}

func TestExhaustedAttemptsDeadLetterRequeue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.MaxAttempts = 2 })
	var healthy atomic.Bool
	var sawRetrying atomic.Bool
	runs := newCounter()
	startRunner(t, e, e.nc, 2, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		if healthy.Load() {
			return "fine", nil
		}
		return nil, fmt.Errorf("boom %d", job.Attempt)
	}), "r1", m)
	mustSubmit(t, e.q, m, "bad", nil)
	mustSubmit(t, e.q, m, "bad400", serve.Args{"x": raw(1)})
	go func() {
		for i := 0; i < 200 && !sawRetrying.Load(); i++ {
			if r, err := e.q.Status(context.Background(), testApp, "train", "bad"); err == nil && r.Retrying && r.Status == Queued {
				sawRetrying.Store(true)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	got := waitStatus(t, e.q, "train", "bad", Failed, 10*time.Second)
	if got.Attempts != 2 || got.Error != "boom 2" {
		t.Fatalf("record = %+v, want FAILED after 2 attempts with the last error", got)
	}
	if _, _, err := e.q.Result(ctxT(t), testApp, "train", "bad"); !errors.Is(err, ErrJobFailed) || !strings.Contains(err.Error(), "boom 2") {
		t.Fatalf("Result(failed) = %v, want ErrJobFailed naming the error", err)
	}
	var dl []Record
	waitfor.True(t, 5*time.Second, "dead letter", func() bool {
		var err error
		dl, err = e.q.DeadLetters(ctxT(t), testApp, "train")
		return err == nil && len(dl) >= 2
	})
	if len(dl) != 2 || dl[0].Status != Failed {
		t.Fatalf("DeadLetters() = %+v, want the 2 failed jobs", dl)
	}
	healthy.Store(true)
	rec, err := e.q.Requeue(ctxT(t), testApp, "train", "bad")
	if err != nil || rec.Status != Queued || rec.Attempts != 0 || rec.Error != "" || rec.Requeued != 1 {
		t.Fatalf("Requeue() = %+v, %v; want QUEUED with 0 attempts", rec, err)
	}
	got = waitStatus(t, e.q, "train", "bad", Succeeded, 10*time.Second)
	if got.Attempts != 1 || runs.get("bad") != 3 {
		t.Fatalf("after requeue: record %+v, runs %d; want SUCCEEDED on its first new attempt, 3 runs", got, runs.get("bad"))
	}
	dl, err = e.q.DeadLetters(ctxT(t), testApp, "train")
	if err != nil || len(dl) != 1 || dl[0].ID != "bad400" {
		t.Fatalf("DeadLetters() after requeue = %+v, %v; want only bad400", dl, err)
	}
	if _, err := e.q.Requeue(ctxT(t), testApp, "train", "bad"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Requeue(not dead) = %v, want ErrNotFound", err)
	}
	if !sawRetrying.Load() {
		t.Errorf("never saw the job QUEUED with Retrying between attempts")
	}
}

func TestPermanentErrorFailsAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	startRunner(t, e, e.nc, 1, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		return nil, serve.Errorf(http.StatusUnprocessableEntity, "bad dataset")
	}), "r1", m)
	mustSubmit(t, e.q, m, "p", nil)
	got := waitStatus(t, e.q, "train", "p", Failed, 10*time.Second)
	if got.Attempts != 1 || !strings.Contains(got.Error, "bad dataset") {
		t.Fatalf("record = %+v, want FAILED after 1 attempt", got)
	}
	if dl, err := e.q.DeadLetters(ctxT(t), testApp, "train"); err != nil || len(dl) != 0 {
		t.Fatalf("DeadLetters() = %+v, %v; want none for a 4xx", dl, err)
	}
}

func TestTimeoutRetries(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.Timeout = config.Duration(100 * time.Millisecond); m.MaxAttempts = 2 })
	startRunner(t, e, e.nc, 1, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		if job.Attempt == 2 {
			return "done", nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}), "r1", m)
	mustSubmit(t, e.q, m, "slow", nil)
	got := waitStatus(t, e.q, "train", "slow", Succeeded, 10*time.Second)
	if got.Attempts != 2 {
		t.Fatalf("record = %+v, want SUCCEEDED on attempt 2 after a timeout", got)
	}
}

func TestProgressAndCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	step := make(chan struct{})
	startRunner(t, e, e.nc, 1, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		if _, ok, err := ctx.LastCheckpoint(); ok || err != nil {
			return nil, fmt.Errorf("LastCheckpoint() = %v, %v; want none", ok, err)
		}
		if err := ctx.Checkpoint([]byte("epoch-1")); err != nil {
			return nil, err
		}
		if b, ok, err := ctx.LastCheckpoint(); string(b) != "epoch-1" || !ok || err != nil {
			return nil, fmt.Errorf("LastCheckpoint() = %q, %v, %v", b, ok, err)
		}
		if err := ctx.Progress(0.5, "epoch 1 of 2"); err != nil {
			return nil, err
		}
		<-step
		return "trained", nil
	}), "r1", m)
	mustSubmit(t, e.q, m, "p", nil)
	waitfor.True(t, 10*time.Second, "progress 0.5", func() bool {
		r, err := e.q.Status(ctxT(t), testApp, "train", "p")
		return err == nil && r.Progress == 0.5 && r.Message == "epoch 1 of 2"
	})
	close(step)
	waitStatus(t, e.q, "train", "p", Succeeded, 10*time.Second)
	h, _ := e.q.open(ctxT(t), testApp, "train")
	waitfor.True(t, 5*time.Second, "checkpoint deleted after success", func() bool {
		_, err := h.obj.GetInfo(ctxT(t), CheckpointObject("p"))
		return errors.Is(err, jetstream.ErrObjectNotFound)
	})
}

// A runner killed mid-job (its connection closed, nothing acked): another
// takes the job after the lease with attempt 2 and resumes from the
// checkpoint; the job finishes once.
func TestKilledRunnerResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	checkpointed := make(chan struct{})
	hang := make(chan struct{})
	defer close(hang)
	var resumedFrom atomic.Value
	var finished atomic.Int32
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		st, ok, err := ctx.LastCheckpoint()
		if err != nil {
			return nil, err
		}
		if !ok {
			if err := ctx.Checkpoint([]byte("epoch-3")); err != nil {
				return nil, err
			}
			close(checkpointed)
			<-hang // killed here
			return nil, errors.New("zombie")
		}
		resumedFrom.Store(fmt.Sprintf("%s@%d", st, job.Attempt))
		finished.Add(1)
		return "trained", nil
	})
	ncA := natstest.Conn(t, e.ns)
	startRunner(t, e, ncA, 1, h, "a", m)
	mustSubmit(t, e.q, m, "ft", nil)
	<-checkpointed
	ncA.Close() // kill -9: no ack, no heartbeat
	killed := time.Now()
	startRunner(t, e, natstest.Conn(t, e.ns), 1, h, "b", m)
	got := waitStatus(t, e.q, "train", "ft", Succeeded, 10*time.Second)
	if took := time.Since(killed); took > 4*time.Second {
		t.Errorf("takeover took %s, want about lease_timeout (1s) + 1s", took)
	}
	if got.Attempts != 2 || got.Replica != "b" || resumedFrom.Load() != "epoch-3@2" || finished.Load() != 1 {
		t.Fatalf("record %+v, resumed from %v, finished %d; want attempt 2 on b from epoch-3, once", got, resumedFrom.Load(), finished.Load())
	}
}

// A slow runner whose lease was lost cannot overwrite the result of the
// attempt that took over (fencing by attempt).
func TestFencingStaleRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	release := make(chan struct{})
	startedA := make(chan struct{})
	var aDone atomic.Bool
	hA := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		close(startedA)
		<-release
		defer aDone.Store(true)
		return "from-a", nil
	})
	jsA, _ := jetstream.New(e.nc)
	a := NewRunner(e.nc, jsA, e.names, RunnerConfig{App: testApp, Deployment: testDep, Replica: "a", Slots: 1, Methods: []config.AsyncMethod{m}, Handler: hA})
	a.heartbeat = -1 // a stalled process: no heartbeats
	stopA := runRunner(t, a)
	mustSubmit(t, e.q, m, "f", nil)
	recv(t, startedA, "the job to start on a")
	stopA2 := make(chan struct{})
	_ = stopA2
	startRunner(t, e, natstest.Conn(t, e.ns), 1, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		return "from-b", nil
	}), "b", m)
	got := waitStatus(t, e.q, "train", "f", Succeeded, 10*time.Second)
	close(release)
	waitfor.True(t, 5*time.Second, "stale runner returned", aDone.Load)
	stopA()
	got, err := e.q.Status(ctxT(t), testApp, "train", "f")
	res, _, rerr := e.q.Result(ctxT(t), testApp, "train", "f")
	if err != nil || rerr != nil || got.Attempts != 2 || got.Replica != "b" || string(res) != `"from-b"` {
		t.Fatalf("record %+v result %s (%v, %v); want attempt 2's result from b", got, res, err, rerr)
	}
}

func TestMaxQueued(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.MaxQueued, m.MaxRunning = 2, 1 })
	for i := range 3 {
		mustSubmit(t, e.q, m, fmt.Sprintf("q%d", i), nil)
	}
	_, _, err := e.q.Submit(ctxT(t), testApp, testDep, m, "over", nil)
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Submit(beyond max_queued) = %v, want ErrQueueFull", err)
	}
	if _, err := e.q.Status(ctxT(t), testApp, "train", "over"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Status(rejected) = %v, want ErrNotFound: nothing stored", err)
	}
	if n := streamMsgs(t, e, "train"); n != 3 {
		t.Fatalf("stream holds %d jobs, want 3", n)
	}
	// Once there is room the same id is accepted.
	startRunner(t, e, e.nc, 1, handlerFunc(echo), "r1", m)
	waitStatus(t, e.q, "train", "q0", Succeeded, 10*time.Second)
	waitfor.True(t, 10*time.Second, "room in the queue", func() bool {
		_, c, err := e.q.Submit(ctxT(t), testApp, testDep, m, "over", nil)
		return err == nil && c
	})
	waitStatus(t, e.q, "train", "over", Succeeded, 10*time.Second)
}

func TestIdempotentWhileRunningAndAfter(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	runs := newCounter()
	release := make(chan struct{})
	startRunner(t, e, e.nc, 4, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		<-release
		return "ok", nil
	}), "r1", m)
	mustSubmit(t, e.q, m, "12345", serve.Args{"n": raw(1)})
	waitStatus(t, e.q, "train", "12345", Running, 10*time.Second)
	rec, created, err := e.q.Submit(ctxT(t), testApp, testDep, m, "12345", serve.Args{"n": raw(2)})
	if err != nil || created || rec.Status != Running || string(rec.Args) != `{"n":1}` {
		t.Fatalf("Submit(dup while running) = %+v, %v, %v; want the running job", rec, created, err)
	}
	close(release)
	waitStatus(t, e.q, "train", "12345", Succeeded, 10*time.Second)
	rec, created, err = e.q.Submit(ctxT(t), testApp, testDep, m, "12345", nil)
	if err != nil || created || rec.Status != Succeeded {
		t.Fatalf("Submit(dup after finish) = %+v, %v, %v; want the finished job", rec, created, err)
	}
	// The job's message is acked after its record is written: wait for
	// the ack to remove it.
	waitfor.True(t, 5*time.Second, "the finished job's message acked", func() bool { return streamMsgs(t, e, "train") == 0 })
	if n := runs.get("12345"); n != 1 {
		t.Fatalf("runs %d; want 1", n)
	}
}

func TestListPaging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("l%d", i)
		mustSubmit(t, e.q, m, id, nil)
		ids = append([]string{id}, ids...) // newest first
	}
	if _, err := e.q.Cancel(ctx, testApp, "train", "l3"); err != nil {
		t.Fatal(err)
	}
	var got []string
	cursor := ""
	for page := 0; ; page++ {
		recs, next, err := e.q.List(ctx, testApp, "train", "", 3, cursor)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 3 || page > 3 {
			t.Fatalf("page %d has %d records", page, len(recs))
		}
		for _, r := range recs {
			got = append(got, r.ID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("List pages = %v, want %v", got, ids)
	}
	recs, next, err := e.q.List(ctx, testApp, "train", Cancelled, 0, "")
	if err != nil || len(recs) != 1 || recs[0].ID != "l3" || next != "" {
		t.Fatalf("List(CANCELLED) = %+v, %q, %v; want l3 only", recs, next, err)
	}
}

func TestResumeAll(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	mustSubmit(t, e.q, m, "ok", nil)
	// A crash between the record and the publish: a record without a message.
	h, err := e.q.open(ctx, testApp, "train")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	b, _ := json.Marshal(Record{ID: "orphan", App: testApp, Deployment: testDep, Method: "train", Status: Queued, MaxAttempts: 3, CreatedAt: now, UpdatedAt: now})
	if _, err := h.kv.Create(ctx, "orphan", b); err != nil {
		t.Fatal(err)
	}
	n, err := e.q.ResumeAll(ctx, testApp, "train")
	if err != nil || n != 1 {
		t.Fatalf("ResumeAll() = %d, %v; want 1", n, err)
	}
	if n, err := e.q.ResumeAll(ctx, testApp, "train"); err != nil || n != 0 {
		t.Fatalf("ResumeAll() again = %d, %v; want 0", n, err)
	}
	runs := newCounter()
	startRunner(t, e, e.nc, 2, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		return nil, nil
	}), "r1", m)
	waitStatus(t, e.q, "train", "orphan", Succeeded, 10*time.Second)
	waitStatus(t, e.q, "train", "ok", Succeeded, 10*time.Second)
	if runs.get("orphan") != 1 || runs.get("ok") != 1 {
		t.Fatalf("runs = %v, want each once", runs.n)
	}
}

// The NATS server restarts (same store) with jobs queued and one running:
// none is lost and each finishes once in its record.
func TestNATSServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns1 := natstest.ServerIn(t, dir)
	e := envOn(t, ns1)
	m := method("train", func(m *config.AsyncMethod) { m.MaxAttempts = 5 })
	started := make(chan string, 100)
	release := make(chan struct{})
	done := newCounter()
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		started <- job.ID
		if job.ID == "j0" && job.Attempt == 1 {
			<-release // running across the restart
		}
		done.add(job.ID)
		return "ok", nil
	})
	runnerNC := natstest.Conn(t, ns1)
	startRunner(t, e, runnerNC, 1, h, "r1", m)
	mustSubmit(t, e.q, m, "j0", nil)
	if id := recv(t, started, "the first job to start"); id != "j0" {
		t.Fatalf("first started %s, want j0", id)
	}
	for i := 1; i <= 5; i++ {
		mustSubmit(t, e.q, m, fmt.Sprintf("j%d", i), nil)
	}
	natstest.Restart(t, ns1, dir)
	waitfor.True(t, 15*time.Second, "clients reconnected", func() bool {
		return e.nc.IsConnected() && runnerNC.IsConnected()
	})
	close(release)
	for i := 0; i <= 5; i++ {
		id := fmt.Sprintf("j%d", i)
		got := waitStatus(t, e.q, "train", id, Succeeded, 20*time.Second)
		if got.Status != Succeeded {
			t.Fatalf("%s = %+v", id, got)
		}
	}
	ids, _ := done.total()
	if ids != 6 {
		t.Fatalf("finished %d distinct jobs, want 6", ids)
	}
}

func TestAbortHandsJobsBack(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		id      string
		claimed bool // abort after the claim, or before (the abort records the attempt)
	}{{"claimed", "x", true}, {"unclaimed, generated id", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			m := method("train", func(m *config.AsyncMethod) { m.LeaseTimeout = config.Duration(30 * time.Second) })
			started := make(chan struct{})
			claimAfter := time.Hour
			if tc.claimed {
				claimAfter = time.Millisecond
			}
			_, stop := startRunnerWith(t, e, natstest.Conn(t, e.ns), func(r *Runner) { r.claimAfter = claimAfter }, 1,
				handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
					close(started)
					<-ctx.Done()
					return nil, ctx.Err()
				}), "a", m)
			rec, _, err := e.q.Submit(ctxT(t), testApp, testDep, m, tc.id, nil)
			if err != nil {
				t.Fatal(err)
			}
			recv(t, started, "the job to start")
			if tc.claimed {
				waitStatus(t, e.q, "train", rec.ID, Running, 5*time.Second)
			}
			stop() // ctx cancelled and Abort: the job goes back at once (Nak), not after the 30 s lease
			startRunner(t, e, natstest.Conn(t, e.ns), 1, handlerFunc(echo), "b", m)
			got := waitStatus(t, e.q, "train", rec.ID, Succeeded, 5*time.Second)
			if got.Replica != "b" || got.Attempts != 2 {
				t.Fatalf("record = %+v, want attempt 2 on b", got)
			}
		})
	}
}

// Past the stream's dedup window a repeated id is still refused: by the
// stream's one-message-per-id limit while the job is queued, and by its
// record once it ran; neither stores a second message or runs it twice.
func TestIdempotentPastDedupWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.q.dedupWindow = 100 * time.Millisecond
	m := method("train")
	ctx := ctxT(t)
	first := mustSubmit(t, e.q, m, "late", serve.Args{"n": raw(1)})
	time.Sleep(300 * time.Millisecond) // the dedup window forgets "late"
	rec, created, err := e.q.Submit(ctx, testApp, testDep, m, "late", serve.Args{"n": raw(2)})
	if err != nil || created || rec.Status != Queued || string(rec.Args) != `{"n":1}` || !rec.CreatedAt.Equal(first.CreatedAt) {
		t.Fatalf("Submit(dup of a queued job, past the window) = %+v, %v, %v; want the queued job", rec, created, err)
	}
	if n := streamMsgs(t, e, "train"); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	runs := newCounter()
	startRunner(t, e, e.nc, 1, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		runs.add(job.ID)
		return "ok", nil
	}), "r1", m)
	waitStatus(t, e.q, "train", "late", Succeeded, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	rec, created, err = e.q.Submit(ctx, testApp, testDep, m, "late", nil)
	if err != nil || created || rec.Status != Succeeded {
		t.Fatalf("Submit(dup of a finished job, past the window) = %+v, %v, %v; want the finished job", rec, created, err)
	}
	waitfor.True(t, 5*time.Second, "no stray message", func() bool { return streamMsgs(t, e, "train") == 0 })
	time.Sleep(200 * time.Millisecond) // a stray copy, had one stayed, would have run by now
	if runs.get("late") != 1 {
		t.Fatalf("job ran %d times, want 1", runs.get("late"))
	}
}

// A job no runner has claimed yet exists only as its message: Status,
// Result and List show it QUEUED, and List pages through claimed and
// unclaimed jobs alike.
func TestUnclaimedJobsAreVisible(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	for i := range 5 {
		mustSubmit(t, e.q, m, fmt.Sprintf("u%d", i), serve.Args{"i": raw(i)})
	}
	if r, err := e.q.Status(ctx, testApp, "train", "u3"); err != nil || r.Status != Queued || string(r.Args) != `{"i":3}` {
		t.Fatalf("Status(unclaimed) = %+v, %v; want QUEUED with its args", r, err)
	}
	if _, err := e.q.Status(ctx, testApp, "train", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Status(unknown) = %v, want ErrNotFound", err)
	}
	recs, next, err := e.q.List(ctx, testApp, "train", Queued, 3, "")
	if err != nil || len(recs) != 3 || next == "" || recs[0].ID != "u4" {
		t.Fatalf("List(QUEUED, 3) = %+v, %q, %v; want u4, u3, u2 and a cursor", recs, next, err)
	}
	more, next, err := e.q.List(ctx, testApp, "train", "", 3, next)
	if err != nil || len(more) != 2 || next != "" || more[1].ID != "u0" {
		t.Fatalf("List(page 2) = %+v, %q, %v; want u1, u0 and no cursor", more, next, err)
	}
	if recs, _, err := e.q.List(ctx, testApp, "train", Running, 10, ""); err != nil || len(recs) != 0 {
		t.Fatalf("List(RUNNING) = %+v, %v; want none", recs, err)
	}
}

// A stopped runner leaves no pull request behind: a job submitted after it
// stopped goes to the next runner at once, not after its lease.
func TestStoppedRunnerLeavesNoPullBehind(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.LeaseTimeout = config.Duration(30 * time.Second) })
	nc := natstest.Conn(t, e.ns) // stays connected: only the runner stops
	_, stop := startRunner(t, e, nc, 4, handlerFunc(echo), "a", m)
	mustSubmit(t, e.q, m, "first", nil)
	waitStatus(t, e.q, "train", "first", Succeeded, 10*time.Second)
	stop()
	mustSubmit(t, e.q, m, "second", nil)
	startRunner(t, e, natstest.Conn(t, e.ns), 1, handlerFunc(echo), "b", m)
	got := waitStatus(t, e.q, "train", "second", Succeeded, 5*time.Second)
	if got.Replica != "b" || got.Attempts != 1 {
		t.Fatalf("record = %+v, want attempt 1 on b", got)
	}
}

// A job with a generated id that ends before its claim is due has its
// record written once, SUCCEEDED; one that runs longer is claimed RUNNING
// first.
func TestGeneratedIDJobsClaimLazily(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	release := make(chan struct{})
	// A claim delay CI load cannot outlast for a no-op job.
	startRunnerWith(t, e, e.nc, func(r *Runner) { r.claimAfter = time.Second }, 2, handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		if job.Args["slow"] != nil {
			<-release
		}
		return "ok", nil
	}), "r1", m)

	if err := e.q.Ensure(ctx, testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	h, err := e.q.open(ctx, testApp, "train")
	if err != nil {
		t.Fatal(err)
	}
	// A record's revision is its bucket's stream sequence: with one job at
	// a time, writes to it are revisions since the bucket's last one.
	lastRev := func() uint64 {
		st, err := h.kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq
	}
	revision := func(id string) uint64 {
		ent, err := h.kv.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return ent.Revision()
	}

	before := lastRev()
	fast, _, err := e.q.Submit(ctx, testApp, testDep, m, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := waitStatus(t, e.q, "train", fast.ID, Succeeded, 10*time.Second); got.Attempts != 1 || got.StartedAt.IsZero() {
		t.Fatalf("fast job = %+v, want SUCCEEDED on attempt 1 with its start time", got)
	}
	if n := revision(fast.ID) - before; n != 1 {
		t.Fatalf("fast job's record was written %d times, want once (SUCCEEDED)", n)
	}

	before = lastRev()
	slow, _, err := e.q.Submit(ctx, testApp, testDep, m, "", serve.Args{"slow": raw(true)})
	if err != nil {
		t.Fatal(err)
	}
	if got := waitStatus(t, e.q, "train", slow.ID, Running, 5*time.Second); got.Attempts != 1 || got.Replica != "r1" {
		t.Fatalf("slow job = %+v, want claimed RUNNING by r1", got)
	}
	close(release)
	waitStatus(t, e.q, "train", slow.ID, Succeeded, 10*time.Second)
	if n := revision(slow.ID) - before; n != 2 {
		t.Fatalf("slow job's record was written %d times, want twice (RUNNING, SUCCEEDED)", n)
	}
}

// Cancelling a generated-id job that runs but is not claimed yet: the
// cancel's record wins, the runner stops the job at its claim and drops
// its outcome.
func TestCancelBeforeLazyClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	ctx := ctxT(t)
	started := make(chan string, 1)
	runs := newCounter()
	startRunnerWith(t, e, natstest.Conn(t, e.ns), func(r *Runner) { r.claimAfter = 300 * time.Millisecond }, 1,
		handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
			runs.add(job.ID)
			started <- job.ID
			<-ctx.Done()
			return nil, ctx.Err()
		}), "r1", m)
	rec, _, err := e.q.Submit(ctx, testApp, testDep, m, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	recv(t, started, "the job to start")
	if got, err := e.q.Cancel(ctx, testApp, "train", rec.ID); err != nil || got.Status != Cancelled {
		t.Fatalf("Cancel(running, unclaimed) = %+v, %v; want CANCELLED", got, err)
	}
	waitfor.True(t, 5*time.Second, "the job message settled", func() bool { return streamMsgs(t, e, "train") == 0 })
	if got, err := e.q.Status(ctx, testApp, "train", rec.ID); err != nil || got.Status != Cancelled || runs.get(rec.ID) != 1 {
		t.Fatalf("Status = %+v, %v (runs %d); want CANCELLED after one run", got, err, runs.get(rec.ID))
	}
}

// TestSubmitOverMaxPayload: a job whose message does not fit the server's
// max_payload is refused with ErrTooLarge (a 413 at the ingress), nothing
// is stored, and the next submit goes through.
func TestSubmitOverMaxPayload(t *testing.T) {
	t.Parallel()
	e := envOn(t, natstest.ServerWith(t, natsembed.Options{MaxPayload: 1 << 20}))
	m := method("train")
	big := serve.Args{"data": json.RawMessage(`"` + strings.Repeat("x", 1100*1000) + `"`)}
	_, _, err := e.q.Submit(ctxT(t), testApp, testDep, m, "big", big)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("Submit(1.1 MB of arguments) = %v, want ErrTooLarge naming max_payload", err)
	}
	if _, err := e.q.Status(ctxT(t), testApp, "train", "big"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Status(refused) = %v, want ErrNotFound: nothing stored", err)
	}
	mustSubmit(t, e.q, m, "small", nil)
}
