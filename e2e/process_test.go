package e2e

// The process runtime end to end: the Python digits classifier
// (examples/digits, Debian's python3 + scikit-learn) deployed through the
// fleet as real processes, its predictions checked on held-out digits,
// kill -9 of its child under load; and the bad inputs: a command that does
// not exist, a child that never becomes healthy.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

const (
	// python is Debian's interpreter, which scripts/python-deps.sh
	// provides with numpy and scikit-learn (make e2e runs it first).
	python        = "/usr/bin/python3"
	digitsConfig  = "../examples/digits/config.yaml"
	digitsServer  = "examples/digits/server.py" // relative to the repository root
	digitsApp     = "digits"
	digitsInfer   = "/digits/v2/models/digits/infer" // through the app's route prefix
	digitsOIP     = "/v2/models/digits"              // the ingress's own OIP endpoints
	digitsSamples = 100
)

// requirePython fails the test unless /usr/bin/python3 imports numpy and
// sklearn, naming the script that installs them.
func requirePython(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	out, err := exec.Command(python, "-c", "import numpy, sklearn").CombinedOutput()
	if err != nil {
		t.Fatalf("e2e: %s cannot import numpy and sklearn (%v: %s); run scripts/python-deps.sh (make e2e does)", python, err, out)
	}
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := fleet.Root(".")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// digitsApplication is examples/digits/config.yaml with the script's path
// made absolute (the workers run in temp dirs) and health checks every
// second, so that a broken child is noticed within seconds.
func digitsApplication(t testing.TB) config.Application {
	t.Helper()
	b, err := os.ReadFile(filepath.FromSlash(digitsConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(b)
	if err != nil {
		t.Fatalf("%s: %v", digitsConfig, err)
	}
	app, ok := cfg.App(digitsApp)
	if !ok || len(app.Deployments) != 1 {
		t.Fatalf("%s: want app %q with one deployment, got %+v", digitsConfig, digitsApp, cfg)
	}
	d := &app.Deployments[0]
	if d.Runtime != config.RuntimeProcess || len(d.Command) != 2 || d.Command[0] != python || d.Command[1] != digitsServer {
		t.Fatalf("%s: want runtime process with command [%s %s], got %s %v", digitsConfig, python, digitsServer, d.Runtime, d.Command)
	}
	d.Command = []string{python, filepath.Join(repoRoot(t), digitsServer)}
	d.HealthCheckPeriod = config.Duration(time.Second)
	d.HealthCheckTimeout = config.Duration(5 * time.Second)
	return app
}

// heldOut returns held-out digits with their labels, from the server's
// --dump-test mode (the same fixed split it trains on).
func heldOut(t testing.TB, n int) (inputs [][]float64, labels []int) {
	t.Helper()
	out, err := exec.Command(python, filepath.Join(repoRoot(t), digitsServer), "--dump-test", fmt.Sprint(n)).Output()
	if err != nil {
		t.Fatalf("%s --dump-test: %v", digitsServer, err)
	}
	var d struct {
		Inputs [][]float64 `json:"inputs"`
		Labels []int       `json:"labels"`
	}
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("decode --dump-test output: %v", err)
	}
	if len(d.Inputs) != n || len(d.Labels) != n {
		t.Fatalf("--dump-test %d gave %d inputs and %d labels", n, len(d.Inputs), len(d.Labels))
	}
	return d.Inputs, d.Labels
}

// inferBody is an OIP v2 infer request for rows of 64 pixels.
func inferBody(t testing.TB, rows [][]float64) []byte {
	t.Helper()
	var flat []float64
	for _, r := range rows {
		flat = append(flat, r...)
	}
	b, err := json.Marshal(map[string]any{"id": "e2e", "inputs": []map[string]any{
		{"name": "input-0", "datatype": "FP32", "shape": []int{len(rows), 64}, "data": flat}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type inferResponse struct {
	ModelName string `json:"model_name"`
	ID        string `json:"id"`
	Outputs   []struct {
		Name     string    `json:"name"`
		Datatype string    `json:"datatype"`
		Shape    []int     `json:"shape"`
		Data     []float64 `json:"data"`
	} `json:"outputs"`
}

func (r inferResponse) labels() []int {
	for _, o := range r.Outputs {
		if o.Name == "label" && o.Datatype == "INT64" {
			out := make([]int, len(o.Data))
			for i, v := range o.Data {
				out[i] = int(v)
			}
			return out
		}
	}
	return nil
}

// digitsReplica returns the status of the digits app's only replica.
func digitsReplica(f *fleet.Fleet) (protocol.ReplicaStatus, error) {
	st, err := f.Status()
	if err != nil {
		return protocol.ReplicaStatus{}, err
	}
	d := st.Applications[digitsApp].Deployments[digitsApp]
	if len(d.Replicas) != 1 {
		return protocol.ReplicaStatus{}, fmt.Errorf("%d replicas: %s", len(d.Replicas), fleet.Describe(st.Applications[digitsApp]))
	}
	return d.Replicas[0], nil
}

func TestProcessDigits(t *testing.T) {
	requirePython(t)
	f := startFleet(t, fleet.Options{})
	f.Deploy(serveConfig(t, digitsApplication(t)))
	f.WaitApp(deployTimeout, digitsApp, 1, nil)

	for _, path := range []string{digitsOIP + "/infer", digitsInfer} {
		t.Run("predictions on held-out digits via "+path, func(t *testing.T) {
			inputs, labels := heldOut(t, digitsSamples)
			r := f.MustCall(http.MethodPost, path, inferBody(t, inputs))
			var resp inferResponse
			if err := json.Unmarshal(r.Body, &resp); err != nil {
				t.Fatalf("decode %v: %v", r, err)
			}
			got := resp.labels()
			if resp.ModelName != "digits" || resp.ID != "e2e" || len(got) != len(labels) {
				t.Fatalf("infer answered model %q id %q with %d labels, want digits, e2e, %d: %v", resp.ModelName, resp.ID, len(got), len(labels), r)
			}
			right := 0
			for i := range got {
				if got[i] == labels[i] {
					right++
				}
			}
			acc := float64(right) / float64(len(labels))
			t.Logf("accuracy on %d held-out digits: %.3f", len(labels), acc)
			if acc < 0.9 {
				t.Errorf("accuracy %.3f on %d held-out digits, want >= 0.9", acc, len(labels))
			}
		})
	}
	t.Run("OIP ready, metadata and malformed tensors at the ingress", func(t *testing.T) {
		if r := f.MustCall(http.MethodGet, digitsOIP+"/ready", nil); r.Status != http.StatusOK {
			t.Errorf("GET %s/ready = %v, want 200 from the child", digitsOIP, r)
		}
		if r := f.MustCall(http.MethodGet, digitsOIP, nil); !strings.Contains(string(r.Body), `"name":"digits"`) {
			t.Errorf("GET %s = %v, want the child's metadata", digitsOIP, r)
		}
		bad, err := f.Call(http.MethodPost, digitsOIP+"/infer", []byte(`{"inputs":[{"name":"input-0","datatype":"FP32","shape":[1,64],"data":[1,2,3]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if bad.Status != http.StatusBadRequest || !strings.Contains(string(bad.Body), `input \"input-0\"`) {
			t.Errorf("infer with 3 values for shape [1,64] = %v, want the ingress's 400 naming input-0", bad)
		}
	})
	t.Run("metadata and bad tensors", func(t *testing.T) {
		r := f.MustCall(http.MethodGet, "/digits/v2/models/digits", nil)
		if !strings.Contains(string(r.Body), `"datatype":"FP32","shape":[-1,64]`) {
			t.Errorf("model metadata = %v, want the [-1,64] FP32 input", r)
		}
		bad, err := f.Call(http.MethodPost, digitsInfer, []byte(`{"inputs":[{"name":"input-0","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if bad.Status != http.StatusBadRequest || !strings.Contains(string(bad.Body), `"error":"inputs[0].shape must be [N, 64]`) {
			t.Errorf("infer with a [1,3] tensor = %v, want the child's 400 with its JSON error", bad)
		}
	})
	t.Run("kill -9 of the child under load", func(t *testing.T) {
		inputs, _ := heldOut(t, 1)
		body := inferBody(t, inputs)
		before, err := digitsReplica(f)
		if err != nil || before.Process == nil || before.Process.PID == 0 {
			t.Fatalf("replica before the kill: %+v %v, want a child pid in its status", before, err)
		}
		load := startLoad(t, f.URL()+digitsInfer, body, 4)
		load.waitOK(t, 20, 30*time.Second)
		if err := syscall.Kill(before.Process.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", before.Process.PID, err)
		}
		var after protocol.ReplicaStatus
		f.Eventually(recoverTimeout, "the replica RUNNING again with its child restarted", func() error {
			var err error
			if after, err = digitsReplica(f); err != nil {
				return err
			}
			if after.State != protocol.ReplicaRunning || after.Process == nil || after.Process.Restarts < 1 {
				return fmt.Errorf("replica %s %s %q process %+v", after.ID, after.State, after.Message, after.Process)
			}
			return nil
		})
		if after.ID != before.ID || after.Process.LastExit != "signal: killed" || after.Process.PID == before.Process.PID {
			t.Errorf("after the kill: replica %s pid %d last exit %q, want the same replica %s, a new pid, last exit signal: killed",
				after.ID, after.Process.PID, after.Process.LastExit, before.ID)
		}
		load.waitOK(t, 20, recoverTimeout) // answers flow again
		res := load.stop()
		t.Logf("under kill -9: %s", res)
		if res.transport > 0 || res.other > 0 || res.noRetryAfter > 0 {
			t.Errorf("every request must be answered 200, or 503 with Retry-After: %s", res)
		}
		if res.slowest > 20*time.Second {
			t.Errorf("slowest answer took %s, want < 20s (nothing hangs)", res.slowest)
		}
	})
	t.Run("graceful stop", func(t *testing.T) {
		r, err := digitsReplica(f)
		if err != nil || r.Process == nil {
			t.Fatalf("replica: %+v %v", r, err)
		}
		f.Deploy(serveConfig(t)) // no applications: the digits app is deleted
		f.WaitAppGone(deployTimeout, digitsApp)
		w := f.Workers[0]
		if !w.LogContains("digits: stopped") {
			t.Errorf("the child did not log its clean stop (SIGTERM) through the worker:\n%s", w.Tail(20))
		}
		if w.LogContains("ignored SIGTERM") {
			t.Errorf("the worker had to SIGKILL the child:\n%s", w.From("ignored SIGTERM", 5))
		}
		fleet.Eventually(t, 10*time.Second, "child process gone", func() error { return pidGone(r.Process.PID) })
	})
	t.Run("the child dies with its worker (kill -9)", func(t *testing.T) {
		f.Deploy(serveConfig(t, digitsApplication(t)))
		f.WaitApp(deployTimeout, digitsApp, 1, nil)
		r, err := digitsReplica(f)
		if err != nil || r.Process == nil || r.Process.PID == 0 {
			t.Fatalf("replica: %+v %v", r, err)
		}
		if err := pidGone(r.Process.PID); err == nil {
			t.Fatalf("child %d not running", r.Process.PID)
		}
		f.Kill(f.Workers[0].Proc)
		fleet.Eventually(t, 10*time.Second, "child of the kill -9'd worker gone", func() error { return pidGone(r.Process.PID) })
	})
}

// pidGone is nil once pid no longer runs (gone, or a zombie nobody reaped).
func pidGone(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i:]), ") Z") {
		return nil
	}
	return fmt.Errorf("pid %d still runs", pid)
}

// load sends POSTs from n goroutines in a loop until stop, recording how
// each was answered.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	res    loadResult // guarded by mu
}

type loadResult struct {
	ok, unavailable, transport, other, noRetryAfter int
	slowest                                         time.Duration
	examples                                        []string
}

func (r loadResult) String() string {
	return fmt.Sprintf("%d ok, %d 503 (%d without Retry-After), %d transport errors, %d other; slowest %s; %v",
		r.ok, r.unavailable, r.noRetryAfter, r.transport, r.other, r.slowest.Round(time.Millisecond), r.examples)
}

func startLoad(t testing.TB, url string, body []byte, n int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for range n {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				start := time.Now()
				rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
				r, err := fleet.Do(rctx, http.MethodPost, url, body, http.Header{"Content-Type": {"application/json"}})
				rcancel()
				took := time.Since(start)
				if ctx.Err() != nil {
					return // stopped mid-request
				}
				l.mu.Lock()
				l.res.slowest = max(l.res.slowest, took)
				note := ""
				switch {
				case err != nil:
					l.res.transport++
					note = err.Error()
				case r.Status == http.StatusOK:
					l.res.ok++
				case r.Status == http.StatusServiceUnavailable:
					l.res.unavailable++
					if r.Header.Get("Retry-After") == "" {
						l.res.noRetryAfter++
					}
					note = r.String()
				default:
					l.res.other++
					note = r.String()
				}
				if note != "" && len(l.res.examples) < 5 {
					l.res.examples = append(l.res.examples, note)
				}
				l.mu.Unlock()
			}
		})
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// waitOK waits until n more requests succeeded.
func (l *load) waitOK(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	l.mu.Lock()
	base := l.res.ok
	l.mu.Unlock()
	fleet.Eventually(t, timeout, fmt.Sprintf("%d more answers 200", n), func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.res.ok-base < n {
			return fmt.Errorf("%d so far: %s", l.res.ok-base, l.res)
		}
		return nil
	})
}

func (l *load) stop() loadResult {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// processApp is a one-deployment process-runtime app running command.
func processApp(name string, startup time.Duration, command ...string) config.Application {
	n, cpu := 1, 0.1
	return config.Application{Name: name, RoutePrefix: "/" + name, Ingress: name, Deployments: []config.Deployment{{
		Name: name, Runtime: config.RuntimeProcess, Command: command, StartupTimeout: config.Duration(startup),
		NumReplicas: &n, Resources: config.Resources{CPU: &cpu},
		GracefulShutdownTimeout: config.Duration(2 * time.Second),
	}}}
}

// TestProcessBadInput: a command that does not exist and a child that
// never becomes healthy are FAILED, with the reason (and the child's
// stderr) in GET /api/serve/applications, and the app DEPLOY_FAILED after
// three failures in a row.
func TestProcessBadInput(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.Deploy(serveConfig(t,
		processApp("nocmd", 30*time.Second, "jetserve-no-such-model-server", "--port", "8080"),
		processApp("stuck", 2*time.Second, "/bin/sh", "-c",
			"echo 'loading weights from /models/llm.bin' >&2; echo 'CUDA error: out of memory' >&2; exec sleep 600"),
	))
	cases := []struct {
		app  string
		want []string
	}{
		{"nocmd", []string{`"jetserve-no-such-model-server"`, "executable file not found"}},
		{"stuck", []string{"not healthy within startup_timeout 2s", "loading weights from /models/llm.bin\nCUDA error: out of memory"}},
	}
	for _, tc := range cases {
		t.Run(tc.app, func(t *testing.T) {
			f.Eventually(deployTimeout, tc.app+": a FAILED replica with the reason in status", func() error {
				st, err := f.Status()
				if err != nil {
					return err
				}
				a := st.Applications[tc.app]
				for _, r := range a.Deployments[tc.app].Replicas {
					if r.State == protocol.ReplicaFailed && !slices.ContainsFunc(tc.want, func(w string) bool { return !strings.Contains(r.Message, w) }) {
						return nil
					}
				}
				return fmt.Errorf("no FAILED replica with %q: %s", tc.want, fleet.Describe(a))
			})
			f.Eventually(deployTimeout, tc.app+": DEPLOY_FAILED after repeated failures", func() error {
				st, err := f.Status()
				if err != nil {
					return err
				}
				a := st.Applications[tc.app]
				d := a.Deployments[tc.app]
				if a.Status != protocol.AppDeployFailed || d.Status != protocol.DeploymentDeployFailed ||
					!strings.Contains(d.Message, "failed to start") || !strings.Contains(a.Message, tc.want[0]) {
					return fmt.Errorf("app %s %q: %s", a.Status, a.Message, fleet.Describe(a))
				}
				return nil
			})
		})
	}
}
