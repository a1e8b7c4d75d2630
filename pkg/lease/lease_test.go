package lease

import (
	"context"
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
