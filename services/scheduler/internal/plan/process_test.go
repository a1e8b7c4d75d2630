package plan

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

const processApp = `
applications:
- name: digits
  route_prefix: /digits
  ingress: model
  deployments:
  - name: model
    runtime: process
    command: ["/usr/bin/python3", "server.py", "--threads", "4"]
    env: {PYTHONUNBUFFERED: "1"}
    protocol: oip
    startup_timeout: 45s
    num_replicas: %d
`

// processWorker runs the process runtime (and handler h).
func processWorker(id string, cpu float64) protocol.WorkerInfo {
	w := worker(id, cpu, 0)
	w.Runtimes = []string{config.RuntimeGo, config.RuntimeProcess}
	return w
}

func TestProcessDeploymentSpecAndPlacement(t *testing.T) {
	// w-go has no process runtime (an old worker, or process_runtime: false).
	e := newEnv(t, cfg(t, fmt.Sprintf(processApp, 2)), worker("w-go", 8, 0), processWorker("w-proc", 8))
	res := e.step()
	if got := ids(res, "w-go"); len(got) != 0 {
		t.Errorf("w-go (no process runtime) got %v, want nothing", got)
	}
	specs := res.Assignments["w-proc"].Replicas
	if len(specs) != 2 {
		t.Fatalf("w-proc got %d replicas, want 2", len(specs))
	}
	s := specs[0]
	want := protocol.ProcessSpec{Command: []string{"/usr/bin/python3", "server.py", "--threads", "4"},
		Env: map[string]string{"PYTHONUNBUFFERED": "1"}, HealthPath: config.DefaultHealthPathOIP,
		Protocol: config.ProtocolOIP, StartupTimeout: config.Duration(45 * time.Second)}
	if !s.IsProcess() || s.Process == nil || fmt.Sprint(*s.Process) != fmt.Sprint(want) {
		t.Errorf("spec runtime %q process %+v, want process %+v", s.Runtime, s.Process, want)
	}

	// The command is part of the version: changing it rolls the replicas.
	e.runAll()
	e.step()
	before := s.Version
	e.in.Config = cfg(t, strings.Replace(fmt.Sprintf(processApp, 2), "--threads\", \"4", "--threads\", \"8", 1))
	res = e.step()
	rolled := false
	for _, r := range res.Assignments["w-proc"].Replicas {
		if r.Version != before {
			rolled = r.Process.Command[3] == "8"
		}
	}
	if !rolled {
		t.Errorf("a command change did not start replicas of a new version with the new command: %+v", res.Assignments["w-proc"].Replicas)
	}
}

func TestProcessDeploymentWithoutProcessWorkerIsPending(t *testing.T) {
	e := newEnv(t, cfg(t, fmt.Sprintf(processApp, 1)), worker("w-go", 8, 0))
	res := e.step()
	s := BuildStatus(&e.st, e.in, res, "me", nil)
	d := s.Applications["digits"].Deployments["model"]
	if len(d.Replicas) != 1 || d.Replicas[0].State != protocol.ReplicaPending || d.Replicas[0].Reason == nil ||
		d.Replicas[0].Reason.Code != protocol.ReasonNoHandler || d.Replicas[0].Reason.Need.Runtime != config.RuntimeProcess ||
		d.Replicas[0].Message != "no worker runs the process runtime (workers with process_runtime: false take no process deployments)" {
		t.Fatalf("replicas = %+v, want one PENDING for no_handler of the process runtime, saying no worker runs it", d.Replicas)
	}
	if !strings.Contains(d.Message, "pending: no worker runs the process runtime") {
		t.Errorf("deployment message = %q, want the pending reason", d.Message)
	}
}

// fail marks every placed replica of the deployment FAILED with msg.
func (e *env) fail(msg string) []string {
	var failed []string
	for _, r := range e.st.Replicas {
		if r.WorkerID == "" {
			continue
		}
		if rec, ok := e.in.Records[r.Spec.ID]; ok && rec.State == protocol.ReplicaFailed {
			continue
		}
		e.in.Records[r.Spec.ID] = protocol.ReplicaInfo{ID: r.Spec.ID, App: r.Spec.App, Deployment: r.Spec.Deployment,
			WorkerID: r.WorkerID, Version: r.Spec.Version, State: protocol.ReplicaFailed, Message: msg}
		failed = append(failed, r.Spec.ID)
	}
	return failed
}

