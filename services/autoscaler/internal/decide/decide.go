// Package decide is the autoscaling policy as pure functions: given a
// deployment's autoscaling_config (Policy), what was decided before (State)
// and the load seen now and over the look-back window (Input), Decide says
// how many replicas the deployment should run and why. Nothing here does
// I/O or reads the clock; Series is the look-back window's time series.
//
// The policy is Ray Serve's: desired = ceil(load / target_ongoing_requests)
// (or, for async work, backlog / target_backlog_per_replica, whichever is
// larger), moved from the current count by upscaling_factor or
// downscaling_factor, clamped to [min_replicas, max_replicas], and applied
// only once the same direction held for upscale_delay, downscale_delay, or
// downscale_to_zero_delay for the last step 1 → 0. Two exceptions act at
// once: a deployment at zero with work queued gets replicas (cold start),
// and a count outside changed bounds is clamped. A deployment never goes
// to zero while anything is queued or running.
package decide

import (
	"fmt"
	"math"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// Policy is one deployment's autoscaling_config.
type Policy struct {
	Min, Max int
	// TargetOngoing is target_ongoing_requests; TargetBacklog is
	// target_backlog_per_replica (async jobs).
	TargetOngoing, TargetBacklog                       float64
	UpscaleDelay, DownscaleDelay, DownscaleToZeroDelay time.Duration
	UpscalingFactor, DownscalingFactor                 float64
	LookBack, MetricsInterval                          time.Duration
}

// PolicyOf converts a config whose defaults are applied (config.Parse).
func PolicyOf(a config.AutoscalingConfig) Policy {
	p := Policy{Max: a.MaxReplicas, TargetOngoing: a.TargetOngoingRequests, TargetBacklog: a.TargetBacklogPerReplica,
		UpscalingFactor: a.UpscalingFactor, DownscalingFactor: a.DownscalingFactor,
		LookBack: a.LookBackPeriod.D(), MetricsInterval: a.MetricsInterval.D()}
	if a.MinReplicas != nil {
		p.Min = *a.MinReplicas
	}
	if a.UpscaleDelay != nil {
		p.UpscaleDelay = a.UpscaleDelay.D()
	}
	if a.DownscaleDelay != nil {
		p.DownscaleDelay = a.DownscaleDelay.D()
	}
	p.DownscaleToZeroDelay = p.DownscaleDelay
	if a.DownscaleToZeroDelay != nil {
		p.DownscaleToZeroDelay = a.DownscaleToZeroDelay.D()
	}
	if p.TargetOngoing <= 0 {
		p.TargetOngoing = 2
	}
	if p.TargetBacklog <= 0 {
		p.TargetBacklog = 1
	}
	if p.UpscalingFactor <= 0 {
		p.UpscalingFactor = 1
	}
	if p.DownscalingFactor <= 0 {
		p.DownscalingFactor = 1
	}
	if p.Max < max(1, p.Min) {
		p.Max = max(1, p.Min)
	}
	return p
}

// Clamp bounds n to [Min, Max].
func (p Policy) Clamp(n int) int { return min(max(n, p.Min), p.Max) }

// State is what Decide carries from one call to the next for one
// deployment.
type State struct {
	// Desired is the replica count in force (the last decision).
	Desired int
	// Dir is the direction of the change being held (+1 up, -1 down, 0
	// none) and Since when it started to hold.
	Dir   int
	Since time.Time
}

// Input is the load of one deployment.
type Input struct {
	Now time.Time
	// Load is ongoing+queued requests averaged over the look-back window;
	// Backlog the async backlog (queued+running jobs) averaged likewise.
	Load, Backlog float64
	// Ongoing, Queued and BacklogNow are the instantaneous values.
	Ongoing, Queued, BacklogNow int
	// Warm reports that the window holds enough data for steady-state
	// decisions; when false only cold starts and bounds act.
	Warm bool
}

func (in Input) busy() bool { return in.Ongoing > 0 || in.Queued > 0 || in.BacklogNow > 0 }

// Decision is the outcome of one Decide call.
type Decision struct {
	// Desired is the count in force after this call; Changed reports that
	// it differs from the State's before.
	Desired int
	Changed bool
	// Proposal is what the load asks for now (bounded), before the delay.
	Proposal int
	// Reason and Message explain a change (empty when none).
	Reason  protocol.ScaleReason
	Message string
}

// eps absorbs float noise in ceil: a load of exactly 2×target asks for 2.
const eps = 1e-9

func ceil(x float64) int { return int(math.Ceil(x - eps)) }

// Ratio is the load in replicas: the larger of load/target_ongoing and
// backlog/target_backlog.
func (p Policy) Ratio(load, backlog float64) float64 {
	return max(load/p.TargetOngoing, backlog/p.TargetBacklog, 0)
}

// Propose is the bounded count the load asks for from cur replicas:
// cur moved towards Ratio by the up- or downscaling factor, never to zero
// while busy, and from more than one replica to zero only via one.
func (p Policy) Propose(cur int, ratio float64, busy bool) int {
	n := cur
	switch r := float64(cur); {
	case ratio > r+eps:
		n = ceil(r + (ratio-r)*p.UpscalingFactor)
	case ratio < r-eps:
		n = ceil(r + (ratio-r)*p.DownscalingFactor)
	}
	n = p.Clamp(n)
	if n == 0 && (busy || cur > 1) {
		n = min(1, p.Max)
	}
	return n
}

// Decide computes the next state and decision.
func Decide(p Policy, s State, in Input) (State, Decision) {
	cur := s.Desired
	if b := p.Clamp(cur); b != cur {
		return State{Desired: b}, Decision{Desired: b, Changed: true, Proposal: b, Reason: protocol.ScaleBounds,
			Message: fmt.Sprintf("%d replicas outside [%d, %d]: clamped to %d", cur, p.Min, p.Max, b)}
	}
	if cur == 0 && (in.Queued > 0 || in.BacklogNow > 0) {
		n := min(max(1, p.Min, ceil(float64(in.Queued)/p.TargetOngoing), ceil(float64(in.BacklogNow)/p.TargetBacklog)), p.Max)
		return State{Desired: n}, Decision{Desired: n, Changed: true, Proposal: n, Reason: protocol.ScaleColdStart,
			Message: fmt.Sprintf("%d requests and %d jobs queued at zero replicas: %d at once", in.Queued, in.BacklogNow, n)}
	}
	if !in.Warm {
		s.Dir, s.Since = 0, time.Time{}
		return s, Decision{Desired: cur, Proposal: cur}
	}
	ratio := p.Ratio(in.Load, in.Backlog)
	n := p.Propose(cur, ratio, in.busy())
	d := Decision{Desired: cur, Proposal: n}
	dir := 0
	switch {
	case n > cur:
		dir = 1
	case n < cur:
		dir = -1
	}
	if dir == 0 {
		s.Dir, s.Since = 0, time.Time{}
		return s, d
	}
	if dir != s.Dir || s.Since.IsZero() {
		s.Dir, s.Since = dir, in.Now
	}
	delay, reason := p.UpscaleDelay, protocol.ScaleUp
	switch {
	case dir < 0 && n == 0:
		delay, reason = p.DownscaleToZeroDelay, protocol.ScaleToZero
	case dir < 0:
		delay, reason = p.DownscaleDelay, protocol.ScaleDown
	}
	held := in.Now.Sub(s.Since)
	if held < delay {
		return s, d
	}
	d.Desired, d.Changed, d.Reason = n, true, reason
	d.Message = fmt.Sprintf("load %.2f ongoing+queued (backlog %.2f) over %s at %g per replica asks for %d; %d → %d after %s",
		in.Load, in.Backlog, p.LookBack, p.TargetOngoing, ceil(ratio), cur, n, held.Round(time.Millisecond))
	if in.Backlog/p.TargetBacklog > in.Load/p.TargetOngoing {
		d.Message = fmt.Sprintf("backlog %.2f jobs (load %.2f ongoing+queued) over %s at %g per replica asks for %d; %d → %d after %s",
			in.Backlog, in.Load, p.LookBack, p.TargetBacklog, ceil(ratio), cur, n, held.Round(time.Millisecond))
	}
	return State{Desired: n}, d
}

// Series is a deployment's load samples over the look-back window. The
// zero value is empty and ready.
type Series struct {
	pts []point
}

type point struct {
	t             time.Time
	load, backlog float64
}

// Add appends a sample taken at t (t never before the last sample's).
func (s *Series) Add(t time.Time, load, backlog float64) {
	s.pts = append(s.pts, point{t, load, backlog})
}

// Last is when the newest sample was taken (zero when empty).
func (s *Series) Last() time.Time {
	if len(s.pts) == 0 {
		return time.Time{}
	}
	return s.pts[len(s.pts)-1].t
}

// Mean drops samples older than window before now and returns the mean
// of the rest (0, 0 when none).
func (s *Series) Mean(now time.Time, window time.Duration) (load, backlog float64) {
	cut := 0
	for cut < len(s.pts) && now.Sub(s.pts[cut].t) > window {
		cut++
	}
	if cut > 0 {
		s.pts = append(s.pts[:0], s.pts[cut:]...)
	}
	if len(s.pts) == 0 {
		return 0, 0
	}
	for _, p := range s.pts {
		load += p.load
		backlog += p.backlog
	}
	n := float64(len(s.pts))
	return load / n, backlog / n
}
