package routing

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
)

// SetReplica records a replica's KV record: RUNNING replicas are routed
// to (but for one kept only for its version's pinned workflow runs);
// STARTING ones make the deployment wait for them; anything else removes
// it from routing. A FAILED replica is probed at once about the
// requests it may hold.
func (r *Router) SetReplica(info protocol.ReplicaInfo) {
	d := r.deployment(depKey(info.App, info.Deployment))
	now := r.o.Now()
	key := protocol.Token(info.ID)
	d.mu.Lock()
	if info.State == protocol.ReplicaStarting {
		d.starting[key] = true
	} else {
		delete(d.starting, key)
	}
	p := d.byID[key]
	if info.State != protocol.ReplicaRunning || info.PinnedOnly {
		var probe *nats.Msg
		if p != nil {
			r.unrouteLocked(d, p)
			if info.State != protocol.ReplicaStopping && !info.PinnedOnly { // a drain (or a pinned-only replica) answers what it holds
				probe = r.probeLocked(p, now, true)
			}
		}
		// The last replica that was starting failed, in a deployment the
		// status already says cannot run: what waited for it fails now
		// (the status may not change again to say so).
		var fails []failure
		if info.State == protocol.ReplicaFailed && len(d.replicas) == 0 && len(d.starting) == 0 && d.unavailable != "" {
			fails = d.failQueueLocked(http.StatusServiceUnavailable, protocol.ErrNoReplicas, d.cannotRun(), true)
		}
		d.mu.Unlock()
		r.publishProbe(probe)
		r.emit(fails, nil, len(fails) > 0)
		return
	}
	added := false
	if p == nil {
		if i := slices.IndexFunc(d.retired, func(x *replica) bool { return x.key == key }); i >= 0 {
			p = d.retired[i] // back (e.g. its record expired during an outage)
			d.retired = slices.Delete(d.retired, i, i+1)
			p.goneAt = time.Time{}
		} else {
			subj := info.Subject
			if subj == "" {
				subj = r.o.Names.ReplicaSubject(info.ID)
			}
			p = &replica{id: info.ID, key: key, subject: subj + "." + protocol.EndpointCall, d: d}
		}
		p.local = nil // bound below, as routable
		p.routable = true
		d.byID[key] = p
		d.replicas = append(d.replicas, p)
		added = true
	}
	r.bindLocal(d, p)
	p.seen = now
	oldMax := p.max
	p.max = info.MaxOngoingRequests
	if p.max <= 0 {
		p.max = config.DefaultMaxOngoingRequests
	}
	var ops []sendOp
	if added || p.max > oldMax {
		ops = r.releaseLocked(d, now)
	}
	d.mu.Unlock()
	r.sendAll(ops, len(ops) > 0)
}

// DeleteReplicaKey removes the replica stored under a Replicas bucket key
// (protocol.ReplicaKey): its record was deleted or expired. It is
// probed at once about the requests it may hold.
func (r *Router) DeleteReplicaKey(key string) {
	app, dep, _, id, ok := protocol.SplitReplicaKey(key)
	if !ok {
		return
	}
	r.depMu.RLock()
	d := r.deps[app+"."+dep]
	r.depMu.RUnlock()
	if d == nil {
		return
	}
	d.mu.Lock()
	delete(d.starting, id)
	p := d.byID[id]
	if p == nil {
		if j := slices.IndexFunc(d.retired, func(x *replica) bool { return x.key == id }); j >= 0 {
			p = d.retired[j]
		}
	}
	var probe *nats.Msg
	if p != nil {
		r.unrouteLocked(d, p)
		probe = r.probeLocked(p, r.o.Now(), true)
	}
	d.mu.Unlock()
	r.publishProbe(probe)
}

// SetLoad records a replica's load report and releases queued requests
// if it freed capacity.
func (r *Router) SetLoad(rep protocol.LoadReport) {
	r.depMu.RLock()
	d := r.deps[depKey(rep.App, rep.Deployment)]
	r.depMu.RUnlock()
	if d == nil {
		return
	}
	d.mu.Lock()
	p := d.byID[protocol.Token(rep.ReplicaID)]
	if p == nil || rep.At.Before(p.reportedAt) {
		d.mu.Unlock()
		return
	}
	before := p.load()
	wasDraining := p.draining
	p.reported, p.reportedAt = rep.Ongoing, rep.At
	p.draining = rep.Draining
	p.setModels(rep.Models, r.o.Now())
	if rep.Max > 0 {
		p.max = rep.Max
	}
	var ops []sendOp
	if d.head != nil && !p.draining && (p.load() < before || wasDraining) && p.load() < p.max {
		ops = r.releaseLocked(d, r.o.Now())
	}
	d.mu.Unlock()
	r.sendAll(ops, len(ops) > 0)
}

