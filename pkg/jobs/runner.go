package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
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
	// Metrics, if not nil, counts attempts and outcomes per method.
	Metrics *Metrics
	// Shared, if set, are the slots this runner shares with the runners
	// before and after it on the same replica (Slots is then ignored).
	Shared *Slots
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

	wake chan int // index of a method a job was published to

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc // guarded by mu; app/method/id → cancel

	// Test and benchmark knobs (set before Run).
	heartbeat  time.Duration                 // 0: lease/3; < 0: none
	claimAfter time.Duration                 // 0: ClaimAfter
	onStart    func(id string)               // a job's handler is about to run
	onDone     func(id string, state Status) // a job's record was finished
}

type runMethod struct {
	idx    int
	cfg    config.AsyncMethod
	h      *handle
	stream string // its job stream
	api    string // its consumer's pull subject
	met    *methodMetrics
}

// ClaimAfter is how long the first attempt of a submitted job runs before
// the runner claims it (creates its record RUNNING). A job that ends
// sooner has its record written once, final — the way Celery skips
// STARTED (task_track_started=False) and Temporal writes an activity's
// started event with its completion. Redeliveries, requeues and resumed
// jobs are claimed before they run.
const ClaimAfter = 100 * time.Millisecond

var (
	errCancelRequested = errors.New("job cancelled")
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
	return &Runner{
		nc: nc, js: js, names: names, cfg: cfg, log: log,
		q:        NewQueue(js, names, log, Replicas(cfg.Replicas)),
		abortCtx: actx, abort: abort,
		wake:    make(chan int, 64),
		running: map[string]context.CancelCauseFunc{},
	}
}

// Abort cancels the contexts of the running jobs and hands their jobs back
// (Nak, not acked: another replica takes them at once). A caller draining
// a replica calls it when its drain timeout passes; Run then returns.
func (r *Runner) Abort() { r.abort() }

// Run pulls and runs jobs until ctx ends, then stops pulling and waits for
// the running jobs to finish (bound that with Abort).
func (r *Runner) Run(ctx context.Context) error {
	defer r.abort()
	methods := make([]*runMethod, 0, len(r.cfg.Methods))
	for i, m := range r.cfg.Methods {
		// Open what exists; create what does not (m has its defaults).
		h, err := r.q.open(ctx, r.cfg.App, m.Name)
		if err == nil {
			_, err = h.stream.Consumer(ctx, Consumer)
		}
		if errors.Is(err, ErrUnknownMethod) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			h, err = r.q.ensure(ctx, r.cfg.App, r.cfg.Deployment, m)
		}
		if err != nil {
			return fmt.Errorf("runner: open %s: %w", m.Name, err)
		}
		stream := h.stream.CachedInfo().Config.Name
		methods = append(methods, &runMethod{idx: i, cfg: m, h: h, stream: stream,
			api: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + Consumer,
			met: r.cfg.Metrics.forMethod(r.cfg.App, m.Name)})
	}
	// Highest priority first (stable: declaration order among equals).
	byPrio := slices.Clone(methods)
	slices.SortStableFunc(byPrio, func(a, b *runMethod) int { return *b.cfg.Priority - *a.cfg.Priority })
	lowFirst := slices.Clone(byPrio)
	slices.Reverse(lowFirst)

	p := &puller{
		r: r, methods: methods, byPrio: byPrio, lowFirst: lowFirst, single: len(methods) == 1,
		byStream: map[string]*runMethod{}, inbox: r.nc.NewInbox(), slots: r.cfg.Shared,
		reqs: map[string]*pullReq{}, credit: make([]int, len(methods)), paused: map[int]bool{},
		rescan: true, hint: -1, reconnects: r.nc.Stats().Reconnects,
	}
	for _, m := range methods {
		p.byStream[m.stream] = m
	}
	in := make(chan *nats.Msg, r.cfg.Shared.Size()+64)
	inbox, err := r.nc.Subscribe(p.inbox+".>", func(m *nats.Msg) { in <- m })
	if err != nil {
		return fmt.Errorf("runner: subscribe to its pull inbox: %w", err)
	}
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, m := range methods {
		idx := m.idx
		if !p.single {
			s, err := r.nc.Subscribe(r.names.JobWildcard(r.cfg.App, m.cfg.Name), func(*nats.Msg) {
				select {
				case r.wake <- idx:
				default:
				}
			})
			if err != nil {
				_ = inbox.Unsubscribe()
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
			_ = inbox.Unsubscribe()
			return fmt.Errorf("runner: subscribe to cancels: %w", err)
		}
		subs = append(subs, s)
	}

	// The subscriptions must be live before the first pull, or a job
	// published in between would wait for the tick.
	if err := r.nc.FlushTimeout(10 * time.Second); err != nil {
		_ = inbox.Unsubscribe()
		return fmt.Errorf("runner: flush subscriptions: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := func(m *runMethod, msg *nats.Msg) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer p.slots.release() // wakes the loop (or the runner after this one)
			r.process(m, msg)
		}()
	}
	for {
		p.refill()
		select {
		case msg := <-in:
			if m, job := p.receive(msg); job != nil {
				start(m, job)
			}
		case <-p.slots.freed:
			p.rescan = true
		case idx := <-r.wake:
			p.hint, p.rescan = idx, true
		case now := <-tick.C:
			p.tick(now)
		case <-ctx.Done():
			return p.drain(inbox, in)
		}
	}
}

