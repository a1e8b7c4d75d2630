// Package replica runs one replica of a deployment inside a worker: it
// constructs the handler, serves it as a NATS micro service (endpoints
// ReplicaSubject(id)+".call" and ".health", visible to `nats micro ls`),
// enforces max_ongoing_requests, publishes load reports, keeps its
// ReplicaInfo record alive in the Replicas bucket and drains on stop. A
// constructor error wrapping ErrFailed makes the replica FAILED instead of
// retried; a Supervised handler (a process-runtime child) has its own
// state — restarting, failed — mirrored in the record.
//
// A router in the same process (the worker's, for its replicas' handles)
// calls a Replica directly (CallLocal, routing.LocalReplica): the same
// admission as a call over NATS, without a message. A caller that gives
// up cancels its request (a wire.CancelMsg on the call subject, or
// CancelLocal): the handler's context is cancelled, and with it the
// calls it made downstream.
//
// One context governs a replica's lifetime: Stop cancels it. Everything
// the replica runs derives from it — construction and job pulling end at
// once; requests and running jobs get the graceful shutdown timeout (their
// context keeps the lifetime's values without its cancellation and ends
// when that timeout passes); the record's heartbeat and the load reports
// go on until the replica is gone.
//
// Concurrency: every Replica owns one run goroutine (started by Start,
// ended after Stop has drained it; Done is closed then), a heartbeat and a
// load-report goroutine while it lives, and one goroutine per admitted
// request. Micro endpoint callbacks are sequential; a call is admitted
// synchronously in the callback or in CallLocal (never more than
// MaxOngoingRequests at once) and served on its own goroutine, which the
// replica waits for on stop. The methods of Replica are safe for
// concurrent use.
package replica

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/microsvc"
	"github.com/jetserve/jetserve/pkg/panics"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/pkg/workpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
)

// ServiceVersion is the version replicas register their micro service with.
const ServiceVersion = "0.1.0"

// Timing.
const (
	// LoadCoalesce is the shortest interval between two route load
	// reports (the routers' RouteLoadSubject).
	LoadCoalesce = 20 * time.Millisecond
	// StatsCoalesce is the shortest interval between two full load
	// reports (LoadSubject: the autoscaler, the dashboard, and routers).
	StatsCoalesce = 250 * time.Millisecond
	// LoadInterval is the longest interval between two full load reports.
	LoadInterval = time.Second
	// poolIdle is how long a kept request goroutine waits for the next
	// request (see workpool).
	poolIdle = 10 * time.Second
	// DefaultHealthTimeout bounds a health check whose request carries no deadline.
	DefaultHealthTimeout = 30 * time.Second
	// MaxBackoff caps the wait between constructor attempts.
	MaxBackoff = 30 * time.Second
	// firstBackoff is the wait after the first failed constructor attempt.
	firstBackoff = 500 * time.Millisecond
	// kvTimeout bounds one write to the Replicas bucket.
	kvTimeout = 5 * time.Second
)

// ErrFailed marks a constructor error that retrying will not fix (a
// process-runtime command that does not exist, a child that never became
// healthy): the replica is FAILED with the error as its message, and the
// scheduler replaces it with backoff.
var ErrFailed = errors.New("replica cannot start")

// Supervised is implemented by handlers that can go down and come back on
// their own, such as a process-runtime child restarted after it exited.
// The replica mirrors State in its record: RUNNING while the handler takes
// requests, STARTING while it recovers (routers stop sending it requests),
// FAILED once it gave up.
type Supervised interface {
	// Changed is signalled whenever State may have changed.
	Changed() <-chan struct{}
	// State is the handler's state, a message saying why it is not
	// RUNNING, and the child process behind it (nil if none).
	State() (protocol.ReplicaState, string, *protocol.ProcessStatus)
}

// ErrNotReconfigurable is returned by Reconfigure when the change cannot be
// applied in place (the handler has no Reconfigure, or the replica is not
// running): the caller restarts the replica instead.
var ErrNotReconfigurable = errors.New("replica cannot be reconfigured in place")

// Params is what a replica needs.
type Params struct {
	NC    *nats.Conn
	Names protocol.Names
	// Records is the Replicas bucket.
	Records jetstream.KeyValue
	// Sign, if set, signs the record before each put (the worker's NATS
	// user: provenance.Signer.SignReplica).
	Sign     func(*protocol.ReplicaInfo) error
	WorkerID string
	Spec     protocol.ReplicaSpec
	// Ctor builds the handler; nil means the handler is not registered on
	// this worker (reported in the record's message, retried with backoff).
	Ctor serve.Constructor
	// Caller backs the deployment's handles; nil = wire.NewCaller(NC, Names).
	Caller serve.Caller
	// Deployments, if set, returns the deployments of the replica's
	// application in the applied config (ok false when it cannot tell):
	// a constructor that takes a handle to another name makes the replica
	// FAILED, naming it, and such a handle taken later fails its calls
	// with 404 at once.
	Deployments func(ctx context.Context, app string) (names []string, ok bool)
	// Uses, if set, returns the uses (declared edges) of the replica's
	// deployment in the applied config (none: not declared): a constructor
	// that takes a handle to a deployment they do not list makes the
	// replica FAILED, naming it, and such a handle taken later fails its
	// calls with 404 at once.
	Uses    func(ctx context.Context, app, deployment string) (uses []string, ok bool)
	Log     zerolog.Logger
	Metrics *Metrics
	// SDKMetrics, if set, gives the deployment its batching and
	// multiplexing series (serve.Init.Metrics).
	SDKMetrics *serve.Metrics
	// Heartbeat is how often the record is re-put; 0 = fleetstate.HeartbeatInterval.
	Heartbeat time.Duration
	// After, if not nil, delays the start until it is closed: a replica
	// restarted under the same id waits for its predecessor to be gone.
	After <-chan struct{}
	// Jobs, if set, runs the deployment's async methods (see JobsParams).
	Jobs *JobsParams
	// UserNC, if set, is the connection deployment code gets
	// (serve.Init.NC) instead of NC: a restricted user's.
	UserNC *nats.Conn
	// Bodies, if set, is the object store of bodies too large for one
	// NATS message: a request whose body is there (HeaderBodyObject) is
	// read from it before its handler runs, and a response too large for
	// one message goes there when the caller accepts it
	// (HeaderBodyAccept). Without it such requests fail 503 and such
	// responses fail as over max_payload.
	Bodies *wire.Bodies
	// BodyStall bounds how long a chunked body transfer (a request body
	// pulled from its caller, a response body the caller pulls) waits for
	// its peer; 0: wire.DefaultBodyStall.
	BodyStall time.Duration
	// ResolveConfig, if set, turns the user_config the spec carries into
	// the one the deployment gets ("${secret:NAME}" references resolved).
	// Its error makes the replica FAILED.
	ResolveConfig func(json.RawMessage) (json.RawMessage, error)
	// Tracer makes a server span per request ("serve <app>/<deployment>")
	// and per job attempt, the child of its caller's trace context; the
	// handler's context and handle calls carry it. nil (tracing off):
	// none, the request's trace context passes on unchanged.
	Tracer trace.Tracer
}

