package plan

import (
	"errors"
	"sort"
	"strings"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// Rollout is how a deployment's rolling update proceeds.
type Rollout struct {
	Strategy protocol.RolloutStrategy
	// Reason says why it replaces rather than surges.
	Reason string
}

// makeRoom runs after placement. A rolling update starts new replicas
// beside the old ones (surge); when a new replica fits on no worker for
// lack of CPU, GPU or memory, makeRoom drains old replicas first and
// places the new one in the room they free — one old replica per new one,
// more only when one does not free enough — never leaving fewer than
// target − max_unavailable replicas of the deployment RUNNING. The next
// swap waits until the new replica runs; while replacing, Step keeps up
// to max_unavailable new replicas waiting for room (rather than one surge
// replica). The strategy and its reason are kept in State.Rollouts until
// no old replica is left and every new one runs. Replicas kept for pinned
// workflow runs (PinnedOnly) are drained first and cost no availability.
func (p *pass) makeRoom(cl *Cluster) {
	byKey := map[string][]*Replica{}
	for _, r := range sortedReplicas(p.st.Replicas) {
		if r.Moves == "" {
			k := Key(r.Spec.App, r.Spec.Deployment)
			byKey[k] = append(byKey[k], r)
		}
	}
	for k := range p.st.Rollouts {
		if !p.desired(k) {
			delete(p.st.Rollouts, k)
		}
	}
	for _, app := range p.in.Config.Applications {
		for _, d := range app.Deployments {
			k := Key(app.Name, d.Name)
			ver := Version(d)
			var old, kept, waiting []*Replica
			avail := 0
			for _, r := range byKey[k] {
				switch {
				case r.Spec.Version != ver && r.Spec.PinnedOnly:
					kept = append(kept, r) // takes no requests: not counted as available
					continue
				case r.Spec.Version != ver:
					old = append(old, r)
				case r.WorkerID == "":
					waiting = append(waiting, r)
				}
				if p.in.Running(r) {
					avail++
				}
			}
			ro, ok := p.st.Rollouts[k]
			if len(old) == 0 {
				// The update is done once every replica runs.
				if ok && avail < len(byKey[k])-len(kept) {
					continue
				}
				delete(p.st.Rollouts, k)
				continue
			}
			// Replicas kept for pinned workflow runs give way first: a
			// rollout never waits for them (their runs are unpinned).
			old = append(kept, old...)
			if !ok {
				ro = Rollout{Strategy: protocol.RolloutSurge}
			}
			target := p.in.Target(app.Name, d)
			maxUnavailable := d.MaxUnavailable.Of(target)
			budget := avail - (target - maxUnavailable) // RUNNING replicas that may go
			for _, nr := range waiting {
				reason := nr.Reason.String()
				placed, noRoom := p.replaceFirst(cl, nr, old, &budget)
				if noRoom {
					ro = Rollout{Strategy: protocol.RolloutReplace, Reason: reason}
					if maxUnavailable == 0 {
						ro.Reason += "; max_unavailable is 0, so the update waits for room"
					}
				}
				if !placed {
					break // the next swap waits (or draining cannot help)
				}
				old = assigned(old, p.st)
			}
			p.st.Rollouts[k] = ro
		}
	}
}

// replaceFirst places nr, which fitted nowhere, in the room that draining
// old replicas of its deployment frees, spending at most *budget RUNNING
// ones (all on one worker). noRoom reports whether nr lacked resources
// (when it lacks a handler or labels, draining cannot help and nothing is
// done).
func (p *pass) replaceFirst(cl *Cluster, nr *Replica, old []*Replica, budget *int) (placed, noRoom bool) {
	req := p.request(nr)
	pl, err := cl.Place(req, nr.Spec)
	if err == nil { // room appeared (another deployment's replica left)
		p.placed(nr, pl)
		return true, false
	}
	if nf := (*NoFitError)(nil); !errors.As(err, &nf) || !nf.NoRoom() {
		return false, false
	}
	// Old replicas per worker, the workers holding most of them first;
	// on each, kept (pinned-only) replicas first.
	on := map[string][]*Replica{}
	sorted := slicesSortedForRemoval(old, p.in)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Spec.PinnedOnly && !sorted[j].Spec.PinnedOnly })
	for _, o := range sorted {
		if o.WorkerID != "" {
			on[o.WorkerID] = append(on[o.WorkerID], o)
		}
	}
	workers := make([]string, 0, len(on))
	for w := range on {
		workers = append(workers, w)
	}
	sort.Slice(workers, func(i, j int) bool {
		if a, b := len(on[workers[i]]), len(on[workers[j]]); a != b {
			return a > b
		}
		return workers[i] < workers[j]
	})
	for _, w := range workers {
		var freed []*Replica
		cost := 0
		for _, o := range on[w] {
			c := 0
			if p.in.Running(o) && !o.Spec.PinnedOnly {
				c = 1
			}
			if cost+c > *budget {
				break
			}
			cl.Remove(o.WorkerID, req.Key, o.Spec)
			freed, cost = append(freed, o), cost+c
			pl, err := cl.Place(req, nr.Spec)
			if err != nil {
				continue
			}
			for _, f := range freed {
				p.remove(f, protocol.Reason{Code: protocol.ReasonMakeRoom, Version: nr.Spec.Version})
			}
			p.placed(nr, pl)
			*budget -= cost
			return true, true
		}
		for _, f := range freed {
			cl.Add(f.WorkerID, req.Key, f.Spec)
		}
	}
	return false, true
}

// assigned returns the replicas of rs still in st.
func assigned(rs []*Replica, st *State) []*Replica {
	var out []*Replica
	for _, r := range rs {
		if _, ok := st.Replicas[r.Spec.ID]; ok {
			out = append(out, r)
		}
	}
	return out
}

// desired reports whether the deployment key k is in the config.
func (p *pass) desired(k string) bool {
	app, dep, _ := strings.Cut(k, "/")
	a, ok := p.in.Config.App(app)
	if ok {
		_, ok = a.Deployment(dep)
	}
	return ok
}
