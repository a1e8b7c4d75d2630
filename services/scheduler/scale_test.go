package scheduler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
)

const autoscaledConfig = `
applications:
- name: app
  route_prefix: /app
  ingress: front
  deployments:
  - name: front
    handler: echo
    resources: {cpu: 0.5}
    autoscaling_config: {min_replicas: 0, initial_replicas: 1, max_replicas: 4}
`

// TestHonoursScaleDecisions: the scheduler runs initial_replicas of an
// autoscaled deployment until the autoscaler decides, then exactly the
// decided count (clamped to max_replicas), down to zero and back, and its
// status shows current/desired and the last decision's reason.
func TestHonoursScaleDecisions(t *testing.T) {
	ctx := context.Background()
	ns, b, f := startFleet(t, 0)
	f.addWorker(ctx, protocol.WorkerInfo{ID: "w1", CPU: 8, MemoryBytes: 8 << 30})
	s := start(t, ns, "s1")
	put(t, s.url, autoscaledConfig)

	running := func(want int) func() (bool, string) {
		return func() (bool, string) {
			f.mu.Lock()
			n := f.runningOf("app", "front")
			f.mu.Unlock()
			return n == want && len(assignment(t, b, "w1").Replicas) == want, fmt.Sprintf("%d running, want %d", n, want)
		}
	}
	eventually(t, 10*time.Second, running(1))

	decide := func(desired int, reason protocol.ScaleReason) {
		t.Helper()
		d, _ := json.Marshal(protocol.ScaleDecision{App: "app", Deployment: "front", Desired: desired, Target: 2,
			Reason: reason, Message: "test", At: time.Now()})
		if _, err := b.Scale.Put(ctx, protocol.ScaleKey("app", "front"), d); err != nil {
			t.Fatal(err)
		}
	}
	decide(3, protocol.ScaleUp)
	eventually(t, 10*time.Second, running(3))
	eventually(t, 10*time.Second, func() (bool, string) {
		ds := status(t, s.url).Applications["app"].Deployments["front"]
		ok := ds.Status == protocol.DeploymentHealthy && ds.CurrentReplicas == 3 && ds.DesiredReplicas == 3 &&
			ds.TargetReplicas == 3 && ds.Autoscaling != nil && ds.Autoscaling.LastReason == protocol.ScaleUp
		return ok, fmt.Sprintf("status %+v autoscaling %+v", ds, ds.Autoscaling)
	})

	decide(9, protocol.ScaleUp) // beyond max_replicas 4
	eventually(t, 10*time.Second, running(4))

	decide(0, protocol.ScaleToZero)
	eventually(t, 10*time.Second, running(0))
	eventually(t, 10*time.Second, func() (bool, string) {
		a := status(t, s.url).Applications["app"]
		ds := a.Deployments["front"]
		return a.Status == protocol.AppRunning && ds.TargetReplicas == 0 && len(ds.Replicas) == 0,
			fmt.Sprintf("app %s, deployment %+v", a.Status, ds)
	})

	decide(2, protocol.ScaleColdStart)
	eventually(t, 10*time.Second, running(2))

	// Without the decision the configured initial count applies again.
	if err := b.Scale.Delete(ctx, protocol.ScaleKey("app", "front")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, running(1))
}
