package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	jsbackoff "github.com/jetserve/jetserve/pkg/backoff"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/streams"
	"github.com/jetserve/jetserve/pkg/workpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	App, Deployment, Worker, Replica string
	Slots                            int                  // jobs this replica runs at once (its max_ongoing_requests)
	Methods                          []config.AsyncMethod // effective configs (serve.EffectiveAsync)
	Handler                          serve.JobHandler
	Log                              zerolog.Logger
	// Replicas of the streams and buckets the runner ensures (nats.replicas).
	Replicas int
	// Bind: the runner creates nothing (Bind); until the scheduler has
	// created a method's streams, Run waits for them, retrying (logged).
	Bind bool
	// Metrics, if not nil, counts attempts and outcomes per method.
	Metrics *Metrics
	// Shared, if set, are the slots this runner shares with the runners
	// before and after it on the same replica (Slots is then ignored).
	Shared *Slots
	// Tracer makes a span per attempt ("job <app>/<method>"), the child of
	// the trace context the job was submitted with; nil (tracing off):
	// none, the submitted context still reaches the job's handle calls.
	Tracer trace.Tracer
	// Version is the deployment version of the replica
	// (protocol.ReplicaSpec.Version): recorded in each job it claims, and a
	// run of a pinned workflow is pinned to it. A run pinned to another
	// version is not run here: its message is handed back (handBack)
	// until a replica of its version takes it. "" runs every job and pins
	// none.
	Version string
	// PinnedOnly marks a replica the scheduler keeps, after a rolling
	// update, for the runs pinned to its (old) version: it runs only
	// those and hands every other job back.
	PinnedOnly bool
}

// Runner is the execution side: one per replica of a deployment with
// async methods. It pulls a job only when one of its slots is free (never
// pre-buffering), heartbeats it while it runs, and records the outcome
// fenced by attempt. Run owns every goroutine it starts.
type Runner struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	names Names
	cfg   RunnerConfig
	q     *Queue
	log   zerolog.Logger

	abortCtx context.Context
	abort    context.CancelFunc

	wake       chan int // index of a method a job was published to
	handedBack chan int // index of a method a job of which went back for another version

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc // guarded by mu; app/method/id → cancel

	// Test and benchmark knobs (set before Run).
	heartbeat  time.Duration                 // 0: lease/3; < 0: none
	claimAfter time.Duration                 // 0: ClaimAfter
	goneAfter  time.Duration                 // 0: goneAfter
	onStart    func(id string)               // a job's handler is about to run
	onDone     func(id string, state Status) // a job's record was finished
	onHandBack func(id string)               // a job went back for a runner of another version
}

type runMethod struct {
	cfg  config.AsyncMethod
	h    *handle
	met  *methodMetrics
	pull *pullMethod
}

// ClaimAfter is how long the first attempt of a submitted job runs before
// the runner claims it (creates its record RUNNING). A job that ends
// sooner has its record written once, final — the way Celery skips
// STARTED (task_track_started=False) and Temporal writes an activity's
// started event with its completion. Only a generated id's first delivery
// within staleFirstDelivery of its submit runs unclaimed: client-chosen
// ids, older first deliveries, redeliveries, requeues and resumed jobs are
// claimed before they run (Runner.claim).
const ClaimAfter = 100 * time.Millisecond

var (
	errCancelRequested = fmt.Errorf("job %w", serve.ErrCancelled)
	errAborted         = errors.New("runner aborted")
	// errCancelledFirst: a cancel wrote the record before this attempt
	// claimed the job.
	errCancelledFirst = errors.New("job cancelled before its attempt was recorded")
)

