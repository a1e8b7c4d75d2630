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
	"errors"
	"fmt"
	"maps"
	"slices"
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
	Reason protocol.Reason
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
	// VanishedAt is when its record, once seen, was first found missing
	// while its worker lives (zero: it is there); it is replaced
	// VanishGrace later unless the record is back.
	VanishedAt time.Time
}

// VanishGrace is how long a replica's record may be missing, while its
// worker lives, before the replica is replaced: two of the workers'
// heartbeats. A record expires at once when the Replicas bucket's new
// leader takes over after an election longer than the record's TTL (the
// workers could not refresh it meanwhile), and the next heartbeat puts it
// back; replacing every replica of the fleet then would be the fault.
const VanishGrace = 4 * time.Second

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
	// Removed says why each replica removed lately was removed, by ID,
	// until its record leaves the Replicas bucket (BuildStatus shows it on
	// the STOPPING replica).
	Removed map[string]protocol.Reason
	// Moved is when each deployment's last rebalancing move ended, and
	// WorkerSince when each live worker was first seen (rebalance.go).
	Moved       map[string]time.Time
	WorkerSince map[string]time.Time
	// Unpinned says, per deployment key, why the replica kept for an
	// earlier version's pinned runs was given up (it fit on no worker
	// for PinnedPlaceGrace), until the deployment rolls to another
	// version; BuildStatus tells it.
	Unpinned map[string]Unpinned
}

// Unpinned is a kept replica given up: Reason (pinned_unplaced) names its
// version and why it fit nowhere; Current is the deployment's version
// then, whose replicas take the runs, and At when it was given up.
type Unpinned struct {
	Reason  protocol.Reason
	Current string
	At      time.Time
}

// PinnedPlaceGrace is how long a replica kept for pinned workflow runs
// (re-added after its worker was lost) may fit on no worker before it is
// given up and its runs are unpinned: long enough for a lost worker to be
// restarted by its supervisor, short beside the pins' 24 h.
const PinnedPlaceGrace = 30 * time.Second

// NewState returns an empty state.
func NewState() State {
	return State{Replicas: map[string]*Replica{}, Healthy: map[string]string{}, Targets: map[string]int{},
		Scaling: map[string]protocol.DeploymentState{}, Failures: map[string]StartFailures{}, Rollouts: map[string]Rollout{},
		Removed: map[string]protocol.Reason{}, Moved: map[string]time.Time{}, WorkerSince: map[string]time.Time{},
		Unpinned: map[string]Unpinned{}}
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
	maps.Copy(n.Removed, s.Removed)
	maps.Copy(n.Moved, s.Moved)
	maps.Copy(n.WorkerSince, s.WorkerSince)
	maps.Copy(n.Unpinned, s.Unpinned)
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
	Replace map[string]protocol.Reason
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
	// Colocate places a replica, among the workers equal for its own
	// deployment's spread, on the one holding the most replicas of the
	// deployments joined to it by `uses` edges (those it calls and those
	// calling it): their handle calls then stay in the worker's process
	// (prefer-local routing) instead of crossing NATS.
	Colocate bool
	// Pinned counts, by Key(app, deployment) and version, the workflow
	// runs pinned to a version (jobs.Record.PinnedTo). A rolling update
	// keeps one RUNNING replica of each earlier version with pinned runs,
	// marked PinnedOnly (no requests, only those runs), beyond the
	// target, until the count is 0. A deployment absent from a non-nil
	// map is not counted yet: one replica of each earlier version is kept
	// until it is. nil: nothing is kept (versions are not tracked).
	Pinned map[string]map[string]int
}

