package decide

import (
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func policy(mod func(*Policy)) Policy {
	p := Policy{Min: 0, Max: 10, TargetOngoing: 2, TargetBacklog: 1, UpscaleDelay: 30 * time.Second,
		DownscaleDelay: 600 * time.Second, DownscaleToZeroDelay: 900 * time.Second,
		UpscalingFactor: 1, DownscalingFactor: 1, LookBack: 30 * time.Second, MetricsInterval: time.Second}
	if mod != nil {
		mod(&p)
	}
	return p
}

// step is one call to Decide at t0+at with a steady load.
type step struct {
	at              time.Duration
	load            float64 // smoothed; also the instantaneous ongoing
	queued, backlog int
	cold            bool // Warm false
	want            int  // Desired after the call
	reason          protocol.ScaleReason
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name  string
		p     Policy
		start int
		steps []step
	}{
		{"upscale waits for upscale_delay", policy(nil), 1, []step{
			{at: 0, load: 8, want: 1},
			{at: 29 * time.Second, load: 8, want: 1},
			{at: 30 * time.Second, load: 8, want: 4, reason: protocol.ScaleUp},
		}},
		{"upscale with no delay acts at once", policy(func(p *Policy) { p.UpscaleDelay = 0 }), 1, []step{
			{at: 0, load: 7, want: 4, reason: protocol.ScaleUp},
		}},
		{"a dip resets the upscale timer", policy(nil), 1, []step{
			{at: 0, load: 8, want: 1},
			{at: 20 * time.Second, load: 2, want: 1},
			{at: 31 * time.Second, load: 8, want: 1},
			{at: 60 * time.Second, load: 8, want: 1},
			{at: 61 * time.Second, load: 8, want: 4, reason: protocol.ScaleUp},
		}},
		{"the latest proposal is applied after the delay", policy(nil), 1, []step{
			{at: 0, load: 4, want: 1},
			{at: 30 * time.Second, load: 12, want: 6, reason: protocol.ScaleUp},
		}},
		{"downscale waits for downscale_delay", policy(nil), 4, []step{
			{at: 0, load: 2, want: 4},
			{at: 599 * time.Second, load: 2, want: 4},
			{at: 600 * time.Second, load: 2, want: 1, reason: protocol.ScaleDown},
		}},
		{"never below min", policy(func(p *Policy) { p.Min = 2; p.DownscaleDelay = 0 }), 4, []step{
			{at: 0, load: 0, want: 2, reason: protocol.ScaleDown},
			{at: time.Hour, load: 0, want: 2},
		}},
		{"never above max", policy(func(p *Policy) { p.UpscaleDelay = 0 }), 1, []step{
			{at: 0, load: 100, want: 10, reason: protocol.ScaleUp},
			{at: time.Second, load: 1000, want: 10},
		}},
		{"upscaling factor moves part of the way", policy(func(p *Policy) { p.UpscaleDelay = 0; p.UpscalingFactor = 0.5 }), 2, []step{
			{at: 0, load: 20, want: 6, reason: protocol.ScaleUp}, // 2 + (10-2)*0.5
			{at: time.Second, load: 20, want: 8, reason: protocol.ScaleUp},
		}},
		{"downscaling factor moves part of the way", policy(func(p *Policy) { p.DownscaleDelay = 0; p.DownscalingFactor = 0.5 }), 10, []step{
			{at: 0, load: 4, want: 6, reason: protocol.ScaleDown}, // 10 + (2-10)*0.5
		}},
		{"many to zero goes through one", policy(func(p *Policy) { p.DownscaleDelay = 0; p.DownscaleToZeroDelay = 0 }), 5, []step{
			{at: 0, load: 0, want: 1, reason: protocol.ScaleDown},
			{at: time.Second, load: 0, want: 0, reason: protocol.ScaleToZero},
		}},
		{"one to zero waits for downscale_to_zero_delay", policy(func(p *Policy) { p.DownscaleDelay = time.Second; p.DownscaleToZeroDelay = 10 * time.Second }), 1, []step{
			{at: 0, load: 0, want: 1},
			{at: 5 * time.Second, load: 0, want: 1},
			{at: 10 * time.Second, load: 0, want: 0, reason: protocol.ScaleToZero},
		}},
		{"never to zero while requests are queued", policy(func(p *Policy) { p.DownscaleToZeroDelay = 0 }), 1, []step{
			{at: 0, load: 0, queued: 1, want: 1},
			{at: time.Hour, load: 0, queued: 1, want: 1},
		}},
		{"never to zero while jobs are pending", policy(func(p *Policy) { p.DownscaleToZeroDelay = 0 }), 1, []step{
			{at: 0, load: 0, backlog: 1, want: 1},
		}},
		{"cold start at once, delay or not", policy(nil), 0, []step{
			{at: 0, load: 0, queued: 1, want: 1, reason: protocol.ScaleColdStart},
		}},
		{"cold start sized by the queue", policy(nil), 0, []step{
			{at: 0, load: 0, queued: 7, want: 4, reason: protocol.ScaleColdStart},
		}},
		{"cold start before the window is warm", policy(nil), 0, []step{
			{at: 0, queued: 1, cold: true, want: 1, reason: protocol.ScaleColdStart},
		}},
		{"cold start by a job backlog", policy(nil), 0, []step{
			{at: 0, backlog: 3, want: 3, reason: protocol.ScaleColdStart},
		}},
		{"cold start respects max", policy(func(p *Policy) { p.Max = 2 }), 0, []step{
			{at: 0, queued: 50, want: 2, reason: protocol.ScaleColdStart},
		}},
		{"idle at zero stays at zero", policy(func(p *Policy) { p.UpscaleDelay = 0 }), 0, []step{
			{at: 0, want: 0}, {at: time.Hour, want: 0},
		}},
		{"a cold window decides nothing", policy(func(p *Policy) { p.UpscaleDelay = 0; p.DownscaleDelay = 0 }), 3, []step{
			{at: 0, load: 0, cold: true, want: 3},
			{at: 0, load: 100, cold: true, want: 3},
		}},
		{"bounds changed: clamp at once", policy(func(p *Policy) { p.Max = 3 }), 7, []step{
			{at: 0, load: 14, want: 3, reason: protocol.ScaleBounds},
		}},
		{"backlog drives replicas", policy(func(p *Policy) { p.UpscaleDelay = 0; p.TargetBacklog = 2 }), 1, []step{
			{at: 0, backlog: 9, want: 5, reason: protocol.ScaleUp},
		}},
		{"exact multiple of the target is not one more", policy(func(p *Policy) { p.UpscaleDelay = 0 }), 2, []step{
			{at: 0, load: 4, want: 2}, {at: time.Second, load: 4.0000000001, want: 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := State{Desired: tc.start}
			for i, st := range tc.steps {
				in := Input{Now: t0.Add(st.at), Load: st.load + float64(st.queued), Backlog: float64(st.backlog),
					Ongoing: int(st.load), Queued: st.queued, BacklogNow: st.backlog, Warm: !st.cold}
				prev := s.Desired
				var d Decision
				s, d = Decide(tc.p, s, in)
				if d.Desired != st.want || s.Desired != st.want {
					t.Fatalf("step %d: Decide(%+v, desired %d) = %d (state %d), want %d (%s)", i, in, prev, d.Desired, s.Desired, st.want, d.Message)
				}
				if d.Changed != (st.want != prev) || d.Reason != st.reason {
					t.Fatalf("step %d: Decide(%+v) changed=%v reason=%q, want changed=%v reason=%q", i, in, d.Changed, d.Reason, st.want != prev, st.reason)
				}
				if d.Changed && d.Message == "" {
					t.Errorf("step %d: a change without a message", i)
				}
			}
		})
	}
}

// TestDecideNoFlapping feeds a steady load with noise around a replica
// boundary for an hour of one-second steps: the count settles once and
// never moves again.
func TestDecideNoFlapping(t *testing.T) {
	p := policy(func(p *Policy) { p.UpscaleDelay = 5 * time.Second; p.DownscaleDelay = 30 * time.Second })
	s := State{Desired: 1}
	var series Series
	changes := 0
	for i := range 3600 {
		now := t0.Add(time.Duration(i) * time.Second)
		noise := []float64{-0.6, 0.3, 0.5, -0.2, 0.4, -0.5}[i%6] // mean 6 - 0.0167
		inst := 6 + noise
		series.Add(now, inst, 0)
		load, backlog := series.Mean(now, p.LookBack)
		var d Decision
		s, d = Decide(p, s, Input{Now: now, Load: load, Backlog: backlog, Ongoing: int(inst), Warm: true})
		if d.Changed {
			changes++
			if i > 60 {
				t.Fatalf("at %ds: changed %d → … → %d (%s) under steady load", i, 1, d.Desired, d.Message)
			}
		}
	}
	if s.Desired != 3 || changes != 1 {
		t.Fatalf("steady load 6 at target 2: desired %d after %d changes, want 3 after 1", s.Desired, changes)
	}
}

func TestSeriesMean(t *testing.T) {
	var s Series
	for i := range 10 {
		s.Add(t0.Add(time.Duration(i)*time.Second), float64(i), 1)
	}
	// Window 3s at t=9s keeps samples 6, 7, 8, 9.
	if load, backlog := s.Mean(t0.Add(9*time.Second), 3*time.Second); load != 7.5 || backlog != 1 {
		t.Fatalf("Mean(9s, 3s) = %v, %v, want 7.5, 1", load, backlog)
	}
	if load, _ := s.Mean(t0.Add(time.Hour), time.Second); load != 0 {
		t.Fatalf("Mean of an expired window = %v, want 0", load)
	}
	if !s.Last().IsZero() {
		t.Fatalf("Last() after expiry = %v, want zero", s.Last())
	}
}

func TestPolicyOf(t *testing.T) {
	cfg, err := config.Parse([]byte(`applications:
- name: a
  route_prefix: /a
  ingress: d
  deployments:
  - name: d
    handler: h
    autoscaling_config: {min_replicas: 0, max_replicas: 5, upscale_delay: 0s, downscale_delay: 10s}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := PolicyOf(*cfg.Applications[0].Deployments[0].AutoscalingConfig)
	want := Policy{Min: 0, Max: 5, TargetOngoing: 2, TargetBacklog: 1, UpscaleDelay: 0, DownscaleDelay: 10 * time.Second,
		DownscaleToZeroDelay: 10 * time.Second, UpscalingFactor: 1, DownscalingFactor: 1, LookBack: 30 * time.Second, MetricsInterval: time.Second}
	if p != want {
		t.Fatalf("PolicyOf() = %+v, want %+v", p, want)
	}
}
