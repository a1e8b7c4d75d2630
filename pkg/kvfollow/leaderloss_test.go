package kvfollow_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// A watch running when the node holding its consumer dies (kill -9, not a
// graceful exit) is told nothing: the consumer (R1, on a random peer of the
// bucket's stream) is simply gone, and nats.go's KV watch notices only
// after two missed idle heartbeats 5 s apart, 10–20 s later. The follower
// hears its consumer's heartbeats every 500 ms and restarts the watch
// after two missed, so it sees the first put stored after the kill (after
// the stream's election, when the node led it too) within 2 s. It deletes
// the lost consumer, which stays assigned to the dead node, led by no one,
// as soon as it noticed the loss and the meta leader answers, and a
// consumer whose creation went unanswered too.
func TestKilledConsumerHostsWatchIsRestarted(t *testing.T) {
	for _, push := range []bool{false, true} {
		t.Run(map[bool]string{false: "pull", true: "push"}[push], func(t *testing.T) { testKilledConsumerHost(t, push) })
	}
}

func testKilledConsumerHost(t *testing.T, push bool) {
	c := natstest.KillableCluster(t, 3)
	kv := bucketWith(t, natstest.Conn(t, c.Nodes[0]), jetstream.KeyValueConfig{Bucket: "follow", Replicas: 3})
	put(t, kv, "k", "1")
	js := natstest.JetStream(t, natstest.Conn(t, c.Nodes[0]))

	// A follower connected to a node other than its consumer's: on the
	// same node, the kill's disconnect would restart it.
	var f *kvfollow.Follower[int]
	var host, other *server.Server
	var lost string // the follower's consumer, on host
	for attempt := 0; host == nil; attempt++ {
		if attempt == 10 {
			t.Fatal("the follower's consumer was on its own node 10 times")
		}
		on := c.Nodes[attempt%len(c.Nodes)]
		fc := natstest.Conn(t, on)
		fkv := bucketWith(t, fc, jetstream.KeyValueConfig{Bucket: "follow", Replicas: 3})
		f = kvfollow.New(fc, fkv, kvfollow.Options[int]{Log: zerolog.New(zerolog.NewTestWriter(t)), Push: push})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- f.Run(ctx) }()
		stop := func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run() = %v, want nil", err)
			}
		}
		waitfor.True(t, 5*time.Second, "follower ready", func() bool {
			select {
			case <-f.Ready():
				return true
			default:
				return false
			}
		})
		st, err := js.Stream(context.Background(), "KV_follow")
		if err != nil {
			t.Fatal(err)
		}
		var hosts []string
		for _, ci := range consumers(st) {
			hosts = append(hosts, ci.Cluster.Leader)
			lost = ci.Name
		}
		if len(hosts) != 1 {
			stop()
			t.Fatalf("consumers of the bucket hosted by %v, want the follower's one", hosts)
		}
		if hosts[0] == on.Name() {
			stop()
			continue
		}
		t.Cleanup(stop)
		other = on
		for _, ns := range c.Nodes {
			if ns.Name() == hosts[0] {
				host = ns
			}
		}
	}
	info, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("follower on %s, its consumer on %s, the stream's leader %s", other.Name(), host.Name(),
		info.(*jetstream.KeyValueBucketStatus).StreamInfo().Cluster.Leader)

	pkv := bucketWith(t, natstest.Conn(t, other), jetstream.KeyValueConfig{Bucket: "follow", Replicas: 3})
	st, err := natstest.JetStream(t, natstest.Conn(t, other)).Stream(context.Background(), "KV_follow")
	if err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	c.Kill(t, host)
	// From the kill on, the meta leader's list of the bucket's consumers:
	// when it answers again (when the killed node led the cluster's
	// metadata, after an election), when the lost consumer left it, and
	// when it holds the follower's new consumer only (a creation that
	// went unanswered — placed on the dead node, not yet known dead —
	// deleted too).
	var metaUp, lostGone, clean time.Time
	var last []string
	metaAnswers, listed, stop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer func() {
		close(stop)
		<-listed
	}()
	go func() {
		defer close(listed)
		for time.Since(killed) < 40*time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			l := st.ConsumerNames(ctx)
			var names []string
			for n := range l.Name() {
				names = append(names, n)
			}
			cancel()
			now := time.Now()
			if l.Err() == nil {
				last = names
				if metaUp.IsZero() {
					metaUp = now
					close(metaAnswers)
				}
				if lostGone.IsZero() && !slices.Contains(names, lost) {
					lostGone = now
				}
				if !lostGone.IsZero() && len(names) == 1 {
					clean = now
					return
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	var stored time.Time
	want := 1 // the follower has k=1: the first put after the kill writes 2
	waitfor.NoError(t, 30*time.Second, "a put after the kill stored", func() error {
		want++
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := pkv.Put(ctx, "k", []byte(strconv.Itoa(want)))
		stored = time.Now()
		return err
	})
	// A consumer is created by the meta leader: when the killed node led
	// the cluster's metadata, a watch can be restarted only after that
	// election too.
	select {
	case <-metaAnswers:
	case <-listed:
		if metaUp.IsZero() {
			t.Fatalf("the meta leader did not answer in %v after the kill", time.Since(killed).Round(time.Millisecond))
		}
	}
	elected := latest(stored, metaUp)
	t.Logf("a put stored %v and the meta leader answering %v after the kill", stored.Sub(killed).Round(time.Millisecond),
		metaUp.Sub(killed).Round(time.Millisecond))
	// The follower notices the loss after 2 missed heartbeats and an
	// info request unanswered for 2 more. A creation sent while an
	// election runs is dropped, not refused, and one sent within 3 s of
	// the kill may be placed on the dead node (the meta leader places a
	// consumer on a peer that acked its log in the last 3 s first) and is
	// never answered: such an attempt waits out its StartTimeout, and
	// the next one succeeds.
	noticed := killed.Add(4 * kvfollow.DefaultHeartbeat)
	const bound = kvfollow.DefaultStartTimeout + time.Second
	waitfor.True(t, 30*time.Second, "the follower to see the put", func() bool {
		v, _ := f.Get("k")
		return v == want
	})
	seen := time.Now()
	if s := seen.Sub(latest(elected, noticed)); s > bound {
		t.Errorf("the follower saw the put %v after the elections and its loss noticed (%v after the kill), want within %v",
			s.Round(time.Millisecond), seen.Sub(killed).Round(time.Millisecond), bound)
	}
	// The lost consumer stays assigned to the dead node, led by no one
	// (what an operator's "is everything led again?" waits on), until the
	// follower deletes it. It does so as soon as it knows it lost it
	// (2 heartbeats missed, then an info request unanswered for 2 more)
	// and the meta leader answers: its delete requests wait for no answer
	// (the meta leader applies them and answers only for a node it knows
	// is dead) and are repeated 350 ms apart.
	<-listed
	if lostGone.IsZero() || clean.IsZero() {
		t.Fatalf("consumers %v 40 s after the kill, want the follower's new one only (the lost one was %s)", last, lost)
	}
	const deleteBound = 1500 * time.Millisecond
	t.Logf("the lost consumer deleted %v after the kill (its loss noticed ~%v after it, the meta leader answering %v), the follower's consumer alone %v after it",
		lostGone.Sub(killed).Round(time.Millisecond), noticed.Sub(killed), metaUp.Sub(killed).Round(time.Millisecond),
		clean.Sub(killed).Round(time.Millisecond))
	if d := lostGone.Sub(latest(noticed, metaUp)); d > deleteBound {
		t.Errorf("the lost consumer deleted %v after the meta leader answered and the loss was noticed, want within %v", d.Round(time.Millisecond), deleteBound)
	}
	if d := clean.Sub(seen); d > time.Second {
		t.Errorf("the follower's consumer alone %v after it saw the put, want within 1s", d.Round(time.Millisecond))
	}
}

// latest is the later of a and b.
func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// A watch whose consumer is deleted (by an operator, or by the server)
// is restarted at once with a resync.
func TestDeletedConsumerRestartsTheWatch(t *testing.T) {
	for _, push := range []bool{false, true} {
		t.Run(map[bool]string{false: "pull", true: "push"}[push], func(t *testing.T) { testDeletedConsumer(t, push) })
	}
}

func testDeletedConsumer(t *testing.T, push bool) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucket(t, nc)
	put(t, kv, "k", "1")
	f := kvfollow.New(natstest.Conn(t, ns), kv, kvfollow.Options[int]{Log: zerolog.New(zerolog.NewTestWriter(t)), Push: push})
	run(t, f)
	waitfor.True(t, 5*time.Second, "follower has k=1", func() bool { v, _ := f.Get("k"); return v == 1 })

	js := natstest.JetStream(t, nc)
	st, err := js.Stream(context.Background(), "KV_follow")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ci := range consumers(st) {
		names = append(names, ci.Name)
	}
	if len(names) != 1 {
		t.Fatalf("consumers of the bucket: %v, want the follower's one", names)
	}
	if err := st.DeleteConsumer(context.Background(), names[0]); err != nil {
		t.Fatal(err)
	}
	put(t, kv, "k", "2")
	if took := waitfor.True(t, 10*time.Second, "follower has k=2", func() bool { v, _ := f.Get("k"); return v == 2 }); took > 2*time.Second {
		t.Errorf("the follower saw a put %v after its consumer was deleted, want within 2s", took.Round(time.Millisecond))
	}
	waitfor.True(t, 5*time.Second, "one consumer again", func() bool {
		return len(consumers(st)) == 1
	})
}

// consumers lists st's consumers, reading the list to its end (the
// lister's goroutine ends with it); none if the listing failed.
func consumers(st jetstream.Stream) []*jetstream.ConsumerInfo {
	l := st.ListConsumers(context.Background())
	var infos []*jetstream.ConsumerInfo
	for ci := range l.Info() {
		infos = append(infos, ci)
	}
	if l.Err() != nil {
		return nil
	}
	return infos
}

// A watch restarted on a lagging replica of the bucket — a node just back
// from a partition, which has none of the writes made meanwhile and has
// expired (TTL) what the others kept refreshed — re-reads a bucket that
// misses keys. The follower neither reports them deleted nor calls itself
// synced on that word: its initial values are complete only once they
// reach the last revision the stream's leader has, so it waits for the
// replica to catch up (and restarts the watch when it does not). The relay
// makes the restarted watch's consumer see key "a" only, as such a replica
// would, until it is "healed" — a's old value first (the bucket keeps two),
// which the copy had replaced and must not report again: "b" lives on at
// the leader, "c" was deleted while the follower was between watches.
func TestResyncOnALaggingReplicaReportsNoLiveKeyDeleted(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucketWith(t, nc, jetstream.KeyValueConfig{Bucket: "follow", History: 2}) // a's old value kept
	for _, k := range []string{"a", "b", "c"} {
		put(t, kv, k, "1")
	}
	put(t, kv, "a", "2")
	writer := natstest.Conn(t, ns)
	wjs := natstest.JetStream(t, writer)
	wkv, err := wjs.KeyValue(context.Background(), "follow")
	if err != nil {
		t.Fatal(err)
	}
	var lagging atomic.Bool
	var laggingCreates atomic.Int32
	fc := natstest.Conn(t, ns)
	js := natstest.APIRelay(t, nc, fc, func(api string, m *nats.Msg) bool {
		if !lagging.Load() || !strings.HasPrefix(api, "CONSUMER.CREATE.KV_follow.") {
			return false
		}
		if laggingCreates.Add(1) == 1 {
			// c is deleted while the follower is between watches.
			if err := wkv.Delete(context.Background(), "c"); err != nil {
				t.Errorf("delete c: %v", err)
			}
		}
		var req map[string]any
		if err := json.Unmarshal(m.Data, &req); err != nil {
			t.Errorf("consumer create request: %v", err)
			return false
		}
		cfg := req["config"].(map[string]any)
		cfg["filter_subject"] = "$KV.follow.a"
		cfg["deliver_policy"] = "all" // a's history: its old value first
		data, _ := json.Marshal(req)
		subj := "$JS.API." + api[:strings.LastIndex(api, ".$KV.")] + ".$KV.follow.a"
		if err := nc.PublishMsg(&nats.Msg{Subject: subj, Reply: m.Reply, Header: m.Header, Data: data}); err != nil {
			t.Errorf("forward the consumer creation: %v", err)
		}
		return true
	})
	fkv, err := js.KeyValue(context.Background(), "follow")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	f := kvfollow.New(fc, fkv, kvfollow.Options[int]{JetStream: js, OnChange: rec.change, OnSync: rec.sync,
		Log: zerolog.New(zerolog.NewTestWriter(t))})
	run(t, f)
	waitfor.True(t, 5*time.Second, "first sync", func() bool { _, s := rec.counts(); return s == 1 })
	firstSync, _ := rec.counts()

	lagging.Store(true)
	st, err := wjs.Stream(context.Background(), "KV_follow")
	if err != nil {
		t.Fatal(err)
	}
	cons := consumers(st)
	if len(cons) != 1 {
		t.Fatalf("consumers of the bucket: %d, want the follower's one", len(cons))
	}
	if err := st.DeleteConsumer(context.Background(), cons[0].Name); err != nil {
		t.Fatal(err)
	}
	waitfor.True(t, 5*time.Second, "a watch on the lagging replica", func() bool { return laggingCreates.Load() >= 1 })
	time.Sleep(time.Second) // what it would report, it reports at once (its initial values: "a")
	if f.Synced() {
		t.Error("Synced() = true on the lagging replica's initial values; want false until they reach the leader's last revision")
	}
	if _, s := rec.counts(); s != 1 {
		t.Errorf("%d syncs, want still 1: none on the lagging replica's word", s)
	}
	if v, ok := f.Get("b"); !ok || v != 1 {
		t.Errorf(`Get("b") = %v, %v on the lagging replica; want 1, true (the leader holds it)`, v, ok)
	}
	if v, _ := f.Get("a"); v != 2 {
		t.Errorf(`Get("a") = %v on the lagging replica; want 2 (its old value 1 skipped)`, v)
	}
	rec.mu.Lock()
	for _, c := range rec.changes[firstSync:] {
		if c.Key == "a" && c.Value == 1 {
			t.Errorf("change %+v reported on the lagging replica's word; the copy had a=2", c)
		}
	}
	rec.mu.Unlock()

	lagging.Store(false) // caught up: the next watch is current
	waitfor.True(t, 15*time.Second, "the resync once the replica is current", func() bool { _, s := rec.counts(); return s >= 2 })
	if v, ok := f.Get("b"); !ok || v != 1 {
		t.Errorf(`Get("b") = %v, %v after the resync; want 1, true`, v, ok)
	}
	if _, ok := f.Get("c"); ok {
		t.Error(`Get("c") found after the resync; want it deleted`)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var deleted []string
	for _, c := range rec.changes {
		if c.Deleted {
			deleted = append(deleted, c.Key)
		}
	}
	if !slices.Equal(deleted, []string{"c"}) {
		t.Errorf("keys reported deleted: %v, want [c]", deleted)
	}
}
