package dashboard

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// Snapshot is the body of GET /api/dashboard.
type Snapshot struct {
	GeneratedAt time.Time `json:"generated_at"`
	// Scheduler is the instance that answered, Leader the leading one.
	Scheduler string `json:"scheduler"`
	Leader    string `json:"leader"`
	// StatusAt is when the leader last wrote the status.
	StatusAt time.Time `json:"status_updated_at,omitzero"`
	// WindowSeconds is the span of every time series; RateSeconds the span
	// of the rates and latencies.
	WindowSeconds float64                 `json:"window_seconds"`
	RateSeconds   float64                 `json:"rate_seconds"`
	Applications  []Application           `json:"applications"`
	Workers       []protocol.WorkerStatus `json:"workers"`
	Jobs          []MethodJobs            `json:"jobs"`
}

// Application is one application in a snapshot.
type Application struct {
	Name        string            `json:"name"`
	RoutePrefix string            `json:"route_prefix"`
	Ingress     string            `json:"ingress"`
	Status      protocol.AppState `json:"status"`
	Message     string            `json:"message,omitempty"`
	Deployments []Deployment      `json:"deployments"`
	// Graph is the live traffic split of an application whose graph has
	// splitters (Options.GraphStatus).
	Graph *protocol.GraphStatus `json:"graph,omitempty"`
}

// Deployment is one deployment in a snapshot: its status (replicas with
// their workers), live traffic and, when autoscaled, the decisions.
type Deployment struct {
	protocol.DeploymentStatus
	Traffic Traffic `json:"traffic"`
	// Decisions are the autoscaler's decisions within the window (and the
	// last one before it), oldest first.
	Decisions []Decision `json:"decisions,omitempty"`
}

// Decision is one scale decision, for the chart.
type Decision struct {
	At      time.Time            `json:"at"`
	Desired int                  `json:"desired"`
	Current int                  `json:"current"`
	Load    float64              `json:"load"`
	Backlog int                  `json:"backlog,omitempty"`
	Reason  protocol.ScaleReason `json:"reason"`
	Message string               `json:"message,omitempty"`
}

// ErrNotRunning: Snapshot was asked for before Run collected anything.
var ErrNotRunning = errors.New("dashboard: not collecting yet")

// Snapshot returns the fleet's state, shared with every caller within
// CacheFor. It makes no JetStream request: everything is in memory.
func (d *Dashboard) Snapshot() (*Snapshot, error) {
	now := time.Now()
	d.viewed.Store(now.UnixNano())
	d.buildMu.Lock()
	defer d.buildMu.Unlock()
	d.mu.Lock()
	if d.cached != nil && now.Sub(d.cachedAt) < d.o.CacheFor {
		s := d.cached
		d.mu.Unlock()
		return s, nil
	}
	running := d.running
	d.mu.Unlock()
	if !running {
		return nil, ErrNotRunning
	}
	s := d.build(now)
	d.mu.Lock()
	d.cached, d.cachedAt = s, now
	d.mu.Unlock()
	return s, nil
}

func (d *Dashboard) build(now time.Time) *Snapshot {
	traffic := d.traffic.stats()
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.status
	s := &Snapshot{GeneratedAt: now.UTC(), Scheduler: d.o.ID, Leader: st.Leader, StatusAt: st.UpdatedAt,
		WindowSeconds: d.o.Window.Seconds(), RateSeconds: RateSpan.Seconds(),
		Applications: []Application{}, Workers: slices.Clone(st.Workers), Jobs: []MethodJobs{}}
	if s.Workers == nil {
		s.Workers = []protocol.WorkerStatus{}
	}
	sort.Slice(s.Workers, func(i, j int) bool { return s.Workers[i].ID < s.Workers[j].ID })
	apps := map[string]protocol.AppStatus{}
	for name, a := range st.Applications {
		apps[name] = a
	}
	// Applications in the config the leader has not reported yet.
	for _, a := range d.config.Applications {
		if _, ok := apps[a.Name]; ok {
			continue
		}
		deps := map[string]protocol.DeploymentStatus{}
		for _, dc := range a.Deployments {
			deps[dc.Name] = protocol.DeploymentStatus{Name: dc.Name, Status: protocol.DeploymentUpdating,
				TargetReplicas: dc.Replicas(), Replicas: []protocol.ReplicaStatus{}}
		}
		apps[a.Name] = protocol.AppStatus{Name: a.Name, RoutePrefix: a.RoutePrefix, Ingress: a.Ingress,
			Status: protocol.AppNotStarted, Message: "waiting for the scheduler leader", Deployments: deps}
	}
	since := now.Add(-d.o.Window)
	for _, a := range apps {
		app := Application{Name: a.Name, RoutePrefix: a.RoutePrefix, Ingress: a.Ingress, Status: a.Status,
			Message: a.Message, Deployments: []Deployment{}}
		if ca, ok := d.config.App(a.Name); ok && ca.Graph != nil && d.o.GraphStatus != nil {
			app.Graph = d.o.GraphStatus(ca)
		}
		for _, ds := range a.Deployments {
			if ds.Replicas == nil {
				ds.Replicas = []protocol.ReplicaStatus{}
			}
			sort.Slice(ds.Replicas, func(i, j int) bool { return ds.Replicas[i].ID < ds.Replicas[j].ID })
			dep := Deployment{DeploymentStatus: ds, Traffic: traffic[depKey(a.Name, ds.Name)]}
			if dep.Traffic.Series == nil {
				dep.Traffic.Series = []Sample{}
			}
			decs := d.decisions[protocol.ScaleKey(a.Name, ds.Name)]
			first := sort.Search(len(decs), func(i int) bool { return decs[i].At.After(since) })
			first = max(first-1, 0) // the decision in force when the window starts
			for _, dec := range decs[first:] {
				dep.Decisions = append(dep.Decisions, Decision{At: dec.At, Desired: dec.Desired, Current: dec.Current,
					Load: dec.Load, Backlog: dec.Backlog, Reason: dec.Reason, Message: dec.Message})
			}
			app.Deployments = append(app.Deployments, dep)
		}
		sort.Slice(app.Deployments, func(i, j int) bool { return app.Deployments[i].Name < app.Deployments[j].Name })
		s.Applications = append(s.Applications, app)
	}
	sort.Slice(s.Applications, func(i, j int) bool { return s.Applications[i].Name < s.Applications[j].Name })
	for _, m := range d.methods {
		s.Jobs = append(s.Jobs, m.summary(now))
	}
	sort.Slice(s.Jobs, func(i, j int) bool {
		return strings.Compare(methodKey(s.Jobs[i].App, s.Jobs[i].Method), methodKey(s.Jobs[j].App, s.Jobs[j].Method)) < 0
	})
	return s
}
