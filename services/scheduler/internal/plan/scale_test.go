package plan

import (
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
)

const autoscaledApp = `
applications:
- name: app
  route_prefix: /app
  ingress: d
  deployments:
  - name: d
    handler: h
    autoscaling_config: {min_replicas: 0, initial_replicas: 2, max_replicas: 5}
`

func TestInputTarget(t *testing.T) {
	c := cfg(t, autoscaledApp)
	d := c.Applications[0].Deployments[0]
	fixed := app(t, 3, 1, 5).Applications[0].Deployments[0]
	tests := []struct {
		name             string
		d                string
		decision         *int
		desired, targetN int
	}{
		{"no decision: initial_replicas", "auto", nil, 2, 2},
		{"decision in bounds", "auto", ptr(4), 4, 4},
		{"decision to zero", "auto", ptr(0), 0, 0},
		{"decision above max is clamped", "auto", ptr(9), 9, 5},
		{"decisions do not touch num_replicas", "fixed", ptr(7), 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dep := d
			if tc.d == "fixed" {
				dep = fixed
			}
			in := Input{Scale: map[string]protocol.ScaleDecision{}}
			if tc.decision != nil {
				in.Scale[Key("app", dep.Name)] = protocol.ScaleDecision{App: "app", Deployment: dep.Name, Desired: *tc.decision}
			}
			if got := in.Desired("app", dep); got != tc.desired {
				t.Errorf("Desired() = %d, want %d", got, tc.desired)
			}
			if got := in.Target("app", dep); got != tc.targetN {
				t.Errorf("Target() = %d, want %d", got, tc.targetN)
			}
		})
	}
}

// TestStepFollowsDecisions: an autoscaled deployment runs its initial
// replicas, then what each decision says (zero included), and status
// shows current/desired, the decision's reason and UPSCALING while it
// converges.
func TestStepFollowsDecisions(t *testing.T) {
	e := newEnv(t, cfg(t, autoscaledApp), worker("w1", 8, 0))
	e.in.Scale = map[string]protocol.ScaleDecision{}
	assigned := func() int { return len(e.lastRes.Assignments["w1"].Replicas) }
	e.step()
	if assigned() != 2 {
		t.Fatalf("assigned with no decision = %d, want initial_replicas 2", assigned())
	}
	e.runAll()
	res := e.step()
	st := BuildStatus(&e.st, e.in, res, "me", nil)
	ds := st.Applications["app"].Deployments["d"]
	if ds.Status != protocol.DeploymentHealthy || ds.CurrentReplicas != 2 || ds.DesiredReplicas != 2 || ds.TargetReplicas != 2 ||
		ds.Autoscaling == nil || ds.Autoscaling.MaxReplicas != 5 {
		t.Fatalf("status before any decision = %+v, want HEALTHY 2/2/2 with autoscaling bounds", ds)
	}

	e.in.Scale[Key("app", "d")] = protocol.ScaleDecision{App: "app", Deployment: "d", Desired: 4, Reason: protocol.ScaleUp, Message: "load"}
	res = e.step()
	if assigned() != 4 {
		t.Fatalf("assigned after a decision of 4 = %d, want 4", assigned())
	}
	st = BuildStatus(&e.st, e.in, res, "me", nil)
	ds = st.Applications["app"].Deployments["d"]
	if ds.Status != protocol.DeploymentUpscaling || ds.CurrentReplicas != 2 || ds.DesiredReplicas != 4 || ds.TargetReplicas != 4 ||
		ds.Autoscaling.LastReason != protocol.ScaleUp {
		t.Fatalf("status while scaling up = %+v (%+v), want UPSCALING current 2 desired 4 target 4 reason upscale", ds, ds.Autoscaling)
	}
	e.runAll()
	res = e.step()
	if ds := BuildStatus(&e.st, e.in, res, "me", nil).Applications["app"].Deployments["d"]; ds.Status != protocol.DeploymentHealthy || ds.CurrentReplicas != 4 {
		t.Fatalf("status after scaling up = %s current %d, want HEALTHY 4", ds.Status, ds.CurrentReplicas)
	}

	e.in.Scale[Key("app", "d")] = protocol.ScaleDecision{App: "app", Deployment: "d", Desired: 0, Reason: protocol.ScaleToZero}
	e.step()
	if assigned() != 0 {
		t.Fatalf("assigned after a decision of 0 = %d, want 0", assigned())
	}
}
