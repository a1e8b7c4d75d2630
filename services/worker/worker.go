// Package worker is jetserve's replica worker: one per machine or pod. It
// advertises the machine (CPU, memory, GPUs, labels and the handlers its
// serve.Registry holds) in the Workers bucket, watches its key in the
// Assignments bucket and converges the replicas it runs to that
// assignment: new replicas start, removed ones drain and stop, and a change
// of only user_config (or limits) is applied in place through
// serve.Reconfigurer — a handler without it is restarted. A replica whose
// deployment has async methods also runs a jobs.Runner while it is
// RUNNING (internal/replica); a change of the deployment's async_methods
// replaces that runner in place. The worker advertises its handlers' async
// methods (SDK defaults) in its WorkerInfo and records them in the
// Handlers bucket, where they outlive it.
//
// The handles of the replicas call other deployments through a router
// embedded in the worker (pkg/routing, one per worker, following the fleet
// as the ingress's does): a call goes straight to the chosen replica, and
// to a replica of this worker — preferred when no more loaded — without
// NATS, through its admission (CallLocal). A constructor that takes a
// handle to a name that is not a deployment of its application makes the
// replica FAILED, naming it.
//
// Run owns every goroutine it starts: one loop that heartbeats and
// converges (the only writer of the replica set), the embedded router's
// follower and the replicas' own (see internal/replica). When ctx ends the
// worker marks itself draining, drains every replica, deletes its record,
// then stops the router (the draining replicas' handles use it) and
// returns.
package worker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/kvfollow"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provenance"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/secrets"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/pkg/tracing"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/worker/internal/gpu"
	"github.com/jetserve/jetserve/services/worker/internal/host"
	"github.com/jetserve/jetserve/services/worker/internal/process"
	"github.com/jetserve/jetserve/services/worker/internal/replica"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"
)

// kvTimeout bounds one write to a bucket.
const kvTimeout = 5 * time.Second

// reconfigureTimeout bounds a handler's Reconfigure.
const reconfigureTimeout = 30 * time.Second

