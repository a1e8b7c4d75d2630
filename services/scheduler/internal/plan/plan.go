// Package plan is the scheduler's decision logic as pure functions: given
// the desired config, the live workers, the replica records the workers
// report and the replicas the scheduler has assigned so far, Step decides
// the next set of replicas (scale, rolling update, replacement, deletion),
// places them on workers (see Cluster) and returns each worker's
// assignment; BuildStatus summarises it all. Nothing here does I/O or reads
// the clock: time and IDs come in through Input.
package plan

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// Version hashes the deployment options whose change needs new replicas:
// everything except num_replicas, user_config (reconfigured in place),
// the router-side max_queued_requests and request_timeout, the
// autoscaling_config, max_unavailable and async_methods.
func Version(d config.Deployment) string {
	d.NumReplicas = nil
	d.UserConfig = nil
	d.MaxQueuedRequests = 0
	d.RequestTimeout = 0
	d.AutoscalingConfig = nil // lightweight, as in Ray: no restart
	d.AsyncMethods = nil      // job settings live in streams and consumers
	d.MaxUnavailable = ""     // how to roll, not what runs
	b, _ := json.Marshal(d)   // maps marshal with sorted keys: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// NewID returns a fresh replica ID "<app>-<deployment>-<version[:6]>-<random>".
func NewID(app, dep, version string) string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	if len(version) > 6 {
		version = version[:6]
	}
	return fmt.Sprintf("%s-%s-%s-%s", app, dep, version, strings.ToLower(hex.EncodeToString(b[:])))
}

// Key is the "<app>/<deployment>" key of a deployment.
func Key(app, dep string) string { return app + "/" + dep }

// Replica is one replica the scheduler wants to run.
type Replica struct {
	Spec protocol.ReplicaSpec
	// WorkerID is where it is assigned; "" while it fits nowhere.
	WorkerID string
	// Reason says why an unplaced replica is pending.
	Reason string
	// Labels is the deployment's selector.
	Labels map[string]string
	// Created orders replicas (older first); Placed is when it was
	// assigned to its worker.
	Created, Placed time.Time
	// Seen is set once the worker reported a record for it.
	Seen bool
	// Moves is, while the replica is started to rebalance its deployment,
	// the ID of the replica it replaces (which drains once this one runs).
	Moves string
	// FailedAt is when its record was first seen FAILED (zero: not
	// FAILED); it is replaced StartBackoff later.
	FailedAt time.Time
}

// StartFailures counts a deployment version's replicas that failed to
// start (their record said FAILED) since the deployment was last at its
// target with every replica running.
type StartFailures struct {
	Version string
	Count   int
	// Reason is the last failed replica's message; Last when it failed.
	Reason string
	Last   time.Time
}

// Start failures, after Ray Serve: a FAILED replica is replaced after an
// exponential backoff (1 s, 2 s, 4 s, … up to MaxStartBackoff), and a
// deployment none of whose replicas runs is DEPLOY_FAILED once
// min(MaxStartFailures, 3 × target) replicas failed in a row.
const (
	MaxStartBackoff  = 64 * time.Second
	MaxStartFailures = 20
)

// StartBackoff is how long the n-th FAILED replica in a row stays before
// it is replaced.
func StartBackoff(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	return min(time.Second<<min(n-1, 16), MaxStartBackoff)
}

// DeployFailedAfter is how many start failures in a row make a deployment
// with target replicas DEPLOY_FAILED (while none runs).
func DeployFailedAfter(target int) int {
	return max(1, min(MaxStartFailures, 3*target))
}

// State is what the scheduler carries between passes.
type State struct {
	Replicas map[string]*Replica // by replica ID
	// Healthy remembers, per deployment key, the version that once
	// reached its target: falling below target afterwards is UNHEALTHY,
	// not still deploying.
	Healthy map[string]string
	// Targets remembers each deployment's last target, and Scaling the
	// direction of a change still converging (UPSCALING or DOWNSCALING).
	Targets map[string]int
	Scaling map[string]protocol.DeploymentState
	// Failures counts start failures per deployment key.
	Failures map[string]StartFailures
	// Rollouts holds the strategy of each rolling update in progress.
	Rollouts map[string]Rollout
	// Moved is when each deployment's last rebalancing move ended, and
	// WorkerSince when each live worker was first seen (rebalance.go).
	Moved       map[string]time.Time
	WorkerSince map[string]time.Time
}

