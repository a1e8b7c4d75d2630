package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
)

// The example's async method (examples/training): text.Trainer's "train".
const (
	handlerTrainer = "text.Trainer"
	methodTrain    = "train"
)

// jobRecord is the part of a job record (GET …/status) the tests read.
type jobRecord struct {
	ID       string  `json:"request_id"`
	Status   string  `json:"status"`
	Attempts int     `json:"attempts"`
	Progress float64 `json:"progress"`
	Message  string  `json:"message"`
	Worker   string  `json:"worker"`
	Replica  string  `json:"replica"`
	Error    string  `json:"error"`
}

// trainResult is the part of the train result the tests read.
type trainResult struct {
	Epochs           int       `json:"epochs"`
	HeldoutAccuracy  float64   `json:"heldout_accuracy"`
	LossHistory      []float64 `json:"loss_history"`
	ResumedFromEpoch int       `json:"resumed_from_epoch"`
	Attempt          int       `json:"attempt"`
}

// trainerApp is an app "jobs" served by the Trainer, with replicas of cpu
// so large that each worker (8 CPUs) holds one, and a short lease so that
// a killed worker's job moves within seconds.
func trainerApp(replicas, maxOngoing int, m config.AsyncMethod) config.Application {
	d := deployment{app: "jobs", handler: handlerTrainer, replicas: replicas, cpu: 5, maxOngoing: maxOngoing,
		gracefulShutdown: 3 * time.Second}
	a := d.application()
	a.Deployments[0].AsyncMethods = []config.AsyncMethod{m}
	return a
}

func jobURL(f *fleet.Fleet, op, id string) string {
	u := f.URL() + "/jobs/" + methodTrain
	if op != "" {
		u += "/" + op
	}
	if id != "" {
		u += "?request_id=" + id
	}
	return u
}

func jobStatus(t *testing.T, f *fleet.Fleet, id string) jobRecord {
	t.Helper()
	r := fleet.MustDo(t, http.MethodGet, jobURL(f, "status", id), nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET status of %s = %v, want 200", id, r)
	}
	var rec jobRecord
	if err := json.Unmarshal(r.Body, &rec); err != nil {
		t.Fatalf("status of %s: %v", id, err)
	}
	return rec
}

func waitJob(t *testing.T, f *fleet.Fleet, timeout time.Duration, id string, cond func(jobRecord) error) jobRecord {
	t.Helper()
	var rec jobRecord
	f.Eventually(timeout, "job "+id, func() error {
		rec = jobStatus(t, f, id)
		return cond(rec)
	})
	return rec
}

func submit(t *testing.T, f *fleet.Fleet, query string, body []byte) fleet.Response {
	t.Helper()
	return fleet.MustDo(t, http.MethodPost, f.URL()+"/jobs/"+methodTrain+"?"+query, body, http.Header{"Content-Type": {"application/json"}})
}

// TestJobResumesAfterWorkerKill: a training job runs on one of two
// workers; kill -9 of that worker mid-job hands it to the other replica
// after the lease, which resumes from the last epoch's checkpoint and
// finishes it once (attempt 2).
func TestJobResumesAfterWorkerKill(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 2})
	f.RequireHandlers(handlerTrainer)
	f.Deploy(serveConfig(t, trainerApp(2, 1, config.AsyncMethod{
		Name: methodTrain, MaxQueued: 10, MaxRunning: 2, LeaseTimeout: config.Duration(2 * time.Second),
		Backoff: []config.Duration{config.Duration(500 * time.Millisecond)}, RequiredArgs: []string{"num_epochs"},
	})))
	a := f.WaitApp(deployTimeout, "jobs", 2, nil)
	if byWorker := fleet.ReplicasByWorker(a); len(byWorker) != 2 {
		t.Fatalf("replicas by worker = %v, want one on each worker", byWorker)
	}

	r := submit(t, f, "request_id=kill1", []byte(`{"num_epochs":60,"dataset":"synthetic","size":300000,"features":4096}`))
	if r.Status != http.StatusAccepted {
		t.Fatalf("submit = %v, want 202", r)
	}
	// Mid-job: a few epochs are checkpointed.
	rec := waitJob(t, f, 60*time.Second, "kill1", func(rec jobRecord) error {
		if rec.Status != "RUNNING" || rec.Progress < 0.05 {
			return fmt.Errorf("status %s progress %.2f (%s), want RUNNING past 5%%", rec.Status, rec.Progress, rec.Message)
		}
		return nil
	})
	victim := f.Worker(rec.Worker)
	if victim == nil {
		t.Fatalf("job runs on worker %q, which the fleet does not know", rec.Worker)
	}
	t.Logf("killing %s at %.0f%% (%s)", rec.Worker, 100*rec.Progress, rec.Message)
	f.Kill(victim.Proc)

	done := waitJob(t, f, 120*time.Second, "kill1", func(rec jobRecord) error {
		switch rec.Status {
		case "SUCCEEDED":
			return nil
		case "FAILED", "CANCELLED":
			t.Fatalf("job ended %s: %s", rec.Status, rec.Error)
		}
		return fmt.Errorf("status %s attempt %d progress %.2f", rec.Status, rec.Attempts, rec.Progress)
	})
	if done.Worker == rec.Worker || done.Attempts != 2 {
		t.Errorf("finished on %s attempt %d, want the other worker (not %s) on attempt 2", done.Worker, done.Attempts, rec.Worker)
	}
	r = fleet.MustDo(t, http.MethodGet, jobURL(f, "result", "kill1"), nil, nil)
	var res trainResult
	if r.Status != http.StatusOK || json.Unmarshal(r.Body, &res) != nil {
		t.Fatalf("result = %v, want 200 with the train result", r)
	}
	if res.ResumedFromEpoch <= 0 || res.Attempt != 2 || res.Epochs != 60 || len(res.LossHistory) != 60 {
		t.Errorf("result = %+v, want resumed_from_epoch > 0, attempt 2, 60 epochs of losses", res)
	}
	if res.HeldoutAccuracy < 0.75 {
		t.Errorf("held-out accuracy %.3f, want >= 0.75", res.HeldoutAccuracy)
	}
}