// Run runs the worker until ctx ends, then drains it. reg holds the
// deployments this worker can run.
func Run(ctx context.Context, cfg Config, deps service.Deps, reg *serve.Registry) error {
	if reg == nil {
		return errors.New("worker: a serve.Registry is required")
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	if cfg.NATS.Creds != "" {
		// A per-worker user may serve its own worker id only: the
		// permissions name its keys.
		own, err := provenance.OwnWorkerID(cfg.NATS.Creds)
		if err != nil {
			return fmt.Errorf("nats.creds: %w", err)
		}
		switch {
		case own == "":
		case cfg.ID == "":
			cfg.ID = own
		case cfg.ID != own:
			return fmt.Errorf("id %q: the NATS user of nats.creds is worker %q's (per-worker credentials serve their own worker id only)", cfg.ID, own)
		}
	}
	fleet, cleanup, err := deps.Bind(ctx, cfg.Common, "jetserve-worker")
	defer cleanup()
	if err != nil {
		return err
	}
	names, js, buckets := fleet.Names, fleet.JS, fleet.Buckets
	// Deployment code gets a connection of its own, allowed handle calls
	// only, when deployment_creds says which.
	userNC := deps.NC
	if cfg.DeploymentCreds != "" {
		dc := cfg.NATS
		dc.Creds = cfg.DeploymentCreds
		unc, err := service.Connect(ctx, dc, "deployment", deps.Log.With().Str("conn", "deployment").Logger())
		if err != nil {
			return fmt.Errorf("deployment_creds: %w", err)
		}
		defer unc.Close()
		userNC = unc
	}
	// Its registration and replica records are signed as its NATS user.
	var signer *provenance.Signer
	if cfg.NATS.Creds != "" {
		if signer, err = provenance.LoadSigner(cfg.NATS.Creds); err != nil {
			return fmt.Errorf("nats.creds: %w", err)
		}
	}
	var verifier *provenance.Verifier
	if cfg.NATS.Creds != "" && cfg.AssignmentWriter != "" {
		if verifier, err = provenance.LoadVerifier(cfg.NATS.Creds, cfg.AssignmentWriter); err != nil {
			return fmt.Errorf("nats.creds: %w", err)
		}
	}
	metrics, err := replica.NewMetrics(deps.Metrics)
	if err != nil {
		return err
	}
	sdkMetrics, err := serve.NewMetrics(deps.Metrics)
	if err != nil {
		return err
	}
	jobMetrics, err := jobs.NewMetrics(deps.Metrics)
	if err != nil {
		return err
	}
	info, err := describe(ctx, cfg, reg, deps.Log)
	if err != nil {
		return err
	}
	bodies, err := service.BindBodies(ctx, deps.Log, js, names)
	if err != nil {
		return err
	}
	local := newLocalReplicas()
	var caller serve.Caller = wire.NewCaller(deps.NC, names)
	var router *routing.Embedded
	if cfg.Router == RouterEmbedded {
		router, err = routing.NewEmbedded(routing.EmbeddedOptions{
			Options: routing.Options{NC: deps.NC, Names: names, Log: deps.Log.With().Str("worker_id", info.ID).Logger(),
				Liveness: cfg.Liveness, Local: local.lookup, Tracer: tracing.Tracer(deps.Tracer)},
			Registry: deps.Metrics, Buckets: buckets, ID: "worker-" + info.ID, Creds: cfg.NATS.Creds,
		})
		if err != nil {
			return err
		}
		caller = router.NewCaller()
		deps.Health.Add("router", router.Ready)
	}
	w := &worker{
		cfg:          cfg,
		nc:           deps.NC,
		userNC:       userNC,
		verifier:     verifier,
		signer:       signer,
		secrets:      secrets.Dir(cfg.SecretsDir),
		js:           js,
		bodies:       bodies,
		names:        names,
		buckets:      buckets,
		reg:          reg,
		metrics:      metrics,
		sdk:          sdkMetrics,
		tracer:       tracing.Tracer(deps.Tracer),
		jobMetrics:   jobMetrics,
		caller:       caller,
		local:        local,
		log:          deps.Log.With().Str("worker_id", info.ID).Logger(),
		info:         info,
		natsReplicas: cfg.NATS.Replicas,
		replicas:     map[string]*replica.Replica{},
		stopping:     map[string]*replica.Replica{},
	}
	g, gctx := errgroup.WithContext(ctx)
	// The router outlives the replicas: a draining replica's handles use it.
	rctx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRouter()
	if router != nil {
		g.Go(func() error { return router.Run(rctx) })
	}
	g.Go(func() error { return deps.ServeOps(gctx, cfg.OpsAddr) })
	g.Go(func() error {
		defer stopRouter()
		err := w.run(gctx)
		if router != nil {
			// The replicas are gone: nothing is left to answer.
			router.Close()
		}
		return err
	})
	return g.Wait()
}

// describe builds the worker's registration from the config and the machine.
func describe(ctx context.Context, cfg Config, reg *serve.Registry, log zerolog.Logger) (protocol.WorkerInfo, error) {
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "worker"
	}
	id := cfg.ID
	if id == "" {
		id, err = GenerateID(hostname)
		if err != nil {
			return protocol.WorkerInfo{}, err
		}
	}
	lim, err := host.ReadCgroupLimits("/")
	if err != nil {
		log.Warn().Err(err).Msg("cannot read the cgroup's limits; advertising the machine's CPU and memory")
	}
	cpu := cfg.Resources.CPU
	if cpu == 0 {
		cpu = host.AvailableCPU(runtime.NumCPU(), lim)
	}
	var mem int64
	if cfg.Resources.Memory != "" {
		b, err := config.ParseBytes(cfg.Resources.Memory)
		if err != nil {
			return protocol.WorkerInfo{}, fmt.Errorf("resources.memory: %w", err)
		}
		mem = int64(b)
	} else {
		if mem, err = host.MemTotal(host.MemInfoPath); err != nil && lim.Memory == 0 {
			log.Warn().Err(err).Msg("cannot read the machine's memory; advertising 0 (set resources.memory)")
		}
		mem = host.AvailableMemory(mem, lim)
	}
	log.Debug().Float64("cgroup_cpu", lim.CPU).Int64("cgroup_memory_bytes", lim.Memory).Int("num_cpu", runtime.NumCPU()).
		Msg("machine and cgroup limits read")
	gpus, err := cfg.declaredGPUs()
	if err != nil {
		return protocol.WorkerInfo{}, err
	}
	if cfg.GPUDetect == GPUDetectAuto {
		found, err := gpu.Detect(ctx, cfg.NvidiaSMI)
		switch {
		case errors.Is(err, gpu.ErrNotFound):
			log.Debug().Msg("nvidia-smi not found: advertising the declared GPUs")
		case err != nil:
			log.Warn().Err(err).Msg("GPU detection failed: advertising the declared GPUs")
		case len(found) > 0:
			gpus = found
		}
	}
	labels, err := ParseLabels(cfg.Labels)
	if err != nil {
		return protocol.WorkerInfo{}, fmt.Errorf("labels: %w", err)
	}
	if len(labels) == 0 {
		labels = nil
	}
	return protocol.WorkerInfo{
		ID:          id,
		Host:        hostname,
		CPU:         cpu,
		MemoryBytes: mem,
		GPUs:        gpus,
		Labels:      labels,
		Handlers:    reg.Names(),
		Runtimes:    runtimes(cfg),
		Async:       asyncMethods(reg),
		StartedAt:   time.Now().UTC(),
	}, nil
}