// NewState returns an empty state.
func NewState() State {
	return State{Replicas: map[string]*Replica{}, Healthy: map[string]string{}, Targets: map[string]int{},
		Scaling: map[string]protocol.DeploymentState{}, Failures: map[string]StartFailures{}, Rollouts: map[string]Rollout{},
		Moved: map[string]time.Time{}, WorkerSince: map[string]time.Time{}}
}

func (s State) clone() State {
	n := NewState()
	for id, r := range s.Replicas {
		c := *r
		n.Replicas[id] = &c
	}
	for k, v := range s.Healthy {
		n.Healthy[k] = v
	}
	for k, v := range s.Targets {
		n.Targets[k] = v
	}
	for k, v := range s.Scaling {
		n.Scaling[k] = v
	}
	for k, v := range s.Failures {
		n.Failures[k] = v
	}
	maps.Copy(n.Rollouts, s.Rollouts)
	maps.Copy(n.Moved, s.Moved)
	maps.Copy(n.WorkerSince, s.WorkerSince)
	return n
}

// Input is everything one pass looks at.
type Input struct {
	Config config.ServeConfig
	// Workers are the live workers (their Workers-bucket keys exist).
	Workers map[string]protocol.WorkerInfo
	// Records are the replica records workers report, by replica ID.
	Records map[string]protocol.ReplicaInfo
	// Replace names replicas to replace (e.g. failed health checks), with
	// the reason.
	Replace map[string]string
	// StartTimeout is how long a placed replica may go without reaching
	// RUNNING before it is replaced.
	StartTimeout time.Duration
	Now          time.Time
	// NewID makes replica IDs; nil = plan.NewID.
	NewID func(app, dep, version string) string
	// Scale holds the autoscaler's decisions by Key(app, deployment); they
	// set the replica count of deployments with an autoscaling_config.
	Scale map[string]protocol.ScaleDecision
	// Rebalance turns on moving replicas of unevenly spread deployments
	// (rebalance.go); RebalanceCooldown spaces one deployment's moves and
	// is how long a worker must be live before it takes a moved replica.
	Rebalance         bool
	RebalanceCooldown time.Duration
}

// Desired is the replica count a deployment asks for: the autoscaler's
// decision for an autoscaled deployment that has one, else Replicas().
func (in Input) Desired(app string, d config.Deployment) int {
	if d.AutoscalingConfig != nil {
		if dec, ok := in.Scale[Key(app, d.Name)]; ok {
			return dec.Desired
		}
	}
	return d.Replicas()
}

// Target is the replica count the scheduler converges to: Desired,
// clamped to the autoscaling bounds (a decision made before the bounds
// changed does not escape them).
func (in Input) Target(app string, d config.Deployment) int {
	n := in.Desired(app, d)
	if ac := d.AutoscalingConfig; ac != nil {
		if ac.MinReplicas != nil {
			n = max(n, *ac.MinReplicas)
		}
		if ac.MaxReplicas > 0 {
			n = min(n, ac.MaxReplicas)
		}
	}
	return n
}

// Event is something a pass did, for logs.
type Event struct {
	ReplicaID, App, Deployment, WorkerID string
	Action                               string // "add", "place", "remove"
	Reason                               string
}

// Result is the outcome of one pass.
type Result struct {
	// Assignments holds one entry per live worker (Epoch unset).
	Assignments map[string]protocol.Assignment
	Events      []Event
	// Cluster is the capacity model after placement.
	Cluster *Cluster
}

func placeable(w protocol.WorkerInfo, ok bool) bool { return ok && !w.Draining }

