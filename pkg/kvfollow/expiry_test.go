package kvfollow_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Liveness records as fleetstate keeps them: put every refreshed, expired
// by the bucket's TTL (with a marker, which watchers see).
const (
	refreshed   = 1500 * time.Millisecond // HoldFor: 3 s
	livenessTTL = 4 * time.Second
)

func livenessBucket(t *testing.T) (jetstream.KeyValue, *recorder, *kvfollow.Follower[int]) {
	t.Helper()
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucketWith(t, nc, jetstream.KeyValueConfig{Bucket: "live", TTL: livenessTTL, LimitMarkerTTL: time.Second})
	rec := &recorder{}
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{OnChange: rec.change, Log: zerolog.Nop(), Refreshed: refreshed})
	if f.HoldFor() != 2*refreshed {
		t.Fatalf("HoldFor() = %v, want %v", f.HoldFor(), 2*refreshed)
	}
	return kv, rec, f
}

// expired waits until key's record expired.
func expired(t *testing.T, kv jetstream.KeyValue, key string) {
	t.Helper()
	waitfor.True(t, 3*livenessTTL, key+" expired", func() bool {
		_, err := kv.Get(context.Background(), key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})
}

func (r *recorder) deleted(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.changes {
		if c.Key == key && c.Deleted {
			return true
		}
	}
	return false
}

// TestExpiryAfterSilenceIsHeld: a bucket that took no write for longer
// than its TTL (its stream electing a leader) expires every record at
// once though their writers live. Such an expiry is held: the key put
// again within the hold was never reported deleted (without the hold, a
// scheduler took every worker for lost — chaos seed
// 1796531184653132251); one not put again is reported after the hold.
func TestExpiryAfterSilenceIsHeld(t *testing.T) {
	kv, rec, f := livenessBucket(t)
	put(t, kv, "w", "1")
	put(t, kv, "v", "1")
	run(t, f)
	<-f.Ready()

	expired(t, kv, "w") // no write for the TTL: the silence before w's (and v's) markers
	put(t, kv, "w", "2")
	waitfor.True(t, 3*f.HoldFor(), "v reported deleted after the hold", func() bool { return rec.deleted("v") })
	if rec.deleted("w") {
		t.Error("w, put again within the hold, was reported deleted")
	}
	if v, ok := f.Get("w"); !ok || v != 2 {
		t.Errorf("Get(w) = %d, %v; want 2", v, ok)
	}
}

// TestExpiryAmidWritesIsTakenAtOnce: while the bucket takes others'
// writes, an expiry is a writer gone, reported at once (the hold would
// delay it by HoldFor).
func TestExpiryAmidWritesIsTakenAtOnce(t *testing.T) {
	kv, rec, f := livenessBucket(t)
	put(t, kv, "w", "1")
	run(t, f)
	<-f.Ready()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { // x's writer lives
		for i := 0; ctx.Err() == nil; i++ {
			_, _ = kv.Put(ctx, "x", fmt.Appendf(nil, "%d", i))
			select {
			case <-ctx.Done():
			case <-time.After(refreshed / 6):
			}
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })

	expired(t, kv, "w")
	gone := time.Now()
	waitfor.True(t, 3*f.HoldFor(), "w reported deleted", func() bool { return rec.deleted("w") })
	if took := time.Since(gone); took >= f.HoldFor()/2 {
		t.Errorf("w's expiry, amid x's writes, was reported %v after it happened: held (HoldFor %v)", took, f.HoldFor())
	}
}

// TestUnrefreshedBucketsExpiriesAreNotHeld: without Options.Refreshed an
// expiry is reported at once, silence or not.
func TestUnrefreshedBucketsExpiriesAreNotHeld(t *testing.T) {
	ns := natstest.Server(t)
	nc := natstest.Conn(t, ns)
	kv := bucketWith(t, nc, jetstream.KeyValueConfig{Bucket: "ttl", TTL: livenessTTL, LimitMarkerTTL: time.Second})
	rec := &recorder{}
	f := kvfollow.New(nc, kv, kvfollow.Options[int]{OnChange: rec.change, Log: zerolog.Nop()})
	put(t, kv, "w", "1")
	run(t, f)
	<-f.Ready()
	expired(t, kv, "w")
	waitfor.True(t, time.Second+refreshed, "w reported deleted at once", func() bool { return rec.deleted("w") })
}