// userConfig is the user_config handed to deployment code.
func (p Params) userConfig(uc json.RawMessage) (json.RawMessage, error) {
	if p.ResolveConfig == nil {
		return uc, nil
	}
	out, err := p.ResolveConfig(uc)
	if err != nil {
		return nil, fmt.Errorf("%w: user_config: %w", ErrFailed, err)
	}
	return out, nil
}

// Replica is one running replica. Create it with Start.
type Replica struct {
	p  Params
	id string
	// idHeader is the HdrReplica value of every reply: one read-only
	// slice (capacity 1: an Add reallocates), not one per reply.
	idHeader []string
	app      string // immutable copies of the spec's identity
	dep      string
	log      zerolog.Logger
	tracer   trace.Tracer

	// life is the replica's lifetime: Stop cancels it.
	life context.Context
	stop context.CancelFunc
	// work is the parent of every request's context: the lifetime
	// without its cancellation, ended by abort when the graceful shutdown
	// timeout passes.
	work  context.Context
	abort context.CancelFunc
	met   replicaMetrics

	done    chan struct{} // closed when run returns
	changed chan struct{} // load changed (capacity 1: coalesces)

	inflight sync.WaitGroup // admitted requests; Add only under mu while !draining
	workers  *workpool.Pool // runs admitted requests

	out outbox // replies on their way out (post)

	reconfMu sync.Mutex // serialises Reconfigure

	// slots is the job capacity the replica's runners share (nil without
	// job parameters).
	slots *jobs.Slots

	putMu sync.Mutex // serialises record writes so a stale one never lands last
	gone  bool       // guarded by putMu: the record was deleted, never put again

	mu       sync.Mutex
	spec     protocol.ReplicaSpec // guarded by mu
	info     protocol.ReplicaInfo // guarded by mu
	handler  serve.Handler        // guarded by mu; set once running
	draining bool                 // guarded by mu
	ongoing  int                  // guarded by mu
	models   []string             // guarded by mu: multiplexed model ids held; replaced, never mutated
	// held are the reply subjects of admitted requests whose reply is not
	// sent yet — what a router's probe asks about (wire.ProbeMsg) — with
	// what cancels each (wire.CancelMsg, CancelLocal).
	held map[string]context.CancelFunc // guarded by mu
	// served, errored, latencySum and latency are the load report's
	// request totals (guarded by mu): latencySum is the handlers' total
	// time, as measured (the load report converts it to milliseconds;
	// micro stats take it as it is); latency has one count per
	// protocol.LatencyBoundsMS bucket plus the overflow.
	served, errored uint64
	latencySum      time.Duration
	latency         []uint64
	jobRuns         []*jobRun // guarded by mu: job runners not known to be done, the current one last
}

// Start begins running a replica of p.Spec and returns at once; the
// replica constructs itself in the background (its record says STARTING
// until it is RUNNING).
func Start(p Params) *Replica {
	if p.Heartbeat <= 0 {
		p.Heartbeat = fleetstate.HeartbeatInterval
	}
	if p.Caller == nil {
		p.Caller = wire.NewCaller(p.NC, p.Names)
	}
	if p.Metrics == nil {
		p.Metrics = discardMetrics()
	}
	s := p.Spec
	r := &Replica{
		p:        p,
		tracer:   p.Tracer,
		id:       s.ID,
		idHeader: []string{s.ID},
		app:      s.App,
		dep:      s.Deployment,
		log:      p.Log.With().Str("app", s.App).Str("deployment", s.Deployment).Str("replica_id", s.ID).Logger(),
		done:     make(chan struct{}),
		changed:  make(chan struct{}, 1),
		spec:     s,
		held:     map[string]context.CancelFunc{},
		workers:  workpool.New(poolIdle),
		info: protocol.ReplicaInfo{
			ID:                 s.ID,
			App:                s.App,
			Deployment:         s.Deployment,
			WorkerID:           p.WorkerID,
			Version:            s.Version,
			State:              protocol.ReplicaStarting,
			MaxOngoingRequests: s.MaxOngoingRequests,
			ConfigVersion:      s.ConfigVersion(),
			PinnedOnly:         s.PinnedOnly,
			Subject:            p.Names.ReplicaSubject(s.ID),
		},
	}
	if p.Jobs != nil {
		r.slots = jobs.NewSlots(s.MaxOngoingRequests)
	}
	r.life, r.stop = context.WithCancel(context.Background())
	r.work, r.abort = context.WithCancel(context.WithoutCancel(r.life))
	go r.run()
	return r
}

// ID returns the replica id.
func (r *Replica) ID() string { return r.id }

// Spec returns the spec the replica runs now (with in-place changes).
func (r *Replica) Spec() protocol.ReplicaSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spec
}

// Info returns the replica's current record.
func (r *Replica) Info() protocol.ReplicaInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.info
}

// Stop asks the replica to drain and stop; it returns at once. Done is
// closed when the replica is gone (record deleted).
func (r *Replica) Stop() { r.stop() }

// Done is closed when the replica has stopped.
func (r *Replica) Done() <-chan struct{} { return r.done }

// InPlace reports whether a replica running cur can become next without a
// restart: they differ at most in user_config, max_ongoing_requests,
// graceful_shutdown_timeout and async_methods.
func InPlace(cur, next protocol.ReplicaSpec) bool {
	cur.UserConfig, next.UserConfig = nil, nil
	cur.MaxOngoingRequests, next.MaxOngoingRequests = 0, 0
	cur.GracefulShutdownTimeout, next.GracefulShutdownTimeout = 0, 0
	cur.AsyncMethods, next.AsyncMethods = nil, nil
	cur.PinnedOnly, next.PinnedOnly = false, false
	return reflect.DeepEqual(cur, next)
}