// Running reports whether r's worker reports it RUNNING.
func (in Input) Running(r *Replica) bool {
	rec, ok := in.Records[r.Spec.ID]
	return ok && r.WorkerID != "" && rec.WorkerID == r.WorkerID && rec.State == protocol.ReplicaRunning
}

// Step computes the next state from prev and in; prev is not modified.
func Step(prev State, in Input) (State, Result) {
	st := prev.clone()
	newID := in.NewID
	if newID == nil {
		newID = NewID
	}
	p := &pass{in: in, st: &st, avoid: map[string]map[string]bool{}, newID: newID}
	res := &p.res
	remove, replace := p.remove, p.replace

	// 1. Replicas that are lost or broken go; the count logic below adds
	// their successors.
	for _, r := range sortedReplicas(st.Replicas) {
		if reason, ok := in.Replace[r.Spec.ID]; ok {
			replace(r, reason)
			continue
		}
		if r.WorkerID == "" {
			continue
		}
		w, ok := in.Workers[r.WorkerID]
		if !placeable(w, ok) {
			reason := "worker " + r.WorkerID + " lost"
			if ok {
				reason = "worker " + r.WorkerID + " draining"
			}
			replace(r, reason)
			continue
		}
		rec, hasRec := in.Records[r.Spec.ID]
		if hasRec && rec.WorkerID == r.WorkerID {
			r.Seen = true
		}
		switch {
		case hasRec && rec.WorkerID == r.WorkerID && rec.State == protocol.ReplicaFailed:
			k := Key(r.Spec.App, r.Spec.Deployment)
			if r.FailedAt.IsZero() {
				r.FailedAt = in.Now
				f := st.Failures[k]
				if f.Version != r.Spec.Version {
					f = StartFailures{Version: r.Spec.Version}
				}
				f.Count++
				f.Reason, f.Last = rec.Message, in.Now
				st.Failures[k] = f
			}
			if in.Now.Sub(r.FailedAt) >= StartBackoff(st.Failures[k].Count) {
				replace(r, "FAILED: "+rec.Message)
			}
		case hasRec && rec.WorkerID == r.WorkerID && rec.State == protocol.ReplicaStarting &&
			in.StartTimeout > 0 && in.Now.Sub(startClock(r, rec)) > in.StartTimeout:
			replace(r, fmt.Sprintf("still STARTING after %s", in.StartTimeout))
		case !hasRec && r.Seen:
			replace(r, "replica record vanished while its worker lives")
		case !hasRec && in.StartTimeout > 0 && in.Now.Sub(r.Placed) > in.StartTimeout:
			replace(r, fmt.Sprintf("worker did not start it within %s", in.StartTimeout))
		}
	}

	// 1b. Rebalancing moves whose new replica runs finish; the others stay
	// out of the count until then (see rebalance.go).
	p.settleMoves()

	// 2. Converge every desired deployment.
	byKey := map[string][]*Replica{}
	for _, r := range sortedReplicas(st.Replicas) {
		if r.Moves != "" {
			continue
		}
		k := Key(r.Spec.App, r.Spec.Deployment)
		byKey[k] = append(byKey[k], r)
	}
	desired := map[string]bool{}
	for _, app := range in.Config.Applications {
		for _, d := range app.Deployments {
			k := Key(app.Name, d.Name)
			desired[k] = true
			ver := Version(d)
			var cur, old []*Replica
			for _, r := range byKey[k] {
				if r.Spec.Version == ver {
					cur = append(cur, r)
				} else {
					old = append(old, r)
				}
			}
			uc := compactJSON(d.UserConfig)
			for _, r := range cur {
				r.Spec.UserConfig = uc
				r.Spec.AsyncMethods = d.AsyncMethods // applied in place (a new job runner)
				r.Labels = d.Resources.Labels
			}
			target := in.Target(app.Name, d)
			add := func() {
				id := newID(app.Name, d.Name, ver)
				r := &Replica{
					Spec: protocol.ReplicaSpec{
						ID: id, App: app.Name, Deployment: d.Name, Handler: d.Handler, Version: ver,
						UserConfig: uc, MaxOngoingRequests: d.MaxOngoingRequests,
						CPU: d.Resources.CPUOrDefault(), GPU: d.Resources.GPU, MemoryBytes: int64(d.Resources.Memory),
						GracefulShutdownTimeout: d.GracefulShutdownTimeout,
						MaxModelsPerReplica:     d.MaxModelsPerReplica,
						Runtime:                 d.Runtime, Process: processSpec(d),
						AsyncMethods: d.AsyncMethods,
					},
					Labels:  d.Resources.Labels,
					Created: in.Now,
				}
				st.Replicas[id] = r
				cur = append(cur, r)
				res.Events = append(res.Events, Event{ReplicaID: id, App: app.Name, Deployment: d.Name, Action: "add"})
			}
			surge := max(1, target/5)
			if st.Rollouts[k].Strategy == protocol.RolloutReplace {
				surge = max(surge, d.MaxUnavailable.Of(target)) // new replicas waiting for room
			}
			grow := func() {
				for len(cur) < target && (len(old) == 0 || len(cur)+len(old) < target+surge) {
					add()
				}
			}
			grow()
			if f, ok := st.Failures[k]; ok && f.Version != ver {
				delete(st.Failures, k) // a new version starts counting afresh
			}
			if len(cur) == target && allRunning(cur, in) {
				delete(st.Failures, k) // at target, every replica running
			}
			if len(cur) > target {
				// Scale down: unplaced first, then not yet running, then newest.
				extra := slicesSortedForRemoval(cur, in)
				for _, r := range extra[:len(cur)-target] {
					remove(r, "scale down")
				}
				cur = extra[len(cur)-target:]
			}
			if len(old) > 0 {
				running := 0
				for _, r := range append(append([]*Replica{}, cur...), old...) {
					if in.Running(r) {
						running++
					}
				}
				var keep []*Replica
				for _, r := range slicesSortedForRemoval(old, in) {
					switch {
					case !in.Running(r):
						remove(r, "rolling update: replaced by version "+ver)
					case running-1 >= target:
						running--
						remove(r, "rolling update: replaced by version "+ver)
					default:
						keep = append(keep, r)
					}
				}
				old = keep
				grow()
			}
		}
	}

	// 3. Replicas of deleted applications and deployments go.
	for _, r := range sortedReplicas(st.Replicas) {
		if !desired[Key(r.Spec.App, r.Spec.Deployment)] {
			remove(r, "deleted from the config")
		}
	}

	// 4. Place what is unplaced.
	var workers []protocol.WorkerInfo
	for _, w := range in.Workers {
		if placeable(w, true) {
			workers = append(workers, w)
		}
	}
	cl := NewCluster(workers)
	var pending []*Replica
	for _, r := range sortedReplicas(st.Replicas) {
		if r.WorkerID == "" {
			pending = append(pending, r)
			continue
		}
		cl.Add(r.WorkerID, Key(r.Spec.App, r.Spec.Deployment), r.Spec)
	}
	for _, r := range pending {
		pl, err := cl.Place(p.request(r), r.Spec)
		if err != nil {
			r.Reason = err.Error()
			continue
		}
		p.placed(r, pl)
	}
	res.Cluster = cl

	// 4b. Rolling updates with no room for a surge replica replace old
	// replicas first (rollout.go); 4c. uneven deployments move a replica
	// (rebalance.go).
	p.makeRoom(cl)
	p.rebalance(cl)

	// 5. One assignment per live worker; a draining worker gets none.
	res.Assignments = map[string]protocol.Assignment{}
	for id := range in.Workers {
		res.Assignments[id] = protocol.Assignment{WorkerID: id, Replicas: []protocol.ReplicaSpec{}}
	}
	for _, r := range sortedReplicas(st.Replicas) {
		if r.WorkerID == "" {
			continue
		}
		a := res.Assignments[r.WorkerID]
		a.Replicas = append(a.Replicas, r.Spec)
		res.Assignments[r.WorkerID] = a
	}
	for id, a := range res.Assignments {
		sort.Slice(a.Replicas, func(i, j int) bool { return a.Replicas[i].ID < a.Replicas[j].ID })
		res.Assignments[id] = a
	}
	return st, *res
}