// runtimes lists the replica runtimes the worker runs.
func runtimes(cfg Config) []string {
	if cfg.ProcessRuntime {
		return []string{config.RuntimeGo, config.RuntimeProcess}
	}
	return []string{config.RuntimeGo}
}

// asyncMethods lists the SDK defaults of every handler with async methods.
func asyncMethods(reg *serve.Registry) map[string][]config.AsyncMethod {
	var out map[string][]config.AsyncMethod
	for _, h := range reg.Names() {
		if ms := reg.AsyncMethods(h); len(ms) > 0 {
			if out == nil {
				out = map[string][]config.AsyncMethod{}
			}
			out[h] = ms
		}
	}
	return out
}

// GenerateID makes a worker id from a host name: its first label, cleaned
// to [A-Za-z0-9_-], plus a random 6-hex-digit suffix.
func GenerateID(hostname string) (string, error) {
	base, _, _ := strings.Cut(hostname, ".")
	base = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, base)
	if len(base) > 50 {
		base = base[:50]
	}
	if base == "" {
		base = "worker"
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("worker id: %w", err)
	}
	return base + "-" + hex.EncodeToString(b[:]), nil
}

type worker struct {
	cfg Config
	nc  *nats.Conn
	// userNC is what deployment code gets (serve.Init.NC).
	userNC *nats.Conn
	// secrets resolves "${secret:NAME}" references.
	secrets secrets.Lookup
	// verifier, if set, admits only assignments signed by the scheduler
	// user of the worker's own account.
	verifier *provenance.Verifier
	// signer signs the registration and the replicas' records (nil
	// without credentials).
	signer  *provenance.Signer
	js      jetstream.JetStream
	names   protocol.Names
	buckets *fleetstate.Buckets
	reg     *serve.Registry
	metrics *replica.Metrics
	sdk     *serve.Metrics
	tracer  trace.Tracer
	// jobMetrics count every replica's job attempts and outcomes.
	jobMetrics *jobs.Metrics
	caller     serve.Caller
	// local are the replicas the embedded router calls in-process.
	local *localReplicas
	log   zerolog.Logger
	info  protocol.WorkerInfo // owned by run
	// bodies holds bodies too large for one NATS message.
	bodies *wire.Bodies
	// natsReplicas is the replica count of the job state runners create.
	natsReplicas int

	// Owned by run (one goroutine); no lock.
	handlersPut bool                        // the Handlers bucket holds this registry's handlers
	replicas    map[string]*replica.Replica // running or starting, by id
	stopping    map[string]*replica.Replica // draining, by id, until Done
	epoch       uint64                      // highest leader epoch applied (fencing)
}

