package lease

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func bucket(t *testing.T, nc *nats.Conn) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	js := natstest.JetStream(t, nc)
	kv, err := js.CreateOrUpdateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "leases", LimitMarkerTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return js, kv
}

func TestOneLeaderAndFailover(t *testing.T) {
	ns := natstest.Server(t)
	var leading [2]atomic.Bool
	var epochs [2]atomic.Uint64
	ctxs := make([]context.CancelFunc, 2)
	done := make([]chan struct{}, 2)
	conns := make([]*nats.Conn, 2)
	for i := range 2 {
		conns[i] = natstest.Conn(t, ns)
		js, kv := bucket(t, conns[i])
		e := New(js, kv, "scheduler", []string{"a", "b"}[i], 2*time.Second, zerolog.Nop())
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[i], done[i] = cancel, make(chan struct{})
		go func() {
			defer close(done[i])
			_ = e.Run(ctx, func(lctx context.Context, epoch uint64) {
				epochs[i].Store(epoch)
				leading[i].Store(true)
				<-lctx.Done()
				leading[i].Store(false)
			})
		}()
	}
	t.Cleanup(func() {
		for i := range 2 {
			ctxs[i]()
			<-done[i]
		}
	})
	waitfor.True(t, 5*time.Second, "a leader", func() bool { return leading[0].Load() || leading[1].Load() })
	first := 0
	if leading[1].Load() {
		first = 1
	}
	other := 1 - first
	// Never two leaders while the first renews.
	for range 20 {
		if leading[0].Load() && leading[1].Load() {
			t.Fatal("two leaders at once")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Clean stop releases the lease: the other leads well before the TTL.
	start := time.Now()
	ctxs[first]()
	<-done[first]
	waitfor.True(t, 2*time.Second, "failover", func() bool { return leading[other].Load() })
	if epochs[other].Load() <= epochs[first].Load() {
		t.Fatalf("new epoch %d <= old epoch %d, want it to grow", epochs[other].Load(), epochs[first].Load())
	}
	t.Logf("failover after clean stop took %v", time.Since(start))
}

func TestLeaseExpiresWhenHolderDies(t *testing.T) {
	ns := natstest.Server(t)
	dead := natstest.Conn(t, ns)
	js, kv := bucket(t, dead)
	// A holder that dies without renewing: take the key and vanish.
	if _, err := kv.Create(context.Background(), "scheduler", []byte("ghost"), jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = js
	nc := natstest.Conn(t, ns)
	js2, kv2 := bucket(t, nc)
	e := New(js2, kv2, "scheduler", "b", time.Second, zerolog.Nop())
	var led atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.Run(ctx, func(lctx context.Context, _ uint64) { led.Store(true); <-lctx.Done() })
	}()
	defer func() { cancel(); <-done }()
	waitfor.True(t, 5*time.Second, "takeover after TTL", led.Load)
	if h := e.Holder(context.Background()); h != "b" {
		t.Fatalf("Holder() = %q, want b", h)
	}
}

// TestRepeatedRenewalIsOneRenewal: on a replicated bucket (where a
// deposed leader can answer), a renewal repeated — its first answer a
// deposed leader's refusal while the real leader committed it — is
// answered as a duplicate with the first one's revision: the lease is
// still held, not refused as "wrong last sequence". (A single server
// checks the sequence before the message id; it has no deposed leader.)
func TestRepeatedRenewalIsOneRenewal(t *testing.T) {
	nodes := natstest.Cluster(t, 3)
	js := natstest.JetStream(t, natstest.Conn(t, nodes[0]))
	ctx := context.Background()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "leases", LimitMarkerTTL: time.Second, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	e := New(js, kv, "scheduler", "a", 3*time.Second, zerolog.Nop())
	rev, err := kv.Create(ctx, "scheduler", []byte("a"), jetstream.KeyTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	first, err := e.renew(ctx, rev)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	again, err := e.renew(ctx, rev)
	if err != nil || again != first {
		t.Fatalf("the same renewal again = %d, %v; want %d (a duplicate), nil", again, err, first)
	}
	if ent, err := kv.Get(ctx, "scheduler"); err != nil || ent.Revision() != first {
		t.Fatalf("lease at %v (%v), want %d: one renewal stored", ent, err, first)
	}
}

// TestRenewalRefusedFromBehindIsRepeated: "wrong last sequence: N" with N
// below the lease's revision is what only a deposed leader says; the
// renewal is repeated (for its whole window) rather than taken for the
// lease lost at the first answer.
func TestRenewalRefusedFromBehindIsRepeated(t *testing.T) {
	ns := natstest.Server(t)
	js, kv := bucket(t, natstest.Conn(t, ns))
	const ttl = 1500 * time.Millisecond
	e := New(js, kv, "scheduler", "a", ttl, zerolog.Nop())
	ctx := context.Background()
	rev, err := kv.Create(ctx, "scheduler", []byte("a"), jetstream.KeyTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	// This server is behind the revision the elector holds: it answers
	// as a deposed leader would.
	_, err = e.renew(ctx, rev+5)
	if err == nil || !strings.Contains(err.Error(), "only a deposed leader answered") {
		t.Fatalf("renew from ahead of the server = %v, want the refusal repeated until its window ended", err)
	}
	// Behind the server's revision: a real loss, at once.
	if _, err := kv.Put(ctx, "scheduler", []byte("b")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := e.renew(ctx, rev); err == nil || strings.Contains(err.Error(), "deposed") {
		t.Fatalf("renew of a lease another instance wrote = %v, want refused at once", err)
	}
	if took := time.Since(start); took >= ttl/3 {
		t.Errorf("a real refusal took %v: repeated", took)
	}
}
