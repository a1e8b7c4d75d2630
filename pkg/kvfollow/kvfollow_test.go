package kvfollow_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder keeps what a follower reported.
type recorder struct {
	mu      sync.Mutex
	changes []kvfollow.Change[int]
	syncs   int
}

func (r *recorder) change(c kvfollow.Change[int]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

func (r *recorder) sync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.syncs++
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes), r.syncs
}

func run[T any](t *testing.T, f *kvfollow.Follower[T]) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil", err)
		}
	})
}

func bucket(t *testing.T, nc *nats.Conn) jetstream.KeyValue {
	t.Helper()
	return bucketWith(t, nc, jetstream.KeyValueConfig{Bucket: "follow"})
}

func bucketWith(t *testing.T, nc *nats.Conn, cfg jetstream.KeyValueConfig) jetstream.KeyValue {
	t.Helper()
	js := natstest.JetStream(t, nc)
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func put(t *testing.T, kv jetstream.KeyValue, key, val string) {
	t.Helper()
	if _, err := kv.Put(context.Background(), key, []byte(val)); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func TestFollowsValuesUpdatesAndDeletes(t *testing.T) {
	for _, push := range []bool{false, true} {
		t.Run(map[bool]string{false: "pull", true: "push"}[push], func(t *testing.T) { testFollows(t, push) })
	}
}

func testFollows(t *testing.T, push bool) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucket(t, nc)
	put(t, kv, "a", "1")
	put(t, kv, "b", "2")
	put(t, kv, "other.c", "3")
	var rec recorder
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{Keys: []string{"a", "b", "bad"}, OnChange: rec.change, OnSync: rec.sync, Log: zerolog.Nop(), Push: push})
	run(t, f)
	select {
	case <-f.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("Ready() never closed")
	}
	if got := f.Snapshot(); len(got) != 2 || got["a"] != 1 || got["b"] != 2 {
		t.Fatalf("Snapshot() after the initial values = %v, want map[a:1 b:2]", got)
	}
	if !f.Synced() {
		t.Error("Synced() = false after the initial values")
	}

	put(t, kv, "a", "10")
	put(t, kv, "bad", "not a number") // skipped, logged
	if err := kv.Delete(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	waitfor.NoError(t, 10*time.Second, "the update and the delete reported", func() error {
		if v, _ := f.Get("a"); v != 10 {
			return fmt.Errorf("Get(a) = %d", v)
		}
		if _, ok := f.Get("b"); ok {
			return errors.New("b still there")
		}
		return nil
	})
	if _, ok := f.Get("bad"); ok {
		t.Error("Get(bad) found an undecodable value")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []kvfollow.Change[int]{{Key: "a", Value: 1}, {Key: "b", Value: 2}, {Key: "a", Value: 10}, {Key: "b", Deleted: true}}
	if len(rec.changes) != len(want) {
		t.Fatalf("changes = %+v, want %+v", rec.changes, want)
	}
	for i, c := range rec.changes {
		if c.Key != want[i].Key || c.Value != want[i].Value || c.Deleted != want[i].Deleted || c.Revision == 0 {
			t.Errorf("change %d = %+v, want %+v with a revision", i, c, want[i])
		}
	}
}

// TestResyncAfterServerRestart: the server restarts on the same store and
// port; a key deleted while the follower was cut off is reported deleted,
// a key written right after the restart is seen, and the follower is
// synced again within a second of the reconnect — not at the watcher's
// own 10 s activity check.
func TestResyncAfterServerRestart(t *testing.T) {
	opts := natsembed.Options{StoreDir: t.TempDir()}
	ns := natstest.ServerWith(t, opts)
	opts.Port = ns.Addr().(*net.TCPAddr).Port
	nc := natstest.ReconnectingConn(t, ns.ClientURL())
	kv := bucket(t, nc)
	for i := range 3 {
		put(t, kv, "k"+strconv.Itoa(i), strconv.Itoa(i))
	}
	var rec recorder
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{OnChange: rec.change, OnSync: rec.sync, Log: zerolog.Nop()})
	run(t, f)
	<-f.Ready()

	// Change the bucket behind the follower's back: on a server started
	// on the same store but another port (the follower cannot reach it),
	// purge k1 and its marker — as an expired key's marker is gone a
	// second later — and add k3; then restart on the follower's port.
	reconnected := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(reconnected)
	ns.Shutdown()
	ns.WaitForShutdown()
	waitfor.NoError(t, 10*time.Second, "follower unsynced while the server is down", func() error {
		if f.Synced() {
			return errors.New("still synced")
		}
		return nil
	})
	ns2 := natstest.ServerWith(t, natsembed.Options{StoreDir: opts.StoreDir})
	okv := bucket(t, natstest.Conn(t, ns2))
	if err := okv.Purge(context.Background(), "k1"); err != nil {
		t.Fatal(err)
	}
	if err := okv.PurgeDeletes(context.Background(), jetstream.DeleteMarkersOlderThan(-1)); err != nil {
		t.Fatal(err)
	}
	put(t, okv, "k3", "3")
	ns2.Shutdown()
	ns2.WaitForShutdown()
	natstest.ServerWith(t, opts)
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("the follower's connection never came back")
	}
	back := time.Now()
	waitfor.NoError(t, 10*time.Second, "resynced", func() error {
		if !f.Synced() {
			return errors.New("not synced")
		}
		if _, ok := f.Get("k1"); ok {
			return errors.New("k1 still there")
		}
		if v, ok := f.Get("k3"); !ok || v != 3 {
			return errors.New("k3 not seen")
		}
		return nil
	})
	if el := time.Since(back); el > 2*time.Second {
		t.Errorf("resynced %v after the reconnect, want within ~1 s", el)
	}
	if _, syncs := rec.counts(); syncs < 2 {
		t.Errorf("OnSync called %d times, want the initial sync and a resync", syncs)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var deleted bool
	for _, c := range rec.changes {
		if c.Key == "k1" && c.Deleted {
			deleted = true
		}
	}
	if !deleted {
		t.Errorf("changes %+v lack the delete of k1", rec.changes)
	}
}

// TestChanged: an owner that waits on Changed and reads Get sees the
// initial value, every later one (or a newer one) and the delete.
func TestChanged(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucket(t, nc)
	put(t, kv, "k", "1")
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{Keys: []string{"k"}, Log: zerolog.Nop()})
	run(t, f)
	// next waits for a signal and returns what Get says then.
	next := func(what string) (int, bool) {
		t.Helper()
		select {
		case <-f.Changed():
		case <-time.After(10 * time.Second):
			t.Fatalf("no change signalled for %s", what)
		}
		return f.Get("k")
	}
	for v, ok := next("the initial value"); v != 1 || !ok; v, ok = next("the initial value") {
	}
	put(t, kv, "k", "2")
	put(t, kv, "k", "3")
	for v, _ := next("the updates"); v != 3; v, _ = next("the updates") {
		if v != 1 && v != 2 {
			t.Fatalf("Get(k) = %d after a signal, want 2 or 3", v)
		}
	}
	if err := kv.Delete(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	for _, ok := next("the delete"); ok; _, ok = next("the delete") {
	}
}

// TestDecodeEntry: DecodeEntry sees each entry's revision and creation
// time, and what it rejects is skipped like Decode's.
func TestDecodeEntry(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucket(t, nc)
	type stamped struct {
		rev     uint64
		created time.Time
		val     string
	}
	before := time.Now().Add(-time.Second)
	put(t, kv, "a", "x")
	f := kvfollow.New(nc, kv, kvfollow.Options[stamped]{Log: zerolog.Nop(),
		DecodeEntry: func(e jetstream.KeyValueEntry) (stamped, error) {
			if string(e.Value()) == "bad" {
				return stamped{}, errors.New("bad value")
			}
			return stamped{rev: e.Revision(), created: e.Created(), val: string(e.Value())}, nil
		}})
	run(t, f)
	<-f.Ready()
	first, ok := f.Get("a")
	if !ok || first.rev == 0 || first.created.Before(before) || first.val != "x" {
		t.Fatalf("Get(a) = %+v, %v; want x with its revision and creation time", first, ok)
	}
	put(t, kv, "a", "bad")
	put(t, kv, "a", "y")
	waitfor.True(t, 10*time.Second, "the second value with a later revision", func() bool {
		v, _ := f.Get("a")
		return v.val == "y" && v.rev > first.rev+1
	})
}

// TestHistory: with History, OnChange hears every revision the bucket
// keeps, oldest first (a delete marker among them), and the copy holds
// the latest; a later put is heard once.
func TestHistory(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucketWith(t, nc, jetstream.KeyValueConfig{Bucket: "history", History: 5})
	for _, v := range []string{"1", "2", "3"} {
		put(t, kv, "a", v)
	}
	put(t, kv, "b", "7")
	if err := kv.Delete(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{History: true, OnChange: rec.change, Log: zerolog.Nop()})
	run(t, f)
	<-f.Ready()
	if got := f.Snapshot(); len(got) != 1 || got["a"] != 3 {
		t.Errorf("Snapshot() = %v, want map[a:3]", got)
	}
	put(t, kv, "a", "4")
	waitfor.True(t, 10*time.Second, "the later put", func() bool { v, _ := f.Get("a"); return v == 4 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := []kvfollow.Change[int]{{Key: "a", Value: 1}, {Key: "a", Value: 2}, {Key: "a", Value: 3},
		{Key: "b", Value: 7}, {Key: "b", Deleted: true}, {Key: "a", Value: 4}}
	if len(rec.changes) != len(want) {
		t.Fatalf("changes = %+v, want %+v", rec.changes, want)
	}
	var last uint64
	for i, c := range rec.changes {
		if c.Key != want[i].Key || c.Value != want[i].Value || c.Deleted != want[i].Deleted || c.Revision <= last {
			t.Errorf("change %d = %+v, want %+v with a rising revision", i, c, want[i])
		}
		last = c.Revision
	}
}

// TestForget: a forgotten key leaves the copy, unannounced, and comes back
// with its next put.
func TestForget(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucket(t, nc)
	put(t, kv, "a", "1")
	put(t, kv, "b", "2")
	var rec recorder
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{OnChange: rec.change, Log: zerolog.Nop()})
	run(t, f)
	<-f.Ready()
	f.Forget("a", "nope")
	if got := f.Snapshot(); len(got) != 1 || got["b"] != 2 {
		t.Errorf("Snapshot() after Forget(a) = %v, want map[b:2]", got)
	}
	if n, _ := rec.counts(); n != 2 {
		t.Errorf("%d changes reported, want the 2 initial ones (Forget tells no one)", n)
	}
	put(t, kv, "a", "3")
	waitfor.True(t, 10*time.Second, "a back with its next put", func() bool { v, ok := f.Get("a"); return ok && v == 3 })
}

// TestReadyBeforeTheFirstChange: an owner woken by Changed after the first
// sync finds Ready closed — of an empty bucket, that notification is the
// only one it gets (an autoscaler that checked Ready on it and found it
// open waited for ever).
func TestReadyBeforeTheFirstChange(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucket(t, nc)
	// OnSync holds the follower inside its first sync for a moment, so
	// that an owner woken too early sees Ready still open.
	woken := make(chan struct{})
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{Keys: []string{"none"}, Log: zerolog.Nop(),
		OnSync: func() {
			select {
			case <-woken:
			case <-time.After(200 * time.Millisecond):
			}
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	select {
	case <-f.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("no notification after the first sync")
	}
	select {
	case <-f.Ready():
	default:
		t.Error("Changed fired after the first sync with Ready still open")
	}
	close(woken)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestUnansweredWatchStartIsRetried: the first attempt to start a watch
// gets no answer at all — what a consumer creation gets while the
// bucket's stream elects a leader — and the follower retries after its
// StartTimeout rather than a JetStream timeout later. The follower's
// JetStream API goes through a relay (natstest.APIRelay) that forwards
// every request but drops the first consumer creation.
func TestUnansweredWatchStartIsRetried(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	put(t, bucket(t, nc), "k", "1")

	var mu sync.Mutex
	creates := 0
	fc := natstest.Conn(t, ns)
	js := natstest.APIRelay(t, nc, fc, func(api string, _ *nats.Msg) bool {
		if !strings.HasPrefix(api, "CONSUMER.CREATE.") {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		creates++
		return creates == 1 // no answer, as from a stream without a leader
	})
	kv, err := js.KeyValue(context.Background(), "follow")
	if err != nil {
		t.Fatal(err)
	}
	const startTimeout = 300 * time.Millisecond
	f := kvfollow.New(fc, kv, kvfollow.Options[int]{StartTimeout: startTimeout, JetStream: js, Log: zerolog.Nop()})
	began := time.Now()
	run(t, f)
	select {
	case <-f.Ready():
	case <-time.After(5 * time.Second):
		t.Fatalf("not ready %v after the start (the unanswered first watch was never given up)", time.Since(began).Round(time.Millisecond))
	}
	if el := time.Since(began); el > startTimeout+time.Second {
		t.Errorf("ready %v after the start, want within the start timeout (%v) and a retry", el.Round(time.Millisecond), startTimeout)
	}
	if v, ok := f.Get("k"); !ok || v != 1 {
		t.Errorf(`Get("k") = %v, %v; want 1, true`, v, ok)
	}
	mu.Lock()
	defer mu.Unlock()
	if creates < 2 {
		t.Errorf("%d consumer creations, want the unanswered one and a retry", creates)
	}
}

// TestUnansweredWatchStartLeavesNoConsumer: the first consumer creation is
// carried out but its answer is lost — what a creation gets when the meta
// leader places the consumer on a node that died unnoticed, where it would
// stay, led by no one, as long as the node stays dead. The follower names
// its consumers, so it deletes the one it never heard of.
func TestUnansweredWatchStartLeavesNoConsumer(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	put(t, bucket(t, nc), "k", "1")

	var creates atomic.Int32
	fc := natstest.Conn(t, ns)
	js := natstest.APIRelay(t, nc, fc, func(api string, m *nats.Msg) bool {
		if !strings.HasPrefix(api, "CONSUMER.CREATE.") || creates.Add(1) != 1 {
			return false
		}
		lost := nats.NewInbox() // nobody listens: created, never answered
		if err := nc.PublishMsg(&nats.Msg{Subject: "$JS.API." + api, Reply: lost, Header: m.Header, Data: m.Data}); err != nil {
			t.Errorf("forward the consumer creation: %v", err)
		}
		return true
	})
	kv, err := js.KeyValue(context.Background(), "follow")
	if err != nil {
		t.Fatal(err)
	}
	f := kvfollow.New(fc, kv, kvfollow.Options[int]{StartTimeout: 300 * time.Millisecond, JetStream: js,
		Log: zerolog.New(zerolog.NewTestWriter(t))})
	run(t, f)
	waitfor.True(t, 5*time.Second, "follower ready", func() bool { v, _ := f.Get("k"); return v == 1 })
	if n := creates.Load(); n < 2 {
		t.Fatalf("%d consumer creations, want the unanswered one and a retry", n)
	}
	st, err := natstest.JetStream(t, nc).Stream(context.Background(), "KV_follow")
	if err != nil {
		t.Fatal(err)
	}
	// It would stay for the consumer's inactivity threshold (30 s) here,
	// on a live node; forever on a dead one.
	waitfor.NoError(t, 2*time.Second, "the follower's one consumer", func() error {
		if names, err := consumerNames(st); err != nil || len(names) != 1 {
			return fmt.Errorf("consumers %v (%v)", names, err)
		}
		return nil
	})
}

// TestUnansweredConsumerDeleteIsRetriedSoon: an ended watch's consumer is
// deleted by requests that go unanswered for a while — dropped while the
// cluster's metadata elects a leader (the relay drops them for a second
// here) — and the first request after that deletes it: within a few
// hundred milliseconds, not a JetStream timeout later.
func TestUnansweredConsumerDeleteIsRetriedSoon(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	put(t, bucket(t, nc), "k", "1")

	var dropping atomic.Bool
	var dropped atomic.Int32
	fc := natstest.ReconnectingConn(t, ns.ClientURL())
	js := natstest.APIRelay(t, nc, fc, func(api string, _ *nats.Msg) bool {
		if !dropping.Load() || !strings.HasPrefix(api, "CONSUMER.DELETE.") {
			return false
		}
		dropped.Add(1)
		return true
	})
	kv, err := js.KeyValue(context.Background(), "follow")
	if err != nil {
		t.Fatal(err)
	}
	f := kvfollow.New(fc, kv, kvfollow.Options[int]{JetStream: js, Log: zerolog.New(zerolog.NewTestWriter(t))})
	run(t, f)
	waitfor.True(t, 5*time.Second, "follower ready", func() bool { v, _ := f.Get("k"); return v == 1 })
	st, err := natstest.JetStream(t, nc).Stream(context.Background(), "KV_follow")
	if err != nil {
		t.Fatal(err)
	}
	names, err := consumerNames(st)
	if err != nil || len(names) != 1 {
		t.Fatalf("consumers %v (%v), want the follower's one", names, err)
	}
	old := names[0]

	dropping.Store(true)
	if err := fc.ForceReconnect(); err != nil { // the watch ends; its consumer is deleted
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, "a delete request dropped", func() bool { return dropped.Load() > 0 })
	time.Sleep(time.Second) // the election
	dropping.Store(false)
	took := waitfor.NoError(t, 10*time.Second, "the old consumer deleted", func() error {
		names, err := consumerNames(st)
		if err == nil && slices.Contains(names, old) {
			err = fmt.Errorf("consumers %v", names)
		}
		return err
	})
	// A request waits 250 ms for its answer, the next is sent 100 ms later.
	if bound := 700 * time.Millisecond; took > bound {
		t.Errorf("the old consumer deleted %v after its delete requests were no longer dropped (%d dropped), want within %v",
			took.Round(time.Millisecond), dropped.Load(), bound)
	}
}

// consumerNames lists st's consumers by name, as the meta leader has them
// (a listing with their info waits 4 s for any whose node is dead).
func consumerNames(st jetstream.Stream) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l := st.ConsumerNames(ctx)
	var names []string
	for n := range l.Name() {
		names = append(names, n)
	}
	return names, l.Err()
}