// drain stops pulling: it drains the inbox subscription (the server drops
// the waiting requests) and hands back (Nak) every job still arriving.
// Jobs already running go on (Run waits for them).
func (p *puller) drain(inbox *nats.Subscription, in <-chan *nats.Msg) error {
	p.stopping = true
	closed := inbox.StatusChanged(nats.SubscriptionClosed)
	handBack := func() {
		for {
			select {
			case msg := <-in:
				p.receive(msg)
			default:
				return
			}
		}
	}
	if err := inbox.Drain(); err != nil {
		// The connection is closing: the server forgets its requests.
		_ = inbox.Unsubscribe()
		handBack()
		return nil
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case msg := <-in:
			p.receive(msg)
		case <-closed:
			handBack()
			return nil
		case <-timeout.C:
			_ = inbox.Unsubscribe()
			handBack()
			return nil
		}
	}
}

// opCtx bounds one JetStream operation that must happen even when the
// job's own context is done.
func opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// attempt is one run of a job on this runner.
type attempt struct {
	r   *Runner
	m   *runMethod
	msg *nats.Msg
	log zerolog.Logger

	start time.Time // when the handler was started (duration metric)

	mu           sync.Mutex // guards rec, rev, progress state, checkpointed
	rec          Record
	rev          uint64
	lastProgress time.Time
	pending      *Record // unsaved progress
	checkpointed bool
}

func (r *Runner) running1(rec Record, seq uint64, m *runMethod) Record {
	now := time.Now().UTC()
	rec.Status, rec.Retrying, rec.CancelRequested = Running, false, false
	rec.Attempts++
	rec.MaxAttempts = m.cfg.MaxAttempts
	rec.Worker, rec.Replica, rec.Seq = r.cfg.Worker, r.cfg.Replica, seq
	rec.StartedAt, rec.UpdatedAt = now, now
	return rec
}