// pass is one Step's working set: the state being computed, its result
// and the workers each deployment's replaced replicas should avoid.
type pass struct {
	in    Input
	st    *State
	res   Result
	avoid map[string]map[string]bool // deployment key → worker IDs
	newID func(app, dep, version string) string
}

// remove drops r from the state, with the reason in the events.
func (p *pass) remove(r *Replica, reason string) {
	delete(p.st.Replicas, r.Spec.ID)
	p.res.Events = append(p.res.Events, Event{ReplicaID: r.Spec.ID, App: r.Spec.App, Deployment: r.Spec.Deployment,
		WorkerID: r.WorkerID, Action: "remove", Reason: reason})
}

// replace removes a broken r; its successor avoids r's worker.
func (p *pass) replace(r *Replica, reason string) {
	k := Key(r.Spec.App, r.Spec.Deployment)
	if p.avoid[k] == nil {
		p.avoid[k] = map[string]bool{}
	}
	p.avoid[k][r.WorkerID] = true
	p.remove(r, reason)
}

// request is what placing r asks of a worker.
func (p *pass) request(r *Replica) Request {
	k := Key(r.Spec.App, r.Spec.Deployment)
	return Request{Key: k, Handler: r.Spec.Handler, Runtime: r.Spec.Runtime, CPU: r.Spec.CPU, GPU: r.Spec.GPU,
		Memory: r.Spec.MemoryBytes, Labels: r.Labels, Avoid: p.avoid[k]}
}