// SameSpec reports whether two specs are equal (user_config compared as JSON).
func SameSpec(a, b protocol.ReplicaSpec) bool {
	return InPlace(a, b) && a.MaxOngoingRequests == b.MaxOngoingRequests &&
		a.GracefulShutdownTimeout == b.GracefulShutdownTimeout && jsonEqual(a.UserConfig, b.UserConfig) &&
		sameAsync(a.AsyncMethods, b.AsyncMethods) && a.PinnedOnly == b.PinnedOnly
}

// sameAsync compares async_methods; none and an empty list are the same.
func sameAsync(a, b []config.AsyncMethod) bool {
	return (len(a) == 0 && len(b) == 0) || reflect.DeepEqual(a, b)
}

func jsonEqual(a, b json.RawMessage) bool {
	norm := func(m json.RawMessage) []byte {
		if len(bytes.TrimSpace(m)) == 0 {
			return []byte("null")
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, m); err != nil {
			return m
		}
		return buf.Bytes()
	}
	return bytes.Equal(norm(a), norm(b))
}

// Reconfigure applies next in place: new limits at once, when the
// user_config changed the handler's Reconfigure, and when the
// async_methods changed a new job runner (the old one's running jobs go
// on). The record's ConfigVersion then says so. It returns
// ErrNotReconfigurable (wrapped) when that is not possible; the caller then
// restarts the replica. next must satisfy InPlace with Spec().
func (r *Replica) Reconfigure(ctx context.Context, next protocol.ReplicaSpec) error {
	r.reconfMu.Lock()
	defer r.reconfMu.Unlock()
	r.mu.Lock()
	h, cur, draining := r.handler, r.spec, r.draining
	r.mu.Unlock()
	if !InPlace(cur, next) {
		return fmt.Errorf("%w: spec changed beyond user_config and limits", ErrNotReconfigurable)
	}
	if h == nil || draining {
		return fmt.Errorf("%w: replica is not running", ErrNotReconfigurable)
	}
	if !jsonEqual(cur.UserConfig, next.UserConfig) {
		rc, ok := h.(serve.Reconfigurer)
		if !ok {
			return fmt.Errorf("%w: handler does not implement serve.Reconfigurer", ErrNotReconfigurable)
		}
		uc, err := r.p.userConfig(next.UserConfig)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrNotReconfigurable, err)
		}
		if err := rc.Reconfigure(ctx, uc); err != nil {
			return fmt.Errorf("%w: reconfigure: %w", ErrNotReconfigurable, err)
		}
	}
	r.mu.Lock()
	asyncChanged := !sameAsync(cur.AsyncMethods, next.AsyncMethods) || cur.PinnedOnly != next.PinnedOnly
	r.spec = next
	r.info.MaxOngoingRequests = next.MaxOngoingRequests
	r.info.ConfigVersion = next.ConfigVersion()
	r.info.PinnedOnly = next.PinnedOnly
	if r.slots != nil {
		r.slots.Resize(next.MaxOngoingRequests)
	}
	if asyncChanged && !r.draining {
		r.restartJobsLocked(h)
	}
	r.mu.Unlock()
	r.put()
	r.loadChanged()
	r.log.Info().Bool("async_methods_changed", asyncChanged).Str("config_version", next.ConfigVersion()).
		Msg("replica reconfigured in place")
	return nil
}

func (r *Replica) run() {
	defer close(r.done)
	defer r.workers.Stop()
	defer r.abort()
	if r.p.After != nil {
		select {
		case <-r.p.After:
		case <-r.life.Done():
			<-r.p.After // never overlap the predecessor, even when stopped early
			return
		}
	}
	// After the predecessor forgot its series (they have the same labels).
	r.met = r.p.Metrics.forReplica(r.app, r.dep, r.id)

	// The record and the load reports outlive Stop: they say STOPPING
	// while the replica drains, until finish deletes the record.
	bg, stopBG := context.WithCancel(context.WithoutCancel(r.life))
	var g errgroup.Group
	defer func() {
		stopBG()
		_ = g.Wait()
		r.finish()
	}()
	r.mu.Lock()
	r.info.StartedAt = time.Now().UTC()
	r.mu.Unlock()
	r.put()
	g.Go(func() error { r.heartbeat(bg); return nil })

	h, svc := r.construct(r.life) // Stop aborts it
	if h == nil {
		return
	}
	r.mu.Lock()
	r.info.State = protocol.ReplicaRunning
	r.info.Message = ""
	if sup, ok := h.(Supervised); ok {
		// The first RUNNING record already says what runs (a child's pid
		// and port), not only the next one supervise writes.
		r.info.State, r.info.Message, r.info.Process = sup.State()
	}
	r.mu.Unlock()
	r.p.Metrics.starts.WithLabelValues(r.app, r.dep).Inc()
	r.put()
	r.log.Info().Msg("replica running")

	g.Go(func() error { r.reportLoad(bg); return nil })
	r.mu.Lock()
	r.startJobsLocked(h) // each runner pulls until Stop (or its replacement)
	r.mu.Unlock()
	r.supervise(h)
	r.drain(h)
	if err := svc.Stop(); err != nil {
		r.log.Warn().Err(err).Msg("stop micro service")
	}
}

// supervise waits for Stop; a Supervised handler's state is mirrored in
// the record meanwhile.
func (r *Replica) supervise(h serve.Handler) {
	sup, ok := h.(Supervised)
	if !ok {
		<-r.life.Done()
		return
	}
	for {
		st, msg, proc := sup.State()
		r.mu.Lock()
		changed := r.info.State != st || r.info.Message != msg || !reflect.DeepEqual(r.info.Process, proc)
		r.info.State, r.info.Message, r.info.Process = st, msg, proc
		r.mu.Unlock()
		if changed {
			r.log.Info().Str("state", string(st)).Str("message", msg).Msg("replica state changed by its handler")
			r.put()
			r.loadChanged()
		}
		select {
		case <-r.life.Done():
			return
		case <-sup.Changed():
		}
	}
}

