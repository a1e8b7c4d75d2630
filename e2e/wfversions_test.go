package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// versionsApp is the app "wfver": one replica of handler (one of the two
// builds of diag's Versioned).
func versionsApp(t *testing.T, handler string) []byte {
	d := deployment{app: "wfver", handler: handler, replicas: 1, cpu: 0.1, maxOngoing: 16, gracefulShutdown: 2 * time.Second}
	a := d.application()
	return serveConfig(t, a)
}

type versionedRun struct {
	Status  string `json:"status"`
	Error   string `json:"error"`
	Version string `json:"version"`
	Result  struct {
		StartedOn  string `json:"started_on"`
		FinishedOn string `json:"finished_on"`
	} `json:"result"`
}

// versionedRunIn polls a run of workflow wf until its status is want.
func versionedRunIn(t *testing.T, f *fleet.Fleet, wf, id, want string) versionedRun {
	t.Helper()
	var run versionedRun
	f.Eventually(30*time.Second, fmt.Sprintf("run %s of %s %s", id, wf, want), func() error {
		r, err := doReq(http.MethodGet, f.URL()+"/wfver/"+wf+"/status?request_id="+id, nil, nil)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("status = %v", r)
		}
		if err := json.Unmarshal(r.Body, &run); err != nil {
			return err
		}
		if run.Status != want {
			if run.Status == "FAILED" || run.Status == "CANCELLED" {
				t.Fatalf("run %s of %s ended %s (%s), want %s", id, wf, run.Status, run.Error, want)
			}
			return fmt.Errorf("status %s", run.Status)
		}
		return nil
	})
	return run
}

func versionedPost(t *testing.T, f *fleet.Fleet, path string) {
	t.Helper()
	r, err := doReq(http.MethodPost, f.URL()+"/wfver/"+path, []byte(`{}`), http.Header{"Content-Type": {"application/json"}})
	if err != nil || (r.Status != http.StatusAccepted && r.Status != http.StatusOK) {
		t.Fatalf("POST /wfver/%s = %v, %v; want 202", path, r, err)
	}
}

// deploymentVersions returns the wfver deployment's current version and
// its replicas' versions (pinned-only ones marked "+pinned").
func deploymentVersions(f *fleet.Fleet) (string, []string, error) {
	st, err := f.Status()
	if err != nil {
		return "", nil, err
	}
	d, ok := st.Applications["wfver"].Deployments["wfver"]
	if !ok {
		return "", nil, fmt.Errorf("no deployment wfver in the status")
	}
	var vers []string
	for _, r := range d.Replicas {
		v := r.Version
		if r.PinnedOnly {
			v += "+pinned"
		}
		if r.State == protocol.ReplicaRunning {
			vers = append(vers, v)
		}
	}
	return d.Version, vers, nil
}

// startSuspendedOnV1 starts a fleet of workers workers running v1 of app
// wfver and run p1 of workflow greet, suspended on v1; it returns the
// fleet and v1's version.
func startSuspendedOnV1(t *testing.T, workers int) (*fleet.Fleet, string) {
	t.Helper()
	f := startFleet(t, fleet.Options{Workers: workers})
	f.RequireHandlers(handlerVersionsV1, handlerVersionsV2)
	f.Deploy(versionsApp(t, handlerVersionsV1))
	f.WaitApp(deployTimeout, "wfver", 1, nil)
	v1, _, err := deploymentVersions(f)
	if err != nil {
		t.Fatal(err)
	}
	versionedPost(t, f, "greet?request_id=p1")
	if run := versionedRunIn(t, f, "greet", "p1", "SUSPENDED"); run.Version != v1 {
		t.Fatalf("run p1 records version %q, want v1's %q", run.Version, v1)
	}
	return f, v1
}