// NewRunner returns a Runner; Run starts it.
func NewRunner(nc *nats.Conn, js jetstream.JetStream, names Names, cfg RunnerConfig) *Runner {
	if cfg.Slots <= 0 {
		cfg.Slots = 1
	}
	if cfg.Shared == nil {
		cfg.Shared = NewSlots(cfg.Slots)
	}
	ms := make([]config.AsyncMethod, len(cfg.Methods))
	for i, m := range cfg.Methods {
		ms[i] = withDefaults(m)
	}
	cfg.Methods = ms
	log := cfg.Log.With().Str("app", cfg.App).Str("deployment", cfg.Deployment).Str("replica_id", cfg.Replica).Logger()
	actx, abort := context.WithCancel(context.Background())
	qopts := []QueueOption{Replicas(cfg.Replicas)}
	if cfg.Bind {
		qopts = append(qopts, Bind())
	}
	return &Runner{
		nc: nc, js: js, names: names, cfg: cfg, log: log,
		q:        NewQueue(js, names, log, qopts...),
		abortCtx: actx, abort: abort,
		wake: make(chan int, 64), handedBack: make(chan int, 64),
		running: map[string]context.CancelCauseFunc{},
	}
}

// Abort cancels the contexts of the running jobs and hands their jobs back
// (Nak, not acked: another replica takes them at once). A caller draining
// a replica calls it when its drain timeout passes; Run then returns.
func (r *Runner) Abort() { r.abort() }

// open opens each method's stream, consumer, bucket and object store,
// creating what does not exist (the methods have their defaults) — or,
// with Bind, waiting until the scheduler has created them.
func (r *Runner) open(ctx context.Context) ([]*runMethod, error) {
	if !r.cfg.Bind {
		return r.openOnce(ctx)
	}
	b := jsbackoff.New(bindFirstRetry, bindMaxRetry)
	for attempt := 1; ; attempt++ {
		ms, err := r.openOnce(ctx)
		if !errors.Is(err, ErrNotProvisioned) {
			if err == nil && attempt > 1 {
				r.log.Info().Int("attempt", attempt).Msg("job streams created by the scheduler: runner bound")
			}
			return ms, err
		}
		wait := b.Next()
		r.log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).
			Msg("waiting for the scheduler to create the job streams of this deployment's async methods")
		if !jsbackoff.Sleep(ctx, wait) {
			return nil, fmt.Errorf("runner: %w", errors.Join(err, ctx.Err()))
		}
	}
}

// Retry bounds of a Bind runner waiting for its streams.
const (
	bindFirstRetry = 250 * time.Millisecond
	bindMaxRetry   = 5 * time.Second
)

// openOnce is one attempt of open.
func (r *Runner) openOnce(ctx context.Context) ([]*runMethod, error) {
	methods := make([]*runMethod, 0, len(r.cfg.Methods))
	for i, m := range r.cfg.Methods {
		h, err := r.q.open(ctx, r.cfg.App, m.Name)
		var cons jetstream.Consumer
		if err == nil {
			cons, err = h.stream.Consumer(ctx, Consumer)
		}
		if err == nil && m.Workflow && h.wf == nil {
			err = ErrUnknownMethod // its workflow stream is ensured with it
		}
		if errors.Is(err, ErrUnknownMethod) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			// (A Bind queue's ensure binds, or says ErrNotProvisioned.)
			if h, err = r.q.ensure(ctx, r.cfg.App, r.cfg.Deployment, m); err == nil {
				cons, err = h.stream.Consumer(ctx, Consumer)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("runner: open %s: %w", m.Name, err)
		}
		methods = append(methods, &runMethod{cfg: m, h: h, met: r.cfg.Metrics.forMethod(r.cfg.App, m.Name),
			pull: &pullMethod{idx: i, name: m.Name, priority: *m.Priority, cons: cons}})
	}
	return methods, nil
}