// process takes one delivered job message.
func (r *Runner) process(m *runMethod, msg *nats.Msg) {
	ctx, cancel := opCtx()
	defer cancel()
	meta, err := msg.Metadata()
	if err != nil {
		r.log.Error().Err(err).Msg("job message without metadata")
		_ = msg.Term()
		return
	}
	seq := meta.Sequence.Stream
	var sub Record
	if err := json.Unmarshal(msg.Data, &sub); err != nil || sub.ID == "" {
		r.log.Error().Err(err).Str("subject", msg.Subject).Msg("drop undecodable job message")
		_ = termWithReason(msg, "undecodable job")
		return
	}
	id := sub.ID
	log := r.log.With().Str("method", m.cfg.Name).Str("request_id", id).Logger()
	kv := m.h.kv

	// Fast paths. A submitted job's first delivery runs unclaimed (rev 0:
	// see ClaimAfter) if it has no record: one message per id can be in
	// the stream, and a job's record is written before its message goes,
	// so a record read after the delivery sees any earlier run of the id
	// (a generated id has none). Otherwise claim the job with one write:
	// create its record RUNNING, or, for a requeued or resumed job,
	// compare-and-set on the revision its message carries.
	var rec Record
	var rev uint64
	started := false
	hdrRev := msg.Header.Get(HdrRevision)
	fresh := hdrRev == "" && meta.NumDelivered == 1 && sub.Status == Queued && !sub.CancelRequested
	if fresh && msg.Header.Get(HdrUnique) == "" {
		if _, err := kv.Get(ctx, id); !errors.Is(err, jetstream.ErrKeyNotFound) {
			fresh = false // an earlier run of this id (or an unreadable record): the slow path decides
		}
	}
	if fresh {
		rec, started = r.running1(sub, seq, m), true
	} else if sub.Status == Queued && !sub.CancelRequested && sub.Attempts < m.cfg.MaxAttempts {
		next := r.running1(sub, seq, m)
		b, _ := json.Marshal(next)
		if hdrRev == "" {
			rev, err = kv.Create(ctx, id, b)
		} else if rev0, perr := strconv.ParseUint(hdrRev, 10, 64); perr == nil {
			rev, err = kv.Update(ctx, id, b, rev0)
		} else {
			err = perr
		}
		if err == nil {
			rec, started = next, true
		}
	}
	// claim writes base's RUNNING successor: Create if prev is 0, else
	// compare-and-set on prev. It reports a lost race (read again); on
	// another error it hands the job back for later.
	claim := func(base Record, prev uint64) (raced bool) {
		next := r.running1(base, seq, m)
		b, _ := json.Marshal(next)
		var nrev uint64
		var err error
		if prev == 0 {
			nrev, err = kv.Create(ctx, id, b)
		} else {
			nrev, err = kv.Update(ctx, id, b, prev)
		}
		switch {
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
			return true
		case err != nil:
			log.Warn().Err(err).Msg("claim job; retrying later")
			_ = msg.NakWithDelay(time.Second)
			return false
		}
		rec, rev, started = next, nrev, true
		return false
	}
	for try := 0; !started && try < 10; try++ {
		e, err := kv.Get(ctx, id)
		if (errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)) && hdrRev == "" {
			// Never claimed (an earlier claim failed): create the record.
			if claim(sub, 0) {
				continue
			}
			if !started {
				return
			}
			break
		}
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			log.Warn().Msg("drop job whose record is gone (expired)")
			_ = msg.Ack()
			return
		}
		if err != nil {
			log.Warn().Err(err).Msg("read job record; retrying later")
			_ = msg.NakWithDelay(time.Second)
			return
		}
		cur, err := decodeRecord(e)
		if err != nil {
			log.Error().Err(err).Msg("drop job with an undecodable record")
			_ = termWithReason(msg, "undecodable record")
			return
		}
		switch {
		case cur.Status.Terminal():
			_ = msg.Ack() // cancelled while queued, or a stray duplicate of a finished job
			return
		case cur.Status == Running && cur.Seq != 0 && cur.Seq != seq:
			log.Warn().Uint64("seq", seq).Uint64("running_seq", cur.Seq).Msg("drop duplicate message of a running job")
			_ = msg.Ack()
			return
		case cur.CancelRequested:
			now := time.Now().UTC()
			cur.Status, cur.FinishedAt, cur.UpdatedAt = Cancelled, now, now
			if err := r.q.update(ctx, m.h, cur, e.Revision()); err != nil {
				continue
			}
			_ = msg.Ack()
			r.done(id, Cancelled)
			return
		case cur.Attempts >= m.cfg.MaxAttempts:
			now := time.Now().UTC()
			last := cur.Error
			cur.Status, cur.Retrying, cur.FinishedAt, cur.UpdatedAt = Failed, false, now, now
			cur.Error = fmt.Sprintf("attempts exhausted (%d of %d): its worker stopped", cur.Attempts, m.cfg.MaxAttempts)
			if last != "" {
				cur.Error += "; last error: " + last
			}
			if err := r.q.update(ctx, m.h, cur, e.Revision()); err != nil {
				continue
			}
			r.deadLetter(ctx, m, cur, log)
			_ = msg.Term()
			inc(m.met.failed)
			r.done(id, Failed)
			return
		}
		if claim(cur, e.Revision()) {
			continue
		}
		if !started {
			return
		}
	}
	if !started {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	a := &attempt{r: r, m: m, msg: msg, rec: rec, rev: rev, log: log.With().Int("attempt", rec.Attempts).Logger(),
		start: time.Now()}
	inc(m.met.started)
	if meta.NumDelivered == 1 {
		m.met.waited(meta.Timestamp) // a redelivery's wait includes earlier attempts
	}
	a.run()
}

