// Package kvfollow keeps a live, typed copy of a JetStream key-value
// bucket (or of the keys matching some filters) and tells its owner about
// every change: the initial values, then puts and deletes as they happen.
//
// Unlike a bare KV watcher, a Follower survives the connection and the
// loss of its consumer's node: when the
// NATS connection comes back after a disconnect (or the watcher closes),
// it starts a new watch at once, re-reads every key and reports as deleted
// the keys that vanished meanwhile (an expiry marker is gone a second
// after it is written, so a resync cannot wait for it) — once the
// bucket's stream leader confirms each is gone. The values come from
// whichever replica of the bucket holds the watch's consumer, and one that
// lags (a node just back from a partition) misses recent writes: a (re)sync
// is complete only once the watch's deliveries reach the last revision the
// stream's leader has of the followed keys, and values older than the
// copy's are skipped until then. It does the same
// when its watch's consumer stops sending idle heartbeats (Heartbeat, two
// missed) and does not answer for itself (the node holding that R1
// consumer died, which nobody announces)
// or is deleted, or when a delivery is missing. Until that resync
// is complete, Synced reports false, so an owner can tell a value that
// stopped changing from a value it could not hear about.
//
// An owner that keeps its state on its own goroutine selects on Changed
// and reads Get or Snapshot; one that reacts to each change sets
// OnChange.
//
// Concurrency: Run owns one goroutine (the caller's), the watch's
// delivery goroutines inside nats.go (stopped before a watch is
// restarted) and one goroutine per ended watch, or unanswered start,
// deleting its consumer (bounded; Run returns after them); OnChange and
// OnSync are called from Run's goroutine, one at a time and in bucket
// order. Get, Snapshot, Forget, Synced, Ready and Changed are safe for
// concurrent use.
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
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
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
	// Heartbeat is how often the watch's consumer sends an idle
	// heartbeat; after two missed, a consumer that does not answer an
	// info request within two more restarts the watch. Default
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// Push makes each watch a push consumer delivered to an inbox of
	// nc (the user's inbox prefix, which only it may subscribe to) rather
	// than a pull consumer, with the same heartbeats: for a user that may
	// not pull from the bucket's stream — workers, on the assignments'
	// (deploy/auth), so that none pulls from another's consumer.
	Push bool
	// TrustReplica skips the reads from the bucket's stream leader that
	// keep a lagging replica's values out of a (re)sync (see the package
	// doc): for a NATS user not allowed $JS.API.STREAM.MSG.GET on the
	// bucket — a worker's user under deploy/auth on the assignments, whose
	// permissions cannot scope a read that names the key in its body. Its
	// syncs then trust whichever replica holds the watch's consumer.
	TrustReplica bool
	// Refreshed, set, says the keys are liveness records: each is put
	// again every Refreshed by whoever it describes and expires by the
	// bucket's TTL once that one stops (fleetstate's workers and
	// replicas). An expiry is then taken at once only while the bucket
	// takes writes: one that ends a silence — no put of a followed key
	// stored within Refreshed×2 before the expiry's marker — and a key
	// a resync finds gone are held for Refreshed×2 (HoldFor), the key
	// keeping its value, and reported deleted only if no put of it
	// arrives meanwhile. A bucket that could take no write for longer
	// than its TTL (its stream electing a leader) expires every record
	// at once, though all their writers live: without the hold an owner
	// would take the whole fleet for lost. An explicit delete is never
	// held.
	Refreshed time.Duration
	// JetStream is the client the watch's consumers are created with;
	// nil = jetstream.New on the connection.
	JetStream jetstream.JetStream
	Log       zerolog.Logger
}

// Follower follows a bucket; build it with New, then call Run.
type Follower[T any] struct {
	nc      *nats.Conn
	kv      jetstream.KeyValue
	o       Options[T]
	js      jetstream.JetStream // creates the watch's consumers; nil: New failed (reported by Run)
	jsErr   error
	deletes sync.WaitGroup // deletions of ended watches' consumers, waited for by Run

	ready     chan struct{} // closed after the first sync
	readyOnce sync.Once
	changed   chan struct{} // a value after a change or a sync (capacity 1: coalesces)

	mu     sync.RWMutex
	vals   map[string]T      // guarded by mu
	revs   map[string]uint64 // guarded by mu: the revision of each value in vals (0: not known)
	synced bool              // guarded by mu

	// Expiries held (Options.Refreshed); owned by Run's goroutine.
	lastPut   time.Time            // the newest put's stored time (the server's clock)
	held      map[string]time.Time // key → when its expiry is reported, unless put again
	holdTimer *time.Timer          // fires at the earliest of held (stopped: none)
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
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	f := &Follower[T]{nc: nc, kv: kv, o: o, js: o.JetStream, ready: make(chan struct{}), changed: make(chan struct{}, 1),
		vals: map[string]T{}, revs: map[string]uint64{}, held: map[string]time.Time{}, holdTimer: time.NewTimer(time.Hour)}
	f.holdTimer.Stop()
	if f.js == nil {
		f.js, f.jsErr = jetstream.New(nc)
	}
	return f
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
		delete(f.revs, k)
	}
}

