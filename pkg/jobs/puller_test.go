package jobs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// pullMethodOf ensures m and returns it as the puller's method idx, its
// consumer opened on e's connection.
func pullMethodOf(t testing.TB, e *testEnv, m config.AsyncMethod, idx int) *pullMethod {
	t.Helper()
	h, err := e.q.ensure(ctxT(t), testApp, testDep, withDefaults(m))
	if err != nil {
		t.Fatal(err)
	}
	cons, err := h.stream.Consumer(ctxT(t), Consumer)
	if err != nil {
		t.Fatal(err)
	}
	return &pullMethod{idx: idx, name: m.Name, priority: *withDefaults(m).Priority, cons: cons}
}

// runPuller runs p until stop; every job it takes a slot for arrives on
// the returned channel (the test releases the slot).
func runPuller(t testing.TB, p *puller, wake <-chan int) (got <-chan delivery, stop func()) {
	t.Helper()
	ch := make(chan delivery, 128)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.run(ctx, wake, func(d delivery) { ch <- d })
	}()
	stop = func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("puller did not stop")
		}
	}
	t.Cleanup(stop)
	return ch, stop
}

func consumerInfo(t testing.TB, e *testEnv, method string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := e.js.Consumer(ctxT(t), e.names.Stream(testApp, method), Consumer)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// noDelivery fails if got delivers within d.
func noDelivery(t testing.TB, got <-chan delivery, d time.Duration, why string) {
	t.Helper()
	select {
	case x := <-got:
		t.Fatalf("%s: got job %s", why, x.msg.Subject())
	case <-time.After(d):
	}
}

// A puller asks for exactly its free slots: with 2 slots and 5 queued
// jobs, 2 are delivered and 3 stay at the server (none waits in a client
// buffer); each freed slot brings one more.
func TestPullerTakesOnlyFreeSlots(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.LeaseTimeout = config.Duration(30 * time.Second) })
	pm := pullMethodOf(t, e, m, 0)
	for i := range 5 {
		mustSubmit(t, e.q, m, fmt.Sprintf("j%d", i), nil)
	}
	slots := NewSlots(2)
	got, _ := runPuller(t, newPuller(zerolog.Nop(), slots, []*pullMethod{pm}), nil)
	first := []delivery{recv(t, got, "a first job"), recv(t, got, "a second job")}
	noDelivery(t, got, 300*time.Millisecond, "both slots are taken")
	if info := consumerInfo(t, e, "train"); info.NumAckPending != 2 || info.NumPending != 3 {
		t.Fatalf("consumer: %d delivered, %d pending; want 2 and 3", info.NumAckPending, info.NumPending)
	}
	if free := slots.Free(); free != 0 {
		t.Fatalf("Free() = %d, want 0", free)
	}
	for i, d := range first {
		if err := d.msg.Ack(); err != nil {
			t.Fatal(err)
		}
		slots.release()
		recv(t, got, fmt.Sprintf("the job of freed slot %d", i+1))
		noDelivery(t, got, 200*time.Millisecond, "one slot was freed")
	}
	if info := consumerInfo(t, e, "train"); info.NumAckPending != 2 || info.NumPending != 1 {
		t.Fatalf("consumer: %d delivered, %d pending; want 2 and 1", info.NumAckPending, info.NumPending)
	}
}

// A stopped puller leaves no pull request behind and hands back what
// arrived on the way out: a job submitted after the stop goes to the next
// puller on its first delivery, and so does one delivered to the stopping
// puller.
func TestPullerStopLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train", func(m *config.AsyncMethod) { m.LeaseTimeout = config.Duration(30 * time.Second) })
	slotsA := NewSlots(4)
	_, stopA := runPuller(t, newPuller(zerolog.Nop(), slotsA, []*pullMethod{pullMethodOf(t, e, m, 0)}), nil)
	// Let its session's request reach the server.
	waitfor.True(t, 5*time.Second, "a waiting pull request", func() bool { return consumerInfo(t, e, "train").NumWaiting > 0 })
	stopA()
	if free := slotsA.Free(); free != 4 {
		t.Errorf("stopped puller holds slots: Free() = %d, want 4", free)
	}
	mustSubmit(t, e.q, m, "after", nil)
	got, _ := runPuller(t, newPuller(zerolog.Nop(), NewSlots(1), []*pullMethod{pullMethodOf(t, e, m, 0)}), nil)
	d := recv(t, got, "the job at the second puller")
	meta, err := d.msg.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	if meta.NumDelivered != 1 {
		t.Fatalf("job delivered %d times, want once (never to the stopped puller)", meta.NumDelivered)
	}
}