// TestJobEndpointsE2E: the generated endpoints and the CLI against the
// real fleet: watch a job to the end, duplicate submits, a full queue,
// cancel of queued and running jobs, bad inputs.
func TestJobEndpointsE2E(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerTrainer)
	cli := bins.Path(t, fleet.CLI)
	f.Deploy(serveConfig(t, trainerApp(1, 1, config.AsyncMethod{
		Name: methodTrain, MaxQueued: 1, MaxRunning: 1, RequiredArgs: []string{"num_epochs"},
	})))
	f.WaitApp(deployTimeout, "jobs", 1, nil)

	t.Run("CLI submit and watch", func(t *testing.T) {
		out, errOut, err := fleet.RunCmd(t, 30*time.Second, cli, "jobs", "submit", "jobs/train", "num_epochs=4", "--id", "cli1", "--url", f.URL())
		if err != nil || !strings.Contains(out, "cli1 QUEUED") {
			t.Fatalf("jobs submit = %q %q %v, want cli1 QUEUED", out, errOut, err)
		}
		out, errOut, err = fleet.RunCmd(t, 60*time.Second, cli, "jobs", "watch", "jobs/train", "cli1", "--interval", "100ms", "--url", f.URL())
		if err != nil || !strings.Contains(out, "SUCCEEDED") {
			t.Fatalf("jobs watch = %q %q %v, want it to end SUCCEEDED", out, errOut, err)
		}
		out, _, err = fleet.RunCmd(t, 30*time.Second, cli, "jobs", "result", "jobs/train", "cli1", "--url", f.URL())
		if err != nil || !strings.Contains(out, `"heldout_accuracy"`) {
			t.Fatalf("jobs result = %q %v, want the train result", out, err)
		}
		out, _, err = fleet.RunCmd(t, 30*time.Second, cli, "jobs", "list", "jobs/train", "--url", f.URL())
		if err != nil || !strings.Contains(out, "cli1") {
			t.Fatalf("jobs list = %q %v, want cli1", out, err)
		}
	})

	long := []byte(`{"num_epochs":1000,"dataset":"synthetic","size":50000,"features":1024}`)
	t.Run("queue full, duplicates, cancel", func(t *testing.T) {
		if r := submit(t, f, "request_id=run1", long); r.Status != http.StatusAccepted {
			t.Fatalf("submit run1 = %v, want 202", r)
		}
		waitJob(t, f, 30*time.Second, "run1", func(rec jobRecord) error {
			if rec.Status != "RUNNING" {
				return fmt.Errorf("status %s", rec.Status)
			}
			return nil
		})
		if r := submit(t, f, "request_id=q1", long); r.Status != http.StatusAccepted {
			t.Fatalf("submit q1 = %v, want 202 (queued)", r)
		}
		r := submit(t, f, "request_id=q2", long)
		if r.Status != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
			t.Fatalf("submit q2 beyond max_queued = %v, want 429 with Retry-After", r)
		}
		if r := fleet.MustDo(t, http.MethodGet, jobURL(f, "status", "q2"), nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("status of the refused q2 = %v, want 404 (nothing stored)", r)
		}
		r = submit(t, f, "request_id=q1", []byte(`{"num_epochs":1}`))
		var rec jobRecord
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &rec) != nil || rec.ID != "q1" || rec.Status != "QUEUED" {
			t.Fatalf("duplicate submit of q1 = %v, want 200 with the queued q1", r)
		}
		r = fleet.MustDo(t, http.MethodPost, jobURL(f, "cancel", "q1"), nil, nil)
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"CANCELLED"`) {
			t.Fatalf("cancel queued q1 = %v, want 200 CANCELLED", r)
		}
		if r := fleet.MustDo(t, http.MethodPost, jobURL(f, "cancel", "run1"), nil, nil); r.Status != http.StatusOK {
			t.Fatalf("cancel running run1 = %v, want 200", r)
		}
		waitJob(t, f, 30*time.Second, "run1", func(rec jobRecord) error {
			if rec.Status != "CANCELLED" {
				return fmt.Errorf("status %s", rec.Status)
			}
			return nil
		})
		r = fleet.MustDo(t, http.MethodGet, jobURL(f, "result", "run1"), nil, nil)
		if r.Status != http.StatusConflict || !strings.Contains(string(r.Body), "CANCELLED") {
			t.Errorf("result of cancelled run1 = %v, want 409 CANCELLED", r)
		}
	})

	bad := []struct {
		name, method, url string
		body              []byte
		status            int
		want              string
	}{
		{"unknown method", http.MethodPost, f.URL() + "/jobs/no-such-method?num_epochs=1", nil, http.StatusNotFound, ""},
		{"missing required argument", http.MethodPost, jobURL(f, "", "") + "?request_id=b1", []byte(`{"dataset":"sentiment"}`), http.StatusBadRequest, "num_epochs"},
		{"malformed JSON", http.MethodPost, jobURL(f, "", "") + "?request_id=b2", []byte(`{"num_epochs":`), http.StatusBadRequest, "malformed JSON"},
		{"unknown request id", http.MethodGet, jobURL(f, "status", "no-such-job"), nil, http.StatusNotFound, "not_found"},
		{"unknown request id result", http.MethodGet, jobURL(f, "result", "no-such-job"), nil, http.StatusNotFound, "not_found"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			r := fleet.MustDo(t, tc.method, tc.url, tc.body, nil)
			if r.Status != tc.status || !strings.Contains(string(r.Body), tc.want) {
				t.Errorf("%s %s = %v, want %d containing %q", tc.method, tc.url, r, tc.status, tc.want)
			}
		})
	}
	t.Run("oversized body", func(t *testing.T) {
		r, err := fleet.PostSized(jobURL(f, "", ""), 5<<20)
		if err != nil || r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("POST 5 MiB = %v, %v, want 413", r, err)
		}
	})
}

// TestAsyncMethodsChangeTakesEffect is issue 11 #6: a change of a
// deployment's async_methods reaches its running replica in place (same
// replica, no restart): after lowering train's timeout to 1s, a long job's
// attempt times out on that replica. Before, the replica kept the
// settings it started with and the job ran on.
func TestAsyncMethodsChangeTakesEffect(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerTrainer)
	m := config.AsyncMethod{Name: methodTrain, MaxQueued: 10, RequiredArgs: []string{"num_epochs"}}
	f.Deploy(serveConfig(t, trainerApp(1, 1, m)))
	before := fleet.ReplicaIDs(f.WaitApp(deployTimeout, "jobs", 1, nil))

	m.MaxAttempts, m.Timeout = 1, config.Duration(time.Second)
	f.Deploy(serveConfig(t, trainerApp(1, 1, m)))
	f.Eventually(deployTimeout, "the worker applies the new async_methods in place", func() error {
		if !f.Workers[0].LogContains("async_methods_changed=true") {
			return errorf("not yet")
		}
		return nil
	})
	after := fleet.ReplicaIDs(f.WaitApp(deployTimeout, "jobs", 1, nil))
	if !slices.Equal(after, before) {
		t.Fatalf("replicas after an async_methods change = %v, want the same %v (applied in place)", after, before)
	}
	r := submit(t, f, "request_id=slow1", []byte(`{"num_epochs":1000,"dataset":"synthetic","size":50000,"features":1024}`))
	if r.Status != http.StatusAccepted {
		t.Fatalf("submit = %v, want 202", r)
	}
	rec := waitJob(t, f, 60*time.Second, "slow1", func(rec jobRecord) error {
		if !strings.Contains(rec.Error, "timed out after 1s") {
			return fmt.Errorf("status %s attempt %d (%s), error %q", rec.Status, rec.Attempts, rec.Message, rec.Error)
		}
		return nil
	})
	if rec.Replica != before[0] {
		t.Errorf("job = %+v, want its attempt on %s", rec, before[0])
	}
}