// finish deletes the record, once the heartbeat stopped.
func (r *Replica) finish() {
	r.putMu.Lock()
	defer r.putMu.Unlock()
	r.gone = true
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	key := protocol.ReplicaKey(r.app, r.dep, r.p.WorkerID, r.id)
	if err := r.p.Records.Delete(ctx, key); err != nil {
		r.log.Warn().Err(err).Msg("delete replica record")
	}
	r.p.Metrics.forget(r.app, r.dep, r.id)
	r.p.SDKMetrics.Forget(r.app, r.dep, r.id)
	r.log.Info().Msg("replica stopped")
}

// construct builds the handler and registers the micro service, retrying
// with backoff until it works or ctx ends (then it returns nils). An
// ErrFailed error makes the replica FAILED: it waits for ctx to end and
// returns nils.
func (r *Replica) construct(ctx context.Context) (serve.Handler, *microsvc.Service) {
	b := backoff.New(firstBackoff, MaxBackoff)
	for attempt := 1; ; attempt++ {
		h, svc, err := r.tryConstruct(ctx)
		if err == nil {
			return h, svc
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if errors.Is(err, ErrFailed) {
			r.log.Error().Err(err).Msg("replica FAILED")
			r.mu.Lock()
			r.info.State, r.info.Message = protocol.ReplicaFailed, err.Error()
			r.mu.Unlock()
			r.put()
			<-ctx.Done()
			return nil, nil
		}
		wait := b.Next()
		r.log.Error().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("replica failed to start")
		r.mu.Lock()
		r.info.Message = fmt.Sprintf("attempt %d: %v (retrying in %s)", attempt, err, wait)
		r.mu.Unlock()
		r.put()
		if !backoff.Sleep(ctx, wait) {
			return nil, nil
		}
	}
}

func (r *Replica) tryConstruct(ctx context.Context) (h serve.Handler, svc *microsvc.Service, err error) {
	if r.p.Ctor == nil {
		return nil, nil, fmt.Errorf("handler %q is not registered on worker %s", r.p.Spec.Handler, r.p.WorkerID)
	}
	r.mu.Lock()
	s := r.spec
	r.mu.Unlock()
	uc, err := r.p.userConfig(s.UserConfig)
	if err != nil {
		return nil, nil, err
	}
	nc := r.p.NC
	if r.p.UserNC != nil {
		nc = r.p.UserNC
	}
	check := r.handleCheck(s.App, s.Deployment)
	init := serve.Init{
		App:             s.App,
		Deployment:      s.Deployment,
		ReplicaID:       s.ID,
		UserConfig:      uc,
		Logger:          r.log,
		Caller:          r.p.Caller,
		CheckDeployment: check.deployment,
		GPUs:            s.GPUIndices,
		NC:              nc,

		MaxModelsPerReplica: s.MaxModelsPerReplica,
		Metrics:             r.p.SDKMetrics.ForReplica(s.App, s.Deployment, s.ID),
		ReportModels:        r.reportModels,
	}
	h, err = construct(ctx, r.p.Ctor, init)
	unknown := check.done()
	if errors.Is(err, ErrFailed) {
		return nil, nil, err // it says what failed
	}
	if err != nil {
		return nil, nil, fmt.Errorf("construct %s: %w", s.Handler, err)
	}
	if h == nil {
		return nil, nil, fmt.Errorf("construct %s: constructor returned no handler", s.Handler)
	}
	if unknown != nil {
		r.close(h)
		return nil, nil, fmt.Errorf("%w: construct %s: %w", ErrFailed, s.Handler, unknown)
	}
	// The handler is in place before the endpoints exist: a call that
	// arrives before the record says RUNNING is served, not dropped.
	r.mu.Lock()
	r.handler = h
	r.mu.Unlock()
	svc, err = r.serveMicro()
	if err != nil {
		r.mu.Lock()
		r.handler = nil
		r.mu.Unlock()
		r.close(h)
		return nil, nil, err
	}
	return h, svc, nil
}

// construct calls ctor; a panic is an error.
func construct(ctx context.Context, ctor serve.Constructor, init serve.Init) (h serve.Handler, err error) {
	defer panics.Recover("constructor", &err)
	return ctor(ctx, init)
}

func (r *Replica) serveMicro() (*microsvc.Service, error) {
	r.mu.Lock()
	s := r.spec
	r.mu.Unlock()
	subject := r.p.Names.ReplicaSubject(s.ID)
	svc, err := microsvc.Start(r.p.NC, microsvc.Config{
		Name:        r.p.Names.DeploymentService(s.App, s.Deployment),
		Version:     ServiceVersion,
		Description: "jetserve replica of " + s.App + "/" + s.Deployment,
		Metadata: map[string]string{
			"app":        s.App,
			"deployment": s.Deployment,
			"replica":    s.ID,
			"worker":     r.p.WorkerID,
			"handler":    s.Handler,
			"version":    s.Version,
		},
	},
		// The subjects are this replica's own: no queue group to share.
		microsvc.Endpoint{Name: protocol.EndpointCall, Subject: subject + "." + protocol.EndpointCall, Handler: r.onCall, Stats: r.callEndpointStats},
		microsvc.Endpoint{Name: protocol.EndpointHealth, Subject: subject + "." + protocol.EndpointHealth, Handler: r.onHealth},
	)
	if err != nil {
		return nil, fmt.Errorf("serve the replica's micro service: %w", err)
	}
	return svc, nil
}

// callEndpointStats is the call endpoint's row of `nats micro stats`: the
// requests the handler served (probes and cancels are not requests), its
// errors and its time, with the quantiles in Data (protocol.CallStats).
func (r *Replica) callEndpointStats() micro.EndpointStats {
	cs, total := r.callStats()
	data, _ := json.Marshal(cs) // plain numbers: cannot fail
	return micro.EndpointStats{NumRequests: int(cs.Served), NumErrors: int(cs.Errors), ProcessingTime: total, Data: data}
}

// callStats is what the replica's handler did, for its micro stats, and
// the handler's total time.
func (r *Replica) callStats() (protocol.CallStats, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cs := protocol.CallStats{Served: r.served, Errors: r.errored, Ongoing: r.ongoing, MaxOngoing: r.spec.MaxOngoingRequests,
		P50MS: protocol.LatencyQuantile(r.latency, 0.50), P95MS: protocol.LatencyQuantile(r.latency, 0.95),
		P99MS: protocol.LatencyQuantile(r.latency, 0.99)}
	if r.served > 0 {
		cs.AverageMS = durationMS(r.latencySum) / float64(r.served)
	}
	return cs, r.latencySum
}

// durationMS is d in milliseconds, as load reports and stats give times.
func durationMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// drain stops admitting requests and pulling jobs, waits for the requests
// and jobs in flight up to the graceful shutdown timeout (then cancels them
// — cancelled jobs go back to the queue — and waits for them to return),
// and closes the handler.
func (r *Replica) drain(h serve.Handler) {
	// The job runners stopped pulling when Stop ended the lifetime (no
	// runner starts once draining); their running jobs go on.
	r.mu.Lock()
	r.draining = true
	runs := slices.Clone(r.jobRuns)
	r.mu.Unlock()
	r.mu.Lock()
	r.info.State = protocol.ReplicaStopping
	grace := r.spec.GracefulShutdownTimeout.D()
	ongoing := r.ongoing
	r.mu.Unlock()
	if grace <= 0 {
		grace = config.DefaultGracefulShutdownTimeout.D()
	}
	r.put()
	r.publishLoad(true)
	r.log.Info().Int("ongoing", ongoing).Dur("timeout", grace).Msg("replica draining")

	idle := make(chan struct{})
	go func() {
		defer close(idle)
		r.inflight.Wait()
		for _, jr := range runs {
			<-jr.done
		}
	}()
	t := time.NewTimer(grace)
	select {
	case <-idle:
		t.Stop()
	case <-t.C:
		r.log.Warn().Msg("graceful shutdown timeout passed: cancelling requests and jobs in flight")
		r.abort() // requests' contexts end; running jobs are handed back
		<-idle
	}
	r.close(h)
}

func (r *Replica) close(h serve.Handler) {
	c, ok := h.(serve.Closer)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), config.DefaultGracefulShutdownTimeout.D())
	defer cancel()
	if err := c.Close(ctx); err != nil {
		r.log.Warn().Err(err).Msg("close handler")
	}
}

