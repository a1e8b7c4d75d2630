package signals

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// Defaults of JobsOptions.
const (
	// DefaultPollTimeout bounds one consumer or stream info request.
	DefaultPollTimeout = 2 * time.Second
)

// confirmDelays are the re-polls after a wake-up whose first confirmation
// found nothing: a core subscriber may see a job's message before the
// stream has stored it.
var confirmDelays = []time.Duration{10 * time.Millisecond, 50 * time.Millisecond, 200 * time.Millisecond}

// JobsOptions configure a Jobs source.
type JobsOptions struct {
	NC    *nats.Conn
	JS    jetstream.JetStream
	Names jobs.Names
	// Buckets are the shared buckets: the serve config (which deployments
	// are autoscaled, their async_methods and metrics_interval) and the
	// SDK defaults workers advertise, followed as a
	// fleetstate.AsyncFollower.
	Buckets *fleetstate.Buckets
	// OnBacklog, if not nil, is called (from Run's goroutine) when a
	// deployment's backlog rises from zero, so that a cold start need not
	// wait for the next tick; it must not block.
	OnBacklog func(app, deployment string)
	Log       zerolog.Logger
	// PollTimeout bounds each info request (DefaultPollTimeout if 0).
	PollTimeout time.Duration
}

// Jobs is the source of async work: per autoscaled deployment, the backlog
// of its async methods' job consumers (num_pending + num_ack_pending of
// "runners": jobs queued, running, or waiting for a retry) and the age of
// the oldest job still in a method's work-queue stream.
//
// Run polls — one poller, in the leading autoscaler only, once per
// metrics_interval per deployment — and Sample returns the latest reading.
// While a deployment's backlog is zero Run also listens to its methods'
// job subjects, so a job submitted to an idle (perhaps zero-replica)
// deployment is seen within milliseconds and confirmed with consumer info
// at once. Sample and Run are safe to use concurrently.
type Jobs struct {
	o JobsOptions

	mu       sync.Mutex
	readings map[string]jobReading // by ScaleKey; guarded by mu
	woken    map[string]bool       // ScaleKeys woken by a job message; guarded by mu
	wake     chan struct{}         // a key was added to woken

	onPoll func(key string, backlog int) // test hook, called after each poll of a deployment
}

type jobReading struct {
	backlog int
	oldest  time.Time // when the oldest job still in a stream was stored; zero when none
}