// update applies mut to the record, compare-and-set, as long as the record
// is still this attempt's (else ErrLeaseLost).
func (a *attempt) update(mut func(*Record)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.updateLocked(mut)
}

func (a *attempt) updateLocked(mut func(*Record)) error {
	if a.rev == 0 {
		return a.createLocked(mut)
	}
	ctx, cancel := opCtx()
	defer cancel()
	mine := a.rec.Attempts
	for try := 0; try < 10; try++ {
		next, b, err := a.successor(mut)
		if err != nil {
			return err
		}
		rev, err := a.m.h.kv.Update(ctx, next.ID, b, a.rev)
		if err == nil {
			a.rec, a.rev = next, rev
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("update job record: %w", err)
		}
		cur, rev, err := a.r.q.get(ctx, a.m.h, next.ID)
		if errors.Is(err, ErrNotFound) {
			return ErrLeaseLost
		}
		if err != nil {
			return err
		}
		if cur.Attempts != mine || cur.Status != Running {
			return ErrLeaseLost
		}
		a.rec, a.rev = cur, rev
	}
	return errors.New("update job record: too much contention")
}

// successor is the attempt's record with mut applied, and its JSON.
func (a *attempt) successor(mut func(*Record)) (Record, []byte, error) {
	next := a.rec
	mut(&next)
	next.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(next)
	if err != nil {
		return Record{}, nil, fmt.Errorf("encode job record: %w", err)
	}
	return next, b, nil
}

// createLocked writes the first record of an unclaimed attempt (mut
// applied). Create fails if a record exists: a cancel came first
// (errCancelledFirst), or another attempt has the job (ErrLeaseLost).
func (a *attempt) createLocked(mut func(*Record)) error {
	ctx, cancel := opCtx()
	defer cancel()
	next, b, err := a.successor(mut)
	if err != nil {
		return err
	}
	rev, err := a.m.h.kv.Create(ctx, next.ID, b)
	if err == nil {
		a.rec, a.rev = next, rev
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("create job record: %w", err)
	}
	if cur, _, err := a.r.q.get(ctx, a.m.h, next.ID); err == nil && cur.Status == Cancelled {
		return errCancelledFirst
	}
	return ErrLeaseLost
}

// claim records an unclaimed attempt as RUNNING (a no-op once claimed).
func (a *attempt) claim() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rev != 0 {
		return nil
	}
	return a.createLocked(func(*Record) {})
}

// stopOn cancels the job's context when err says another party owns it.
func stopOn(err error, cancel context.CancelCauseFunc) {
	switch {
	case errors.Is(err, errCancelledFirst), errors.Is(err, errCancelRequested):
		cancel(errCancelRequested)
	case errors.Is(err, ErrLeaseLost):
		cancel(ErrLeaseLost)
	}
}