// SetConfig applies the serve config: per-deployment limits, and which
// deployments exist (requests for others are answered 404 from now on,
// those queued for a deployment removed from it are failed, and its load
// reports are no longer followed).
func (r *Router) SetConfig(cfg config.ServeConfig) {
	in := map[string]bool{}
	for _, a := range cfg.Applications {
		for _, dc := range a.Deployments {
			key := depKey(a.Name, dc.Name)
			in[key] = true
			d := r.deployment(key)
			d.mu.Lock()
			d.inConfig = true
			d.maxQueued = dc.MaxQueuedRequests
			if d.maxQueued == 0 {
				d.maxQueued = config.DefaultMaxQueuedRequests
			}
			d.timeout = dc.RequestTimeout.D()
			d.mu.Unlock()
		}
	}
	r.configLoaded.Store(true)
	for _, d := range r.snapshot() {
		if in[d.key] {
			continue
		}
		d.mu.Lock()
		d.inConfig = false
		var fails []failure
		if len(d.replicas) == 0 && len(d.starting) == 0 {
			fails = d.failQueueLocked(http.StatusNotFound, protocol.ErrNotFound,
				fmt.Sprintf("deployment %s/%s was removed from the applied config", d.app, d.name), false)
		}
		d.mu.Unlock()
		r.emit(fails, nil, len(fails) > 0)
		r.unfollowLoad(d)
	}
}

// SetStatus applies the scheduler's status: a deployment whose replicas
// cannot run (target > 0; none RUNNING or STARTING; PENDING with a
// placement reason or FAILED) is unavailable, and requests queued for it
// are failed 503 no_replicas with the reason when that becomes so.
func (r *Router) SetStatus(st protocol.Status) {
	why := map[string]string{}
	for _, a := range st.Applications {
		for _, ds := range a.Deployments {
			if reason := unavailableReason(ds); reason != "" {
				key := depKey(a.Name, ds.Name)
				why[key] = reason
				r.deployment(key)
			}
		}
	}
	for _, d := range r.snapshot() {
		d.mu.Lock()
		before := d.unavailable
		d.unavailable = why[d.key]
		var fails []failure
		if d.unavailable != "" && d.unavailable != before && len(d.replicas) == 0 && len(d.starting) == 0 {
			fails = d.failQueueLocked(http.StatusServiceUnavailable, protocol.ErrNoReplicas, d.cannotRun(), true)
		}
		d.mu.Unlock()
		r.emit(fails, nil, len(fails) > 0)
		r.unfollowLoad(d)
	}
}

// unavailableReason says why a deployment cannot run, "" when it runs,
// starts, is at zero replicas, or has a replica not yet tried.
func unavailableReason(ds protocol.DeploymentStatus) string {
	if ds.TargetReplicas <= 0 {
		return ""
	}
	var reasons []string
	for _, rs := range ds.Replicas {
		var reason string
		switch rs.State {
		case protocol.ReplicaRunning, protocol.ReplicaStarting:
			return ""
		case protocol.ReplicaPending:
			if rs.Message == "" {
				return "" // not placed yet: no reason to refuse
			}
			reason = "PENDING: " + rs.Message
		case protocol.ReplicaFailed:
			reason = "FAILED: " + rs.Message
		default:
			continue
		}
		if !slices.Contains(reasons, reason) {
			reasons = append(reasons, reason)
		}
	}
	return strings.Join(reasons, "; ")
}

func (r *Router) snapshot() []*deployment {
	r.depMu.RLock()
	defer r.depMu.RUnlock()
	ds := make([]*deployment, 0, len(r.deps))
	for _, d := range r.deps {
		ds = append(ds, d)
	}
	return ds
}

// Queued returns the queue length per deployment, keyed "<app>/<deployment>"
// (subject tokens).
func (r *Router) Queued() map[string]int {
	out := map[string]int{}
	for _, d := range r.snapshot() {
		d.mu.Lock()
		out[d.app+"/"+d.name] = d.queued
		d.mu.Unlock()
	}
	return out
}