// put writes the current record (with a fresh heartbeat time).
func (r *Replica) put() {
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	if err := r.putRecord(ctx); err != nil {
		r.log.Warn().Err(err).Msg("put replica record")
	}
}

// putRecord writes the record with a fresh heartbeat; nil when the
// replica is gone (its record deleted: nothing to write).
func (r *Replica) putRecord(ctx context.Context) error {
	r.putMu.Lock()
	defer r.putMu.Unlock()
	if r.gone {
		return nil
	}
	r.mu.Lock()
	r.info.Heartbeat = time.Now().UTC()
	info := r.info
	r.mu.Unlock()
	if r.p.Sign != nil {
		if err := r.p.Sign(&info); err != nil {
			return fmt.Errorf("sign replica record: %w", err)
		}
	}
	b, err := json.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode replica record: %w", err)
	}
	if _, err := r.p.Records.Put(ctx, protocol.ReplicaKey(info.App, info.Deployment, info.WorkerID, info.ID), b); err != nil {
		return fmt.Errorf("put replica record: %w", err)
	}
	return nil
}

// heartbeat re-puts the record every Heartbeat, at once when the NATS
// connection comes back (a restarted server may have expired it), and
// soon after a failed put (fleetstate.Beat).
func (r *Replica) heartbeat(ctx context.Context) {
	fleetstate.Beat(ctx, r.p.NC, r.p.Heartbeat, func(ctx context.Context) error {
		err := r.putRecord(ctx)
		if err != nil {
			r.log.Warn().Err(err).Msg("heartbeat")
		}
		return err
	})
}

// reportModels records the multiplexed model ids the handler holds and
// publishes a load report when they changed (serve.Init.ReportModels).
func (r *Replica) reportModels(ids []string) {
	r.mu.Lock()
	same := slices.Equal(r.models, ids)
	if !same {
		r.models = slices.Clone(ids)
	}
	r.mu.Unlock()
	if !same {
		r.loadChanged()
	}
}

// loadChanged wakes the load reporter (coalescing).
func (r *Replica) loadChanged() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// reportLoad publishes the replica's load twice over: a route report
// (RouteLoadSubject: the routers that route to the deployment) on every
// change, at most every LoadCoalesce, and the full report with the
// request totals (LoadSubject: the autoscaler, the dashboard, and the
// routers too) at most every StatsCoalesce while it changes, and at least
// every LoadInterval. A busy replica's load changes with every
// request: the control plane hears it at 4 Hz, not at the routers' 50.
func (r *Replica) reportLoad(ctx context.Context) {
	t := time.NewTicker(LoadInterval)
	defer t.Stop()
	stats := time.NewTimer(StatsCoalesce)
	defer stats.Stop()
	statsDue := false // a change awaits its full report (stats runs)
	r.publishLoad(true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.publishLoad(true)
		case <-stats.C:
			if statsDue {
				statsDue = false
				r.publishLoad(true)
			}
		case <-r.changed:
			r.publishLoad(false)
			if !statsDue {
				statsDue = true
				stats.Reset(StatsCoalesce)
			}
			wait := time.NewTimer(LoadCoalesce)
			select {
			case <-ctx.Done():
				wait.Stop()
				return
			case <-wait.C:
			}
		}
	}
}

// publishLoad publishes a route report, or the full report with the
// request totals.
func (r *Replica) publishLoad(full bool) {
	r.mu.Lock()
	rep := protocol.LoadReport{
		ReplicaID:  r.id,
		App:        r.spec.App,
		Deployment: r.spec.Deployment,
		Ongoing:    r.ongoing,
		Max:        r.spec.MaxOngoingRequests,
		Draining:   r.draining,
		Models:     r.models,
		At:         time.Now().UTC(),
	}
	if full && r.served > 0 {
		rep.Served, rep.Errors, rep.LatencyMSSum = r.served, r.errored, durationMS(r.latencySum)
		rep.LatencyBuckets = slices.Clone(r.latency)
	}
	r.mu.Unlock()
	b, err := json.Marshal(rep)
	if err != nil {
		r.log.Error().Err(err).Msg("encode load report")
		return
	}
	subject := r.p.Names.RouteLoadSubject(rep.App, rep.Deployment)
	if full {
		subject = r.p.Names.LoadSubject(rep.App, rep.Deployment)
	}
	if err := r.p.NC.Publish(subject, b); err != nil {
		r.log.Warn().Err(err).Msg("publish load report")
	}
}

