package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/nats-io/nats.go/jetstream"
)

// Workflow runs pinned to a deployment version. A runner with a version
// (RunnerConfig.Version) records it in every job it claims; a run of a
// pinned workflow (config.AsyncMethod.Pinned) is pinned to the version of
// the replica that claimed its first attempt, for the method's
// pinned_for (Record.PinnedTo). A runner of another version hands such a
// run's message back (claimElsewhere: a nak with a delay) until a replica
// of the run's version pulls it; a pinned-only runner (a replica the
// scheduler keeps after a rolling update) runs nothing else. The
// scheduler reads PinnedRuns to keep one replica of each version that has
// any, and asks (RequestUnpin) for the runs of a version it no longer
// runs to be unpinned (its kept replica was lost, or gave way to a
// rollout lacking room): a runner of the workflow (Names.UnpinSubject,
// queue group "unpin") writes the record (Unpin), and the run then runs
// on whichever version takes it. The scheduler writes no job record.

// PinnedRun is a live workflow run pinned to a deployment version.
type PinnedRun struct {
	Method, ID, Deployment, Version string
}

// PinnedRuns lists app's live workflow runs pinned to a version at now.
// It reads every record of every workflow of app (one watch per records
// bucket): the scheduler calls it only while a deployment of app has
// replicas of an earlier version.
func (q *Queue) PinnedRuns(ctx context.Context, app string, now time.Time) ([]PinnedRun, error) {
	prefix := q.names.Stream(app, "")
	var methods []string
	names := q.js.StreamNames(ctx)
	for name := range names.Name() {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		s, err := q.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pinned runs of %s: %w", app, err)
		}
		var m config.AsyncMethod
		if json.Unmarshal([]byte(s.CachedInfo().Config.Metadata[metaMethod]), &m) != nil || !m.Workflow ||
			q.names.Stream(app, m.Name) != name {
			continue // not a workflow of app (or a stream of another app whose name starts alike)
		}
		methods = append(methods, m.Name)
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("pinned runs of %s: list streams: %w", app, err)
	}
	var out []PinnedRun
	for _, method := range methods {
		h, err := q.open(ctx, app, method)
		if errors.Is(err, ErrUnknownMethod) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pinned runs of %s/%s: %w", app, method, err)
		}
		recs, _, err := q.records(ctx, h, func(r *Record) bool { return r.App == app && r.PinnedTo(now) != "" })
		if err != nil {
			return nil, fmt.Errorf("pinned runs of %s/%s: %w", app, method, err)
		}
		for _, r := range recs {
			out = append(out, PinnedRun{Method: method, ID: r.ID, Deployment: r.Deployment, Version: r.Version})
		}
	}
	return out, nil
}

// RequestUnpin asks the runners of run's workflow to unpin it (core
// NATS, at most once: the scheduler asks again at its next count if the
// run is still pinned).
func (q *Queue) RequestUnpin(app string, run PinnedRun) error {
	b, err := json.Marshal(run)
	if err != nil {
		return err
	}
	if err := q.js.Conn().Publish(q.names.UnpinSubject(app, run.Method), b); err != nil {
		return fmt.Errorf("request unpin of %s: %w", run.ID, err)
	}
	return nil
}

// unpinGroup is the queue group of the runners' unpin subscriptions.
const unpinGroup = "unpin"

// onUnpin is a runner's handler of an unpin request for its method.
func (r *Runner) onUnpin(method string, data []byte) {
	var run PinnedRun
	if err := json.Unmarshal(data, &run); err != nil || run.ID == "" || run.Method != method {
		r.log.Warn().Err(err).Str("method", method).Msg("drop undecodable unpin request")
		return
	}
	ctx, cancel := opCtx()
	defer cancel()
	if err := r.q.Unpin(ctx, r.cfg.App, run); err != nil {
		r.log.Warn().Err(err).Str("method", method).Str("request_id", run.ID).Msg("unpin workflow run (the scheduler asks again)")
		return
	}
	r.log.Info().Str("method", method).Str("request_id", run.ID).Str("version", run.Version).
		Msg("workflow run unpinned: no replica of its version is left")
}

// Unpin ends the pin of a run (EventUnpin): its next attempt runs on any
// version. A run that ended or is gone is no error.
func (q *Queue) Unpin(ctx context.Context, app string, run PinnedRun) error {
	h, err := q.open(ctx, app, run.Method)
	if err != nil {
		return err
	}
	for range 10 {
		r, rev, err := q.get(ctx, h, run.ID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if r.Version != run.Version || r.PinnedUntil.IsZero() {
			return nil // moved or unpinned meanwhile
		}
		next, err := r.apply(EventUnpin, change{})
		if errors.As(err, new(*TransitionError)) {
			return nil // it ended
		}
		if err != nil {
			return err
		}
		_, err = writeRecord(ctx, h.kv, next, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue
		}
		return err
	}
	return fmt.Errorf("unpin run %s: its record keeps changing", run.ID)
}