// TestWorkflowRunsPinnedToTheirVersion (issue 10, versioning): runs
// suspended on v1 — a pinned one and an auto_upgrade one — and a rolling
// update to v2 (another build). The v1 replica stays, pinned-only: sync
// requests reach only v2, a new run runs v2; signalled, the pinned run
// completes on v1's code and the auto_upgrade one replays on v2's; then
// the v1 replica goes.
func TestWorkflowRunsPinnedToTheirVersion(t *testing.T) {
	f, v1 := startSuspendedOnV1(t, 1)
	versionedPost(t, f, "greet-auto?request_id=a1")
	versionedRunIn(t, f, "greet-auto", "a1", "SUSPENDED")

	f.Deploy(versionsApp(t, handlerVersionsV2))
	var v2 string
	rolled := f.Eventually(deployTimeout, "v2 running beside v1 kept pinned-only", func() error {
		cur, vers, err := deploymentVersions(f)
		if err != nil {
			return err
		}
		v2 = cur
		if cur == v1 || len(vers) != 2 || !slices.Contains(vers, cur) || !slices.Contains(vers, v1+"+pinned") {
			return fmt.Errorf("version %s, running replicas %v", cur, vers)
		}
		return nil
	})
	for i := range 20 {
		r, err := doReq(http.MethodGet, f.URL()+"/wfver/", nil, nil)
		if err != nil || r.Status != http.StatusOK || string(r.Body) != `{"code":"v2"}` {
			t.Fatalf("request %d = %v, %v; want v2's answer (the kept v1 replica takes no requests)", i, r, err)
		}
	}
	versionedPost(t, f, "greet?request_id=p2")
	if run := versionedRunIn(t, f, "greet", "p2", "SUSPENDED"); run.Version != v2 {
		t.Fatalf("run p2 started after the update records version %q, want v2's %q", run.Version, v2)
	}

	signalled := time.Now()
	for _, s := range []string{"greet/signal?request_id=p1", "greet-auto/signal?request_id=a1", "greet/signal?request_id=p2"} {
		versionedPost(t, f, s+"&name=go")
	}
	for _, tc := range []struct{ wf, id, started, finished, version string }{
		{"greet", "p1", "v1", "v1", v1},
		{"greet-auto", "a1", "v1", "v2", v2},
		{"greet", "p2", "v2", "v2", v2},
	} {
		run := versionedRunIn(t, f, tc.wf, tc.id, "SUCCEEDED")
		if run.Result.StartedOn != tc.started || run.Result.FinishedOn != tc.finished || run.Version != tc.version {
			t.Errorf("run %s of %s: started on %s, finished on %s (version %s); want %s code, then %s code (version %s)",
				tc.id, tc.wf, run.Result.StartedOn, run.Result.FinishedOn, run.Version, tc.started, tc.finished, tc.version)
		}
	}

	ended := time.Since(signalled)
	// No run is pinned to v1 any more: its replica goes.
	f.WaitApp(deployTimeout, "wfver", 1, nil)
	t.Logf("v2 running beside the kept v1 replica %v after the deploy; the three runs ended %v after their signals; v1 gone %v after that",
		rolled.Round(10*time.Millisecond), ended.Round(10*time.Millisecond), (time.Since(signalled) - ended).Round(10*time.Millisecond))
	if _, vers, err := deploymentVersions(f); err != nil || len(vers) != 1 || vers[0] != v2 {
		t.Fatalf("replicas after the pinned runs ended = %v, %v; want only v2", vers, err)
	}
}

// TestPinnedRunKeepsItsVersionWhenTheKeptWorkerDies (versioning, a kept
// replica lost): two workers; a run suspends on v1, the deployment rolls
// to v2 and v1's replica is kept pinned_only. The worker running it is
// killed (kill -9): the scheduler places a v1 replica, pinned_only, on
// the other worker, and the run, signalled, finishes on v1's code.
func TestPinnedRunKeepsItsVersionWhenTheKeptWorkerDies(t *testing.T) {
	f, v1 := startSuspendedOnV1(t, 2)

	f.Deploy(versionsApp(t, handlerVersionsV2))
	kept := func() (protocol.ReplicaStatus, error) {
		st, err := f.Status()
		if err != nil {
			return protocol.ReplicaStatus{}, err
		}
		d := st.Applications["wfver"].Deployments["wfver"]
		for _, r := range d.Replicas {
			if r.PinnedOnly && r.Version == v1 && r.State == protocol.ReplicaRunning && d.Version != v1 {
				return r, nil
			}
		}
		return protocol.ReplicaStatus{}, fmt.Errorf("no v1 replica kept: %s", d.Message)
	}
	var first protocol.ReplicaStatus
	f.Eventually(deployTimeout, "v1 kept pinned-only beside v2", func() (err error) {
		first, err = kept()
		return err
	})
	w := f.Worker(first.WorkerID)
	if w == nil {
		t.Fatalf("the kept replica's worker %q is not one of the fleet's", first.WorkerID)
	}
	killed := time.Now()
	f.Kill(w.Proc)
	var again protocol.ReplicaStatus
	f.Eventually(deployTimeout, "v1 placed again, pinned-only, on the other worker", func() (err error) {
		if again, err = kept(); err == nil && again.ID == first.ID {
			err = fmt.Errorf("still the replica on the killed worker")
		}
		return err
	})
	if again.WorkerID == first.WorkerID {
		t.Fatalf("v1 placed again on %s, the worker killed", again.WorkerID)
	}
	placed := time.Since(killed)

	versionedPost(t, f, "greet/signal?request_id=p1&name=go")
	run := versionedRunIn(t, f, "greet", "p1", "SUCCEEDED")
	if run.Result.StartedOn != "v1" || run.Result.FinishedOn != "v1" || run.Version != v1 {
		t.Fatalf("run p1: started on %s, finished on %s (version %s); want v1's code throughout (version %s)",
			run.Result.StartedOn, run.Result.FinishedOn, run.Version, v1)
	}
	t.Logf("a v1 replica ran again on %s %v after %s was killed", again.WorkerID, placed.Round(10*time.Millisecond), first.WorkerID)
}