// run heartbeats, watches the assignment and converges until ctx ends,
// then drains.
func (w *worker) run(ctx context.Context) error {
	w.putInfo()
	w.putHandlers()
	w.log.Info().Strs("handlers", w.info.Handlers).Float64("cpu", w.info.CPU).
		Int64("memory_bytes", w.info.MemoryBytes).Int("gpus", len(w.info.GPUs)).Msg("worker registered")
	hb := time.NewTicker(fleetstate.HeartbeatInterval)
	defer hb.Stop()

	// The assignment is followed with kvfollow (re-read at once after a
	// NATS reconnect) by a goroutine run owns; the replicas belong to
	// this one, which reads the assignment when it changed.
	assignment := kvfollow.New(w.nc, w.buckets.Assignments, kvfollow.Options[protocol.Assignment]{
		// Pushed to its inbox: a worker may not pull from the
		// assignments' stream (deploy/auth), so none pulls from another's
		// consumer. A worker's user under deploy/auth (pool or per-worker)
		// may not read the assignments from their stream's leader either:
		// that read names the key in its body, which no permission can
		// scope to its own.
		Keys: []string{protocol.AssignmentKey(w.info.ID)}, Log: w.log, Push: true,
		TrustReplica: w.cfg.NATS.Creds != ""})
	// The worker's record is refreshed by a goroutine of its own
	// (fleetstate.Beat), so that a put waiting out a JetStream election
	// never holds up an assignment, and a failed one is retried soon.
	fctx, stopFollow := context.WithCancel(ctx)
	var g errgroup.Group
	g.Go(func() error { return assignment.Run(fctx) })
	g.Go(func() error {
		fleetstate.Beat(fctx, w.nc, fleetstate.HeartbeatInterval, func(ctx context.Context) error {
			err := w.putInfoCtx(ctx)
			if err != nil {
				w.log.Warn().Err(err).Msg("heartbeat")
			}
			w.putHandlers()
			return err
		})
		return nil
	})
	stop := func() {
		stopFollow()
		_ = g.Wait()
	}
	defer stop()
	for {
		select {
		case <-ctx.Done():
			stop() // the heartbeat goroutine is done with w.info
			return w.shutdown()
		case <-hb.C:
			w.forgetStopped()
		case <-assignment.Changed():
			a, ok := assignment.Get(protocol.AssignmentKey(w.info.ID))
			w.apply(ctx, a, ok)
		}
	}
}

// apply converges to assignment a; none (deleted) runs nothing.
func (w *worker) apply(ctx context.Context, a protocol.Assignment, ok bool) {
	if ok && w.verifier != nil {
		if _, err := w.verifier.VerifyAssignment(a); err != nil {
			w.log.Error().Err(err).Uint64("epoch", a.Epoch).
				Msg("assignment refused: not signed by the scheduler of this worker's account")
			return
		}
	}
	if ok && a.Epoch > w.epoch {
		// A higher epoch than any seen: it must be a real lease revision.
		// Every scheduler epoch is a sequence of the leases bucket's
		// stream, so an epoch beyond its last sequence was never a
		// leader's (a forged 2^60 would otherwise wedge the worker:
		// every later real assignment would look stale).
		bound, err := w.leaseBound(ctx)
		switch {
		case err != nil:
			// Unverifiable now: apply it, but do not let it raise the
			// fence (the permissions keep forgers out; this is depth).
			w.log.Warn().Err(err).Uint64("epoch", a.Epoch).Msg("cannot read the leases bucket to check the assignment's epoch")
			w.converge(ctx, a.Replicas)
			return
		case a.Epoch > bound:
			w.log.Error().Uint64("epoch", a.Epoch).Uint64("lease_revision", bound).
				Msg("assignment refused: its epoch is beyond every scheduler lease ever granted (forged)")
			return
		}
	}
	if ok && a.Epoch < w.epoch {
		// A scheduler that lost its lease wrote once more: a newer leader
		// already spoke, so its word stands.
		w.log.Warn().Uint64("epoch", a.Epoch).Uint64("current_epoch", w.epoch).Msg("assignment from a stale leader ignored")
		return
	}
	w.epoch = max(w.epoch, a.Epoch)
	w.log.Debug().Uint64("epoch", a.Epoch).Int("replicas", len(a.Replicas)).Msg("assignment")
	w.converge(ctx, a.Replicas)
}

// leaseBound is the leases bucket's last revision: no scheduler epoch
// (the revision of its lease) can exceed it.
func (w *worker) leaseBound(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := w.buckets.Leases.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("leases bucket status: %w", err)
	}
	kst, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || kst.StreamInfo() == nil {
		return 0, errors.New("leases bucket status without stream info")
	}
	return kst.StreamInfo().State.LastSeq, nil
}

