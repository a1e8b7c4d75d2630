package jobs

import (
	"context"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/waitfor"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// TestRunnersShareSlots: a replica whose async methods change stops its
// runner's pulling and starts a new runner while the old runner's job
// still runs; the new runner pulls only for the slots that job leaves
// free, and Resize (a new max_ongoing_requests) applies at once.
func TestRunnersShareSlots(t *testing.T) {
	e := newEnv(t)
	m := method("fit")
	started := make(chan string, 8)
	release := map[string]chan struct{}{"j1": make(chan struct{}), "j2": make(chan struct{}), "j3": make(chan struct{})}
	h := handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
		started <- job.ID
		select {
		case <-release[job.ID]:
		case <-ctx.Done():
		}
		return "ok", nil
	})
	slots := NewSlots(1)
	// run starts a runner; stopPulling ends its Run's context (no Abort:
	// its running jobs go on); done is closed once Run returned, *err set.
	run := func(replica string) (stopPulling context.CancelFunc, done <-chan struct{}, err *error) {
		r := NewRunner(e.nc, e.js, e.names, RunnerConfig{App: testApp, Deployment: testDep, Worker: "w", Replica: replica,
			Methods: []config.AsyncMethod{m}, Handler: h, Log: zerolog.Nop(), Shared: slots})
		ctx, cancel := context.WithCancel(context.Background())
		ch := make(chan struct{})
		err = new(error)
		go func() {
			defer close(ch)
			*err = r.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			r.Abort()
			<-ch
		})
		return cancel, ch, err
	}

	stopA, doneA, errA := run("a")
	mustSubmit(t, e.q, m, "j1", nil)
	if id := recv(t, started, "j1 to start"); id != "j1" {
		t.Fatalf("started %s, want j1", id)
	}
	stopA() // the methods changed: a stops pulling, j1 goes on
	run("b")
	mustSubmit(t, e.q, m, "j2", nil)
	select {
	case id := <-started:
		t.Fatalf("%s started while j1 held the only slot", id)
	case <-time.After(500 * time.Millisecond):
	}
	if rec := waitStatus(t, e.q, "fit", "j2", Queued, 5*time.Second); rec.Replica != "" {
		t.Errorf("j2 = %+v, want QUEUED on no replica", rec)
	}
	close(release["j1"])
	recv(t, doneA, "runner a to return after its job")
	if *errA != nil {
		t.Errorf("runner a: Run() = %v, want nil", *errA)
	}
	if id := recv(t, started, "j2 to start in b"); id != "j2" {
		t.Fatalf("started %s, want j2", id)
	}
	if rec := waitStatus(t, e.q, "fit", "j1", Succeeded, 10*time.Second); rec.Replica != "a" {
		t.Errorf("j1 ran on %q, want a", rec.Replica)
	}

	// Two slots now: j3 starts beside j2.
	slots.Resize(2)
	mustSubmit(t, e.q, m, "j3", nil)
	if id := recv(t, started, "j3 to start beside j2"); id != "j3" {
		t.Fatalf("started %s, want j3", id)
	}
	if got := slots.Free(); got != 0 {
		t.Errorf("Free() with 2 jobs in 2 slots = %d, want 0", got)
	}
	close(release["j2"])
	close(release["j3"])
	for _, id := range []string{"j2", "j3"} {
		if rec := waitStatus(t, e.q, "fit", id, Succeeded, 10*time.Second); rec.Replica != "b" {
			t.Errorf("%s ran on %q, want b", id, rec.Replica)
		}
	}
	waitfor.True(t, 5*time.Second, "both slots free", func() bool { return slots.Free() == 2 })
}

func TestSlots(t *testing.T) {
	s := NewSlots(0)
	if s.Size() != 1 || s.Free() != 1 {
		t.Fatalf("NewSlots(0): size %d free %d, want 1, 1", s.Size(), s.Free())
	}
	if !s.take() || s.take() {
		t.Fatalf("take on 1 slot: want true then false")
	}
	s.Resize(3)
	select {
	case <-s.freed:
	default:
		t.Errorf("Resize up did not signal freed")
	}
	if s.Free() != 2 {
		t.Errorf("Free after Resize(3) with 1 taken = %d, want 2", s.Free())
	}
	s.Resize(0) // below what is taken: nothing new starts
	if s.Free() != 0 || s.take() {
		t.Errorf("after Resize(0) with 1 taken: free %d, want 0 and take false", s.Free())
	}
	s.release()
	if s.Free() != 1 {
		t.Errorf("Free after release = %d, want 1", s.Free())
	}
}