// onCall admits a request (synchronously: micro callbacks are sequential)
// and serves it on its own goroutine. A router's liveness probe is
// answered here, without user code: it lists which of the router's
// requests the replica still holds, and since it comes through the same
// subscription as the requests, every request sent before it was admitted
// (or rejected) by then.
func (r *Replica) onCall(msg *nats.Msg) {
	if msg.Header == nil {
		msg.Header = nats.Header{}
	}
	if wire.IsProbe(msg) {
		r.mu.Lock()
		a := wire.ProbeAnswer(msg, func(reply string) bool { _, ok := r.held[reply]; return ok })
		r.mu.Unlock()
		if err := msg.RespondMsg(a); err != nil {
			r.log.Warn().Err(err).Msg("answer probe")
		}
		return
	}
	if wire.IsCancel(msg) {
		r.CancelLocal(wire.CancelTarget(msg))
		return
	}
	a, code, text := r.admit(nil, msg)
	if code != "" {
		r.reject(msg, code, text)
		return
	}
	r.workers.Run(func() { r.serve(a, msg, nil, nil) })
}

// admission is an admitted request's handler and context.
type admission struct {
	h      serve.Handler
	ctx    context.Context
	cancel context.CancelFunc
}

// admit takes msg in — the replica serves, is not draining and is under
// max_ongoing_requests — or says why not (a code routers retry
// elsewhere). Its context ends at its deadline (HdrDeadline), by cancel
// (msg.Reply names it, as for probes) and at the graceful shutdown
// timeout; parent, if not nil, is a local caller's context, which it ends
// with too (and which has the deadline already; it is not held for
// cancels, and never probed).
func (r *Replica) admit(parent context.Context, msg *nats.Msg) (admission, protocol.ErrorCode, string) {
	r.mu.Lock()
	switch {
	case r.draining:
		r.mu.Unlock()
		return admission{}, protocol.ErrDraining, "replica " + r.id + " is draining"
	case r.handler == nil:
		r.mu.Unlock()
		return admission{}, protocol.ErrUnavailable, "replica " + r.id + " is not serving"
	case r.ongoing >= r.spec.MaxOngoingRequests:
		limit := r.spec.MaxOngoingRequests
		r.mu.Unlock()
		return admission{}, protocol.ErrReplicaFull, fmt.Sprintf("replica %s is at max_ongoing_requests (%d)", r.id, limit)
	}
	r.ongoing++
	r.inflight.Add(1)
	var ctx context.Context
	var cancel context.CancelFunc
	switch dl, ok := wire.Deadline(msg); {
	case parent != nil:
		// The caller's context, ended too by the graceful shutdown timeout.
		var end context.CancelFunc
		ctx, end = context.WithCancel(parent)
		stop := context.AfterFunc(r.work, end)
		cancel = func() { stop(); end() }
	case ok:
		ctx, cancel = context.WithDeadline(r.work, dl)
	default:
		ctx, cancel = context.WithCancel(r.work)
	}
	if parent == nil && msg.Reply != "" {
		r.held[msg.Reply] = cancel
	}
	a := admission{h: r.handler, ctx: ctx, cancel: cancel}
	r.mu.Unlock()
	r.loadChanged()
	r.met.processing.Inc()
	return a, "", ""
}

// CallLocal serves a request from a router in this process
// (routing.LocalReplica): admitted as a call over NATS is, answered
// through done once the replica's own bookkeeping is done (so a router
// may send the next request at once), streamed through chunks. With a
// caller's ctx it is served on the calling goroutine (which waits for it
// anyway: no goroutine to start, no stack to grow) and cancelled through
// ctx; without, on a goroutine of its own and cancelled by CancelLocal.
func (r *Replica) CallLocal(ctx context.Context, m *nats.Msg, chunks func(*nats.Msg) error, done func(*nats.Msg)) protocol.ErrorCode {
	if m.Header == nil {
		m.Header = nats.Header{}
	}
	a, code, _ := r.admit(ctx, m)
	if code != "" {
		return code
	}
	if ctx != nil {
		r.serve(a, m, chunks, done)
		return ""
	}
	r.workers.Run(func() { r.serve(a, m, chunks, done) })
	return ""
}

// CancelLocal cancels the request whose reply subject is reply, if the
// replica still holds it.
func (r *Replica) CancelLocal(reply string) {
	r.mu.Lock()
	cancel := r.held[reply]
	r.mu.Unlock()
	if cancel != nil {
		r.log.Debug().Str("reply", reply).Msg("request cancelled by its caller")
		cancel()
	}
}

// settleLocked takes a finished request out of ongoing and adds it to the
// load report's totals; r.mu is held.
func (r *Replica) settleLocked(took time.Duration, failed bool) {
	r.ongoing--
	ms := float64(took.Microseconds()) / 1000
	if r.latency == nil {
		r.latency = make([]uint64, len(protocol.LatencyBoundsMS)+1)
	}
	r.served++
	if failed {
		r.errored++
	}
	r.latencySum += took
	r.latency[protocol.LatencyBucket(ms)]++
}

// reject answers a request the replica did not start (retryable by routers).
func (r *Replica) reject(msg *nats.Msg, code protocol.ErrorCode, text string) {
	m := wire.ErrorMsg(http.StatusServiceUnavailable, code, text)
	m.Header.Set(protocol.HdrReplica, r.id)
	if err := microsvc.Error(msg, strconv.Itoa(http.StatusServiceUnavailable), string(code), m.Data, m.Header); err != nil {
		r.log.Warn().Err(err).Msg("send rejection")
	}
}

