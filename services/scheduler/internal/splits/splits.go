// Package splits follows the ingresses' reports of their graphs'
// splitter choices (protocol.GraphStats, each the last minute at one
// ingress) and sums the fresh ones into an application's live traffic
// split for the status (protocol.GraphStatus): per splitter node, the
// configured weight and the requests each branch got.
//
// Every scheduler instance follows them (core NATS, no JetStream), so
// whichever answers GET /api/serve/applications shows the split. A
// Follower is safe for concurrent use; Run owns its subscription and ends
// with its context.
package splits

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
)

// Stale is how long an ingress's last report counts: ingresses report
// every second while they count anything, so a silent one has stopped.
const Stale = 3 * time.Second

type report struct {
	stats protocol.GraphStats
	seen  time.Time
}

// Follower keeps the latest report of every ingress.
type Follower struct {
	now func() time.Time

	mu        sync.Mutex
	byIngress map[string]report // guarded by mu
}

// New returns a Follower reading the time from now (time.Now when nil).
func New(now func() time.Time) *Follower {
	if now == nil {
		now = time.Now
	}
	return &Follower{now: now, byIngress: map[string]report{}}
}

// Take records an ingress's report.
func (f *Follower) Take(s protocol.GraphStats) {
	if s.IngressID == "" {
		return
	}
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.byIngress[s.IngressID] = report{stats: s, seen: now}
	for id, r := range f.byIngress {
		if now.Sub(r.seen) > Stale {
			delete(f.byIngress, id)
		}
	}
}

// Run takes the reports published on subject until ctx ends.
func (f *Follower) Run(ctx context.Context, nc *nats.Conn, subject string) error {
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		var s protocol.GraphStats
		if json.Unmarshal(m.Data, &s) == nil {
			f.Take(s)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}

// Status returns app's live split: for every splitter node of its graph,
// the configured branches with the requests the fresh reports counted;
// nil for an application without a splitter.
func (f *Follower) Status(app config.Application) *protocol.GraphStatus {
	if app.Graph == nil {
		return nil
	}
	now := f.now()
	counts := map[string]map[string]uint64{} // node → step → requests
	window := 0
	f.mu.Lock()
	for _, r := range f.byIngress {
		if now.Sub(r.seen) > Stale {
			continue
		}
		window = max(window, r.stats.WindowSeconds)
		for node, steps := range r.stats.Splits[app.Name] {
			if counts[node] == nil {
				counts[node] = map[string]uint64{}
			}
			for step, n := range steps {
				counts[node][step] += n
			}
		}
	}
	f.mu.Unlock()
	if window == 0 {
		window = int(time.Minute / time.Second)
	}
	gs := &protocol.GraphStatus{Splitters: []protocol.SplitterStatus{}}
	for _, n := range app.Graph.Nodes {
		if n.Type != config.NodeSplitter {
			continue
		}
		ss := protocol.SplitterStatus{Node: n.Name, WindowSeconds: window, Branches: []protocol.BranchStatus{}}
		for _, s := range n.Steps {
			target := s.Deployment
			if target == "" {
				target = s.Node
			}
			b := protocol.BranchStatus{Step: s.StepName(), Target: target, Requests: counts[n.Name][s.StepName()]}
			if s.Weight != nil {
				b.Weight = *s.Weight
			}
			ss.Requests += b.Requests
			ss.Branches = append(ss.Branches, b)
		}
		if ss.Requests > 0 {
			for i := range ss.Branches {
				ss.Branches[i].Share = math.Round(float64(ss.Branches[i].Requests)/float64(ss.Requests)*1000) / 10
			}
		}
		gs.Splitters = append(gs.Splitters, ss)
	}
	if len(gs.Splitters) == 0 {
		return nil
	}
	return gs
}