// firstRetryWait is the wait after the first failed watch attempt.
const firstRetryWait = 50 * time.Millisecond

// DefaultStartTimeout is Options.StartTimeout's default: a consumer is
// created in milliseconds on a cluster with a leader, well under a second
// on two loaded cores.
const DefaultStartTimeout = 2 * time.Second

// DefaultHeartbeat is Options.Heartbeat's default: a watch whose
// consumer died is restarted 2–2.5 s later (nats.go's own KV watch: 10–20
// s), for one small message per second per idle watch.
const DefaultHeartbeat = 500 * time.Millisecond

// consumerIdle is how long the server keeps a watch's consumer that
// nobody pulls from (its follower gone without deleting it).
const consumerIdle = 30 * time.Second

// errStartTimeout: a watch's consumer was not created within StartTimeout.
var errStartTimeout = errors.New("no answer to the watch's consumer creation (the bucket's stream electing a leader?)")

// Run follows the bucket until ctx ends, then returns nil. A watch that
// cannot be started is retried (logged, with backoff) rather than
// returned, so that a NATS outage never ends the follower.
func (f *Follower[T]) Run(ctx context.Context) error {
	if f.jsErr != nil {
		return fmt.Errorf("follow %s: %w", f.kv.Bucket(), f.jsErr)
	}
	defer f.deletes.Wait()
	defer f.holdTimer.Stop()
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
//
// A watch is a pull consumer of its own (R1, in memory, no acks, the
// latest value of each followed key first) rather than nats.go's KV
// watch: that one's ordered consumer sends heartbeats every 5 s and is
// recreated only 10–20 s after it died, by a creation with a 5–10 s
// timeout of its own. Here the creation is bounded by StartTimeout and
// any loss ends the watch, to be restarted with a full resync.
func (f *Follower[T]) follow(ctx context.Context, status <-chan nats.Status) error {
	stream := "KV_" + f.kv.Bucket()
	// Named here rather than by the server, so that a creation nobody
	// answered can be deleted: the meta leader may have created it all
	// the same, on a node that died before answering, where it would
	// stay assigned, led by no one.
	name := nuid.Next()
	sctx, cancel := context.WithTimeout(ctx, f.o.StartTimeout)
	cons, err := f.createConsumer(sctx, stream, name)
	cancel()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		f.deleteLater(ctx, stream, name)
	}
	if ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("watch %s: %w (%v)", f.kv.Bucket(), errStartTimeout, f.o.StartTimeout)
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", f.kv.Bucket(), err)
	}
	msgs := make(chan jetstream.Msg, 256)
	lost := make(chan error, 1)
	suspect := make(chan struct{}, 1) // heartbeats missed: is the consumer still there?
	done := make(chan struct{})
	cc, err := cons.consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-done:
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		switch {
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			select {
			case suspect <- struct{}{}:
			default:
			}
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			select {
			case lost <- err:
			default:
			}
		}
	}))
	if err != nil {
		f.deleteConsumer(ctx, stream, name)
		return fmt.Errorf("watch %s: consume: %w", f.kv.Bucket(), err)
	}
	defer func() {
		close(done)
		cc.Stop()
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-cc.Closed():
		case <-t.C:
		}
		// Deleted even when lost: a consumer whose node died stays
		// assigned to it (led by no one) until the meta leader deletes
		// it.
		f.deleteLater(ctx, stream, name)
	}()

	// The watch's consumer reads the stream on its own node, which may
	// lag (a node just back from a partition): its initial values are
	// complete only once its deliveries reach the last revision the
	// stream's leader has of the followed keys.
	lctx, lcancel := context.WithTimeout(ctx, leaderReadTimeout)
	last, err := f.leaderLastSeq(lctx)
	lcancel()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return err
	}
	seen := map[string]bool{} // keys of this watch's initial values
	initial := true
	var seq uint64               // the last delivery's stream sequence
	var lagTimer *time.Timer     // runs while the initial values wait for the consumer's node to catch up
	var lagging <-chan time.Time // its channel
	defer func() {
		if lagTimer != nil {
			lagTimer.Stop()
		}
	}()
	caughtUp := func() error {
		if seq < last {
			if lagTimer == nil {
				lagTimer = time.NewTimer(maxLagWait)
				lagging = lagTimer.C
				f.o.Log.Info().Str("bucket", f.kv.Bucket()).Uint64("at", seq).Uint64("leader_at", last).
					Msg("watch behind the bucket's leader: waiting for its replica to catch up")
			}
			return nil
		}
		initial, lagging = false, nil
		return f.sync(ctx, seen)
	}
	if cons.CachedInfo().NumPending == 0 {
		if err := caughtUp(); err != nil {
			return err
		}
	}
	var dseq uint64 // the last delivery's consumer sequence
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-status:
			f.setSynced(false)
			if s == nats.CONNECTED {
				return nil // re-read everything on the new connection
			}
		case err := <-lost:
			f.setSynced(false)
			return fmt.Errorf("watch %s: consumer lost: %w", f.kv.Bucket(), err)
		case <-f.holdTimer.C:
			f.releaseHolds(time.Now())
		case <-lagging:
			return fmt.Errorf("watch %s: %w: its deliveries reached revision %d in %v, the leader has %d", f.kv.Bucket(),
				errLagging, seq, maxLagWait, last)
		case <-suspect:
			// Missed heartbeats alone are not proof: on two loaded cores
			// a heartbeat can be a second late. The consumer's host
			// answers for it; a dead one does not.
			ictx, cancel := context.WithTimeout(ctx, f.o.Heartbeat*2)
			_, err := cons.Info(ictx)
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				f.setSynced(false)
				return fmt.Errorf("watch %s: consumer lost: heartbeats missed and %w", f.kv.Bucket(), err)
			}
			f.o.Log.Debug().Str("bucket", f.kv.Bucket()).Msg("watch heartbeats late; its consumer answers")
		case m := <-msgs:
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("watch %s: %w", f.kv.Bucket(), err)
			}
			if meta.Sequence.Consumer != dseq+1 {
				f.setSynced(false)
				return fmt.Errorf("watch %s: delivery %d after %d: some missed", f.kv.Bucket(), meta.Sequence.Consumer, dseq)
			}
			dseq = meta.Sequence.Consumer
			seq = max(seq, meta.Sequence.Stream)
			e, ok := f.entry(m, meta)
			if !ok {
				continue
			}
			if initial {
				seen[e.key] = true
			}
			// A lagging replica's old value is skipped: the copy has a
			// newer one.
			if !initial || !f.older(e, last) {
				f.apply(e)
			}
			if initial && meta.NumPending == 0 {
				if err := caughtUp(); err != nil {
					return err
				}
			}
		}
	}
}