// converge makes the running set equal to want.
func (w *worker) converge(ctx context.Context, want []protocol.ReplicaSpec) {
	w.forgetStopped()
	desired := make(map[string]protocol.ReplicaSpec, len(want))
	for _, s := range want {
		if s.ID == "" {
			w.log.Error().Str("app", s.App).Str("deployment", s.Deployment).Msg("replica spec without id ignored")
			continue
		}
		desired[s.ID] = s
	}
	for id, r := range w.replicas {
		if _, ok := desired[id]; !ok {
			w.log.Info().Str("replica_id", id).Msg("replica removed from assignment: draining")
			w.stopReplica(r)
		}
	}
	for id, next := range desired {
		r, ok := w.replicas[id]
		if !ok {
			w.startReplica(next)
			continue
		}
		cur := r.Spec()
		if replica.SameSpec(cur, next) {
			continue
		}
		if replica.InPlace(cur, next) {
			rctx, cancel := context.WithTimeout(ctx, reconfigureTimeout)
			err := r.Reconfigure(rctx, next)
			cancel()
			if err == nil {
				continue
			}
			w.log.Info().Str("replica_id", id).Err(err).Msg("restarting replica to apply its new config")
		} else {
			w.log.Info().Str("replica_id", id).Str("version", next.Version).Msg("replica spec changed: restarting")
		}
		w.stopReplica(r)
		w.startReplica(next)
	}
}

func (w *worker) stopReplica(r *replica.Replica) {
	r.Stop()
	delete(w.replicas, r.ID())
	w.stopping[r.ID()] = r
}

// signReplica signs a replica record as the worker's NATS user; nil
// without credentials.
func (w *worker) signReplica(r *protocol.ReplicaInfo) error {
	if w.signer == nil {
		return nil
	}
	return w.signer.SignReplica(r)
}

// startReplica starts s; if a replica with the same id is still draining
// the new one waits for it.
func (w *worker) startReplica(s protocol.ReplicaSpec) {
	var after <-chan struct{}
	if old, ok := w.stopping[s.ID]; ok {
		after = old.Done()
	}
	p := replica.Params{
		NC:          w.nc,
		Names:       w.names,
		Records:     w.buckets.Replicas,
		Sign:        w.signReplica,
		WorkerID:    w.info.ID,
		Spec:        s,
		Bodies:      w.bodies,
		Caller:      w.caller,
		Deployments: w.deployments,
		Uses:        w.uses,
		Log:         w.log,
		Metrics:     w.metrics,
		SDKMetrics:  w.sdk,
		Tracer:      w.tracer,
		After:       after,
		UserNC:      w.userNC,
		BodyStall:   w.cfg.BodyStallTimeout,
		ResolveConfig: func(uc json.RawMessage) (json.RawMessage, error) {
			return secrets.ResolveJSON(uc, w.secrets)
		},
	}
	if s.IsProcess() {
		p.Ctor = w.processCtor(s)
	} else {
		p.Ctor, _ = w.reg.Lookup(s.Handler) // nil: the replica reports it in its record
		p.Jobs = &replica.JobsParams{
			JS:        w.js,
			Names:     jobs.Names{Names: w.names},
			SDK:       w.reg.AsyncMethods(s.Handler),
			Workflows: w.reg.Workflows(s.Handler),
			Replicas:  w.natsReplicas,
			Metrics:   w.jobMetrics,
			// The scheduler creates the job streams (its user may; a
			// worker's may not: deploy/auth).
			Bind: true,
		}
	}
	r := replica.Start(p)
	w.local.put(r)
	w.replicas[s.ID] = r
	// The new replica now stands for the id: it waits for the old one, so
	// a later restart waiting for it waits for both.
	delete(w.stopping, s.ID)
}

// processCtor returns the constructor of a process-runtime replica: it
// starts the child (package process), and the Child is the handler. A
// start that fails makes the replica FAILED with the reason.
func (w *worker) processCtor(s protocol.ReplicaSpec) serve.Constructor {
	return func(ctx context.Context, init serve.Init) (serve.Handler, error) {
		ps := s.Process
		switch {
		case !w.cfg.ProcessRuntime:
			return nil, fmt.Errorf("%w: the process runtime is off on worker %s (process_runtime: false)", replica.ErrFailed, w.info.ID)
		case ps == nil:
			return nil, fmt.Errorf("%w: runtime process without a process spec", replica.ErrFailed)
		}
		env, err := secrets.ResolveEnv(ps.Env, w.secrets)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", replica.ErrFailed, err)
		}
		c, err := process.Start(ctx, process.Options{
			Command:        ps.Command,
			BaseEnv:        w.cfg.ChildEnv,
			Env:            env,
			Port:           ps.Port,
			HealthPath:     ps.HealthPath,
			StartupTimeout: ps.StartupTimeout.D(),
			StopTimeout:    s.GracefulShutdownTimeout.D(),
			MaxConns:       s.MaxOngoingRequests,
			ReplicaID:      init.ReplicaID,
			GPUs:           init.GPUs,
			UserConfig:     init.UserConfig,
			Log:            init.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", replica.ErrFailed, err)
		}
		return c, nil
	}
}

