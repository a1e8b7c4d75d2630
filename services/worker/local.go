package worker

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/services/worker/internal/replica"
)

// localReplicas is the table of the worker's replicas that its embedded
// router dispatches to in-process (routing.Options.Local): every replica
// from its start until it is gone — a draining one refuses calls
// "draining", as over NATS, and the router sends them elsewhere.
type localReplicas struct {
	mu   sync.RWMutex
	byID map[string]*replica.Replica // guarded by mu
}

func newLocalReplicas() *localReplicas {
	return &localReplicas{byID: map[string]*replica.Replica{}}
}

// lookup is routing.Options.Local.
func (t *localReplicas) lookup(id string) (routing.LocalReplica, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	r, ok := t.byID[id]
	if !ok {
		return nil, false
	}
	return r, true
}

// put makes r the replica of its id (a restart replaces its predecessor).
func (t *localReplicas) put(r *replica.Replica) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID[r.ID()] = r
}

// remove forgets r, unless another replica took its id since.
func (t *localReplicas) remove(r *replica.Replica) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[r.ID()] == r {
		delete(t.byID, r.ID())
	}
}

// deployments is replica.Params.Deployments: the deployments of app in
// the serve config as applied now (read from the Apps bucket, so never
// behind the assignment that started the replica); ok false when it
// cannot tell.
func (w *worker) deployments(ctx context.Context, app string) ([]string, bool) {
	a, ok := w.appliedApp(ctx, app)
	if !ok {
		return nil, false
	}
	names := make([]string, len(a.Deployments))
	for i, d := range a.Deployments {
		names[i] = d.Name
	}
	return names, true
}

// uses is replica.Params.Uses: the uses of app/deployment in the serve
// config as applied now; ok false when it cannot tell.
func (w *worker) uses(ctx context.Context, app, deployment string) ([]string, bool) {
	a, ok := w.appliedApp(ctx, app)
	if !ok {
		return nil, false
	}
	d, ok := a.Deployment(deployment)
	if !ok {
		return nil, false
	}
	return d.Uses, true
}

// appliedApp reads app from the serve config as applied now.
func (w *worker) appliedApp(ctx context.Context, app string) (config.Application, bool) {
	e, err := w.buckets.Apps.Get(ctx, "config")
	if err != nil {
		return config.Application{}, false
	}
	var sc config.ServeConfig
	if err := json.Unmarshal(e.Value(), &sc); err != nil {
		return config.Application{}, false
	}
	return sc.App(app)
}
