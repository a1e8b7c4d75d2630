// Package kvfollow keeps a live, typed copy of a JetStream key-value
// bucket (or of the keys matching some filters) and tells its owner about
// every change: the initial values, then puts and deletes as they happen.
//
// Unlike a bare KV watcher, a Follower survives the connection: when the
// NATS connection comes back after a disconnect (or the watcher closes),
// it starts a new watch at once, re-reads every key and reports as deleted
// the keys that vanished meanwhile (an expiry marker is gone a second
// after it is written, so a resync cannot wait for it). Until that resync
// is complete, Synced reports false, so an owner can tell a value that
// stopped changing from a value it could not hear about.
//
// An owner that keeps its state on its own goroutine selects on Changed
// and reads Get or Snapshot; one that reacts to each change sets
// OnChange.
//
// Concurrency: Run owns one goroutine (the caller's) and the watcher's
// delivery goroutine inside nats.go; OnChange and OnSync are called from
// Run's goroutine, one at a time and in bucket order. Get, Snapshot,
// Forget, Synced, Ready and Changed are safe for concurrent use.
package kvfollow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Change is one put or delete of a followed key.
type Change[T any] struct {
	Key string
	// Value is the new value; the zero T for a delete.
	Value   T
	Deleted bool
	// Revision is the bucket revision of the change; 0 for a delete
	// found by a resync (the key was simply gone).
	Revision uint64
}

// Options configure a Follower.
type Options[T any] struct {
	// Keys are the key filters followed (NATS wildcards allowed); none
	// means every key.
	Keys []string
	// Decode turns a stored value into T; nil = encoding/json. A value it
	// rejects is logged and skipped: the previous value stays.
	Decode func(key string, data []byte) (T, error)
	// DecodeEntry, if set, is used instead of Decode: it sees the whole
	// entry — its revision and creation time besides the value — for an
	// owner that keeps them in T.
	DecodeEntry func(e jetstream.KeyValueEntry) (T, error)
	// History, if set, makes each (re)sync deliver every revision the
	// bucket keeps of the followed keys (its history setting) to
	// OnChange, oldest first, rather than the latest only; the copy ends
	// at the latest all the same. A resync delivers them again: an owner
	// that keeps them tells them apart by Change.Revision.
	History bool
	// OnChange, if set, is told every change of the copy, in order. It
	// runs on Run's goroutine and must not block for long.
	OnChange func(Change[T])
	// OnSync, if set, is called each time the copy has caught up with the
	// bucket: after the initial values and after every resync.
	OnSync func()
	// MaxRetryWait caps the wait between failed attempts to start a watch
	// (from 50 ms, doubling); default 500 ms.
	MaxRetryWait time.Duration
	// StartTimeout bounds one attempt to start a watch (the creation of
	// its consumer); default DefaultStartTimeout. While the bucket's
	// stream elects a leader (a NATS node lost) the creation is not
	// answered at all: a short bound retries soon after the election
	// rather than a JetStream timeout (5–10 s) after it.
	StartTimeout time.Duration
	Log          zerolog.Logger
}

// Follower follows a bucket; build it with New, then call Run.
type Follower[T any] struct {
	nc *nats.Conn
	kv jetstream.KeyValue
	o  Options[T]

	ready     chan struct{} // closed after the first sync
	readyOnce sync.Once
	changed   chan struct{} // a value after a change or a sync (capacity 1: coalesces)

	mu     sync.RWMutex
	vals   map[string]T // guarded by mu
	synced bool         // guarded by mu
}

// New returns a Follower of kv; nc is the connection kv uses (its status
// changes trigger resyncs).
func New[T any](nc *nats.Conn, kv jetstream.KeyValue, o Options[T]) *Follower[T] {
	if o.Decode == nil {
		o.Decode = func(_ string, b []byte) (T, error) {
			var v T
			err := json.Unmarshal(b, &v)
			return v, err
		}
	}
	if o.DecodeEntry == nil {
		decode := o.Decode
		o.DecodeEntry = func(e jetstream.KeyValueEntry) (T, error) { return decode(e.Key(), e.Value()) }
	}
	if o.MaxRetryWait <= 0 {
		o.MaxRetryWait = 500 * time.Millisecond
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = DefaultStartTimeout
	}
	return &Follower[T]{nc: nc, kv: kv, o: o, ready: make(chan struct{}), changed: make(chan struct{}, 1), vals: map[string]T{}}
}

// Ready is closed once the initial values were read.
func (f *Follower[T]) Ready() <-chan struct{} { return f.ready }

// Changed receives a value after every change of the copy and after
// every (re)sync, coalesced: an owner that reads Get or Snapshot when it
// receives sees the latest values (every one of them, or a newer one).
func (f *Follower[T]) Changed() <-chan struct{} { return f.changed }

func (f *Follower[T]) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// Synced reports whether the copy is known to match the bucket: true
// after a (re)sync completes, false from a disconnect until the next one.
func (f *Follower[T]) Synced() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.synced
}

// Get returns the current value of key.
func (f *Follower[T]) Get(key string) (T, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.vals[key]
	return v, ok
}

// Snapshot returns a copy of every followed key's value.
func (f *Follower[T]) Snapshot() map[string]T {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return maps.Clone(f.vals)
}

