package dashboard

import (
	"slices"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// totals are request totals (LoadReport's served, errors, latency sum and
// buckets).
type totals struct {
	served, errors uint64
	sum            float64
	buckets        []uint64
}

func (t totals) clone() totals { t.buckets = slices.Clone(t.buckets); return t }

// add adds o to t.
func (t *totals) add(o totals) {
	t.served += o.served
	t.errors += o.errors
	t.sum += o.sum
	if len(t.buckets) < len(o.buckets) {
		t.buckets = append(t.buckets, make([]uint64, len(o.buckets)-len(t.buckets))...)
	}
	for i, n := range o.buckets {
		t.buckets[i] += n
	}
}

// minus is t - o (o an earlier value of the same monotonic totals).
func (t totals) minus(o totals) totals {
	d := totals{served: t.served - o.served, errors: t.errors - o.errors, sum: t.sum - o.sum,
		buckets: make([]uint64, len(t.buckets))}
	for i := range t.buckets {
		d.buckets[i] = t.buckets[i]
		if i < len(o.buckets) {
			d.buckets[i] -= o.buckets[i]
		}
	}
	return d
}

func reportTotals(r protocol.LoadReport) totals {
	return totals{served: r.Served, errors: r.Errors, sum: r.LatencyMSSum, buckets: slices.Clone(r.LatencyBuckets)}
}

// replicaLoad is the latest report of one replica and the totals of it
// already added to its deployment.
type replicaLoad struct {
	key     string // deployment key
	last    protocol.LoadReport
	seen    time.Time
	counted totals
}

type routerQueue struct {
	queued map[string]int // "<app>/<deployment>"
	seen   time.Time
}

// point is one deployment's state at one tick: monotonic request totals
// (across replica restarts) and the instantaneous ongoing and queued.
type point struct {
	at      time.Time
	tot     totals
	ongoing int
	queued  int
}

// traffic aggregates pushed load reports and router stats into one
// rolling window of points per deployment. Safe for concurrent use: the
// NATS callbacks feed it, Run's ticker samples it, snapshots read it.
type traffic struct {
	window, stale time.Duration

	mu       sync.Mutex
	replicas map[string]*replicaLoad // by replica id; guarded by mu
	routers  map[string]routerQueue  // by router id; guarded by mu
	tot      map[string]*totals      // by deployment key: monotonic totals; guarded by mu
	points   map[string][]point      // by deployment key, oldest first; guarded by mu
	active   map[string]time.Time    // by deployment key: last tick with a replica or a queue; guarded by mu
}

func newTraffic(window, stale time.Duration) *traffic {
	return &traffic{window: window, stale: stale, replicas: map[string]*replicaLoad{},
		routers: map[string]routerQueue{}, tot: map[string]*totals{}, points: map[string][]point{},
		active: map[string]time.Time{}}
}

func depKey(app, dep string) string { return app + "/" + dep }

// load takes one replica's report received at now.
func (t *traffic) load(r protocol.LoadReport, now time.Time) {
	key := depKey(r.App, r.Deployment)
	cur := reportTotals(r)
	t.mu.Lock()
	defer t.mu.Unlock()
	rl := t.replicas[r.ReplicaID]
	tot := t.tot[key]
	if tot == nil {
		tot = &totals{}
		t.tot[key] = tot
	}
	switch {
	case rl == nil:
		// First sight: what it served before this dashboard started is
		// history, not this window's traffic.
		rl = &replicaLoad{key: key, counted: cur}
		t.replicas[r.ReplicaID] = rl
	case cur.served < rl.counted.served:
		tot.add(cur) // the replica restarted under the same id
	default:
		tot.add(cur.minus(rl.counted))
	}
	rl.counted, rl.last, rl.seen = cur, r, now
}

// router takes one router's stats received at now.
func (t *traffic) router(s protocol.RouterStats, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.routers[s.RouterID] = routerQueue{queued: s.Queued, seen: now}
}

// tick appends a point per deployment and forgets what is older than the
// window (replicas and routers silent for that long).
func (t *traffic) tick(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ongoing, queued, live := map[string]int{}, map[string]int{}, map[string]bool{}
	for id, rl := range t.replicas {
		switch age := now.Sub(rl.seen); {
		case age > t.window:
			delete(t.replicas, id)
		case age <= t.stale:
			ongoing[rl.key] += rl.last.Ongoing
			live[rl.key] = true
		}
	}
	for id, rq := range t.routers {
		switch age := now.Sub(rq.seen); {
		case age > t.window:
			delete(t.routers, id)
		case age <= t.stale:
			for k, n := range rq.queued {
				queued[k] += n
			}
		}
	}
	for k := range queued {
		if t.tot[k] == nil {
			t.tot[k] = &totals{}
		}
	}
	for k, tot := range t.tot {
		pts := append(t.points[k], point{at: now, tot: tot.clone(), ongoing: ongoing[k], queued: queued[k]})
		i := 0
		for i < len(pts)-1 && now.Sub(pts[i].at) > t.window {
			i++
		}
		t.points[k] = pts
		if live[k] || queued[k] > 0 {
			t.active[k] = now
		} else if now.Sub(t.active[k]) > t.window {
			// No replica and no queue for a whole window: gone.
			delete(t.points, k)
			delete(t.tot, k)
			delete(t.active, k)
		}
	}
}

// Traffic is one deployment's live load in a snapshot.
type Traffic struct {
	// RPS is requests finished per second over the last RateSpan seconds.
	RPS float64 `json:"rps"`
	// ErrorRate is the fraction of them that failed.
	ErrorRate float64 `json:"error_rate"`
	// MeanMS, P50MS, P95MS and P99MS are their processing time at the
	// replicas (quantiles interpolated within LatencyBoundsMS buckets).
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P95MS  float64 `json:"p95_ms"`
	P99MS  float64 `json:"p99_ms"`
	// Ongoing are requests at replicas now, Queued at routers now.
	Ongoing int `json:"ongoing"`
	Queued  int `json:"queued"`
	// Series is one sample per second over the window, oldest first.
	Series []Sample `json:"series"`
}

// Sample is one second of a deployment's traffic.
type Sample struct {
	At      time.Time `json:"t"`
	RPS     float64   `json:"rps"`
	MeanMS  float64   `json:"mean_ms"`
	Ongoing int       `json:"ongoing"`
	Queued  int       `json:"queued"`
}

// RateSpan is the span the rates and latencies of Traffic are taken over.
const RateSpan = 10 * time.Second

// stats returns every deployment's traffic, by deployment key.
func (t *traffic) stats() map[string]Traffic {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]Traffic, len(t.points))
	for k, pts := range t.points {
		if len(pts) == 0 {
			continue
		}
		last := pts[len(pts)-1]
		tr := Traffic{Ongoing: last.ongoing, Queued: last.queued, Series: make([]Sample, 0, len(pts))}
		first := last
		for _, p := range pts {
			if last.at.Sub(p.at) <= RateSpan {
				first = p
				break
			}
		}
		if dt := last.at.Sub(first.at).Seconds(); dt > 0 {
			d := last.tot.minus(first.tot)
			tr.RPS = float64(d.served) / dt
			if d.served > 0 {
				tr.ErrorRate = float64(d.errors) / float64(d.served)
				tr.MeanMS = d.sum / float64(d.served)
				tr.P50MS = protocol.LatencyQuantile(d.buckets, 0.50)
				tr.P95MS = protocol.LatencyQuantile(d.buckets, 0.95)
				tr.P99MS = protocol.LatencyQuantile(d.buckets, 0.99)
			}
		}
		for i, p := range pts {
			s := Sample{At: p.at, Ongoing: p.ongoing, Queued: p.queued}
			if i > 0 {
				if dt := p.at.Sub(pts[i-1].at).Seconds(); dt > 0 {
					d := p.tot.minus(pts[i-1].tot)
					s.RPS = float64(d.served) / dt
					if d.served > 0 {
						s.MeanMS = d.sum / float64(d.served)
					}
				}
			}
			tr.Series = append(tr.Series, s)
		}
		out[k] = tr
	}
	return out
}