// Run pulls and runs jobs until ctx ends, then stops pulling and waits for
// the running jobs to finish (bound that with Abort).
func (r *Runner) Run(ctx context.Context) error {
	defer r.abort()
	methods, err := r.open(ctx)
	if err != nil {
		return err
	}
	pms := make([]*pullMethod, len(methods))
	for i, m := range methods {
		pms[i] = m.pull
	}
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, m := range methods {
		idx := m.pull.idx
		if len(methods) > 1 {
			// Several methods are scanned when woken: a job published to
			// one wakes the runner.
			s, err := r.nc.Subscribe(r.names.JobWildcard(r.cfg.App, m.cfg.Name), func(*nats.Msg) { r.wakeFor(idx) })
			if err != nil {
				return fmt.Errorf("runner: subscribe to jobs: %w", err)
			}
			subs = append(subs, s)
		}
		name := m.cfg.Name
		s, err := r.nc.Subscribe(r.names.CancelSubject(r.cfg.App, name), func(msg *nats.Msg) {
			r.mu.Lock()
			cancel := r.running[name+"/"+string(msg.Data)]
			r.mu.Unlock()
			if cancel != nil {
				cancel(errCancelRequested)
			}
		})
		if err != nil {
			return fmt.Errorf("runner: subscribe to cancels: %w", err)
		}
		subs = append(subs, s)
		if m.cfg.Workflow {
			s, err := r.nc.QueueSubscribe(r.names.UnpinSubject(r.cfg.App, name), unpinGroup, func(msg *nats.Msg) { r.onUnpin(name, msg.Data) })
			if err != nil {
				return fmt.Errorf("runner: subscribe to unpins: %w", err)
			}
			subs = append(subs, s)
		}
	}
	// The subscriptions must be live before the first pull, or a job
	// published in between would wait for the tick.
	if err := r.nc.FlushTimeout(10 * time.Second); err != nil {
		return fmt.Errorf("runner: flush subscriptions: %w", err)
	}

	// Jobs run on kept goroutines: a job's record writes and acks go
	// deep through JetStream, and a new goroutine would grow (copy) its
	// stack for every job.
	pool := workpool.New(runnerIdle)
	defer pool.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, m := range methods {
		if m.h.wf != nil {
			wg.Go(func() {
				if err := r.runWakers(ctx, m); err != nil {
					r.log.Error().Err(err).Msg("workflow wakers stopped")
				}
			})
		}
	}
	slots := r.cfg.Shared
	pl := newPuller(r.log, slots, pms)
	pl.handedBack = r.handedBack
	pl.run(ctx, r.wake, func(d delivery) {
		m := methods[d.m.idx]
		pool.Run(func() {
			defer slots.release() // wakes the loop (or the runner after this one)
			r.process(m, d.msg)
		})
	})
	return nil
}

// runnerIdle is how long a kept job goroutine waits for the next job.
const runnerIdle = 10 * time.Second

// wakeFor tells the pull loop that method idx may have a job.
func (r *Runner) wakeFor(idx int) {
	select {
	case r.wake <- idx:
	default:
	}
}

// opCtx bounds one JetStream operation that must happen even when the
// job's own context is done.
func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// claimOutcome is what claiming a delivered job led to.
type claimOutcome uint8

const (
	// claimRun: the attempt is this runner's to run (rev 0: a first
	// attempt not recorded yet, see ClaimAfter).
	claimRun claimOutcome = iota
	// claimFinished: the job ended before (cancelled while queued, or a
	// stray copy of a finished job): ack.
	claimFinished
	// claimDuplicate: a stray duplicate message of a job running from
	// another message: ack.
	claimDuplicate
	// claimExpired: the job's record is gone (its retention passed): ack.
	claimExpired
	// claimCancelled: a cancel came before the attempt; the record is
	// now CANCELLED: ack.
	claimCancelled
	// claimExhausted: no attempt was left; the record is now FAILED:
	// dead-letter, term.
	claimExhausted
	// claimUndecodable: the record cannot be read: term.
	claimUndecodable
	// claimLater: the record could not be read or written now: nak with
	// a delay.
	claimLater
	// claimElsewhere: the run is pinned to another deployment version (or
	// this pinned-only replica runs only its own version's runs): handed
	// back (handBack), for a replica of its version.
	claimElsewhere
)

// claimed is the result of claim.
type claimed struct {
	outcome claimOutcome
	rec     Record // the attempt's record (claimRun), or the final one
	rev     uint64
	err     error         // why (claimUndecodable, claimLater)
	later   time.Duration // claimLater: the delay before the next delivery (0: a second)
}