func TestFailedReplicasReplacedWithBackoffThenDeployFailed(t *testing.T) {
	e := newEnv(t, cfg(t, fmt.Sprintf(processApp, 1)), processWorker("w1", 8))
	e.step()
	const why = `replica cannot start: start ["nope"]: exec: "nope": executable file not found in $PATH`
	threshold := DeployFailedAfter(1)
	if threshold != 3 {
		t.Fatalf("DeployFailedAfter(1) = %d, want Ray's 3", threshold)
	}
	for n := 1; n <= threshold; n++ {
		failed := e.fail(why)
		if len(failed) != 1 {
			t.Fatalf("failure %d: %d replicas marked FAILED, want 1", n, len(failed))
		}
		id := failed[0]
		res := e.step() // sees it FAILED
		s := BuildStatus(&e.st, e.in, res, "me", nil)
		a := s.Applications["digits"]
		d := a.Deployments["model"]
		if len(d.Replicas) != 1 || d.Replicas[0].ID != id || d.Replicas[0].State != protocol.ReplicaFailed || d.Replicas[0].Message != why {
			t.Fatalf("failure %d: replicas = %+v, want %s FAILED with the reason", n, d.Replicas, id)
		}
		if n < threshold {
			if d.Status == protocol.DeploymentDeployFailed || a.Status == protocol.AppDeployFailed {
				t.Errorf("failure %d of %d: status %s/%s, want not DEPLOY_FAILED yet", n, threshold, a.Status, d.Status)
			}
		} else if d.Status != protocol.DeploymentDeployFailed || a.Status != protocol.AppDeployFailed ||
			!strings.Contains(d.Message, "failed to start 3 times in a row") || !strings.Contains(a.Message, why) {
			t.Errorf("after %d failures: app %s %q, deployment %s %q; want DEPLOY_FAILED with the count and the reason",
				n, a.Status, a.Message, d.Status, d.Message)
		}
		// Kept (FAILED, in the status) until its backoff passed, then replaced.
		backoff := StartBackoff(n)
		e.now = e.now.Add(backoff - 2*time.Second) // step adds 1 s: just short of the backoff
		e.step()
		if _, ok := e.st.Replicas[id]; !ok {
			t.Fatalf("failure %d: %s replaced before its %s backoff", n, id, backoff)
		}
		e.step()
		if _, ok := e.st.Replicas[id]; ok {
			t.Fatalf("failure %d: %s not replaced after its %s backoff", n, id, backoff)
		}
		if len(e.st.Replicas) != 1 {
			t.Fatalf("failure %d: %d replicas after the replacement, want 1 new", n, len(e.st.Replicas))
		}
		delete(e.in.Records, id)
	}

	// A replica that runs resets the count: the deployment is HEALTHY.
	e.runAll()
	res := e.step()
	s := BuildStatus(&e.st, e.in, res, "me", nil)
	if d := s.Applications["digits"].Deployments["model"]; d.Status != protocol.DeploymentHealthy {
		t.Errorf("after a replica ran: deployment %s %q, want HEALTHY", d.Status, d.Message)
	}
	if _, ok := e.st.Failures["digits/model"]; ok {
		t.Error("start failures still counted after the deployment reached its target")
	}
}

func TestStartBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second,
		7: MaxStartBackoff, 100: MaxStartBackoff} {
		if got := StartBackoff(n); got != want {
			t.Errorf("StartBackoff(%d) = %s, want %s", n, got, want)
		}
	}
	for target, want := range map[int]int{0: 1, 1: 3, 2: 6, 10: MaxStartFailures} {
		if got := DeployFailedAfter(target); got != want {
			t.Errorf("DeployFailedAfter(%d) = %d, want %d", target, got, want)
		}
	}
}

// A process replica restarting in place is STARTING again: the start
// timeout counts from its child's last exit, not from its placement.
func TestRestartingProcessReplicaNotReplacedForOldPlacement(t *testing.T) {
	e := newEnv(t, cfg(t, fmt.Sprintf(processApp, 1)), processWorker("w1", 8))
	e.step()
	e.runAll()
	e.step()
	var id string
	for rid := range e.st.Replicas {
		id = rid
	}
	e.now = e.now.Add(10 * e.in.StartTimeout) // long after its placement
	rec := e.in.Records[id]
	rec.State = protocol.ReplicaStarting
	rec.Process = &protocol.ProcessStatus{Port: 1234, Restarts: 1, LastExit: "signal: killed", LastExitAt: e.now}
	e.in.Records[id] = rec
	res := e.step()
	if _, ok := e.st.Replicas[id]; !ok {
		t.Fatal("a replica restarting its child was replaced for being STARTING long after its placement")
	}
	s := BuildStatus(&e.st, e.in, res, "me", nil)
	rs := s.Applications["digits"].Deployments["model"].Replicas[0]
	if rs.Process == nil || rs.Process.Restarts != 1 || rs.Process.LastExit != "signal: killed" {
		t.Errorf("replica status process = %+v, want the restart count and last exit", rs.Process)
	}
	e.now = e.now.Add(e.in.StartTimeout)
	e.step()
	if _, ok := e.st.Replicas[id]; ok {
		t.Error("a replica STARTING for longer than the start timeout since its child's exit was not replaced")
	}
}
