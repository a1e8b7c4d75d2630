package plan

import (
	"sort"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// DefaultRebalanceCooldown spaces one deployment's rebalancing moves and
// is how long a worker must be live before it takes a moved replica.
const DefaultRebalanceCooldown = 10 * time.Second

// settleMoves runs before the counting: a rebalancing move whose new
// replica runs ends (the replica it replaces drains); a move whose source
// went away leaves its new replica an ordinary one; a move whose source is
// no longer of its deployment's current version (an update began) is
// cancelled.
func (p *pass) settleMoves() {
	for _, r := range sortedReplicas(p.st.Replicas) {
		if r.Moves == "" {
			continue
		}
		src, ok := p.st.Replicas[r.Moves]
		switch {
		case !ok:
			r.Moves = ""
		case !p.current(src):
			p.remove(r, protocol.Reason{Code: protocol.ReasonRebalanceCancelled, ReplicaID: src.Spec.ID})
		case p.in.Running(r):
			p.remove(src, protocol.Reason{Code: protocol.ReasonRebalanceMoved, WorkerID: r.WorkerID, ReplicaID: r.Spec.ID})
			r.Moves = ""
			p.st.Moved[Key(r.Spec.App, r.Spec.Deployment)] = p.in.Now
		}
	}
}

// current reports whether r is of its deployment's current version.
func (p *pass) current(r *Replica) bool {
	a, ok := p.in.Config.App(r.Spec.App)
	if !ok {
		return false
	}
	d, ok := a.Deployment(r.Spec.Deployment)
	return ok && Version(d) == r.Spec.Version
}

// rebalance runs after placement. A deployment at its target with every
// replica RUNNING and of its current version whose replicas are spread
// unevenly — a worker holds at least two more of them than another live
// worker that could hold one more — moves one replica: a new replica
// starts on the emptier worker and the one it replaces drains once it runs
// (settleMoves), so no request fails. A deployment moves one replica at a
// time, at most one per cooldown; a worker takes moved replicas only
// after it was live for the cooldown (a flapping worker attracts none).
func (p *pass) rebalance(cl *Cluster) {
	for id := range p.st.WorkerSince {
		if _, ok := p.in.Workers[id]; !ok {
			delete(p.st.WorkerSince, id)
		}
	}
	for id := range p.in.Workers {
		if _, ok := p.st.WorkerSince[id]; !ok {
			p.st.WorkerSince[id] = p.in.Now
		}
	}
	for k := range p.st.Moved {
		if !p.desired(k) {
			delete(p.st.Moved, k)
		}
	}
	if !p.in.Rebalance {
		return
	}
	cooldown := p.in.RebalanceCooldown
	var settled []string // workers live for the cooldown, by ID
	for id, w := range p.in.Workers {
		if placeable(w, true) && p.in.Now.Sub(p.st.WorkerSince[id]) >= cooldown {
			settled = append(settled, id)
		}
	}
	sort.Strings(settled)
	byKey := map[string][]*Replica{}
	moving := map[string]bool{}
	for _, r := range sortedReplicas(p.st.Replicas) {
		k := Key(r.Spec.App, r.Spec.Deployment)
		byKey[k] = append(byKey[k], r)
		if r.Moves != "" {
			moving[k] = true
		}
	}
	for _, app := range p.in.Config.Applications {
		for _, d := range app.Deployments {
			k := Key(app.Name, d.Name)
			rs := byKey[k]
			if moving[k] || len(rs) < 2 || len(rs) != p.in.Target(app.Name, d) {
				continue
			}
			if last, ok := p.st.Moved[k]; ok && p.in.Now.Sub(last) < cooldown {
				continue
			}
			ver, stable := Version(d), true
			for _, r := range rs {
				stable = stable && r.Spec.Version == ver && p.in.Running(r)
			}
			if stable {
				p.move(cl, k, rs, settled)
			}
		}
	}
}

// move starts, if the spread of rs calls for it, the replica that moves
// one of them from the worker holding most to a settled one holding at
// least two fewer that can take it.
func (p *pass) move(cl *Cluster, k string, rs []*Replica, settled []string) {
	count := map[string]int{}
	for _, r := range rs {
		count[r.WorkerID]++
	}
	src := ""
	for w, n := range count {
		if src == "" || n > count[src] || (n == count[src] && w < src) {
			src = w
		}
	}
	dsts := make([]string, 0, len(settled))
	for _, w := range settled {
		if w != src && count[w] <= count[src]-2 {
			dsts = append(dsts, w)
		}
	}
	sort.SliceStable(dsts, func(i, j int) bool { return count[dsts[i]] < count[dsts[j]] })
	var victim *Replica // the newest replica on src
	for _, r := range rs {
		if r.WorkerID == src && (victim == nil || !r.Created.Before(victim.Created)) {
			victim = r
		}
	}
	for _, dst := range dsts {
		spec := victim.Spec
		spec.ID, spec.GPUIndices = p.newID(spec.App, spec.Deployment, spec.Version), nil
		nr := &Replica{Spec: spec, Labels: victim.Labels, Created: p.in.Now, Moves: victim.Spec.ID}
		req := p.request(nr)
		req.Only, req.Avoid = dst, nil
		pl, err := cl.Place(req, nr.Spec)
		if err != nil {
			continue
		}
		p.st.Replicas[spec.ID] = nr
		p.res.Events = append(p.res.Events, Event{ReplicaID: spec.ID, App: spec.App, Deployment: spec.Deployment,
			Action: "add", Reason: protocol.Reason{Code: protocol.ReasonRebalanceStart, ReplicaID: victim.Spec.ID, WorkerID: src}})
		p.placed(nr, pl)
		return
	}
}