// A requeued or resumed job's message carries the revision its record had
// then (HdrRevision): every later write of the record has a higher one,
// so a read that finds the record at a lower revision, or finds none with
// nothing newer, may come from a leader deposed while it was cut off.
// The first is always stale; the second is also what an expired record
// looks like once its delete marker is gone, so the job is dropped as
// expired only when reads goneAfter apart, goneReads of them, all said so
// — longer than a deposed leader answers (it steps down within 10–20 s of
// being heard again).
const (
	goneReads = 3
	goneAfter = 10 * time.Second
)

// claim decides, for a delivered job message whose payload is sub, who
// runs the job, and records it. One fast path: a job submitted with a
// generated id, delivered for the first time at once (within
// staleFirstDelivery of its store), runs unclaimed (rev 0, see
// ClaimAfter) — a NUID has no earlier run, and only a redelivery could
// have one, which a consumer leader counts as such (a new leader's
// "first" delivery of it comes after an election, later than that).
// Every other job is claimed with one write before it runs: its record
// created RUNNING (create-only), or, for a requeued or resumed job,
// compare-and-set on the revision its message carries. Never a read: a
// NATS node back from a partition may take itself for the bucket's
// leader for a moment and answer even a leader read from its stale state
// ("no record"), but it cannot commit a write, which needs a quorum. When
// the write fails, the record is read and nextAction decides; what runs
// the job is again a write.
func (r *Runner) claim(ctx context.Context, m *runMethod, msg jetstream.Msg, meta *jetstream.MsgMetadata, sub Record) claimed {
	kv, id, seq := m.h.kv, sub.ID, meta.Sequence.Stream
	onClaim := change{worker: r.cfg.Worker, replica: r.cfg.Replica, maxAttempts: m.cfg.MaxAttempts, seq: seq,
		version: r.cfg.Version}
	if m.cfg.Pinned() {
		onClaim.pinFor = m.cfg.PinnedFor.D()
	}
	hdrRev := msg.Headers().Get(HdrRevision)
	if !r.runsHere(ctx, m, sub, hdrRev != "") {
		return claimed{outcome: claimElsewhere}
	}
	ph := sub.Phase()
	waiting := ph == PhaseQueued || ph == PhaseRetrying

	if hdrRev == "" && meta.NumDelivered == 1 && waiting && msg.Headers().Get(HdrUnique) != "" &&
		time.Since(meta.Timestamp) <= staleFirstDelivery {
		if next, err := sub.apply(EventClaim, onClaim); err == nil {
			return claimed{outcome: claimRun, rec: next}
		}
	}
	// The revision the message carries: 0 when none; a malformed one
	// skips the compare-and-set and is 0 in the slow path, as before.
	var hdrRevN uint64
	var revErr error
	if hdrRev != "" {
		hdrRevN, revErr = strconv.ParseUint(hdrRev, 10, 64)
	}
	// mine is a claim written here that a deposed leader refused from
	// its stale state (streams.StaleRefusal) while the real leader may
	// have committed it: read back, it is this claim, not an earlier
	// attempt that died (which would count one attempt more, or spend
	// the last one without running it).
	var mine Record
	if waiting && sub.spent() < m.cfg.MaxAttempts && revErr == nil {
		if next, err := sub.apply(EventClaim, onClaim); err == nil {
			rev, err := writeRecord(ctx, kv, next, hdrRevN)
			if err == nil {
				return claimed{outcome: claimRun, rec: next, rev: rev}
			}
			if streams.StaleRefusal(err, hdrRevN) {
				mine = next
			}
		}
	}

	for range 10 {
		// The leader's view: a lagging replica's "not found" would make
		// a requeued job's record look expired (and drop the job). A
		// deposed leader may still answer it (stale): every outcome
		// below that runs the job is a write, which it cannot commit.
		cur, prev := sub, uint64(0)
		data, rev, found, err := leaderGet(ctx, r.js, kv.Bucket(), id)
		switch {
		case err != nil:
			return claimed{outcome: claimLater, err: err}
		case found && rev < hdrRevN:
			return claimed{outcome: claimLater, err: fmt.Errorf("job record %s read at revision %d, before its message's %d: a deposed leader's answer", id, rev, hdrRevN)}
		case !found && hdrRev == "":
			// Never claimed (an earlier claim failed): create the record.
		case !found && rev < hdrRevN && meta.NumDelivered < goneReads:
			return claimed{outcome: claimLater, later: cmp.Or(r.goneAfter, goneAfter),
				err: fmt.Errorf("job record %s not found, and nothing since its message's revision %d: expired, or a deposed leader's answer", id, hdrRevN)}
		case !found:
			return claimed{outcome: claimExpired}
		default:
			if err := json.Unmarshal(data, &cur); err != nil {
				return claimed{outcome: claimUndecodable, err: fmt.Errorf("decode job record %s: %w", id, err)}
			}
			prev = rev
		}
		if mine.ID != "" && found && cur.sameClaim(mine) {
			return claimed{outcome: claimRun, rec: cur, rev: prev}
		}
		var ev Event
		var out claimOutcome
		switch nextAction(cur, seq, m.cfg.MaxAttempts) {
		case actFinished:
			return claimed{outcome: claimFinished, rec: cur, rev: prev}
		case actDuplicate:
			return claimed{outcome: claimDuplicate, rec: cur, rev: prev}
		case actCancel:
			ev, out = EventCancel, claimCancelled
		case actExhaust:
			ev, out = EventExhaust, claimExhausted
		default:
			ev, out = EventClaim, claimRun
		}
		next, err := cur.apply(ev, onClaim)
		if err != nil {
			return claimed{outcome: claimLater, err: err}
		}
		rev, err = writeRecord(ctx, kv, next, prev)
		if out == claimRun && streams.StaleRefusal(err, prev) {
			mine = next
		}
		switch {
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			continue // another writer came first (or a deposed leader answered): read again
		case err != nil && out == claimRun:
			return claimed{outcome: claimLater, err: fmt.Errorf("claim job: %w", err)}
		case err != nil:
			continue
		}
		return claimed{outcome: out, rec: next, rev: rev}
	}
	return claimed{outcome: claimLater, err: errors.New("claim job: its record keeps changing")}
}

