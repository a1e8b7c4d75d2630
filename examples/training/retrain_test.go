package training_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/examples/training"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// TestRetrainAwaitsTrainingSuspended: the pipeline submits the training
// job and is suspended (no slot held: the Trainer runs 1 at once here,
// and the training job gets it) until the job ends, then decides.
func TestRetrainAwaitsTrainingSuspended(t *testing.T) {
	reg := serve.NewRegistry()
	if err := training.Register(reg); err != nil {
		t.Fatal(err)
	}
	one := 1
	l, err := serve.NewLocal(context.Background(), reg, config.Application{Name: "text", RoutePrefix: "/text", Ingress: "Trainer",
		Deployments: []config.Deployment{{Name: "Trainer", Handler: training.HandlerTrainer,
			AsyncMethods:       []config.AsyncMethod{{Name: training.MethodTrain, MaxRunning: 1}, {Name: training.WorkflowRetrain, MaxRunning: 1}},
			MaxOngoingRequests: one}}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, tc := range []struct {
		id       string
		in       string
		status   serve.JobStatus
		decision string
	}{
		{"promote", `{"num_epochs": 3, "min_heldout": 0.5}`, serve.JobSucceeded, "promoted"},
		{"reject", `{"num_epochs": 1, "min_heldout": 0.999}`, serve.JobSucceeded, "rejected"},
		{"bad", `{"num_epochs": 0}`, serve.JobFailed, ""},
	} {
		var args serve.Args
		if err := json.Unmarshal([]byte(tc.in), &args); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.SubmitJob(ctx, training.WorkflowRetrain, tc.id, args); err != nil {
			t.Fatal(err)
		}
		rec, err := l.WaitJob(ctx, training.WorkflowRetrain, tc.id)
		if err != nil || rec.Status != tc.status {
			t.Fatalf("%s: run = %+v, %v; want %s", tc.id, rec, err, tc.status)
		}
		if tc.decision == "" {
			if !strings.Contains(rec.Error, "num_epochs must be positive") {
				t.Errorf("%s: error %q, want it to name num_epochs", tc.id, rec.Error)
			}
			continue
		}
		var res training.RetrainResult
		if err := json.Unmarshal(rec.Result, &res); err != nil || res.Decision != tc.decision || res.HeldoutAccuracy == 0 {
			t.Errorf("%s: result %s, want %s with the held-out accuracy", tc.id, rec.Result, tc.decision)
		}
		if rec.Suspensions < 1 {
			t.Errorf("%s: %d suspensions, want ≥ 1 (it awaited the training job)", tc.id, rec.Suspensions)
		}
		job, err := l.JobStatus(training.MethodTrain, res.TrainingJob)
		if err != nil || job.Status != serve.JobSucceeded || job.Parent != training.WorkflowRetrain+"/"+tc.id {
			t.Errorf("%s: training job %s = %+v, %v; want SUCCEEDED with this run as its parent", tc.id, res.TrainingJob, job, err)
		}
	}
}