// serve runs an admitted request and answers it: over NATS to msg.Reply,
// or, for a local call (done set), through done after the bookkeeping.
func (r *Replica) serve(a admission, msg *nats.Msg, chunks func(*nats.Msg) error, done func(*nats.Msg)) {
	start := time.Now()
	var took time.Duration // set once the handler answered
	failed := false
	var reply *nats.Msg
	settled := false // the request left ongoing and is counted
	posted := false  // the reply is in the outbox, which finishes the request
	defer func() {
		a.cancel()
		if posted {
			return
		}
		r.mu.Lock()
		if !settled {
			r.settleLocked(took, failed)
		}
		delete(r.held, msg.Reply) // after the reply went out
		r.mu.Unlock()
		if !settled {
			r.loadChanged()
			r.met.processing.Dec()
		}
		r.inflight.Done()
		if done != nil {
			done(reply)
		}
	}()
	req := wire.DecodeRequest(msg)
	ctx, span := r.startSpan(a.ctx, req)
	defer span.End()
	log := r.log.With().Str("request_id", req.RequestID).Logger()
	if sc := span.SpanContext(); sc.IsValid() {
		log = log.With().Str("trace_id", sc.TraceID().String()).Logger()
	}
	ctx = serve.ContextWithRequest(log.WithContext(ctx), req)

	accept := takeHeader(req.Header, protocol.HeaderBodyAccept)
	if name := takeHeader(req.Header, protocol.HeaderBodyObject); name != "" {
		reply = r.loadBody(ctx, req, name)
	} else if src := takeHeader(req.Header, protocol.HeaderBodySource); src != "" {
		reply = r.pullBody(ctx, req, src)
	}
	if reply == nil {
		reply, failed = r.invoke(ctx, a.h, req, msg.Header.Get(protocol.HdrStream), chunks)
	} else {
		failed = true
	}
	took = time.Since(start)
	// A handler (or a process-runtime child) does not name body objects
	// or sources.
	delete(reply.Header, bodyObjectHdr)
	delete(reply.Header, bodySourceHdr)
	var src *wire.BodySource // the response body, pulled by the caller
	if large := int64(len(reply.Data)) > r.inlineLimit(); large && accept == protocol.BodyAcceptChunked && done == nil && msg.Reply != "" {
		src = r.chunkBody(reply, log)
	} else if large && accept != "" && r.p.Bodies != nil {
		r.offloadBody(ctx, reply)
	}
	reply.Header[protocol.HdrReplica] = r.idHeader // read-only, shared by every reply
	if code := reply.Header.Get(protocol.HdrError); code != "" && span.IsRecording() {
		span.SetAttributes(tracing.AttrErrorCode.String(code))
		span.SetStatus(codes.Error, code)
	}
	if failed {
		log.Debug().Str("code", reply.Header.Get(protocol.HdrError)).Msg("request failed")
	}
	r.met.served(failed, took)
	if done != nil || msg.Reply == "" {
		return // a local call is answered by the deferred done
	}
	reply.Subject = msg.Reply
	if src == nil {
		// Over before its caller has the answer: the caller's next
		// request finds the slot free (not max_ongoing_requests) and
		// the stats count this one.
		r.mu.Lock()
		r.settleLocked(took, failed)
		others := r.ongoing > 0
		r.mu.Unlock()
		settled = true
		r.loadChanged()
		r.met.processing.Dec()
		posted = true
		r.post(reply, others)
		return
	}
	if err := r.publishReply(reply); err != nil {
		log.Warn().Err(err).Msg("send reply")
		src.Close()
		return
	}
	// The request holds its slot until its caller has the body.
	if err := src.Serve(ctx); err != nil {
		log.Warn().Err(err).Int64("sent", src.Sent).Msg("stream response body")
	}
}

// outbox holds the replies of settled requests on their way out
// (Replica.post).
type outbox struct {
	mu      sync.Mutex
	pending []*nats.Msg // guarded by mu
	posting bool        // guarded by mu: a goroutine is publishing pending
}

// post sends the reply of a settled request and finishes the request: it
// leaves held and inflight once its reply went out. The goroutine that
// finds no other posting publishes: it yields once, so that the requests
// served beside it add their replies, and publishes every reply pending,
// back to back, until none is left. The NATS client's flusher then writes
// them to the socket together; published one at a time by each request's
// goroutine, which parks right after, each reply cost a write (a syscall
// and a wake-up of nats-server) of its own. With no other request in
// flight (others false) there is nobody to wait for: no yield.
func (r *Replica) post(reply *nats.Msg, others bool) {
	o := &r.out
	o.mu.Lock()
	o.pending = append(o.pending, reply)
	if o.posting {
		o.mu.Unlock()
		return
	}
	o.posting = true
	o.mu.Unlock()
	if others {
		runtime.Gosched()
	}
	var batch []*nats.Msg
	for {
		o.mu.Lock()
		batch, o.pending = o.pending, batch[:0]
		if len(batch) == 0 {
			o.posting = false
			o.mu.Unlock()
			return
		}
		o.mu.Unlock()
		for _, m := range batch {
			if err := r.publishReply(m); err != nil {
				r.log.Warn().Err(err).Str("reply", m.Subject).Msg("send reply")
			}
		}
		r.mu.Lock()
		for _, m := range batch {
			delete(r.held, m.Subject)
		}
		r.mu.Unlock()
		for i := range batch {
			batch[i] = nil
			r.inflight.Done()
		}
	}
}

// publishReply publishes reply (its Subject set); one too large for a
// NATS message is answered with a 500 instead, rather than leaving the
// caller waiting for its timeout.
func (r *Replica) publishReply(reply *nats.Msg) error {
	err := r.p.NC.PublishMsg(reply)
	if errors.Is(err, nats.ErrMaxPayload) {
		e := wire.ErrorMsg(http.StatusInternalServerError, protocol.ErrInternal,
			fmt.Sprintf("the response of %d bytes exceeds the NATS max_payload of %d bytes", len(reply.Data), r.p.NC.MaxPayload()))
		e.Subject = reply.Subject
		e.Header.Set(protocol.HdrReplica, r.id)
		err = r.p.NC.PublishMsg(e)
	}
	return err
}

// startSpan starts the server span of req, the child of its trace
// context, and makes req's Traceparent the span's, so that the handle
// calls the handler makes are its children.
func (r *Replica) startSpan(ctx context.Context, req *serve.Request) (context.Context, trace.Span) {
	if r.tracer == nil {
		return ctx, tracing.Off()
	}
	ctx, span := r.tracer.Start(tracing.Extract(ctx, req.Header), "serve "+r.app+"/"+r.dep,
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(tracing.AttrApp.String(r.app),
			tracing.AttrDeployment.String(r.dep), tracing.AttrReplica.String(r.id), tracing.AttrRequestID.String(req.RequestID)))
	if span.SpanContext().IsValid() {
		req.Header = req.Header.Clone()
		tracing.Inject(ctx, req.Header)
	}
	return ctx, span
}