// forgetStopped drops replicas that finished draining.
func (w *worker) forgetStopped() {
	for id, r := range w.stopping {
		select {
		case <-r.Done():
			delete(w.stopping, id)
			w.local.remove(r)
		default:
		}
	}
}

func (w *worker) putInfo() {
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	if err := w.putInfoCtx(ctx); err != nil {
		w.log.Warn().Err(err).Msg("put worker info")
	}
}

// putInfoCtx writes the worker's record with a fresh heartbeat.
func (w *worker) putInfoCtx(ctx context.Context) error {
	w.info.Heartbeat = time.Now().UTC()
	if w.signer != nil {
		if err := w.signer.SignWorker(&w.info); err != nil {
			return fmt.Errorf("sign worker info: %w", err)
		}
	}
	b, err := json.Marshal(w.info)
	if err != nil {
		return fmt.Errorf("encode worker info: %w", err)
	}
	if _, err := w.buckets.Workers.Put(ctx, protocol.WorkerKey(w.info.ID), b); err != nil {
		return fmt.Errorf("put worker info: %w", err)
	}
	return nil
}

// putHandlers records, once, what the code of each registered handler
// declares (its async methods' SDK defaults) in the Handlers bucket, where
// it outlives this worker: the ingress serves the job endpoints of a
// deployment no worker runs, and a job submitted then is queued. A key
// already holding the same declaration is left alone. Failures are retried
// on the next heartbeat.
func (w *worker) putHandlers() {
	if w.handlersPut {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	for _, name := range w.reg.Names() {
		h := protocol.HandlerInfo{Handler: name, Async: w.reg.AsyncMethods(name), Worker: w.info.ID, UpdatedAt: time.Now().UTC()}
		key := protocol.HandlerKey(name)
		if e, err := w.buckets.Handlers.Get(ctx, key); err == nil {
			var cur protocol.HandlerInfo
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Handler == name && sameJSON(cur.Async, h.Async) {
				continue
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			w.log.Warn().Err(err).Str("handler", name).Msg("read handler declaration; retrying")
			return
		}
		b, err := json.Marshal(h)
		if err != nil {
			w.log.Error().Err(err).Str("handler", name).Msg("encode handler declaration")
			return
		}
		if _, err := w.buckets.Handlers.Put(ctx, key, b); err != nil {
			w.log.Warn().Err(err).Str("handler", name).Msg("put handler declaration; retrying")
			return
		}
		w.log.Debug().Str("handler", name).Int("async_methods", len(h.Async)).Msg("handler declaration recorded")
	}
	w.handlersPut = true
}

func sameJSON(a, b any) bool {
	x, errA := json.Marshal(a)
	y, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(x, y)
}

// shutdown marks the worker draining, drains every replica (heartbeating
// meanwhile so the record does not expire) and deletes the record.
func (w *worker) shutdown() error {
	w.info.Draining = true
	w.putInfo()
	w.log.Info().Int("replicas", len(w.replicas)).Msg("worker draining")
	for _, r := range w.replicas {
		w.stopReplica(r)
	}
	hb := time.NewTicker(fleetstate.HeartbeatInterval)
	defer hb.Stop()
	for _, r := range w.stopping {
		for waiting := true; waiting; {
			select {
			case <-r.Done():
				waiting = false
			case <-hb.C:
				w.putInfo()
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	if err := w.buckets.Workers.Delete(ctx, protocol.WorkerKey(w.info.ID)); err != nil {
		w.log.Warn().Err(err).Msg("delete worker info")
	}
	w.log.Info().Msg("worker stopped")
	return nil
}