// check re-reads the record: ErrLeaseLost if another attempt owns it,
// errCancelRequested if cancel was asked.
func (a *attempt) check(ctx context.Context) error {
	a.mu.Lock()
	unclaimed := a.rev == 0
	a.mu.Unlock()
	if unclaimed {
		return nil // nothing recorded to lose yet
	}
	cur, rev, err := a.r.q.get(ctx, a.m.h, a.rec.ID)
	if errors.Is(err, ErrNotFound) {
		return ErrLeaseLost
	}
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur.Attempts != a.rec.Attempts || cur.Status != Running {
		return ErrLeaseLost
	}
	if rev > a.rev {
		a.rec, a.rev = cur, rev
	}
	if cur.CancelRequested {
		return errCancelRequested
	}
	return nil
}

func (a *attempt) flushProgress() {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.pending
	if p == nil {
		return
	}
	a.pending = nil
	a.lastProgress = time.Now()
	if err := a.updateLocked(func(r *Record) { r.Progress, r.Message = p.Progress, p.Message }); err != nil {
		a.log.Debug().Err(err).Msg("save progress")
	}
}

func (a *attempt) run() {
	r, m, rec := a.r, a.m, a.rec
	id := rec.ID
	unclaimed := a.rev == 0 // read before any goroutine shares a
	var args serve.Args
	if len(rec.Args) > 0 {
		if err := json.Unmarshal(rec.Args, &args); err != nil {
			a.finish(nil, badRequest("arguments: %v", err), nil)
			return
		}
	}
	jctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stopAbort := context.AfterFunc(r.abortCtx, func() { cancel(errAborted) })
	defer stopAbort()
	tctx, tcancel := context.WithTimeoutCause(jctx, m.cfg.Timeout.D(), fmt.Errorf("timed out after %s", m.cfg.Timeout.D()))
	defer tcancel()

	key := m.cfg.Name + "/" + id
	r.mu.Lock()
	r.running[key] = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.running, key)
		r.mu.Unlock()
	}()
	if rec.CancelRequested {
		cancel(errCancelRequested)
	}

	hb := r.heartbeat
	if hb == 0 {
		hb = m.cfg.LeaseTimeout.D() / 3
	}
	hbDone := make(chan struct{})
	var hbWG sync.WaitGroup
	if hb > 0 {
		hbWG.Add(1)
		go func() {
			defer hbWG.Done()
			t := time.NewTicker(hb)
			defer t.Stop()
			for {
				select {
				case <-hbDone:
					return
				case <-t.C:
				}
				if err := a.msg.InProgress(); err != nil {
					a.log.Debug().Err(err).Msg("heartbeat")
				}
				if err := a.claim(); err != nil {
					a.log.Debug().Err(err).Msg("claim job")
					stopOn(err, cancel)
				}
				a.flushProgress()
				ctx, c := opCtx()
				err := a.check(ctx)
				c()
				stopOn(err, cancel)
			}
		}()
	}

	if unclaimed {
		after := r.claimAfter
		if after == 0 {
			after = min(ClaimAfter, m.cfg.LeaseTimeout.D()/3)
		}
		claimTimer := time.AfterFunc(after, func() {
			if err := a.claim(); err != nil {
				a.log.Debug().Err(err).Msg("claim job")
				stopOn(err, cancel)
			}
		})
		defer claimTimer.Stop()
	}
	jc := &jobContext{Context: tctx, a: a, job: &serve.Job{ID: id, Method: m.cfg.Name, Attempt: rec.Attempts, Args: args}}
	if r.onStart != nil {
		r.onStart(id)
	}
	res, err := runHandler(r.cfg.Handler, jc)
	close(hbDone)
	hbWG.Wait()
	a.flushProgress()
	var cause error
	if jctx.Err() != nil {
		cause = context.Cause(jctx)
	} else if err != nil && tctx.Err() != nil {
		err = fmt.Errorf("%w: %w", context.Cause(tctx), err)
	}
	a.finish(res, err, cause)
}

