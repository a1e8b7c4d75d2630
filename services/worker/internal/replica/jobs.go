package replica

import (
	"context"
	"slices"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go/jetstream"
)

// JobsParams let a replica run its deployment's async methods: once the
// replica is RUNNING it starts a jobs.Runner (slots =
// max_ongoing_requests, handler = the replica's handler as a
// serve.JobHandler) for the effective methods — the spec's async_methods
// merged over SDK. When the spec's async_methods change in place, the
// runner stops pulling and a new one starts with the new methods; the old
// one's running jobs go on, and the new one pulls only for the slots they
// leave free (jobs.Slots). On stop the runners stop pulling first, and
// their running jobs get the graceful shutdown timeout to finish before
// they are cancelled and handed back to the queue (another replica
// resumes them). The runner carries the replica's version: workflow runs
// pinned to another version are handed back, and a pinned-only replica
// (ReplicaSpec.PinnedOnly, set in place like async_methods) runs only the
// runs pinned to its own.
type JobsParams struct {
	JS    jetstream.JetStream
	Names jobs.Names
	// SDK are the async methods the handler registered, with their SDK
	// defaults (none, and none in the spec: no runner).
	SDK []config.AsyncMethod
	// Workflows are the workflows the handler registered (WithWorkflows):
	// their runs are jobs the SDK runs, journaled in JetStream.
	Workflows []*serve.WorkflowDef
	// Replicas of the job streams and buckets the runner ensures.
	Replicas int
	// Metrics, if not nil, counts the runner's attempts and outcomes.
	Metrics *jobs.Metrics
	// Bind: the runner only binds to the job streams, which the
	// scheduler creates (jobs.RunnerConfig.Bind).
	Bind bool
}

// needsJobHandler reports whether some method is not a workflow.
func needsJobHandler(ms []config.AsyncMethod) bool {
	for _, m := range ms {
		if !m.Workflow {
			return true
		}
	}
	return false
}

// jobRun is one of a replica's jobs.Runners (or the attempt to start
// one): it pulls until its own context ends — the replica's lifetime, or a
// replacement after an in-place async_methods change — and its running
// jobs are handed back when the replica's work context ends (the graceful
// shutdown timeout passed).
type jobRun struct {
	stop context.CancelFunc // stops pulling; running jobs go on
	done chan struct{}      // closed when the runner has returned
}

// startJobsLocked starts a job runner of h in the background, the
// replica's current one (r.mu held); nothing when the replica has no job
// parameters. Runs that finished are forgotten.
func (r *Replica) startJobsLocked(h serve.Handler) {
	if r.p.Jobs == nil {
		return
	}
	r.jobRuns = slices.DeleteFunc(r.jobRuns, func(jr *jobRun) bool {
		select {
		case <-jr.done:
			return true
		default:
			return false
		}
	})
	ctx, stop := context.WithCancel(r.life)
	jr := &jobRun{stop: stop, done: make(chan struct{})}
	r.jobRuns = append(r.jobRuns, jr)
	go func() {
		defer close(jr.done)
		defer stop()
		r.runJobs(ctx, h)
	}()
}

// restartJobsLocked replaces the current job runner (r.mu held): the old
// one stops pulling, its running jobs go on, and a new one starts with the
// spec's async methods.
func (r *Replica) restartJobsLocked(h serve.Handler) {
	if n := len(r.jobRuns); n > 0 {
		r.jobRuns[n-1].stop()
	}
	r.startJobsLocked(h)
}

// runJobs runs a runner for the spec's effective methods, pulling until
// ctx ends, retrying with backoff when it fails.
func (r *Replica) runJobs(ctx context.Context, h serve.Handler) {
	b := backoff.New(firstBackoff, MaxBackoff)
	for {
		r.mu.Lock()
		s := r.spec
		r.mu.Unlock()
		methods := serve.EffectiveAsync(r.p.Jobs.SDK, s.AsyncMethods)
		if len(methods) == 0 {
			return
		}
		jh := serve.WorkflowJobs(h, r.p.Jobs.Workflows, serve.Handles(r.p.Caller, s.App))
		if _, plain := h.(serve.JobHandler); !plain && needsJobHandler(methods) {
			jh = nil
		}
		if jh == nil {
			r.log.Error().Msg("the deployment has async methods but its handler does not implement serve.JobHandler: no jobs run here")
			return
		}
		names := make([]string, len(methods))
		for i, m := range methods {
			names[i] = m.Name
		}
		runner := jobs.NewRunner(r.p.NC, r.p.Jobs.JS, r.p.Jobs.Names, jobs.RunnerConfig{
			App: s.App, Deployment: s.Deployment, Worker: r.p.WorkerID, Replica: s.ID,
			Slots: s.MaxOngoingRequests, Shared: r.slots, Methods: methods, Handler: jh, Log: r.p.Log,
			Replicas: r.p.Jobs.Replicas, Metrics: r.p.Jobs.Metrics, Tracer: r.tracer, Bind: r.p.Jobs.Bind,
			Version: s.Version, PinnedOnly: s.PinnedOnly,
		})
		stopAbort := context.AfterFunc(r.work, runner.Abort) // the graceful shutdown timeout passed
		r.log.Info().Strs("async_methods", names).Int("slots", s.MaxOngoingRequests).Str("config_version", s.ConfigVersion()).
			Bool("pinned_only", s.PinnedOnly).Msg("job runner started")
		err := runner.Run(ctx)
		stopAbort()
		if ctx.Err() != nil {
			return
		}
		r.log.Error().Err(err).Msg("job runner stopped; restarting")
		if !b.Wait(ctx) {
			return
		}
	}
}