// process takes one delivered job message.
func (r *Runner) process(m *runMethod, msg jetstream.Msg) {
	ctx, cancel := opCtx()
	defer cancel()
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error().Err(err).Msg("job message without metadata")
		_ = msg.Term()
		return
	}
	var sub Record
	if err := json.Unmarshal(msg.Data(), &sub); err != nil || sub.ID == "" {
		r.log.Error().Err(err).Str("subject", msg.Subject()).Msg("drop undecodable job message")
		_ = msg.TermWithReason("undecodable job")
		return
	}
	id := sub.ID
	log := r.log.With().Str("method", m.cfg.Name).Str("request_id", id).Logger()
	c := r.claim(ctx, m, msg, meta, sub)
	switch c.outcome {
	case claimRun:
		a := &attempt{r: r, m: m, msg: msg, rec: c.rec, rev: c.rev, log: log.With().Int("attempt", c.rec.Attempts).Logger(),
			start: time.Now(), id: c.rec.ID, num: c.rec.Attempts}
		inc(m.met.started)
		if meta.NumDelivered == 1 {
			m.met.waited(meta.Timestamp) // a redelivery's wait includes earlier attempts
		}
		a.run()
	case claimFinished:
		r.notifyParent(ctx, c.rec, log) // again: its runner may have died before it told
		_ = msg.Ack()
	case claimDuplicate:
		log.Warn().Uint64("seq", meta.Sequence.Stream).Uint64("running_seq", c.rec.Seq).Msg("drop duplicate message of a running job")
		_ = msg.Ack()
	case claimExpired:
		log.Warn().Msg("drop job whose record is gone (expired)")
		_ = msg.Ack()
	case claimCancelled:
		r.notifyParent(ctx, c.rec, log)
		_ = msg.Ack()
		r.done(id, Cancelled)
	case claimExhausted:
		r.deadLetter(ctx, m, c.rec, log)
		r.notifyParent(ctx, c.rec, log)
		_ = msg.Term()
		inc(m.met.failed)
		r.done(id, Failed)
	case claimUndecodable:
		log.Error().Err(c.err).Msg("drop job with an undecodable record")
		_ = msg.TermWithReason("undecodable record")
	case claimLater:
		log.Warn().Err(c.err).Msg("claim job; retrying later")
		_ = msg.NakWithDelay(cmp.Or(c.later, time.Second))
	case claimElsewhere:
		log.Debug().Uint64("delivered", meta.NumDelivered).Msg("job handed back: pinned to another version")
		r.handBack(m, msg, meta.NumDelivered)
		if r.onHandBack != nil {
			r.onHandBack(id)
		}
	}
}