func runHandler(h serve.JobHandler, jc *jobContext) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("job handler panicked: %v", p)
		}
	}()
	if h == nil {
		return nil, errors.New("no job handler")
	}
	return h.RunJob(jc, jc.job)
}

func backoff(m config.AsyncMethod, attempt int) time.Duration {
	if len(m.Backoff) == 0 {
		return time.Second
	}
	i := min(max(attempt-1, 0), len(m.Backoff)-1)
	return m.Backoff[i].D()
}

// finish records an attempt's outcome and settles its message.
func (a *attempt) finish(res any, err, cause error) {
	r, m, id := a.r, a.m, a.rec.ID
	ctx, cancel := opCtx()
	defer cancel()
	// A handler that returned a result finished, whatever happened to its
	// context meanwhile (a lost lease is caught by the fenced write).
	switch {
	case err == nil:
	case errors.Is(cause, errAborted):
		a.log.Info().Msg("job aborted by runner shutdown; handing it back")
		if err := a.claim(); err != nil { // the aborted attempt counts
			a.log.Debug().Err(err).Msg("record aborted attempt")
		}
		_ = a.msg.Nak()
		return
	case errors.Is(cause, ErrLeaseLost):
		a.log.Warn().Msg("job lease lost to a newer attempt; dropping this one")
		return
	case errors.Is(cause, errCancelRequested):
		if err := a.update(func(rec *Record) {
			rec.Status, rec.FinishedAt = Cancelled, time.Now().UTC()
		}); err != nil {
			a.lost(err)
			return
		}
		_ = a.msg.Term()
		m.met.attempt(OutcomeCancelled, a.start)
		r.done(id, Cancelled)
		return
	}
	if err == nil {
		b, merr := json.Marshal(res)
		if merr != nil {
			err = fmt.Errorf("encode result: %w", merr)
		} else {
			var objName string
			if len(b) > InlineResultMax {
				objName = fmt.Sprintf("%s.%d", ResultObject(id), a.rec.Attempts)
				if _, perr := m.h.obj.PutBytes(ctx, objName, b); perr != nil {
					a.log.Error().Err(perr).Msg("store result; retrying the job")
					_ = a.msg.NakWithDelay(time.Second)
					return
				}
			}
			if uerr := a.update(func(rec *Record) {
				rec.Status, rec.Retrying, rec.Progress, rec.FinishedAt = Succeeded, false, 1, time.Now().UTC()
				rec.Error, rec.ResultSize = "", int64(len(b))
				if objName != "" {
					rec.ResultObject, rec.Result = objName, nil
				} else {
					rec.Result = b
				}
			}); uerr != nil {
				a.lost(uerr)
				return
			}
			// A plain ack is enough: the record is already final, and should
			// the ack be lost, the redelivery finds it terminal and is dropped.
			if aerr := a.msg.Ack(); aerr != nil {
				a.log.Warn().Err(aerr).Msg("ack finished job (its record is final; a redelivery is dropped)")
			}
			a.mu.Lock()
			cp := a.checkpointed
			a.mu.Unlock()
			if cp {
				if derr := m.h.obj.Delete(ctx, CheckpointObject(id)); derr != nil && !errors.Is(derr, jetstream.ErrObjectNotFound) {
					a.log.Debug().Err(derr).Msg("delete checkpoint")
				}
			}
			inc(m.met.succeeded)
			m.met.attempt(OutcomeSucceeded, a.start)
			r.done(id, Succeeded)
			return
		}
	}
	msg := err.Error()
	var se *serve.Error
	permanent := errors.As(err, &se) && se.Status >= 400 && se.Status < 500
	attempt := a.rec.Attempts
	if !permanent && attempt < m.cfg.MaxAttempts {
		delay := backoff(m.cfg, attempt)
		if uerr := a.update(func(rec *Record) {
			rec.Status, rec.Retrying, rec.Error = Queued, true, msg
		}); uerr != nil {
			a.lost(uerr)
			return
		}
		a.log.Info().Str("error", msg).Dur("backoff", delay).Msg("job attempt failed; will retry")
		_ = a.msg.NakWithDelay(delay)
		inc(m.met.retried)
		m.met.attempt(OutcomeRetried, a.start)
		// Redeliveries publish nothing: wake the pull loop when it is due.
		idx := m.idx
		time.AfterFunc(delay+5*time.Millisecond, func() {
			select {
			case r.wake <- idx:
			default:
			}
		})
		return
	}
	if uerr := a.update(func(rec *Record) {
		rec.Status, rec.Retrying, rec.Error, rec.FinishedAt = Failed, false, msg, time.Now().UTC()
	}); uerr != nil {
		a.lost(uerr)
		return
	}
	if !permanent {
		a.mu.Lock()
		final := a.rec
		a.mu.Unlock()
		r.deadLetter(ctx, m, final, a.log)
	}
	_ = a.msg.Term()
	a.log.Info().Str("error", msg).Msg("job failed")
	inc(m.met.failed)
	m.met.attempt(OutcomeFailed, a.start)
	r.done(id, Failed)
}