// bodyObjectHdr and bodySourceHdr are protocol.HeaderBodyObject and
// HeaderBodySource as NATS headers.
const (
	bodyObjectHdr = protocol.HdrHTTPPrefix + protocol.HeaderBodyObject
	bodySourceHdr = protocol.HdrHTTPPrefix + protocol.HeaderBodySource
)

// takeHeader returns h's value of k and removes it.
func takeHeader(h http.Header, k string) string {
	v := h.Get(k)
	if v != "" {
		h.Del(k)
	}
	return v
}

// inlineLimit is the largest response body sent in the reply message.
func (r *Replica) inlineLimit() int64 { return wire.BodyLimit(0, r.p.NC.MaxPayload()) }

// loadBody reads req's body from the bodies object store (and deletes the
// object once read); it returns an error reply when it cannot.
func (r *Replica) loadBody(ctx context.Context, req *serve.Request, name string) *nats.Msg {
	if r.p.Bodies == nil {
		return wire.ErrorMsg(http.StatusServiceUnavailable, protocol.ErrUnavailable, "this worker has no bodies object store")
	}
	body, err := r.p.Bodies.Bytes(ctx, name)
	if err != nil {
		return wire.ErrorMsg(http.StatusServiceUnavailable, protocol.ErrUnavailable, err.Error())
	}
	req.Body = body
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := r.p.Bodies.Delete(dctx, name); err != nil {
		r.log.Debug().Err(err).Msg("delete request body object") // it expires
	}
	return nil
}

// pullBody pulls req's body in chunks from its caller's source (a
// protocol.HeaderBodySource value) into the one buffer the handler gets;
// it returns an error reply when it cannot (504 when the caller stalled,
// 503 otherwise).
func (r *Replica) pullBody(ctx context.Context, req *serve.Request, source string) *nats.Msg {
	body, err := wire.PullBody(ctx, r.p.NC, source, wire.MaxChunkedBody, r.p.BodyStall)
	if err != nil {
		return wire.EncodeError(wire.BodyError(err))
	}
	req.Body = body
	return nil
}

// chunkBody moves reply's body to a source its caller pulls it from
// (served once the reply went out); if that fails, the body stays, and the
// reply fails as too large for one message.
func (r *Replica) chunkBody(reply *nats.Msg, log zerolog.Logger) *wire.BodySource {
	src, err := wire.NewBodySource(r.p.NC, bytes.NewReader(reply.Data), int64(len(reply.Data)), r.p.BodyStall)
	if err != nil {
		log.Warn().Err(err).Msg("open response body source")
		return nil
	}
	src.PullWithin = src.Stall() // the caller pulls as soon as it has the reply
	reply.Header[bodySourceHdr] = []string{src.Header()}
	reply.Data = nil
	return src
}

// offloadBody moves reply's body to the bodies object store (the caller
// reads and deletes it); if that fails, the body stays, and the reply
// fails as too large for one message.
func (r *Replica) offloadBody(ctx context.Context, reply *nats.Msg) {
	name, err := r.p.Bodies.PutBytes(ctx, reply.Data)
	if err != nil {
		r.log.Warn().Err(err).Msg("store response body")
		return
	}
	reply.Header[bodyObjectHdr] = []string{name}
	reply.Data = nil
}

// invoke runs the handler (streaming when asked and supported) and returns
// the reply and whether the handler failed. A panic is a 500.
func (r *Replica) invoke(ctx context.Context, h serve.Handler, req *serve.Request, inbox string, chunks func(*nats.Msg) error) (*nats.Msg, bool) {
	reply, failed, err := r.call(ctx, h, req, inbox, chunks)
	if pe := (*panics.Error)(nil); errors.As(err, &pe) {
		r.log.Error().Interface("panic", pe.Value).Str("request_id", req.RequestID).Msg("handler panicked")
		return wire.ErrorMsg(http.StatusInternalServerError, protocol.ErrInternal, err.Error()), true
	}
	return reply, failed
}

// call runs the handler; a panic is returned as a *panics.Error.
func (r *Replica) call(ctx context.Context, h serve.Handler, req *serve.Request, inbox string, chunks func(*nats.Msg) error) (reply *nats.Msg, failed bool, err error) {
	defer panics.Recover("handler", &err)
	if sh, ok := h.(serve.StreamHandler); ok && (inbox != "" || chunks != nil) {
		w := wire.NewStreamWriter(r.p.NC, inbox)
		if chunks != nil {
			w = wire.NewLocalStreamWriter(chunks)
		}
		herr := sh.ServeStream(ctx, req, w)
		return w.Finish(herr), herr != nil, nil
	}
	resp, herr := h.ServeRequest(ctx, req)
	if herr != nil {
		return wire.EncodeError(herr), true, nil
	}
	if resp == nil {
		resp = &serve.Response{Status: http.StatusOK}
	}
	return wire.EncodeResponse(resp), false, nil
}

// onHealth answers a health check: the handler's CheckHealth if it has
// one, bounded by the requester's deadline.
func (r *Replica) onHealth(msg *nats.Msg) {
	ctx, cancel := context.WithTimeout(r.work, DefaultHealthTimeout)
	defer cancel()
	if dl, ok := wire.Deadline(msg); ok {
		var c context.CancelFunc
		ctx, c = context.WithDeadline(ctx, dl)
		defer c()
	}
	r.mu.Lock()
	h := r.handler
	r.mu.Unlock()
	var err error
	if hc, ok := h.(serve.HealthChecker); ok {
		err = checkHealth(ctx, hc)
	}
	if err != nil {
		m := wire.EncodeError(err)
		m.Header.Set(protocol.HdrReplica, r.id)
		e := serve.AsError(err)
		if rerr := microsvc.Error(msg, strconv.Itoa(e.Status), string(e.Code), m.Data, m.Header); rerr != nil {
			r.log.Warn().Err(rerr).Msg("send health reply")
		}
		return
	}
	if err := msg.RespondMsg(&nats.Msg{Header: nats.Header{protocol.HdrReplica: {r.id}, protocol.HdrStatus: {"200"}}}); err != nil {
		r.log.Warn().Err(err).Msg("send health reply")
	}
}

func checkHealth(ctx context.Context, hc serve.HealthChecker) (err error) {
	defer panics.Recover("health check", &err)
	return hc.CheckHealth(ctx)
}
