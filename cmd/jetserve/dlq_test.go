package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

type failing struct{}

func (failing) RunJob(serve.JobContext, *serve.Job) (any, error) { return nil, errors.New("boom") }

// TestDeadLettersAndRequeue exhausts a job's attempts on a real embedded
// JetStream, then lists and requeues it with the CLI.
func TestDeadLettersAndRequeue(t *testing.T) {
	tf := natstest.NewFleet(t)
	ns, nc, js, jn := tf.NS, tf.NC, tf.JS, jobs.Names{Names: tf.Names}
	q := jobs.NewQueue(js, jn, zerolog.Nop())
	m := config.AsyncMethod{Name: "train", MaxAttempts: 1, Backoff: []config.Duration{config.Duration(10 * time.Millisecond)}}
	m.ApplyDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := q.Ensure(ctx, "app", "Trainer", m); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.Submit(ctx, "app", "Trainer", m, "job-1", nil); err != nil {
		t.Fatal(err)
	}
	r := jobs.NewRunner(nc, js, jn, jobs.RunnerConfig{App: "app", Deployment: "Trainer", Replica: "r", Worker: "w", Slots: 1,
		Methods: []config.AsyncMethod{m}, Handler: failing{}, Log: zerolog.Nop()})
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rec, err := q.Status(ctx, "app", "train", "job-1")
		if err == nil && rec.Status == jobs.Failed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job never FAILED: %+v %v", rec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done

	env := []string{"JETSERVE_NATS_URL=" + ns.ClientURL()}
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"jobs", "dead-letters", "app", "train"}, env, strings.NewReader(""), &out, &errb); err != nil {
		t.Fatalf("jobs dead-letters = %v (%s)", err, errb.String())
	}
	if !strings.Contains(out.String(), "job-1") || !strings.Contains(out.String(), "boom") {
		t.Fatalf("jobs dead-letters printed %q, want job-1 with its error", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"jobs", "requeue", "app", "train", "job-1"}, env, strings.NewReader(""), &out, &errb); err != nil {
		t.Fatalf("jobs requeue = %v (%s)", err, errb.String())
	}
	rec, err := q.Status(context.Background(), "app", "train", "job-1")
	if err != nil || rec.Status != jobs.Queued {
		t.Fatalf("after requeue: %+v %v, want QUEUED", rec, err)
	}
	if err := run(context.Background(), []string{"jobs", "requeue", "app", "train"}, env, strings.NewReader(""), &out, &errb); err == nil {
		t.Fatal("jobs requeue without ID = nil error, want usage")
	}
}