// watchConsumer is a watch's consumer, pull or push (Options.Push).
type watchConsumer struct {
	info    func(context.Context) (*jetstream.ConsumerInfo, error)
	cached  *jetstream.ConsumerInfo
	consume func(jetstream.MessageHandler, jetstream.ConsumeErrHandler) (jetstream.ConsumeContext, error)
}

func (c watchConsumer) CachedInfo() *jetstream.ConsumerInfo                       { return c.cached }
func (c watchConsumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) { return c.info(ctx) }

// createConsumer creates a watch's consumer, named name, on stream.
func (f *Follower[T]) createConsumer(ctx context.Context, stream, name string) (watchConsumer, error) {
	cfg := f.consumerConfig()
	cfg.Name = name
	if !f.o.Push {
		c, err := f.js.CreateConsumer(ctx, stream, cfg)
		if err != nil {
			return watchConsumer{}, err
		}
		return watchConsumer{info: c.Info, cached: c.CachedInfo(),
			consume: func(h jetstream.MessageHandler, eh jetstream.ConsumeErrHandler) (jetstream.ConsumeContext, error) {
				return c.Consume(h, jetstream.PullHeartbeat(f.o.Heartbeat), eh)
			}}, nil
	}
	cfg.DeliverSubject = f.nc.NewInbox()
	cfg.IdleHeartbeat = f.o.Heartbeat
	c, err := f.js.CreatePushConsumer(ctx, stream, cfg)
	if err != nil {
		return watchConsumer{}, err
	}
	return watchConsumer{info: c.Info, cached: c.CachedInfo(),
		consume: func(h jetstream.MessageHandler, eh jetstream.ConsumeErrHandler) (jetstream.ConsumeContext, error) {
			return c.Consume(h, eh)
		}}, nil
}

