package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// moveStream points the job stream of method name at other subjects (as
// if it had no leader: nobody listens on its job subjects) or back.
func moveStream(t *testing.T, e *testEnv, name string, away bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.js.Stream(ctx, e.names.Stream(testApp, name))
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Subjects = []string{e.names.JobWildcard(testApp, name)}
	if away {
		cfg.Subjects = []string{"elsewhere.>"}
	}
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// A submit while nothing answers for the job stream (no leader: no
// responders) is repeated for SubmitWait, then is ErrUnavailable with
// nothing stored; once the stream listens again the same id is accepted.
func TestSubmitWithoutAStreamLeaderIsUnavailable(t *testing.T) {
	e := newEnv(t)
	m := method("train")
	q := NewQueue(e.js, e.names, zerolog.Nop(), SubmitWait(300*time.Millisecond))
	if err := q.Ensure(ctxT(t), testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	moveStream(t, e, "train", true)
	began := time.Now()
	_, created, err := q.Submit(ctxT(t), testApp, testDep, m, "j1", nil)
	if !errors.Is(err, ErrUnavailable) || created {
		t.Fatalf("Submit() with no stream listening = %v, %v; want ErrUnavailable", created, err)
	}
	if el := time.Since(began); el > 3*time.Second {
		t.Errorf("Submit() answered after %v, want soon after its SubmitWait (300ms)", el.Round(time.Millisecond))
	}
	moveStream(t, e, "train", false)
	if n := streamMsgs(t, e, "train"); n != 0 {
		t.Errorf("%d job message(s) stored by the unavailable submit, want 0", n)
	}
	if rec, created, err := q.Submit(ctxT(t), testApp, testDep, m, "j1", nil); err != nil || !created || rec.ID != "j1" {
		t.Fatalf("Submit() again with the stream back = %+v, %v, %v; want j1 created", rec, created, err)
	}
}

// A publish stored without its acknowledgement reaching the submitter (a
// stream leader cut off from the network as it answered) is repeated with
// the same message id after the attempt's bound; the stream answers the
// repeat as a duplicate, and the submit is still the job's creator:
// created, one message, not a second job. Without a per-attempt bound
// the submit waits for an acknowledgement that never comes.
func TestSubmitWhoseAckIsLostIsRepeatedOnce(t *testing.T) {
	e := newEnv(t)
	m := method("train")
	q := NewQueue(e.js, e.names, zerolog.Nop(), SubmitWait(10*time.Second))
	if err := q.Ensure(ctxT(t), testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	moveStream(t, e, "train", true)
	// The "old leader": takes the first publish, stores it (the stream
	// listens again and is given the message, its message id included)
	// and never answers it.
	other := e.nc
	var once sync.Once
	stored := make(chan error, 1)
	sub, err := other.Subscribe(e.names.JobWildcard(testApp, "train"), func(msg *nats.Msg) {
		once.Do(func() {
			moveStream(t, e, "train", false)
			fwd := &nats.Msg{Subject: msg.Subject, Header: msg.Header, Data: msg.Data}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := e.js.PublishMsg(ctx, fwd)
			stored <- err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	began := time.Now()
	rec, created, err := q.Submit(ctx, testApp, testDep, m, "j1", nil, Owner("alice"))
	if err != nil || !created || rec.ID != "j1" || rec.Owner != "alice" {
		t.Fatalf("Submit() whose first acknowledgement was lost = %+v, %v, %v; want j1 of alice, created", rec, created, err)
	}
	if err := <-stored; err != nil {
		t.Fatalf("the old leader's store: %v", err)
	}
	if el := time.Since(began); el < submitAttemptTimeout {
		t.Errorf("Submit() answered after %v: before its first attempt's bound (%v), so the lost acknowledgement was not what it met", el, submitAttemptTimeout)
	}
	if n := streamMsgs(t, e, "train"); n != 1 {
		t.Errorf("%d job messages, want 1 (the repeat is a duplicate)", n)
	}
	// Another caller's submit of the same id is not its creator.
	if rec, created, err := q.Submit(ctxT(t), testApp, testDep, m, "j1", nil, Owner("bob")); err != nil || created || rec.Owner != "alice" {
		t.Errorf("Submit() of j1 by another caller = %+v, %v, %v; want alice's job, not created", rec, created, err)
	}
}

// Concurrent ensures of one method while JetStream answers nothing (its
// streams electing leaders) share one attempt: each caller has its answer
// after about one attempt's bound, not after one attempt per caller
// queued before it.
func TestConcurrentEnsuresShareOneAttempt(t *testing.T) {
	e := newEnv(t)
	// The queue's JetStream API goes through a relay that drops every
	// request (nobody answers) until opened.
	var mu sync.Mutex
	open := false
	js := natstest.APIRelay(t, e.nc, e.nc, func(string, *nats.Msg) bool {
		mu.Lock()
		defer mu.Unlock()
		return !open
	})
	q := NewQueue(js, e.names, zerolog.Nop())
	m := method("train")
	const callers = 6
	took := make(chan time.Duration, callers)
	errs := make(chan error, callers)
	for range callers {
		go func() {
			began := time.Now()
			errs <- q.Ensure(ctxT(t), testApp, testDep, m)
			took <- time.Since(began)
		}()
	}
	var slowest time.Duration
	for range callers {
		if err := <-errs; err == nil {
			t.Error("Ensure() with JetStream silent = nil, want an error")
		}
		slowest = max(slowest, <-took)
	}
	if slowest > 4*time.Second {
		t.Errorf("the last of %d concurrent ensures answered after %v, want about one attempt's bound (1 s lookups)", callers, slowest.Round(time.Millisecond))
	}
	mu.Lock()
	open = true
	mu.Unlock()
	if err := q.Ensure(ctxT(t), testApp, testDep, m); err != nil {
		t.Fatalf("Ensure() once JetStream answers: %v", err)
	}
}

// TestPublishUnanswered: which publish errors Submit repeats (JetStream
// did not answer, or is still storing an earlier attempt) and which it
// returns (a refusal).
func TestPublishUnanswered(t *testing.T) {
	api := func(code, errCode int, desc string) error {
		return fmt.Errorf("publish: %w", &jetstream.APIError{Code: code, ErrorCode: jetstream.ErrorCode(errCode), Description: desc})
	}
	for _, tc := range []struct {
		name         string
		err          error
		repeat, mays bool
	}{
		{"no stream response", jetstream.ErrNoStreamResponse, true, false},
		{"no responders", nats.ErrNoResponders, true, false},
		{"attempt timed out", context.DeadlineExceeded, true, true},
		{"nats timeout", nats.ErrTimeout, true, true},
		{"no leader (503)", api(503, 10008, "JetStream system temporarily unavailable"), true, true},
		{"duplicate in process", api(409, 10158, "duplicate message id is in process"), true, true},
		{"queue full", api(503, 10077, "maximum messages exceeded"), false, true},
		{"job in stream", api(503, 10077, "maximum messages per subject exceeded"), false, true},
		{"bad request", api(400, 10003, "bad request"), false, true},
	} {
		if got := publishUnanswered(tc.err); got != tc.repeat {
			t.Errorf("publishUnanswered(%s) = %v, want %v", tc.name, got, tc.repeat)
		}
		if got := publishMayBeStored(tc.err); tc.repeat && got != tc.mays {
			t.Errorf("publishMayBeStored(%s) = %v, want %v", tc.name, got, tc.mays)
		}
	}
}
