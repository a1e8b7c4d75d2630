package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
)

// TestAutoscaleJobsCycle: the Trainer's async method on a deployment that
// scales between 0 and 2 on its job backlog (one job per replica). A job
// submitted at zero replicas starts a replica and finishes; a burst of
// jobs raises the deployment to its max; once all are done it goes back
// to zero — and no job fails.
func TestAutoscaleJobsCycle(t *testing.T) {
	f := startFleet(t, fleet.Options{Autoscaler: true})
	f.RequireHandlers(handlerTrainer)
	a := trainerApp(0, 1, config.AsyncMethod{Name: methodTrain, MaxQueued: 20, MaxRunning: 2, RequiredArgs: []string{"num_epochs"}})
	zero, dl := 0, func(d time.Duration) *config.Duration { c := config.Duration(d); return &c }
	cpu := 1.0
	d := &a.Deployments[0]
	d.NumReplicas = nil
	d.Resources.CPU = &cpu
	d.AutoscalingConfig = &config.AutoscalingConfig{
		MinReplicas: &zero, MaxReplicas: 2, TargetBacklogPerReplica: 1,
		UpscaleDelay: dl(0), DownscaleDelay: dl(time.Second), DownscaleToZeroDelay: dl(2 * time.Second),
		LookBackPeriod: config.Duration(time.Second), MetricsInterval: config.Duration(500 * time.Millisecond),
	}
	f.Deploy(serveConfig(t, a))
	waitReplicas(f, "jobs", 0, deployTimeout)

	// Jobs of a few epochs. size sets how long one runs (featurising about
	// 10 µs per example, an epoch 0.7 µs): the burst's jobs must outlast a
	// few of the autoscaler's 500 ms polls even on a quiet machine, where
	// 50,000 examples let one replica finish all four in ~1.7 s, before
	// any poll had to see the backlog.
	job := func(epochs, size int) []byte {
		return []byte(fmt.Sprintf(`{"num_epochs":%d,"dataset":"synthetic","size":%d,"features":1024}`, epochs, size))
	}
	start := time.Now()
	if r := submit(t, f, "request_id=zero1", job(2, 50000)); r.Status != http.StatusAccepted {
		t.Fatalf("submit at zero replicas = %v, want 202", r)
	}
	succeeded := func(rec jobRecord) error {
		if rec.Status != "SUCCEEDED" {
			return fmt.Errorf("status %s (%s) %s", rec.Status, rec.Message, rec.Error)
		}
		return nil
	}
	waitJob(t, f, deployTimeout, "zero1", succeeded)
	t.Logf("job submitted at zero replicas: SUCCEEDED %v later", time.Since(start))

	// A burst: 4 jobs long enough to overlap ask for 4 replicas, capped at 2.
	ids := []string{"burst1", "burst2", "burst3", "burst4"}
	for _, id := range ids {
		if r := submit(t, f, "request_id="+id, job(10, 300000)); r.Status != http.StatusAccepted {
			t.Fatalf("submit %s = %v, want 202", id, r)
		}
	}
	up := f.Eventually(deployTimeout, "jobs scaled to 2 on the backlog", func() error {
		ds, _, err := deploymentStatus(f, "jobs")
		if err != nil {
			return err
		}
		if ds.TargetReplicas != 2 {
			return fmt.Errorf("%s", describeScaling(ds))
		}
		return nil
	})
	t.Logf("target 2 replicas %v after the burst", up)
	for _, id := range ids {
		waitJob(t, f, 2*deployTimeout, id, succeeded)
	}
	down := waitReplicas(f, "jobs", 0, deployTimeout)
	t.Logf("back to zero replicas %v after the last job", down)
}
