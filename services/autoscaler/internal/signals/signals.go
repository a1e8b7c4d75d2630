// Package signals turns what the fleet pushes into per-deployment load
// samples for the autoscaler. A Source reports a deployment's load now;
// Sync is the source of sync traffic: the LoadReports replicas push
// (ongoing requests, sub-second) and the RouterStats routers push
// (requests queued at routers). Jobs is the source of async work: the
// backlog of the deployments' job consumers, polled by the leader.
//
// Both are safe for concurrent use: NATS callbacks and pollers feed them
// while the autoscaler's loop samples them.
package signals

import (
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// Sample is one deployment's instantaneous load.
type Sample struct {
	// Ongoing counts requests replicas are working on; Queued requests
	// waiting at routers for a replica.
	Ongoing, Queued int
	// Backlog counts async jobs queued or running (num_pending +
	// num_ack_pending of the deployment's job consumers).
	Backlog int
	// OldestJob is the age of the oldest job queued or running (0 when
	// there is none).
	OldestJob time.Duration
}

// Add returns the sum of s and o (the older of their oldest jobs).
func (s Sample) Add(o Sample) Sample {
	return Sample{Ongoing: s.Ongoing + o.Ongoing, Queued: s.Queued + o.Queued, Backlog: s.Backlog + o.Backlog,
		OldestJob: max(s.OldestJob, o.OldestJob)}
}

// Source reports the load of deployments. Sample must be cheap and must
// not block: it is called for every autoscaled deployment on every tick
// of the autoscaler's loop. A source that polls (e.g. consumer info) does
// so in its own goroutine and returns its latest reading here.
type Source interface {
	Sample(app, deployment string, now time.Time) Sample
}

// Sync aggregates LoadReports and RouterStats.
type Sync struct {
	// stale is how old a report may be and still count.
	stale time.Duration

	mu       sync.Mutex
	replicas map[string]replicaLoad       // by replica ID; guarded by mu
	routers  map[string]routerQueue       // by router ID; guarded by mu
	onQueued func(app, deployment string) // set once before use
}

type replicaLoad struct {
	key     string // ScaleKey form "app.dep"
	ongoing int
	at      time.Time
}

type routerQueue struct {
	queued map[string]int // "app.dep" → queued
	at     time.Time
}

// NewSync returns a Sync that forgets reports older than stale (replicas
// push at least every second, routers every stats_interval).
// onQueued, if not nil, is called (without locks held, from the NATS
// callback) when a router reports requests queued for a deployment, so
// that a cold start need not wait for the next tick; it must not block.
func NewSync(stale time.Duration, onQueued func(app, deployment string)) *Sync {
	return &Sync{stale: stale, replicas: map[string]replicaLoad{}, routers: map[string]routerQueue{}, onQueued: onQueued}
}

// OnLoad records a replica's report, received at now.
func (s *Sync) OnLoad(r protocol.LoadReport, now time.Time) {
	if r.ReplicaID == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas[r.ReplicaID] = replicaLoad{key: protocol.ScaleKey(r.App, r.Deployment), ongoing: r.Ongoing, at: now}
}

// Forget drops a replica (its record left the Replicas bucket).
func (s *Sync) Forget(replicaID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.replicas, replicaID)
}

// OnRouterStats records a router's queues, received at now.
func (s *Sync) OnRouterStats(st protocol.RouterStats, now time.Time) {
	q := make(map[string]int, len(st.Queued))
	var queued [][2]string
	for k, n := range st.Queued {
		app, dep, ok := strings.Cut(k, "/")
		if !ok || app == "" || dep == "" {
			continue
		}
		q[protocol.ScaleKey(app, dep)] = n
		if n > 0 {
			queued = append(queued, [2]string{app, dep})
		}
	}
	s.mu.Lock()
	s.routers[st.RouterID] = routerQueue{queued: q, at: now}
	s.mu.Unlock()
	if s.onQueued != nil {
		for _, k := range queued {
			s.onQueued(k[0], k[1])
		}
	}
}

// Sample sums the fresh reports of the deployment's replicas and routers,
// and drops the stale ones.
func (s *Sync) Sample(app, deployment string, now time.Time) Sample {
	key := protocol.ScaleKey(app, deployment)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out Sample
	for id, r := range s.replicas {
		if now.Sub(r.at) > s.stale {
			delete(s.replicas, id)
			continue
		}
		if r.key == key {
			out.Ongoing += r.ongoing
		}
	}
	for id, r := range s.routers {
		if now.Sub(r.at) > s.stale {
			delete(s.routers, id)
			continue
		}
		out.Queued += r.queued[key]
	}
	return out
}