// handBack returns a job for a runner of another version (claimElsewhere).
// Its first quickHandBacks deliveries go back at once, and this runner's
// scans skip the method for a moment (a runner pulling one method holds
// its credit at the server, which hands the job to the next waiting
// request: another runner's). Later ones — a run whose version has no
// replica left, until the scheduler unpins it — wait elsewhereDelay.
func (r *Runner) handBack(m *runMethod, msg jetstream.Msg, delivered uint64) {
	select {
	case r.handedBack <- m.pull.idx:
	default:
	}
	if delivered <= quickHandBacks {
		_ = msg.Nak()
		return
	}
	_ = msg.NakWithDelay(elsewhereDelay(delivered - quickHandBacks))
}

// quickHandBacks is how many deliveries of a job handed back for another
// version go back at once.
const quickHandBacks = 8

// runsHere reports whether this runner may run the job whose message
// carries sub: a runner with a version does not run a run pinned to
// another version, and a pinned-only one runs only the runs pinned to its
// own. The message's record may be older than the job's (Queue.Unpin
// changes only the record): a run it says is pinned elsewhere is looked
// up in the bucket (recorded says whether it has a record).
func (r *Runner) runsHere(ctx context.Context, m *runMethod, sub Record, recorded bool) bool {
	v := r.cfg.Version
	if v == "" {
		return true
	}
	now := time.Now()
	pin := sub.PinnedTo(now)
	if pin == v || (pin == "" && !r.cfg.PinnedOnly) {
		return true
	}
	if pin == "" || !recorded {
		return false // a pinned-only replica and a run that is not its own
	}
	data, _, found, err := leaderGet(ctx, r.js, m.h.kv.Bucket(), sub.ID)
	var cur Record
	if err != nil || !found || json.Unmarshal(data, &cur) != nil {
		return !r.cfg.PinnedOnly // the claim decides what an unreadable or expired record means
	}
	pin = cur.PinnedTo(now)
	return pin == v || (pin == "" && !r.cfg.PinnedOnly)
}

// elsewhereDelay is how long a job handed back for a replica of another
// version, n times after its quick hand-backs, waits before it is
// delivered again: 100-200 ms, doubling with each, up to 2.5-5 s (one
// delivery every few seconds while no replica of its version is left,
// until the scheduler unpins it), drawn at random within its range.
func elsewhereDelay(delivered uint64) time.Duration {
	base := min(200*time.Millisecond<<min(max(delivered, 1)-1, 5), 5*time.Second)
	return base/2 + rand.N(base/2)
}

func (r *Runner) deadLetter(ctx context.Context, m *runMethod, rec Record, log zerolog.Logger) {
	b, err := json.Marshal(deadLetter{Record: rec, Error: rec.Error})
	if err != nil {
		return
	}
	ack, err := r.js.Publish(ctx, r.names.DLQSubject(r.cfg.App, m.cfg.Name, rec.ID), b,
		jetstream.WithMsgID("dlq-"+rec.ID+"-"+strconv.Itoa(rec.Requeued)))
	if err != nil {
		log.Error().Err(err).Msg("publish dead letter")
		return
	}
	if !ack.Duplicate {
		inc(m.met.deadLettered)
	}
}

// notifyParent tells a finished job's parent run (if any) how it ended,
// and schedules a finished run's removal (Queue.ended).
func (r *Runner) notifyParent(ctx context.Context, rec Record, log zerolog.Logger) {
	if err := r.q.ended(ctx, rec); err != nil {
		log.Error().Err(err).Msg("tell the parent run; schedule the run's removal")
	}
}

func (r *Runner) done(id string, s Status) {
	if r.onDone != nil {
		r.onDone(id, s)
	}
}