// maxLagWait bounds how long a watch's initial values wait for the
// consumer's node to catch up with the stream's leader before the watch
// is restarted (its new consumer may land on another node). A node back
// from a partition is current again in ~2 s.
const maxLagWait = 5 * time.Second

// errLagging: a watch's consumer reads a replica that did not catch up.
var errLagging = errors.New("the consumer's replica of the bucket lags")

// leaderLastSeq is the stream leader's last revision of the followed
// keys (0: none).
func (f *Follower[T]) leaderLastSeq(ctx context.Context) (uint64, error) {
	if f.o.TrustReplica {
		return 0, nil
	}
	nc, prefix := f.js.Conn(), streams.APIPrefix(f.js)
	subjects := []string{"$KV." + f.kv.Bucket() + ".>"}
	if len(f.o.Keys) > 0 {
		subjects = subjects[:0]
		for _, k := range f.o.Keys {
			subjects = append(subjects, "$KV."+f.kv.Bucket()+"."+k)
		}
	}
	var last uint64
	for _, subj := range subjects {
		seq, err := streams.LeaderLastSeq(ctx, nc, prefix, "KV_"+f.kv.Bucket(), subj)
		if err != nil {
			return 0, fmt.Errorf("watch %s: %w", f.kv.Bucket(), err)
		}
		last = max(last, seq)
	}
	return last, nil
}