// NewJobs returns a Jobs source; Run feeds it.
func NewJobs(o JobsOptions) *Jobs {
	if o.PollTimeout <= 0 {
		o.PollTimeout = DefaultPollTimeout
	}
	return &Jobs{o: o, readings: map[string]jobReading{}, woken: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// Sample returns the deployment's latest backlog and the age, at now, of
// its oldest outstanding job (zero before the first poll, while not
// leading, or when the deployment has no async methods).
func (j *Jobs) Sample(app, deployment string, now time.Time) Sample {
	j.mu.Lock()
	r := j.readings[protocol.ScaleKey(app, deployment)]
	j.mu.Unlock()
	s := Sample{Backlog: r.backlog}
	if r.backlog > 0 && !r.oldest.IsZero() {
		s.OldestJob = max(now.Sub(r.oldest), 0)
	}
	return s
}

// Run polls until ctx ends; call it only while leading (the lead function
// of the autoscaler's elector), so that one poller reads the consumers.
// The serve config and the workers' SDK defaults are followed with
// kvfollow (re-read after a reconnect, never given up on); a failed poll
// keeps the last good reading, so that no decision sees a false zero. It
// forgets every reading when it returns.
func (j *Jobs) Run(ctx context.Context) {
	defer func() {
		j.mu.Lock()
		j.readings, j.woken = map[string]jobReading{}, map[string]bool{}
		j.mu.Unlock()
	}()
	methods := fleetstate.NewAsyncFollower(j.o.NC, j.o.Buckets, j.o.Log)
	var g errgroup.Group
	fctx, stop := context.WithCancel(ctx)
	g.Go(func() error { return methods.Run(fctx) })
	j.poll(ctx, methods)
	stop()
	_ = g.Wait()
}

// target is one autoscaled deployment with async methods, as Run polls it.
type target struct {
	app, dep, key string
	methods       []string
	interval      time.Duration
	next          time.Time             // next regular poll
	confirm       int                   // confirmDelays left after a wake-up
	perMethod     map[string]jobReading // last good reading per method
	backlog       int
	subs          map[string]*nats.Subscription // by method, only while backlog is 0
}

// poller is one run's state, owned by the goroutine in run.
type poller struct {
	*Jobs
	targets map[string]*target // by ScaleKey
}

// poll polls the methods' targets until ctx ends.
func (j *Jobs) poll(ctx context.Context, methods *fleetstate.AsyncFollower) {
	p := &poller{Jobs: j, targets: map[string]*target{}}
	defer func() {
		for _, t := range p.targets {
			p.unsubscribeAll(t)
		}
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		p.pollDue(ctx, now)
		if ctx.Err() != nil {
			return
		}
		timer.Reset(p.nextDue(now))
		select {
		case <-ctx.Done():
			return
		case <-methods.Changed():
			p.rebuild(methods.Table())
		case <-j.wake:
			j.mu.Lock()
			woken := j.woken
			j.woken = map[string]bool{}
			j.mu.Unlock()
			for key := range woken {
				if t, ok := p.targets[key]; ok && t.backlog == 0 {
					t.next, t.confirm = now, len(confirmDelays)
				}
			}
		case <-timer.C:
		}
	}
}

// rebuild derives the targets from the fleet's async methods: every
// autoscaled deployment and the names of its async methods.
func (p *poller) rebuild(table *fleetstate.AsyncTable) {
	seen := map[string]bool{}
	for _, a := range table.Config().Applications {
		for _, d := range a.Deployments {
			if d.AutoscalingConfig == nil {
				continue
			}
			var methods []string
			for _, m := range table.Of(a.Name, d.Name) {
				methods = append(methods, m.Config.Name)
			}
			if len(methods) == 0 {
				continue
			}
			key := protocol.ScaleKey(a.Name, d.Name)
			seen[key] = true
			interval := d.AutoscalingConfig.MetricsInterval.D()
			if interval <= 0 {
				interval = time.Second
			}
			t, ok := p.targets[key]
			if !ok {
				t = &target{app: a.Name, dep: d.Name, key: key, perMethod: map[string]jobReading{},
					subs: map[string]*nats.Subscription{}}
				p.targets[key] = t
			}
			if !slices.Equal(t.methods, methods) {
				for m := range t.perMethod {
					if !slices.Contains(methods, m) {
						delete(t.perMethod, m)
					}
				}
				for m, sub := range t.subs {
					if !slices.Contains(methods, m) {
						_ = sub.Unsubscribe()
						delete(t.subs, m)
					}
				}
				t.methods = methods
				t.next = time.Time{} // poll the new set now
			}
			if interval < t.interval && !t.next.IsZero() {
				t.next = time.Now()
			}
			t.interval = interval
		}
	}
	for key, t := range p.targets {
		if !seen[key] {
			p.unsubscribeAll(t)
			delete(p.targets, key)
			p.mu.Lock()
			delete(p.readings, key)
			p.mu.Unlock()
		}
	}
}

// nextDue is how long until the earliest poll due.
func (p *poller) nextDue(now time.Time) time.Duration {
	d := time.Hour
	for _, t := range p.targets {
		d = min(d, t.next.Sub(now))
	}
	return max(d, time.Millisecond)
}

func (p *poller) pollDue(ctx context.Context, now time.Time) {
	for _, t := range p.targets {
		if ctx.Err() != nil {
			return
		}
		if !t.next.After(now) {
			p.poll(ctx, t)
		}
	}
}

// poll reads every method of t, publishes the deployment's reading and
// schedules the next poll.
func (p *poller) poll(ctx context.Context, t *target) {
	for _, m := range t.methods {
		r, err := p.pollMethod(ctx, t.app, m)
		if err != nil {
			// Keep the last good reading: an error must not look like an
			// empty queue (that could scale a busy deployment to zero).
			if ctx.Err() == nil {
				p.o.Log.Warn().Err(err).Str("app", t.app).Str("deployment", t.dep).Str("method", m).
					Msg("read job backlog")
			}
			continue
		}
		t.perMethod[m] = r
	}
	var total jobReading
	for _, r := range t.perMethod {
		total.backlog += r.backlog
		if !r.oldest.IsZero() && (total.oldest.IsZero() || r.oldest.Before(total.oldest)) {
			total.oldest = r.oldest
		}
	}
	rose := t.backlog == 0 && total.backlog > 0
	t.backlog = total.backlog
	p.mu.Lock()
	p.readings[t.key] = total
	p.mu.Unlock()

	now := time.Now()
	t.next = now.Add(t.interval)
	if t.backlog == 0 && t.confirm > 0 {
		t.next = now.Add(confirmDelays[len(confirmDelays)-t.confirm])
		t.confirm--
	} else if t.backlog > 0 {
		t.confirm = 0
	}
	if p.subscribe(t) {
		// A job published between this poll and the new subscription
		// would wake no one: look once more, now that it listens.
		t.next = now.Add(confirmDelays[0])
	}
	if p.onPoll != nil {
		p.onPoll(t.key, t.backlog)
	}
	if rose && p.o.OnBacklog != nil {
		p.o.OnBacklog(t.app, t.dep)
	}
}

// pollMethod reads one method's consumer and, when it has a backlog, its
// stream's oldest message.
func (p *poller) pollMethod(ctx context.Context, app, method string) (jobReading, error) {
	ctx, cancel := context.WithTimeout(ctx, p.o.PollTimeout)
	defer cancel()
	stream := p.o.Names.Stream(app, method)
	// One $JS.API.CONSUMER.INFO request. In a cluster it is answered by
	// the consumer's leader, whose counts are authoritative — reading them
	// from any replica's view (what KEDA's scaler did with /jsz on a
	// random node) gives stale or zero lag.
	c, err := p.o.JS.Consumer(ctx, stream, jobs.Consumer)
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		return jobReading{}, nil // not ensured yet: no job was ever submitted or run
	}
	if err != nil {
		return jobReading{}, fmt.Errorf("consumer info %s: %w", stream, err)
	}
	info := c.CachedInfo()
	r := jobReading{backlog: int(info.NumPending) + info.NumAckPending}
	if r.backlog == 0 {
		return r, nil
	}
	// The work-queue stream holds exactly the jobs not yet acknowledged:
	// its first message is the oldest job queued or running.
	s, err := p.o.JS.Stream(ctx, stream)
	if err != nil {
		if ctx.Err() == nil {
			p.o.Log.Debug().Err(err).Str("stream", stream).Msg("stream info for the oldest job's age")
		}
		return r, nil // the backlog is what matters; the age is best effort
	}
	if st := s.CachedInfo().State; st.Msgs > 0 {
		r.oldest = st.FirstTime
	}
	return r, nil
}

// subscribe listens to t's job subjects while its backlog is zero (a job
// published then wakes the poller) and stops listening while it is not
// (regular polls see the backlog; the autoscaler need not receive every
// job's payload under load). It reports whether it subscribed anew.
func (p *poller) subscribe(t *target) bool {
	if t.backlog > 0 {
		p.unsubscribeAll(t)
		return false
	}
	added := false
	for _, m := range t.methods {
		if t.subs[m] != nil {
			continue
		}
		key := t.key
		sub, err := p.o.NC.Subscribe(p.o.Names.JobWildcard(t.app, m), func(*nats.Msg) { p.woke(key) })
		if err != nil {
			p.o.Log.Warn().Err(err).Str("app", t.app).Str("method", m).Msg("subscribe to job subjects")
			continue
		}
		t.subs[m], added = sub, true
	}
	return added
}

func (p *poller) unsubscribeAll(t *target) {
	for m, sub := range t.subs {
		_ = sub.Unsubscribe()
		delete(t.subs, m)
	}
}

// woke is called from NATS callbacks when a job was published.
func (j *Jobs) woke(key string) {
	j.mu.Lock()
	j.woken[key] = true
	j.mu.Unlock()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}
