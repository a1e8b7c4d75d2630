package jobs

import (
	"errors"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// A Bind queue and runner create nothing: before the streams exist (the
// scheduler creates them) a submit is ErrNotProvisioned, a 503, and the
// runner waits; once they exist the runner binds and runs the job, whose
// second checkpoint replaces the first and is deleted after success —
// without the purges a worker's user may not send.
func TestBindWaitsForItsStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	bq := NewQueue(e.js, e.names, zerolog.Nop(), Bind())
	if _, _, err := bq.Submit(ctxT(t), testApp, testDep, m, "b1", nil); !errors.Is(err, ErrNotProvisioned) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Submit before the streams exist = %v, want ErrNotProvisioned (ErrUnavailable)", err)
	}
	if _, err := e.js.Stream(ctxT(t), e.names.Stream(testApp, "train")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("the Bind queue's submit created the job stream (%v)", err)
	}
	ran := make(chan []byte, 1)
	startRunnerWith(t, e, e.nc, func(r *Runner) { r.cfg.Bind, r.q.bind = true, true }, 1,
		handlerFunc(func(ctx serve.JobContext, job *serve.Job) (any, error) {
			for _, c := range []string{"epoch-1", "epoch-2"} {
				if err := ctx.Checkpoint([]byte(c)); err != nil {
					return nil, err
				}
			}
			b, _, err := ctx.LastCheckpoint()
			ran <- b
			return "trained", err
		}), "r1", m)
	if err := e.q.Ensure(ctxT(t), testApp, testDep, m); err != nil { // the scheduler's
		t.Fatal(err)
	}
	mustSubmit(t, bq, m, "b1", nil)
	if got := recv(t, ran, "the job's run"); string(got) != "epoch-2" {
		t.Errorf("LastCheckpoint() after two = %q, want epoch-2", got)
	}
	waitStatus(t, e.q, "train", "b1", Succeeded, 10*time.Second)
	h, _ := e.q.open(ctxT(t), testApp, "train")
	waitfor.True(t, 5*time.Second, "checkpoint deleted after success", func() bool {
		_, err := h.obj.GetInfo(ctxT(t), CheckpointObject("b1"))
		return errors.Is(err, jetstream.ErrObjectNotFound)
	})
}