// Forget drops keys from the copy, telling no one: for a bucket whose
// TTL removes keys without a delete marker, so that watchers never hear
// of it, the owner forgets what it knows expired. A key still in the
// bucket comes back at its next put or at the next resync.
func (f *Follower[T]) Forget(keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		delete(f.vals, k)
	}
}

// firstRetryWait is the wait after the first failed watch attempt.
const firstRetryWait = 50 * time.Millisecond

// DefaultStartTimeout is Options.StartTimeout's default: a consumer is
// created in milliseconds on a cluster with a leader, well under a second
// on two loaded cores.
const DefaultStartTimeout = 2 * time.Second

// errStartTimeout: a watch's consumer was not created within StartTimeout.
var errStartTimeout = errors.New("no answer to the watch's consumer creation (the bucket's stream electing a leader?)")

// Run follows the bucket until ctx ends, then returns nil. A watch that
// cannot be started is retried (logged, with backoff) rather than
// returned, so that a NATS outage never ends the follower.
func (f *Follower[T]) Run(ctx context.Context) error {
	status := f.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING)
	defer f.nc.RemoveStatusListener(status)
	b := backoff.New(firstRetryWait, f.o.MaxRetryWait)
	for {
		err := f.follow(ctx, status)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			b.Reset()
			continue
		}
		wait := b.Next()
		f.o.Log.Warn().Err(err).Str("bucket", f.kv.Bucket()).Dur("retry_in", wait).Msg("follow bucket")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-status: // a reconnect: try at once
			t.Stop()
		}
	}
}

// follow runs one watch: the initial values (a sync), then updates. It
// returns nil to be restarted at once (the connection came back), or the
// error that ended it.
func (f *Follower[T]) follow(ctx context.Context, status <-chan nats.Status) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var w jetstream.KeyWatcher
	var err error
	var opts []jetstream.WatchOpt
	if f.o.History {
		opts = append(opts, jetstream.IncludeHistory())
	}
	// wctx is the watch's lifetime as well as its creation's context:
	// the start timeout cancels it only while the creation is under way.
	timer := time.AfterFunc(f.o.StartTimeout, cancel)
	if len(f.o.Keys) == 0 {
		w, err = f.kv.WatchAll(wctx, opts...)
	} else {
		w, err = f.kv.WatchFiltered(wctx, append([]string(nil), f.o.Keys...), opts...)
	}
	if !timer.Stop() && ctx.Err() == nil {
		if err == nil {
			stopWatch(w) // started as the timer fired: wctx is cancelled
		}
		return fmt.Errorf("watch %s: %w (%v)", f.kv.Bucket(), errStartTimeout, f.o.StartTimeout)
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", f.kv.Bucket(), err)
	}
	defer stopWatch(w)
	seen := map[string]bool{} // keys of this watch's initial values
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-status:
			f.setSynced(false)
			if s == nats.CONNECTED {
				return nil // re-read everything on the new connection
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil {
				if initial {
					initial = false
					f.sync(seen)
				}
				continue
			}
			if initial {
				seen[e.Key()] = true
			}
			f.apply(e)
		}
	}
}

// stopWatch stops w and reads what its callback may still be delivering,
// so that nats.go's delivery goroutine is never left blocked on the
// updates channel.
func stopWatch(w jetstream.KeyWatcher) {
	_ = w.Stop()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// apply records one entry of the watch and reports it.
func (f *Follower[T]) apply(e jetstream.KeyValueEntry) {
	key := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		f.mu.Lock()
		_, had := f.vals[key]
		delete(f.vals, key)
		f.mu.Unlock()
		if had {
			f.notify()
			if f.o.OnChange != nil {
				f.o.OnChange(Change[T]{Key: key, Deleted: true, Revision: e.Revision()})
			}
		}
		return
	}
	v, err := f.o.DecodeEntry(e)
	if err != nil {
		f.o.Log.Warn().Err(err).Str("bucket", f.kv.Bucket()).Str("key", key).Uint64("revision", e.Revision()).
			Msg("undecodable value skipped")
		return
	}
	f.mu.Lock()
	f.vals[key] = v
	f.mu.Unlock()
	f.notify()
	if f.o.OnChange != nil {
		f.o.OnChange(Change[T]{Key: key, Value: v, Revision: e.Revision()})
	}
}

// sync ends a watch's initial values: keys the copy has that the bucket
// no longer has are deleted, and the copy is synced.
func (f *Follower[T]) sync(seen map[string]bool) {
	f.mu.Lock()
	var gone []string
	for k := range f.vals {
		if !seen[k] {
			gone = append(gone, k)
			delete(f.vals, k)
		}
	}
	f.synced = true
	f.mu.Unlock()
	if f.o.OnChange != nil {
		for _, k := range gone {
			f.o.OnChange(Change[T]{Key: k, Deleted: true})
		}
	}
	if f.o.OnSync != nil {
		f.o.OnSync()
	}
	// Ready before the notification: an owner woken by Changed after the
	// first sync must find Ready closed (an empty bucket sends no other).
	f.readyOnce.Do(func() { close(f.ready) })
	f.notify()
}

func (f *Follower[T]) setSynced(v bool) {
	f.mu.Lock()
	f.synced = v
	f.mu.Unlock()
}