// With several methods the puller scans highest priority first, and every
// 4th scan lowest first, so a low priority is not starved.
func TestPullerPriority(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	lo, hi := method("lo", prio(1)), method("hi", prio(5))
	pms := []*pullMethod{pullMethodOf(t, e, lo, 0), pullMethodOf(t, e, hi, 1)}
	for i := range 8 {
		mustSubmit(t, e.q, lo, fmt.Sprintf("lo%d", i), nil)
		mustSubmit(t, e.q, hi, fmt.Sprintf("hi%d", i), nil)
	}
	slots := NewSlots(1)
	wake := make(chan int, 1)
	got, _ := runPuller(t, newPuller(zerolog.Nop(), slots, pms), wake)
	var order []string
	for range 8 {
		d := recv(t, got, "a job")
		order = append(order, d.m.name)
		if err := d.msg.Ack(); err != nil {
			t.Fatal(err)
		}
		slots.release()
	}
	if order[0] != "hi" {
		t.Errorf("first job from %s, want hi: %v", order[0], order)
	}
	los := 0
	for _, n := range order {
		if n == "lo" {
			los++
		}
	}
	if los == 0 || los > 3 {
		t.Errorf("order %v: want hi first with lo every 4th scan (1 to 3 of 8)", order)
	}
}

// A wake-up naming a method makes the scan wait a moment for a job not
// stored yet; without one a job published to an idle multi-method puller
// is still found by the next tick.
func TestPullerWake(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := method("a"), method("b")
	pms := []*pullMethod{pullMethodOf(t, e, a, 0), pullMethodOf(t, e, b, 1)}
	wake := make(chan int, 1)
	got, _ := runPuller(t, newPuller(zerolog.Nop(), NewSlots(2), pms), wake)
	noDelivery(t, got, 200*time.Millisecond, "no job yet")
	mustSubmit(t, e.q, b, "j1", nil)
	wake <- 1
	if d := recv(t, got, "the woken job"); d.m.name != "b" {
		t.Fatalf("got a job of %s, want b", d.m.name)
	}
	mustSubmit(t, e.q, a, "j2", nil) // nobody wakes it: the tick finds it
	if d := recv(t, got, "the job found by the tick"); d.m.name != "a" {
		t.Fatalf("got a job of %s, want a", d.m.name)
	}
}

// A consumer deleted under a waiting puller ends its session; once the
// consumer exists again the puller pulls from it.
func TestPullerSurvivesConsumerRecreated(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := method("train")
	pm := pullMethodOf(t, e, m, 0)
	got, _ := runPuller(t, newPuller(zerolog.Nop(), NewSlots(1), []*pullMethod{pm}), nil)
	waitfor.True(t, 5*time.Second, "a waiting pull request", func() bool { return consumerInfo(t, e, "train").NumWaiting > 0 })
	s, err := e.js.Stream(ctxT(t), e.names.Stream(testApp, "train"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteConsumer(ctxT(t), Consumer); err != nil {
		t.Fatal(err)
	}
	// A new Queue ensures the method again (its cache knew the consumer).
	if err := NewQueue(e.js, e.names, zerolog.Nop()).Ensure(ctxT(t), testApp, testDep, m); err != nil {
		t.Fatal(err)
	}
	mustSubmit(t, e.q, m, "j1", nil)
	recv(t, got, "the job from the recreated consumer")
}

// After the NATS server restarts (same store, same port) the puller's
// session pulls again on the new connection.
func TestPullerAfterServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ns1 := natstest.ServerIn(t, dir)
	e := envOn(t, ns1)
	m := method("train")
	pm := pullMethodOf(t, e, m, 0)
	got, _ := runPuller(t, newPuller(zerolog.Nop(), NewSlots(1), []*pullMethod{pm}), nil)
	waitfor.True(t, 5*time.Second, "a waiting pull request", func() bool { return consumerInfo(t, e, "train").NumWaiting > 0 })

	natstest.Restart(t, ns1, dir)
	waitfor.True(t, 15*time.Second, "the client reconnected", e.nc.IsConnected)
	mustSubmit(t, NewQueue(e.js, e.names, zerolog.Nop()), m, "j1", nil)
	recv(t, got, "the job after the restart")
}