// placed records that r was placed at pl.
func (p *pass) placed(r *Replica, pl Placement) {
	r.WorkerID, r.Spec.GPUIndices, r.Placed, r.Reason, r.Seen = pl.WorkerID, pl.GPUIndices, p.in.Now, "", false
	p.res.Events = append(p.res.Events, Event{ReplicaID: r.Spec.ID, App: r.Spec.App, Deployment: r.Spec.Deployment,
		WorkerID: pl.WorkerID, Action: "place"})
}

// processSpec carries a process-runtime deployment's child into its
// replicas' specs; nil for the go runtime.
func processSpec(d config.Deployment) *protocol.ProcessSpec {
	if d.Runtime != config.RuntimeProcess {
		return nil
	}
	return &protocol.ProcessSpec{
		Command: append([]string(nil), d.Command...), Env: d.Env, Port: d.Port, HealthPath: d.HealthPath,
		Protocol: d.Protocol, StartupTimeout: d.StartupTimeout,
	}
}

// startClock is when r last began starting: when it was placed, or when
// its child process last exited (a process replica restarting in place is
// STARTING again).
func startClock(r *Replica, rec protocol.ReplicaInfo) time.Time {
	if rec.Process != nil && rec.Process.LastExitAt.After(r.Placed) {
		return rec.Process.LastExitAt
	}
	return r.Placed
}

func allRunning(rs []*Replica, in Input) bool {
	for _, r := range rs {
		if !in.Running(r) {
			return false
		}
	}
	return true
}

// sortedReplicas returns the replicas oldest first (ties by ID).
func sortedReplicas(m map[string]*Replica) []*Replica {
	out := make([]*Replica, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].Spec.ID < out[j].Spec.ID
	})
	return out
}

// slicesSortedForRemoval orders rs so that the ones to remove first come
// first: unplaced, then placed but not running, then running newest first.
func slicesSortedForRemoval(rs []*Replica, in Input) []*Replica {
	out := append([]*Replica{}, rs...)
	rank := func(r *Replica) int {
		switch {
		case r.WorkerID == "":
			return 0
		case !in.Running(r):
			return 1
		}
		return 2
	}
	sort.SliceStable(out, func(i, j int) bool {
		ri, rj := rank(out[i]), rank(out[j])
		if ri != rj {
			return ri < rj
		}
		return out[i].Created.After(out[j].Created)
	})
	return out
}

func compactJSON(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	if buf.String() == "null" {
		return nil
	}
	return buf.Bytes()
}