func (a *attempt) lost(err error) {
	switch {
	case errors.Is(err, errCancelledFirst):
		a.log.Info().Msg("job was cancelled before its attempt was recorded; dropping its outcome")
		_ = a.msg.Term()
		a.m.met.attempt(OutcomeCancelled, a.start)
		a.r.done(a.rec.ID, Cancelled)
	case errors.Is(err, ErrLeaseLost):
		a.log.Warn().Msg("job lease lost to a newer attempt; not recording this attempt's outcome")
	default:
		a.log.Error().Err(err).Msg("record job outcome; it will be redelivered")
	}
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

func (r *Runner) done(id string, s Status) {
	if r.onDone != nil {
		r.onDone(id, s)
	}
}

// jobContext is the serve.JobContext of one attempt.
type jobContext struct {
	context.Context
	a   *attempt
	job *serve.Job
}

func (c *jobContext) Job() *serve.Job        { return c.job }
func (c *jobContext) Logger() zerolog.Logger { return c.a.log }

func (c *jobContext) Checkpoint(state []byte) error {
	ctx, cancel := opCtx()
	defer cancel()
	if err := c.a.claim(); err != nil { // a checkpoint belongs to a recorded attempt
		return fmt.Errorf("claim job: %w", err)
	}
	if err := c.a.check(ctx); errors.Is(err, ErrLeaseLost) {
		return err
	}
	if _, err := c.a.m.h.obj.PutBytes(ctx, CheckpointObject(c.job.ID), state); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	c.a.mu.Lock()
	c.a.checkpointed = true
	c.a.mu.Unlock()
	return nil
}

func (c *jobContext) LastCheckpoint() ([]byte, bool, error) {
	ctx, cancel := opCtx()
	defer cancel()
	b, err := c.a.m.h.obj.GetBytes(ctx, CheckpointObject(c.job.ID))
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read checkpoint: %w", err)
	}
	c.a.mu.Lock()
	c.a.checkpointed = true
	c.a.mu.Unlock()
	return b, true, nil
}

// progressEvery bounds how often Progress writes the record.
const progressEvery = 250 * time.Millisecond

func (c *jobContext) Progress(fraction float64, message string) error {
	fraction = min(max(fraction, 0), 1)
	a := c.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Since(a.lastProgress) < progressEvery {
		a.pending = &Record{Progress: fraction, Message: message}
		return nil
	}
	a.pending = nil
	a.lastProgress = time.Now()
	return a.updateLocked(func(r *Record) { r.Progress, r.Message = fraction, message })
}

var _ serve.JobContext = (*jobContext)(nil)

// termWithReason terminates a job message, giving the server a reason.
func termWithReason(msg *nats.Msg, reason string) error {
	return msg.Respond([]byte("+TERM " + reason))
}
