package training_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/jetserve/jetserve/examples/training"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// jobCtx is an in-memory serve.JobContext: the SDK's job context without
// NATS. Checkpoints survive across runs when the same jobCtx's store is
// shared.
type jobCtx struct {
	context.Context
	job *serve.Job

	mu          sync.Mutex
	checkpoint  []byte   // guarded by mu
	checkpoints int      // guarded by mu
	progress    []string // guarded by mu
	fractions   []float64
	// failAfter makes Checkpoint fail after that many successful calls
	// (simulating a crash mid-job); 0 means never.
	failAfter int
	// onProgress, when set, is called after each Progress.
	onProgress func(n int)
}

var errCrash = errors.New("worker crashed")

func (c *jobCtx) Job() *serve.Job        { return c.job }
func (c *jobCtx) Logger() zerolog.Logger { return zerolog.Nop() }

func (c *jobCtx) Checkpoint(state []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failAfter > 0 && c.checkpoints >= c.failAfter {
		return errCrash
	}
	c.checkpoint = append([]byte(nil), state...)
	c.checkpoints++
	return nil
}

func (c *jobCtx) LastCheckpoint() ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checkpoint, c.checkpoint != nil, nil
}

func (c *jobCtx) Progress(f float64, msg string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.progress = append(c.progress, msg)
	c.fractions = append(c.fractions, f)
	if c.onProgress != nil {
		c.onProgress(len(c.progress))
	}
	return nil
}

func args(t *testing.T, kv map[string]any) serve.Args {
	t.Helper()
	a := serve.Args{}
	for k, v := range kv {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		a[k] = b
	}
	return a
}

func run(t *testing.T, c *jobCtx) (training.Result, error) {
	t.Helper()
	out, err := (&training.Trainer{}).RunJob(c, c.job)
	if err != nil {
		return training.Result{}, err
	}
	return out.(training.Result), nil
}

func TestTrainImprovesAccuracy(t *testing.T) {
	tests := []struct {
		name string
		args map[string]any
		min  float64 // held-out accuracy at least
	}{
		{"sentiment corpus", map[string]any{"num_epochs": 8}, 0.70},
		{"synthetic, numbers as strings", map[string]any{"num_epochs": "5", "dataset": "synthetic", "size": "3000", "features": "4096"}, 0.75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &jobCtx{Context: context.Background(), job: &serve.Job{ID: "j1", Method: "train", Attempt: 1, Args: args(t, tt.args)}}
			res, err := run(t, c)
			if err != nil {
				t.Fatalf("RunJob = %v", err)
			}
			n := len(res.LossHistory)
			if n != res.Epochs || res.ResumedFromEpoch != 0 || res.Attempt != 1 {
				t.Fatalf("RunJob = %+v, want %d losses, resumed_from_epoch 0, attempt 1", res, res.Epochs)
			}
			if res.LossHistory[n-1] >= res.LossHistory[0] {
				t.Errorf("loss history %v does not go down", res.LossHistory)
			}
			if res.HeldoutAccuracy < tt.min || res.TrainAccuracy < tt.min {
				t.Errorf("accuracy train %.3f heldout %.3f, want both >= %.2f", res.TrainAccuracy, res.HeldoutAccuracy, tt.min)
			}
			if len(c.progress) != res.Epochs || c.fractions[len(c.fractions)-1] != 1 || !strings.HasPrefix(c.progress[0], "epoch 1/") {
				t.Errorf("progress = %v (%v), want one per epoch ending at 1", c.progress, c.fractions)
			}
			if c.checkpoints != res.Epochs {
				t.Errorf("checkpoints = %d, want %d", c.checkpoints, res.Epochs)
			}
		})
	}
}

