package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/nats-io/nats.go/jetstream"
)

// childEnv makes the test binary a process-runtime child (see runChild).
const childEnv = "WORKER_TEST_CHILD"

// runChild serves on 127.0.0.1:$PORT: /healthz answers 200; every other
// path answers "child:<body> replica=<JETSERVE_REPLICA_ID> uc=<JETSERVE_USER_CONFIG>".
func runChild() int {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "child:%s replica=%s uc=%s", body, os.Getenv("JETSERVE_REPLICA_ID"), os.Getenv("JETSERVE_USER_CONFIG"))
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func processSpec(t testing.TB, id string, command ...string) protocol.ReplicaSpec {
	t.Helper()
	if len(command) == 0 {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		command = []string{self}
	}
	s := spec(id, "proc-dep", "", 4, `{"threshold":0.5}`)
	s.Runtime = config.RuntimeProcess
	s.Process = &protocol.ProcessSpec{
		Command:        command,
		Env:            map[string]string{childEnv: "1", "GORACE": "atexit_sleep_ms=0"},
		HealthPath:     "/healthz",
		Protocol:       config.ProtocolHTTP,
		StartupTimeout: config.Duration(30 * time.Second),
	}
	return s
}

func (f *fleet) workerInfo() protocol.WorkerInfo {
	f.t.Helper()
	var info protocol.WorkerInfo
	waitfor.True(f.t, waitLimit, "worker record", func() bool {
		e, err := f.b.Workers.Get(context.Background(), protocol.WorkerKey(workerID))
		return err == nil && json.Unmarshal(e.Value(), &info) == nil
	})
	return info
}

// procGone reports whether pid no longer runs (or is a zombie).
func procGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return err == nil && i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func TestProcessReplicaServesRestartsAndStops(t *testing.T) {
	f := startFleet(t, nil)
	if got := f.workerInfo().Runtimes; !slices.Equal(got, []string{config.RuntimeGo, config.RuntimeProcess}) {
		t.Errorf("WorkerInfo.Runtimes = %v, want [go process]", got)
	}
	s := processSpec(t, "pr1")
	f.assign(s)
	info := f.waitState(s, protocol.ReplicaRunning)
	if info.Process == nil || info.Process.PID == 0 || info.Process.Port == 0 || info.Process.Restarts != 0 {
		t.Fatalf("RUNNING record's process = %+v, want a pid, a port and no restarts", info.Process)
	}
	resp := f.mustCall("pr1", "world")
	if want := `child:world replica=pr1 uc={"threshold":0.5}`; resp.Status != http.StatusOK || string(resp.Body) != want {
		t.Errorf("call pr1 = %d %q, want 200 %q", resp.Status, resp.Body, want)
	}

	// kill -9 of the child: the replica leaves RUNNING, then comes back
	// with the restart and the exit in its record.
	first := info.Process.PID
	w, err := f.b.Replicas.Watch(context.Background(), protocol.ReplicaKey(s.App, s.Deployment, workerID, s.ID), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop() //nolint:errcheck
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var restarting string // the message of the STARTING record put meanwhile
	deadline := time.After(waitLimit)
	for info.State != protocol.ReplicaRunning || info.Process == nil || info.Process.Restarts != 1 {
		select {
		case e := <-w.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if err := json.Unmarshal(e.Value(), &info); err != nil {
				t.Fatal(err)
			}
			if info.State == protocol.ReplicaStarting {
				restarting = info.Message
			}
		case <-deadline:
			t.Fatalf("replica not RUNNING again after a restart: last record %+v", info)
		}
	}
	if !strings.Contains(restarting, "process exited (signal: killed); restart 1") {
		t.Errorf("while restarting the record said %q, want STARTING with the exit and the restart number", restarting)
	}
	if info.Process.LastExit != "signal: killed" || info.Process.PID == first || info.Process.LastExitAt.IsZero() {
		t.Errorf("record after restart = %+v, want last exit signal: killed and a new pid", info.Process)
	}
	if resp := f.mustCall("pr1", "again"); resp.Status != http.StatusOK || !strings.HasPrefix(string(resp.Body), "child:again") {
		t.Errorf("call after restart = %d %q", resp.Status, resp.Body)
	}

	// Removed from the assignment: drained, the child stopped, the record gone.
	second := info.Process.PID
	f.assign()
	f.waitGone(s)
	waitfor.True(t, waitLimit, "child process gone", func() bool { return procGone(second) })
}

func TestProcessReplicaFailures(t *testing.T) {
	t.Run("command not found", func(t *testing.T) {
		f := startFleet(t, nil)
		s := processSpec(t, "pf1", "no-such-model-server-e2e")
		f.assign(s)
		info := f.waitState(s, protocol.ReplicaFailed)
		if !strings.Contains(info.Message, `"no-such-model-server-e2e"`) || !strings.Contains(info.Message, "executable file not found") {
			t.Errorf("FAILED message = %q, want the command and executable file not found", info.Message)
		}
		f.assign()
		f.waitGone(s)
	})
	t.Run("process runtime off", func(t *testing.T) {
		f := startFleet(t, func(c *worker.Config) { c.ProcessRuntime = false })
		if got := f.workerInfo().Runtimes; !slices.Equal(got, []string{config.RuntimeGo}) {
			t.Errorf("WorkerInfo.Runtimes = %v, want [go]", got)
		}
		s := processSpec(t, "pf2")
		f.assign(s)
		info := f.waitState(s, protocol.ReplicaFailed)
		if !strings.Contains(info.Message, "process runtime is off on worker "+workerID) {
			t.Errorf("FAILED message = %q, want it to say the process runtime is off", info.Message)
		}
	})
}
