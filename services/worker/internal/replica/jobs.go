package replica

import (
	"context"

	"github.com/jetserve/jetserve/pkg/backoff"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/nats-io/nats.go/jetstream"
)

// JobsParams let a replica run its deployment's async methods: once the
// replica is RUNNING it starts a jobs.Runner (slots =
// max_ongoing_requests, handler = the replica's handler as a
// serve.JobHandler); on stop the runner stops pulling first, and its
// running jobs get the graceful shutdown timeout to finish before they are
// cancelled and handed back to the queue (another replica resumes them).
type JobsParams struct {
	JS    jetstream.JetStream
	Names jobs.Names
	// Methods returns the deployment's effective async methods (none: no
	// runner). It is called once the replica runs.
	Methods func(ctx context.Context) ([]config.AsyncMethod, error)
	// Replicas of the job streams and buckets the runner ensures.
	Replicas int
	// Metrics, if not nil, counts the runner's attempts and outcomes.
	Metrics *jobs.Metrics
}

// jobRun is a replica's running jobs.Runner (or the attempt to start
// one): it pulls until the replica's lifetime ends and its running jobs
// are handed back when the replica's work context ends (the graceful
// shutdown timeout passed).
type jobRun struct {
	done chan struct{} // closed when the runner has returned
}

// startJobs starts the job runner of h in the background; nil when the
// replica has no job parameters.
func (r *Replica) startJobs(h serve.Handler) *jobRun {
	if r.p.Jobs == nil {
		return nil
	}
	jr := &jobRun{done: make(chan struct{})}
	go func() {
		defer close(jr.done)
		r.runJobs(h)
	}()
	return jr
}

// runJobs looks up the methods and runs the runner until the replica's
// lifetime ends, retrying with backoff when either fails.
func (r *Replica) runJobs(h serve.Handler) {
	ctx := r.life
	b := backoff.New(firstBackoff, MaxBackoff)
	for {
		methods, err := r.p.Jobs.Methods(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.log.Error().Err(err).Msg("look up async methods; retrying")
			if !b.Wait(ctx) {
				return
			}
			continue
		}
		if len(methods) == 0 {
			return
		}
		jh, ok := h.(serve.JobHandler)
		if !ok {
			r.log.Error().Msg("the deployment has async methods but its handler does not implement serve.JobHandler: no jobs run here")
			return
		}
		r.mu.Lock()
		s := r.spec
		r.mu.Unlock()
		names := make([]string, len(methods))
		for i, m := range methods {
			names[i] = m.Name
		}
		runner := jobs.NewRunner(r.p.NC, r.p.Jobs.JS, r.p.Jobs.Names, jobs.RunnerConfig{
			App: s.App, Deployment: s.Deployment, Worker: r.p.WorkerID, Replica: s.ID,
			Slots: s.MaxOngoingRequests, Methods: methods, Handler: jh, Log: r.p.Log, Replicas: r.p.Jobs.Replicas,
			Metrics: r.p.Jobs.Metrics,
		})
		stopAbort := context.AfterFunc(r.work, runner.Abort) // the graceful shutdown timeout passed
		r.log.Info().Strs("async_methods", names).Int("slots", s.MaxOngoingRequests).Msg("job runner started")
		err = runner.Run(ctx)
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