// keepFor reports whether a replica of version ver of deployment key
// must be kept for runs pinned to it.
func (in Input) keepFor(key, ver string) bool {
	if in.Pinned == nil {
		return false
	}
	n, known := in.Pinned[key]
	return !known || n[ver] > 0
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

// Event is something a pass did, for logs and metrics.
type Event struct {
	ReplicaID, App, Deployment, WorkerID string
	Action                               string // "add", "place", "remove"
	// Reason says why a replica was removed (or added to rebalance).
	Reason protocol.Reason
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
// A pass runs its phases in order, each deciding one thing:
//
//  1. replaceBroken: assigned replicas that are lost or broken go;
//  2. settleMoves: rebalancing moves whose new replica runs end;
//  3. converge: every deployment of the config reaches its target count
//     of its current version (scale, in-place changes, rolling updates);
//  4. removeDeleted: replicas of deployments no longer in the config go;
//  5. placePending: replicas with no worker are placed where they fit;
//  6. makeRoom: rolling updates with no room for a surge replica drain
//     old replicas first;
//  7. rebalance: an unevenly spread deployment moves one replica;
//  8. assignments: one assignment per live worker.
func Step(prev State, in Input) (State, Result) {
	st := prev.clone()
	newID := in.NewID
	if newID == nil {
		newID = NewID
	}
	p := &pass{in: in, st: &st, avoid: map[string]map[string]bool{}, newID: newID}
	if in.Colocate {
		p.peers, p.rank = usesPeers(in.Config)
	}
	for id := range st.Removed {
		if _, ok := in.Records[id]; !ok {
			delete(st.Removed, id) // stopped: its reason is told no more
		}
	}
	p.replaceBroken()
	p.settleMoves()
	desired := p.converge()
	p.removeDeleted(desired)
	cl := p.placePending()
	p.res.Cluster = cl
	p.makeRoom(cl)
	p.rebalance(cl)
	p.res.Assignments = p.assignments()
	return st, p.res
}

// replaceBroken removes the assigned replicas that are lost or broken —
// named in Input.Replace (failed health checks), on a worker that is gone
// or draining, FAILED for longer than their start backoff, not RUNNING
// within the start timeout, or whose record vanished while their worker
// lives (for VanishGrace) — and counts start failures. converge adds their successors,
// which placement steers away from the worker they left.
func (p *pass) replaceBroken() {
	in := p.in
	defer p.keepPinned()
	for _, r := range sortedReplicas(p.st.Replicas) {
		if reason, ok := in.Replace[r.Spec.ID]; ok {
			p.replace(r, reason)
			continue
		}
		if r.WorkerID == "" {
			continue
		}
		w, ok := in.Workers[r.WorkerID]
		if !placeable(w, ok) {
			reason := protocol.Reason{Code: protocol.ReasonWorkerLost, WorkerID: r.WorkerID}
			if ok {
				reason.Code = protocol.ReasonWorkerDraining
			}
			p.replace(r, reason)
			continue
		}
		rec, hasRec := in.Records[r.Spec.ID]
		if hasRec && rec.WorkerID == r.WorkerID {
			r.Seen = true
		}
		if hasRec {
			r.VanishedAt = time.Time{}
		}
		switch {
		case hasRec && rec.WorkerID == r.WorkerID && rec.State == protocol.ReplicaFailed:
			if n := p.startFailed(r, rec); in.Now.Sub(r.FailedAt) >= StartBackoff(n) {
				p.replace(r, protocol.Reason{Code: protocol.ReasonStartFailed, Detail: rec.Message})
			}
		case hasRec && rec.WorkerID == r.WorkerID && rec.State == protocol.ReplicaStarting &&
			in.StartTimeout > 0 && in.Now.Sub(startClock(r, rec)) > in.StartTimeout:
			p.replace(r, protocol.Reason{Code: protocol.ReasonStartTimeout, Timeout: config.Duration(in.StartTimeout)})
		case !hasRec && r.Seen:
			if r.VanishedAt.IsZero() {
				r.VanishedAt = in.Now
			}
			if in.Now.Sub(r.VanishedAt) >= VanishGrace {
				p.replace(r, protocol.Reason{Code: protocol.ReasonRecordVanished})
			}
		case !hasRec && in.StartTimeout > 0 && in.Now.Sub(r.Placed) > in.StartTimeout:
			p.replace(r, protocol.Reason{Code: protocol.ReasonNotStarted, Timeout: config.Duration(in.StartTimeout)})
		}
	}
}

// startFailed notes that r's record says FAILED: the first time it is
// seen, r's deployment counts one more start failure of its version. It
// returns the deployment's count of failures in a row.
func (p *pass) startFailed(r *Replica, rec protocol.ReplicaInfo) int {
	k := Key(r.Spec.App, r.Spec.Deployment)
	if r.FailedAt.IsZero() {
		r.FailedAt = p.in.Now
		f := p.st.Failures[k]
		if f.Version != r.Spec.Version {
			f = StartFailures{Version: r.Spec.Version}
		}
		f.Count++
		f.Reason, f.Last = rec.Message, p.in.Now
		p.st.Failures[k] = f
	}
	return p.st.Failures[k].Count
}

// converge brings every deployment of the config to its target (see
// deploymentPass.converge) and returns the keys of the deployments the
// config holds. Replicas started by a rebalancing move stay out of the
// count until the move ends.
func (p *pass) converge() map[string]bool {
	byKey := map[string][]*Replica{}
	for _, r := range sortedReplicas(p.st.Replicas) {
		if r.Moves != "" {
			continue
		}
		k := Key(r.Spec.App, r.Spec.Deployment)
		byKey[k] = append(byKey[k], r)
	}
	desired := map[string]bool{}
	for _, app := range p.in.Config.Applications {
		for _, d := range app.Deployments {
			k := Key(app.Name, d.Name)
			desired[k] = true
			dp := &deploymentPass{pass: p, app: app.Name, d: d, key: k, ver: Version(d), uc: compactJSON(d.UserConfig),
				target: p.in.Target(app.Name, d)}
			dp.converge(byKey[k])
		}
	}
	return desired
}

// deploymentPass is one deployment's part of converge: its replicas of
// the current version (cur), of earlier versions (old), and of earlier
// versions kept only for their pinned workflow runs (kept).
type deploymentPass struct {
	*pass
	app            string
	d              config.Deployment
	key, ver       string
	uc             json.RawMessage // the compacted user_config
	target         int
	cur, old, kept []*Replica
}

// converge decides the deployment's replicas: the current version's get
// the settings applied in place, new ones are added up to the target
// (with a surge while old replicas remain), the start-failure count is
// reset once the deployment is at target with every replica RUNNING,
// extra replicas are scaled down, and old replicas retire (retireOld).
func (dp *deploymentPass) converge(rs []*Replica) {
	if u, ok := dp.st.Unpinned[dp.key]; ok && u.Current != dp.ver {
		delete(dp.st.Unpinned, dp.key) // told until the next version
	}
	for _, r := range rs {
		switch {
		case r.Spec.Version == dp.ver:
			dp.cur = append(dp.cur, r)
		case r.Spec.PinnedOnly:
			dp.kept = append(dp.kept, r)
		default:
			dp.old = append(dp.old, r)
		}
	}
	dp.reconfigure()
	dp.grow()
	dp.settleFailures()
	dp.scaleDown()
	if len(dp.old) > 0 || len(dp.kept) > 0 {
		dp.retireOld()
		dp.grow()
	}
}

// reconfigure applies to the current version's replicas what changes in
// place: user_config, async_methods (a new job runner) and the labels
// they are placed by.
func (dp *deploymentPass) reconfigure() {
	for _, r := range dp.cur {
		r.Spec.UserConfig = dp.uc
		r.Spec.AsyncMethods = dp.d.AsyncMethods
		r.Labels = dp.d.Resources.Labels
		r.Spec.PinnedOnly = false // a kept replica of a version rolled back to serves again
	}
}

// surge is how many replicas above the target a rolling update may run:
// a fifth of the target (at least one), or, while it replaces old
// replicas first for lack of room, max_unavailable new replicas waiting
// for room.
func (dp *deploymentPass) surge() int {
	s := max(1, dp.target/5)
	if dp.st.Rollouts[dp.key].Strategy == protocol.RolloutReplace {
		s = max(s, dp.d.MaxUnavailable.Of(dp.target))
	}
	return s
}

// grow adds replicas of the current version until the target is reached,
// or, while old replicas remain, until the surge is used up.
func (dp *deploymentPass) grow() {
	surge := dp.surge()
	for len(dp.cur) < dp.target && (len(dp.old) == 0 || len(dp.cur)+len(dp.old) < dp.target+surge) {
		dp.add()
	}
}

// add creates an unplaced replica of the current version.
func (dp *deploymentPass) add() {
	d := dp.d
	id := dp.newID(dp.app, d.Name, dp.ver)
	r := &Replica{
		Spec: protocol.ReplicaSpec{
			ID: id, App: dp.app, Deployment: d.Name, Handler: d.Handler, Version: dp.ver,
			UserConfig: dp.uc, MaxOngoingRequests: d.MaxOngoingRequests,
			CPU: d.Resources.CPUOrDefault(), GPU: d.Resources.GPU, MemoryBytes: int64(d.Resources.Memory),
			GracefulShutdownTimeout: d.GracefulShutdownTimeout,
			MaxModelsPerReplica:     d.MaxModelsPerReplica,
			Runtime:                 d.Runtime, Process: processSpec(d),
			AsyncMethods: d.AsyncMethods,
		},
		Labels:  d.Resources.Labels,
		Created: dp.in.Now,
	}
	dp.st.Replicas[id] = r
	dp.cur = append(dp.cur, r)
	dp.res.Events = append(dp.res.Events, Event{ReplicaID: id, App: dp.app, Deployment: d.Name, Action: "add"})
}

// settleFailures forgets the deployment's start failures when they were
// of another version (a new version counts afresh) or when the
// deployment is at target with every replica RUNNING.
func (dp *deploymentPass) settleFailures() {
	if f, ok := dp.st.Failures[dp.key]; ok && f.Version != dp.ver {
		delete(dp.st.Failures, dp.key)
	}
	if len(dp.cur) == dp.target && allRunning(dp.cur, dp.in) {
		delete(dp.st.Failures, dp.key)
	}
}

// scaleDown removes current-version replicas above the target: unplaced
// ones first, then those not yet running, then the newest.
func (dp *deploymentPass) scaleDown() {
	if len(dp.cur) <= dp.target {
		return
	}
	extra := slicesSortedForRemoval(dp.cur, dp.in)
	for _, r := range extra[:len(dp.cur)-dp.target] {
		dp.remove(r, protocol.Reason{Code: protocol.ReasonScaleDown})
	}
	dp.cur = extra[len(dp.cur)-dp.target:]
}

// retireOld removes replicas of earlier versions: those not running at
// once, running ones while the deployment keeps at least its target
// RUNNING without them (unplaced and not running first, then newest).
// The last running replica of a version that workflow runs are pinned to
// (Input.Pinned) is kept instead, beyond the target, marked PinnedOnly
// (the change applies in place: it stops taking requests and new runs);
// it goes once no run is pinned to its version. A kept replica that is
// lost or broken is replaced like any other (replaceBroken, keepPinned);
// one that fits on no worker for PinnedPlaceGrace is given up
// (State.Unpinned), and the scheduler unpins its version's runs.
func (dp *deploymentPass) retireOld() {
	running := 0
	for _, r := range append(append([]*Replica{}, dp.cur...), dp.old...) {
		if dp.in.Running(r) {
			running++
		}
	}
	reason := protocol.Reason{Code: protocol.ReasonRollingUpdate, Version: dp.ver}
	kept := map[string]bool{} // versions with a kept replica
	var keptNow []*Replica
	byPreference := slicesSortedForRemoval(dp.kept, dp.in)
	slices.Reverse(byPreference) // running first, unplaced last
	for _, r := range byPreference {
		v := r.Spec.Version
		switch {
		case kept[v] || !dp.in.keepFor(dp.key, v):
			dp.remove(r, reason)
			continue
		case r.WorkerID == "" && !r.Reason.IsZero() && dp.in.Now.Sub(r.Created) >= PinnedPlaceGrace:
			why := protocol.Reason{Code: protocol.ReasonPinnedUnplaced, Version: v, Timeout: config.Duration(PinnedPlaceGrace),
				Detail: r.Reason.String()}
			dp.remove(r, why)
			dp.st.Unpinned[dp.key] = Unpinned{Reason: why, Current: dp.ver, At: dp.in.Now}
			continue
		}
		kept[v] = true
		keptNow = append(keptNow, r)
	}
	var keep []*Replica
	for _, r := range slicesSortedForRemoval(dp.old, dp.in) {
		switch {
		case !dp.in.Running(r):
			dp.remove(r, reason)
		case running-1 >= dp.target:
			running--
			if v := r.Spec.Version; !kept[v] && dp.in.keepFor(dp.key, v) {
				kept[v] = true
				r.Spec.PinnedOnly = true
				keptNow = append(keptNow, r)
				continue
			}
			dp.remove(r, reason)
		default:
			keep = append(keep, r)
		}
	}
	dp.old, dp.kept = keep, keptNow
}

// removeDeleted removes the replicas of applications and deployments not
// in desired (the keys converge returned).
func (p *pass) removeDeleted(desired map[string]bool) {
	for k := range p.st.Unpinned {
		if !desired[k] {
			delete(p.st.Unpinned, k)
		}
	}
	for _, r := range sortedReplicas(p.st.Replicas) {
		if !desired[Key(r.Spec.App, r.Spec.Deployment)] {
			p.remove(r, protocol.Reason{Code: protocol.ReasonDeleted})
		}
	}
}

// placePending models the placeable workers with the replicas assigned
// to them and places every unplaced replica, oldest first, where it fits
// (Cluster.Place); one that fits nowhere keeps the reason. It returns the
// model, which makeRoom and rebalance go on using.
func (p *pass) placePending() *Cluster {
	var workers []protocol.WorkerInfo
	for _, w := range p.in.Workers {
		if placeable(w, true) {
			workers = append(workers, w)
		}
	}
	cl := NewCluster(workers)
	var pending []*Replica
	for _, r := range sortedReplicas(p.st.Replicas) {
		if r.WorkerID == "" {
			pending = append(pending, r)
			continue
		}
		cl.Add(r.WorkerID, Key(r.Spec.App, r.Spec.Deployment), r.Spec)
	}
	if p.rank != nil {
		// Replicas made in the same pass: along the uses edges, so that
		// each finds a peer placed (sortedReplicas ordered them by ID).
		sort.SliceStable(pending, func(i, j int) bool {
			a, b := pending[i], pending[j]
			if !a.Created.Equal(b.Created) {
				return a.Created.Before(b.Created)
			}
			return p.rank[Key(a.Spec.App, a.Spec.Deployment)] < p.rank[Key(b.Spec.App, b.Spec.Deployment)]
		})
	}
	for _, r := range pending {
		pl, err := cl.Place(p.request(r), r.Spec)
		if err != nil {
			if nf := (*NoFitError)(nil); errors.As(err, &nf) {
				r.Reason = nf.Reason
			}
			continue
		}
		p.placed(r, pl)
	}
	return cl
}

// assignments returns one assignment per live worker, its replicas
// sorted by ID; a draining worker's is empty.
func (p *pass) assignments() map[string]protocol.Assignment {
	out := map[string]protocol.Assignment{}
	for id := range p.in.Workers {
		out[id] = protocol.Assignment{WorkerID: id, Replicas: []protocol.ReplicaSpec{}}
	}
	for _, r := range sortedReplicas(p.st.Replicas) {
		if r.WorkerID == "" {
			continue
		}
		a := out[r.WorkerID]
		a.Replicas = append(a.Replicas, r.Spec)
		out[r.WorkerID] = a
	}
	for id, a := range out {
		sort.Slice(a.Replicas, func(i, j int) bool { return a.Replicas[i].ID < a.Replicas[j].ID })
		out[id] = a
	}
	return out
}

// pass is one Step's working set: the state being computed, its result
// and the workers each deployment's replaced replicas should avoid.
type pass struct {
	in    Input
	st    *State
	res   Result
	avoid map[string]map[string]bool // deployment key → worker IDs
	newID func(app, dep, version string) string
	// replaced holds the replicas replaceBroken removed (keepPinned).
	replaced []replaced
	// peers holds, by deployment key, the keys of the deployments joined
	// to it by uses edges, either way (Input.Colocate; nil: off); rank
	// orders an application's deployments along them from its ingress,
	// so that each is placed after a peer it can join.
	peers map[string][]string
	rank  map[string]int
}

// remove drops r from the state, with the reason in the events and in
// State.Removed.
func (p *pass) remove(r *Replica, reason protocol.Reason) {
	delete(p.st.Replicas, r.Spec.ID)
	p.st.Removed[r.Spec.ID] = reason
	p.res.Events = append(p.res.Events, Event{ReplicaID: r.Spec.ID, App: r.Spec.App, Deployment: r.Spec.Deployment,
		WorkerID: r.WorkerID, Action: "remove", Reason: reason})
}

// replace removes a broken r; its successor avoids r's worker.
func (p *pass) replace(r *Replica, reason protocol.Reason) {
	k := Key(r.Spec.App, r.Spec.Deployment)
	if p.avoid[k] == nil {
		p.avoid[k] = map[string]bool{}
	}
	p.avoid[k][r.WorkerID] = true
	p.remove(r, reason)
	p.replaced = append(p.replaced, replaced{r, reason})
}

// keepPinned adds a successor for each replaced replica of an earlier
// version than its deployment's that workflow runs are pinned to, when
// no replica of that version is left: the same spec under a new ID,
// marked PinnedOnly, placed like any replacement (away from the worker
// it left). For a replica already kept for pinned runs it is enough that
// the runs are not counted yet (Input.keepFor); for one of a rolling
// update's old replicas the count must say there are some. retireOld
// keeps the successor while runs are pinned to its version and gives it
// up after PinnedPlaceGrace on no worker.
func (p *pass) keepPinned() {
	for _, lost := range p.replaced {
		s := lost.r.Spec
		k := Key(s.App, s.Deployment)
		a, ok := p.in.Config.App(s.App)
		var d config.Deployment
		if ok {
			d, ok = a.Deployment(s.Deployment)
		}
		if !ok || Version(d) == s.Version || p.hasVersion(k, s.Version) {
			continue
		}
		if n, counted := p.in.Pinned[k]; !(s.PinnedOnly && p.in.keepFor(k, s.Version)) && !(counted && n[s.Version] > 0) {
			continue
		}
		s.ID, s.GPUIndices, s.PinnedOnly = p.newID(s.App, s.Deployment, s.Version), nil, true
		p.st.Replicas[s.ID] = &Replica{Spec: s, Labels: lost.r.Labels, Created: p.in.Now}
		p.res.Events = append(p.res.Events, Event{ReplicaID: s.ID, App: s.App, Deployment: s.Deployment, Action: "add", Reason: lost.why})
	}
	p.replaced = nil
}

// hasVersion reports whether deployment key k has a replica of version
// ver.
func (p *pass) hasVersion(k, ver string) bool {
	for _, r := range p.st.Replicas {
		if r.Spec.Version == ver && Key(r.Spec.App, r.Spec.Deployment) == k {
			return true
		}
	}
	return false
}

// replaced is a replica replaceBroken removed, and why.
type replaced struct {
	r   *Replica
	why protocol.Reason
}

// request is what placing r asks of a worker.
func (p *pass) request(r *Replica) Request {
	k := Key(r.Spec.App, r.Spec.Deployment)
	return Request{Key: k, Handler: r.Spec.Handler, Runtime: r.Spec.Runtime, CPU: r.Spec.CPU, GPU: r.Spec.GPU,
		Memory: r.Spec.MemoryBytes, Labels: r.Labels, Avoid: p.avoid[k], Peers: p.peers[k]}
}

// usesPeers returns, by deployment key, the keys of the deployments of
// the same application joined to it by a uses edge in either direction
// (sorted, without repeats), and each deployment's rank in a depth-first
// walk of those edges from its application's ingress (the deployments the
// walk does not reach follow, in config order, each with its own walk).
func usesPeers(cfg config.ServeConfig) (peers map[string][]string, rank map[string]int) {
	peers, rank = map[string][]string{}, map[string]int{}
	for _, a := range cfg.Applications {
		for _, d := range a.Deployments {
			from := Key(a.Name, d.Name)
			for _, u := range d.Uses {
				if to := Key(a.Name, u); to != from {
					peers[from] = append(peers[from], to)
					peers[to] = append(peers[to], from)
				}
			}
		}
	}
	for k, ps := range peers {
		slices.Sort(ps)
		peers[k] = slices.Compact(ps)
	}
	for _, a := range cfg.Applications {
		queue := []string{Key(a.Name, a.Ingress)}
		for _, d := range a.Deployments {
			queue = append(queue, Key(a.Name, d.Name))
		}
		for i := 0; i < len(queue); i++ {
			k := queue[i]
			if _, seen := rank[k]; seen {
				continue
			}
			rank[k] = len(rank)
			// Next: k's peers, before the rest of the config order.
			queue = slices.Insert(queue, i+1, peers[k]...)
		}
	}
	return peers, rank
}

// placed records that r was placed at pl.
func (p *pass) placed(r *Replica, pl Placement) {
	r.WorkerID, r.Spec.GPUIndices, r.Placed, r.Reason, r.Seen = pl.WorkerID, pl.GPUIndices, p.in.Now, protocol.Reason{}, false
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
