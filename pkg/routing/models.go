package routing

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jetserve/jetserve/pkg/routing/p2c"
)

// modelGrace is how long a router counts a replica as holding a model it
// sent it a request for, before the replica's load reports say so: the
// report that follows a request can be one published just before the
// request arrived. Ray waits about as long for a replica holding the model.
const modelGrace = time.Second

// sentModel is a model id this router sent a replica, and when.
type sentModel struct {
	id string
	at time.Time
}

// holds reports whether p holds (or very likely loads) model id. d.mu held.
func (p *replica) holds(id string, now time.Time) bool {
	if _, ok := slices.BinarySearch(p.models, id); ok {
		return true
	}
	for _, s := range p.sent {
		if s.id == id && now.Sub(s.at) < modelGrace {
			return true
		}
	}
	return false
}

// numModels counts the models p holds, reported or recently sent. d.mu held.
func (p *replica) numModels(now time.Time) int {
	n := len(p.models)
	for _, s := range p.sent {
		if now.Sub(s.at) < modelGrace {
			if _, ok := slices.BinarySearch(p.models, s.id); !ok {
				n++
			}
		}
	}
	return n
}

// noteSent records that a request for model id went to p. d.mu held.
func (p *replica) noteSent(id string, now time.Time) {
	p.pruneSent(now)
	for i := range p.sent {
		if p.sent[i].id == id {
			p.sent[i].at = now
			return
		}
	}
	p.sent = append(p.sent, sentModel{id, now})
}

// setModels applies a load report's model ids (sorted by the replica)
// and forgets the sent ids it confirms or that are too old. d.mu held.
func (p *replica) setModels(ids []string, now time.Time) {
	if !slices.IsSorted(ids) {
		ids = slices.Clone(ids)
		slices.Sort(ids)
	}
	p.models = ids
	p.pruneSent(now)
}

func (p *replica) pruneSent(now time.Time) {
	p.sent = slices.DeleteFunc(p.sent, func(s sentModel) bool {
		_, held := slices.BinarySearch(p.models, s.id)
		return held || now.Sub(s.at) >= modelGrace
	})
}

// pickModel chooses a replica for a request for model q.model: the least
// loaded replica with room that holds the model; when none does, power of
// two choices among the replicas with room that hold the fewest models
// (Ray's multiplex routing), so a new model lands where it evicts least.
// d.mu held.
func (d *deployment) pickModel(q *request, now time.Time) *replica {
	var best *replica
	fewest := -1
	for _, p := range d.replicas {
		if !d.eligible(p, q, now) {
			continue
		}
		if p.holds(q.model, now) && (best == nil || p.load() < best.load() ||
			(p.load() == best.load() && p.local != nil && best.local == nil)) {
			best = p // the least loaded holder, a local one on a tie
		}
		if n := p.numModels(now); fewest < 0 || n < fewest {
			fewest = n
		}
	}
	if best != nil || fewest < 0 {
		return best
	}
	d.loads = d.loads[:0]
	for _, p := range d.replicas {
		l := p.load()
		if !d.eligible(p, q, now) || p.numModels(now) != fewest {
			l = p2c.Ineligible
		}
		d.loads = append(d.loads, l)
	}
	i := p2c.Pick(d.loads, rand.IntN)
	if d.locals > 0 {
		return d.preferLocal(q, now, i, func(p *replica) bool { return p.numModels(now) == fewest })
	}
	if i >= 0 {
		return d.replicas[i]
	}
	return nil
}