// older reports whether e, one of a resync's initial values, is older
// than the value the copy has of its key — what a lagging replica
// delivers — while the copy's revision is one of this stream's (not above
// the leader's last: a bucket deleted and created again starts over).
// With History every revision is delivered again, as documented.
func (f *Follower[T]) older(e *entry, last uint64) bool {
	if f.o.History {
		return false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	rev, ok := f.revs[e.key]
	return ok && e.revision < rev && rev <= last
}

// consumerConfig is the consumer of one watch.
func (f *Follower[T]) consumerConfig() jetstream.ConsumerConfig {
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		MaxDeliver:        1,
		InactiveThreshold: consumerIdle,
		Replicas:          1,
		MemoryStorage:     true,
	}
	if f.o.History {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	prefix := "$KV." + f.kv.Bucket() + "."
	if len(f.o.Keys) == 0 {
		cfg.FilterSubject = prefix + ">"
	}
	for _, k := range f.o.Keys {
		cfg.FilterSubjects = append(cfg.FilterSubjects, prefix+k)
	}
	if len(cfg.FilterSubjects) == 1 {
		cfg.FilterSubject, cfg.FilterSubjects = cfg.FilterSubjects[0], nil
	}
	return cfg
}

// deleteLater deletes a watch's consumer in the background (Run waits
// for it), so that a restart never waits for it.
func (f *Follower[T]) deleteLater(ctx context.Context, stream, name string) {
	f.deletes.Add(1)
	go func() {
		defer f.deletes.Done()
		f.deleteConsumer(ctx, stream, name)
	}()
}

// deleteConsumer deletes a watch's consumer: once in any case, then again
// until a request is answered, for deleteWindow while ctx lasts. The
// cluster's meta leader removes the consumer as soon as it gets the
// request, but answers it only when it led the consumer itself or knows
// the consumer's node offline — which it learns of a killed node only
// when its status heartbeats have been missing for 150 s — and while the
// metadata elects a leader (the killed node led it) the request is
// dropped. So the delete of a lost consumer is rarely answered: each
// request waits deleteRequestTimeout only, and the next one, sent
// deleteRetryWait later, finds the consumer gone ("not found"); the first
// request after the election's end removes it. One left behind on a live
// node is deleted by the server once idle (consumerIdle).
func (f *Follower[T]) deleteConsumer(ctx context.Context, stream, name string) {
	end := time.Now().Add(deleteWindow)
	for {
		dctx, cancel := context.WithTimeout(context.Background(), deleteRequestTimeout)
		err := f.js.DeleteConsumer(dctx, stream, name)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, nats.ErrConnectionClosed) || ctx.Err() != nil {
			return
		}
		if time.Now().After(end) {
			f.o.Log.Warn().Err(err).Str("bucket", f.kv.Bucket()).Str("consumer", name).Dur("for", deleteWindow).
				Msg("a watch's old consumer could not be deleted: it stays until its node deletes it, idle (if it comes back)")
			return
		}
		t := time.NewTimer(deleteRetryWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

const (
	// deleteRequestTimeout bounds one request deleting a consumer: the
	// meta leader answers one it can in milliseconds.
	deleteRequestTimeout = 250 * time.Millisecond
	// deleteRetryWait separates two requests deleting a consumer.
	deleteRetryWait = 100 * time.Millisecond
	// deleteWindow bounds the deletion of one consumer: past a meta
	// leader election (4–9 s, more on a loaded machine).
	deleteWindow = 30 * time.Second
)

// entry is a bucket entry read by a watch.
type entry struct {
	bucket, key string
	value       []byte
	revision    uint64
	created     time.Time
	delta       uint64
	op          jetstream.KeyValueOp
	expired     bool // a TTL's marker
}

func (e *entry) Bucket() string                  { return e.bucket }
func (e *entry) Key() string                     { return e.key }
func (e *entry) Value() []byte                   { return e.value }
func (e *entry) Revision() uint64                { return e.revision }
func (e *entry) Created() time.Time              { return e.created }
func (e *entry) Delta() uint64                   { return e.delta }
func (e *entry) Operation() jetstream.KeyValueOp { return e.op }

// entry reads m as the KV watch of nats.go does: a delete or purge is
// told by its KV-Operation header, or by the marker a TTL leaves.
func (f *Follower[T]) entry(m jetstream.Msg, meta *jetstream.MsgMetadata) (*entry, bool) {
	prefix := "$KV." + f.kv.Bucket() + "."
	subj := m.Subject()
	if len(subj) <= len(prefix) {
		return nil, false
	}
	e := &entry{bucket: f.kv.Bucket(), key: subj[len(prefix):], value: m.Data(), revision: meta.Sequence.Stream,
		created: meta.Timestamp, delta: meta.NumPending, op: jetstream.KeyValuePut}
	h := m.Headers()
	switch h.Get("KV-Operation") {
	case "DEL":
		e.op = jetstream.KeyValueDelete
	case "PURGE":
		e.op = jetstream.KeyValuePurge
	case "":
		switch h.Get(jetstream.MarkerReasonHeader) {
		case "MaxAge":
			e.op, e.expired = jetstream.KeyValuePurge, true
		case "Purge":
			e.op = jetstream.KeyValuePurge
		case "Remove":
			e.op = jetstream.KeyValueDelete
		}
	}
	return e, true
}

// apply records one entry of the watch and reports it.
func (f *Follower[T]) apply(e *entry) {
	key := e.Key()
	if e.Operation() == jetstream.KeyValuePut {
		if e.created.After(f.lastPut) {
			f.lastPut = e.created
		}
		f.unhold(key)
	} else if e.expired && f.o.Refreshed > 0 {
		if silence := e.created.Sub(f.lastPut); silence >= f.HoldFor() {
			if _, ok := f.Get(key); ok {
				f.o.Log.Info().Str("bucket", f.kv.Bucket()).Str("key", key).Dur("silence", silence).Dur("hold", f.HoldFor()).
					Msg("expiry after the bucket took no write: held until its writer can put it again")
				f.hold(key, time.Now())
			}
			return
		}
	}
	if e.Operation() != jetstream.KeyValuePut {
		f.unhold(key)
		f.remove(key, e.Revision())
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
	f.revs[key] = e.Revision()
	f.mu.Unlock()
	f.notify()
	if f.o.OnChange != nil {
		f.o.OnChange(Change[T]{Key: key, Value: v, Revision: e.Revision()})
	}
}

// sync ends a watch's initial values: keys the copy has that the bucket
// no longer has are deleted, and the copy is synced. A key missing from
// the re-read is deleted only when the bucket's stream leader confirms it
// (confirmGone): the watch's consumer reads the copy of the stream on its
// own node, which may lag — a node just back from a partition has
// none of the writes made meanwhile, and has expired (TTL) what the
// others kept refreshed — and would report live keys deleted.
func (f *Follower[T]) sync(ctx context.Context, seen map[string]bool) error {
	f.mu.RLock()
	var gone []string
	for k := range f.vals {
		if !seen[k] {
			gone = append(gone, k)
		}
	}
	f.mu.RUnlock()
	gone, err := f.confirmGone(ctx, gone)
	if err != nil {
		return err
	}
	if f.o.Refreshed > 0 {
		// Gone while the watch was down: expired by a bucket that could
		// take no write, or not — no one can tell, so held.
		for _, k := range gone {
			f.hold(k, time.Now())
		}
		gone = nil
	}
	f.mu.Lock()
	for _, k := range gone {
		delete(f.vals, k)
		delete(f.revs, k)
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
	return nil
}

// confirmGone asks the bucket's stream leader about each key a re-read
// did not find and returns those it has no live value for. A key the
// leader still holds stays in the copy with its value (the watch delivers
// the newer writes once its node has caught up). When the leader cannot
// be asked (a stream electing one), the error ends the watch unsynced:
// nothing is reported deleted on a lagging replica's word.
func (f *Follower[T]) confirmGone(ctx context.Context, keys []string) ([]string, error) {
	if len(keys) == 0 || f.o.TrustReplica {
		return keys, nil
	}
	nc, prefix := f.js.Conn(), streams.APIPrefix(f.js)
	var gone, kept []string
	for _, k := range keys {
		gctx, cancel := context.WithTimeout(ctx, leaderReadTimeout)
		_, _, found, err := streams.LeaderGet(gctx, nc, prefix, f.kv.Bucket(), k)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("watch %s: confirm that %d keys missing from the re-read are gone: %w", f.kv.Bucket(), len(keys), err)
		}
		if found {
			kept = append(kept, k)
		} else {
			gone = append(gone, k)
		}
	}
	if len(kept) > 0 {
		f.o.Log.Info().Str("bucket", f.kv.Bucket()).Strs("keys", kept[:min(len(kept), 10)]).Int("kept", len(kept)).
			Msg("watch re-read on a lagging replica: keys it missed are still in the bucket, kept")
	}
	return gone, nil
}

// leaderReadTimeout bounds one read from a bucket's stream leader.
const leaderReadTimeout = time.Second

func (f *Follower[T]) setSynced(v bool) {
	f.mu.Lock()
	f.synced = v
	f.mu.Unlock()
}

// HoldFor is how long an expiry is held (Options.Refreshed): a writer
// whose puts failed retries within Refreshed of the bucket taking writes
// again (fleetstate.Beat), and its put then needs a round trip.
func (f *Follower[T]) HoldFor() time.Duration { return 2 * f.o.Refreshed }

// hold defers the report of key's expiry until HoldFor after now; a key
// held already keeps its deadline.
func (f *Follower[T]) hold(key string, now time.Time) {
	if _, ok := f.held[key]; !ok {
		f.held[key] = now.Add(f.HoldFor())
	}
	f.armHolds()
}

// unhold forgets key's held expiry: it was put again (or deleted).
func (f *Follower[T]) unhold(key string) {
	if _, ok := f.held[key]; ok {
		delete(f.held, key)
		f.armHolds()
	}
}

// armHolds sets the hold timer to the earliest held deadline.
func (f *Follower[T]) armHolds() {
	f.holdTimer.Stop()
	var first time.Time
	for _, until := range f.held {
		if first.IsZero() || until.Before(first) {
			first = until
		}
	}
	if !first.IsZero() {
		f.holdTimer.Reset(max(time.Until(first), 0))
	}
}

// releaseHolds reports the held expiries due at now as deletes: their
// keys were not put again.
func (f *Follower[T]) releaseHolds(now time.Time) {
	var due []string
	for k, until := range f.held {
		if !until.After(now) {
			due = append(due, k)
			delete(f.held, k)
		}
	}
	f.armHolds()
	for _, k := range due {
		f.o.Log.Info().Str("bucket", f.kv.Bucket()).Str("key", k).Dur("hold", f.HoldFor()).
			Msg("held expiry taken: not put again within the hold")
		f.remove(k, 0)
	}
}

// remove drops key from the copy and reports its delete (rev: the
// delete's revision; 0 when none is known).
func (f *Follower[T]) remove(key string, rev uint64) {
	f.mu.Lock()
	_, had := f.vals[key]
	delete(f.vals, key)
	delete(f.revs, key)
	f.mu.Unlock()
	if had {
		f.notify()
		if f.o.OnChange != nil {
			f.o.OnChange(Change[T]{Key: key, Deleted: true, Revision: rev})
		}
	}
}