func TestTrainResumesFromCheckpoint(t *testing.T) {
	a := map[string]any{"num_epochs": 6, "dataset": "synthetic", "size": 2000, "features": 2048}
	// The reference: one uninterrupted run.
	ref, err := run(t, &jobCtx{Context: context.Background(), job: &serve.Job{ID: "ref", Method: "train", Attempt: 1, Args: args(t, a)}})
	if err != nil {
		t.Fatalf("RunJob(reference) = %v", err)
	}
	// Attempt 1 "crashes" when saving epoch 4 (after 3 checkpoints).
	c := &jobCtx{Context: context.Background(), job: &serve.Job{ID: "j", Method: "train", Attempt: 1, Args: args(t, a)}, failAfter: 3}
	if _, err := run(t, c); !errors.Is(err, errCrash) {
		t.Fatalf("RunJob(attempt 1) = %v, want the crash", err)
	}
	c.failAfter = 0
	c.job = &serve.Job{ID: "j", Method: "train", Attempt: 2, Args: args(t, a)}
	c.progress = nil
	res, err := run(t, c)
	if err != nil {
		t.Fatalf("RunJob(attempt 2) = %v", err)
	}
	if res.ResumedFromEpoch != 3 || res.Attempt != 2 {
		t.Errorf("resumed_from_epoch, attempt = %d, %d, want 3, 2", res.ResumedFromEpoch, res.Attempt)
	}
	if len(c.progress) != 3 || !strings.HasPrefix(c.progress[0], "epoch 4/6") {
		t.Errorf("attempt 2 progress = %q, want epochs 4..6", c.progress)
	}
	// Resuming computes exactly what the uninterrupted run did.
	if len(res.LossHistory) != 6 || res.HeldoutAccuracy != ref.HeldoutAccuracy || res.LossHistory[5] != ref.LossHistory[5] {
		t.Errorf("resumed run = %v (%.4f), want the reference %v (%.4f)", res.LossHistory, res.HeldoutAccuracy, ref.LossHistory, ref.HeldoutAccuracy)
	}
}

func TestTrainCheckpointOfOtherArgsIgnored(t *testing.T) {
	c := &jobCtx{Context: context.Background(), job: &serve.Job{ID: "j", Method: "train", Attempt: 1, Args: args(t, map[string]any{"num_epochs": 2})}}
	if _, err := run(t, c); err != nil {
		t.Fatal(err)
	}
	c.job = &serve.Job{ID: "j", Method: "train", Attempt: 2, Args: args(t, map[string]any{"num_epochs": 2, "learning_rate": 0.1})}
	res, err := run(t, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.ResumedFromEpoch != 0 {
		t.Errorf("resumed_from_epoch = %d, want 0 (the checkpoint was of other arguments)", res.ResumedFromEpoch)
	}
}

func TestTrainCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &jobCtx{Context: ctx, job: &serve.Job{ID: "j", Method: "train", Attempt: 1, Args: args(t, map[string]any{"num_epochs": 1000})}}
	// Cancel once the second epoch is done.
	c.onProgress = func(n int) {
		if n == 2 {
			cancel()
		}
	}
	_, err := run(t, c)
	cancel()
	if !errors.Is(err, context.Canceled) || len(c.progress) != 2 {
		t.Fatalf("RunJob(cancelled) = %v after %d epochs, want context.Canceled after 2", err, len(c.progress))
	}
}

func TestBadArgs(t *testing.T) {
	tests := []struct {
		name string
		args map[string]any
		want string
	}{
		{"missing epochs", map[string]any{}, "num_epochs"},
		{"epochs not a number", map[string]any{"num_epochs": "many"}, "num_epochs"},
		{"unknown dataset", map[string]any{"num_epochs": 1, "dataset": "imagenet"}, "dataset"},
		{"negative rate", map[string]any{"num_epochs": 1, "learning_rate": -1}, "learning_rate"},
		{"tiny features", map[string]any{"num_epochs": 1, "features": 2}, "features"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &jobCtx{Context: context.Background(), job: &serve.Job{ID: "j", Method: "train", Attempt: 1, Args: args(t, tt.args)}}
			_, err := run(t, c)
			e := serve.AsError(err)
			if err == nil || e.Status != http.StatusBadRequest || !strings.Contains(e.Msg, tt.want) {
				t.Errorf("RunJob(%v) = %v, want a 400 naming %s", tt.args, err, tt.want)
			}
		})
	}
}

func TestSyntheticDeterministic(t *testing.T) {
	a, b := training.Synthetic(100, 7), training.Synthetic(100, 7)
	pos := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("Synthetic(100, 7)[%d] = %v then %v, want the same", i, a[i], b[i])
		}
		if a[i].Label == "positive" {
			pos++
		}
	}
	if pos < 25 || pos > 75 {
		t.Errorf("Synthetic(100, 7) has %d positives, want a balanced set", pos)
	}
}

func TestRegistered(t *testing.T) {
	reg := serve.NewRegistry()
	if err := training.Register(reg); err != nil {
		t.Fatal(err)
	}
	ms := reg.AsyncMethods(training.HandlerTrainer)
	if len(ms) != 2 || ms[0].Name != "train" || ms[0].MaxRunning != 2 || ms[0].RequiredArgs[0] != "num_epochs" ||
		ms[1].Name != training.WorkflowRetrain || !ms[1].Workflow {
		t.Errorf("AsyncMethods(%s) = %+v, want train and the retrain workflow", training.HandlerTrainer, ms)
	}
}
