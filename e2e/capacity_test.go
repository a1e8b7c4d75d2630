package e2e

// Issue 11 #5, #7, #8 and #10 against the real binaries: rolling updates
// on workers with just enough CPU, rebalancing when a worker comes back,
// the job endpoints of an ingress restarted while no worker lives, and the
// limits of a worker in a container.

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
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// statusSampler reads the status of one app every 20 ms until stopped,
// keeping what each read showed (the e2e status poll would miss short
// phases).
type statusSampler struct {
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	seen []protocol.AppStatus // guarded by mu
}

func sampleStatus(f *fleet.Fleet, app string) *statusSampler {
	s := &statusSampler{stop: make(chan struct{}), done: make(chan struct{})}
	admin := f.AdminURL()
	go func() {
		defer close(s.done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
			st, err := fleet.StatusAt(admin)
			if a, ok := st.Applications[app]; err == nil && ok {
				s.mu.Lock()
				s.seen = append(s.seen, a)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns every status read.
func (s *statusSampler) Stop() []protocol.AppStatus {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// rollTight changes a restart-requiring option of d on a fleet whose one
// worker has exactly the CPU of d's replicas, under traffic, and checks
// that the update finishes, the status said it replaces one at a time
// because a surge replica fits nowhere, and no request failed.
func rollTight(t *testing.T, d deployment) {
	t.Helper()
	workerCPU := float64(d.replicas) * d.cpu
	f := startFleet(t, fleet.Options{WorkerCPU: workerCPU})
	f.RequireHandlers(d.handler)
	f.Deploy(serveConfig(t, d.application()))
	before := f.WaitApp(deployTimeout, d.app, d.replicas, nil)
	oldIDs, oldVersion := fleet.ReplicaIDs(before), before.Deployments[d.app].Version

	tr := fleet.StartTraffic(t, 4, http.MethodPost, f.URL()+"/"+d.app+"/", echoBody, requestTimeout)
	tr.WaitOK(t, 50, requestTimeout)
	sampler := sampleStatus(f, d.app)
	d.maxOngoing++ // a restart: every replica is replaced
	f.Deploy(serveConfig(t, d.application()))
	start := time.Now()
	after := f.WaitApp(deployTimeout, d.app, d.replicas, func(a protocol.AppStatus) error {
		if v := a.Deployments[d.app].Version; v == oldVersion {
			return errorf("deployment version still %s", v)
		}
		for _, id := range fleet.ReplicaIDs(a) {
			if slices.Contains(oldIDs, id) {
				return errorf("old replica %s still there", id)
			}
		}
		if a.Deployments[d.app].Rollout != nil {
			return errorf("rollout still reported: %+v", a.Deployments[d.app].Rollout)
		}
		return nil
	})
	took := time.Since(start)
	tr.WaitOK(t, 50, requestTimeout)
	res := tr.Stop()
	seen := sampler.Stop()
	t.Logf("rolled %v → %v in %v on a worker with %v CPU; traffic: %v", oldIDs, fleet.ReplicaIDs(after), took.Round(time.Millisecond), workerCPU, res)
	if res.Failed != 0 {
		t.Errorf("requests failed during the update: %v; first failures:\n%s", res, strings.Join(res.Failures, "\n"))
	}
	wantReason := fmt.Sprintf("no worker has %v CPU free", d.cpu)
	var replacing bool
	for _, a := range seen {
		ds := a.Deployments[d.app]
		if ro := ds.Rollout; ro != nil && ro.Strategy == protocol.RolloutReplace {
			replacing = true
			if ro.Reason != wantReason || ds.Status != protocol.DeploymentUpdating || !strings.Contains(ds.Message, "replace one at a time") {
				t.Errorf("status during the update: %s %q rollout %+v, want UPDATING, replace one at a time because %q", ds.Status, ds.Message, *ro, wantReason)
				break
			}
		}
		// max_unavailable is 25%, at least 1: one replica may be down.
		if running := countRunning(ds); running < d.replicas-1 {
			t.Errorf("status during the update: %d replicas RUNNING, want at least target - max_unavailable = %d: %s", running, d.replicas-1, fleet.Describe(a))
			break
		}
	}
	if !replacing {
		t.Errorf("no status read (%d) said the update replaces one at a time", len(seen))
	}
	if !f.Scheduler(f.MustStatus().Leader).LogContains("drained first to make room") {
		t.Errorf("the scheduler's log does not show an old replica drained to make room")
	}
}

func countRunning(ds protocol.DeploymentStatus) int {
	n := 0
	for _, r := range ds.Replicas {
		if r.State == protocol.ReplicaRunning {
			n++
		}
	}
	return n
}

// TestRollingUpdateWithoutSpareCapacity is issue 11 #5: the worker's CPU
// is exactly what the replicas use, so a surge replica fits nowhere.
// Before, the update stayed UPDATING forever ("pending: no worker has 0.5
// CPU free"); now the replicas are replaced one at a time and the other
// one serves meanwhile.
func TestRollingUpdateWithoutSpareCapacity(t *testing.T) {
	rollTight(t, deployment{app: "tight", handler: handlerEcho, replicas: 2, cpu: 0.5, maxOngoing: 8})
}

// TestRollingUpdateSingleReplicaQueues: a deployment of one replica on a
// worker with room for exactly one. While the old replica drains and the
// new one starts there is none RUNNING; the router holds the requests
// until the new one runs, so none fails.
func TestRollingUpdateSingleReplicaQueues(t *testing.T) {
	rollTight(t, deployment{app: "single", handler: handlerEcho, replicas: 1, cpu: 0.5, maxOngoing: 8})
}

// TestRebalanceWhenWorkerReturns is issue 11 #8: with one of two workers
// down a 4-replica deployment lands 4+0; when a worker comes back the
// scheduler moves replicas to it one at a time (new one first) until
// 2+2, and no request fails.
func TestRebalanceWhenWorkerReturns(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 2, SchedulerEnv: map[string]string{"JETSERVE_REBALANCE_COOLDOWN": "2s"}})
	f.RequireHandlers(handlerEcho)
	down := f.Workers[1]
	if err := f.Term(down.Proc, 30*time.Second); err != nil {
		t.Fatalf("%s after SIGTERM: %v", down.ID, err)
	}
	f.WaitWorkers(1)
	up := f.Workers[0]
	d := deployment{app: "spread", handler: handlerEcho, replicas: 4, cpu: 0.5, maxOngoing: 8}
	f.Deploy(serveConfig(t, d.application()))
	a := f.WaitApp(deployTimeout, d.app, 4, nil)
	if by := fleet.ReplicasByWorker(a); by[up.ID] != 4 {
		t.Fatalf("replicas by worker = %v, want 4 on %s", by, up.ID)
	}

	tr := fleet.StartTraffic(t, 4, http.MethodPost, f.URL()+"/"+d.app+"/", echoBody, requestTimeout)
	tr.WaitOK(t, 50, requestTimeout)
	sampler := sampleStatus(f, d.app)
	back := f.AddWorker(true)
	f.WaitWorkers(2)
	start := time.Now()
	f.WaitApp(deployTimeout, d.app, 4, func(a protocol.AppStatus) error {
		if by := fleet.ReplicasByWorker(a); by[up.ID] != 2 || by[back.ID] != 2 {
			return errorf("replicas by worker %v, want 2+2", by)
		}
		return nil
	})
	took := time.Since(start)
	tr.WaitOK(t, 50, requestTimeout)
	res := tr.Stop()
	seen := sampler.Stop()
	t.Logf("4+0 → 2+2 %v after %s joined; traffic: %v", took.Round(time.Millisecond), back.ID, res)
	if res.Failed != 0 {
		t.Errorf("requests failed while replicas moved: %v; first failures:\n%s", res, strings.Join(res.Failures, "\n"))
	}
	for _, a := range seen {
		ds := a.Deployments[d.app]
		if n := len(ds.Replicas); n > 5 {
			t.Errorf("%d replicas at once, want at most 5 (one move at a time): %s", n, fleet.Describe(a))
			break
		}
		if ds.Status != protocol.DeploymentHealthy {
			t.Errorf("deployment %s while rebalancing (%s), want HEALTHY", ds.Status, ds.Message)
			break
		}
	}
	// It stays put: no further move within a few cooldowns.
	final := fleet.ReplicaIDs(f.WaitApp(deployTimeout, d.app, 4, nil))
	time.Sleep(5 * time.Second) // a bound on absence: 2.5 cooldowns
	if got := fleet.ReplicaIDs(f.WaitApp(deployTimeout, d.app, 4, nil)); !slices.Equal(got, final) {
		t.Errorf("replicas moved again after 2+2: %v → %v", final, got)
	}
}

// TestJobEndpointsWithNoWorker is issue 11 #7: an ingress restarted while
// no worker lives still serves the job endpoints of a method the serve
// config names and of one only the handler's code declares (its SDK
// defaults, recorded by the workers that ran it): a submit is queued (202)
// and its status answered (200); the job runs once a worker is back.
func TestJobEndpointsWithNoWorker(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerTrainer)
	named := trainerApp(1, 1, config.AsyncMethod{Name: methodTrain, MaxQueued: 10, RequiredArgs: []string{"num_epochs"}})
	named.Name, named.RoutePrefix, named.Deployments[0].Resources.CPU = "named", "/named", ptrTo(0.5)
	sdkOnly := trainerApp(1, 1, config.AsyncMethod{})
	sdkOnly.Name, sdkOnly.RoutePrefix, sdkOnly.Deployments[0].AsyncMethods = "sdkonly", "/sdkonly", nil
	sdkOnly.Deployments[0].Resources.CPU = ptrTo(0.5)
	f.Deploy(serveConfig(t, named, sdkOnly))
	f.WaitApp(deployTimeout, "named", 1, nil)
	f.WaitApp(deployTimeout, "sdkonly", 1, nil)

	if err := f.Term(f.Workers[0].Proc, 30*time.Second); err != nil {
		t.Fatalf("worker after SIGTERM: %v", err)
	}
	f.WaitWorkers(0)
	if err := f.Term(f.Ingresses[0].Proc, 30*time.Second); err != nil {
		t.Fatalf("ingress after SIGTERM: %v", err)
	}
	f.AddIngress(true)

	for _, app := range []string{"named", "sdkonly"} {
		t.Run(app, func(t *testing.T) {
			base := f.URL() + "/" + app + "/" + methodTrain
			r := fleet.MustDo(t, http.MethodPost, base+"?request_id=nw1", []byte(`{"num_epochs":2}`), http.Header{"Content-Type": {"application/json"}})
			if r.Status != http.StatusAccepted {
				t.Fatalf("submit with no worker alive = %v, want 202", r)
			}
			r = fleet.MustDo(t, http.MethodGet, base+"/status?request_id=nw1", nil, nil)
			if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"QUEUED"`) {
				t.Fatalf("status with no worker alive = %v, want 200 QUEUED", r)
			}
		})
	}
	f.AddWorker(true)
	for _, app := range []string{"named", "sdkonly"} {
		f.Eventually(deployTimeout, app+" job nw1 SUCCEEDED", func() error {
			r, err := fleet.Do(context.Background(), http.MethodGet, f.URL()+"/"+app+"/"+methodTrain+"/status?request_id=nw1", nil, nil)
			if err != nil {
				return err
			}
			if !strings.Contains(string(r.Body), `"SUCCEEDED"`) {
				return errorf("status %v", r)
			}
			return nil
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// TestWorkerCgroupLimitsDocker is issue 11 #10: a worker in a container
// started with --cpus 0.5 --memory 300m advertises 0.5 CPU and 300 MiB,
// not the machine's. It needs a working docker (the image is FROM scratch:
// nothing is pulled); without one it is skipped.
func TestWorkerCgroupLimitsDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		t.Skip("e2e: no docker")
	}
	if out, err := exec.Command(docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Skipf("e2e: docker does not answer: %v %s", err, out)
	}
	root, err := fleet.Root(".")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, "jetserve-worker"), "./cmd/jetserve-worker")
	build.Dir = filepath.Join(root, "examples")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a static worker: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"),
		[]byte("FROM scratch\nCOPY jetserve-worker /jetserve-worker\nENTRYPOINT [\"/jetserve-worker\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	image := fmt.Sprintf("jetserve-e2e/cgroup-worker:%d", os.Getpid())
	if out, err := exec.Command(docker, "build", "-q", "-t", image, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(docker, "rmi", "-f", image).Run() })

	n := fleet.StartNATS(t, bins)
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := protocol.NewNames("")
	// The scheduler's part, with no scheduler here: only it creates the
	// fleet's buckets (a worker binds to them and waits).
	ectx, ecancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ecancel()
	if _, err := fleetstate.Ensure(ectx, js, names, 1); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("jetserve-e2e-cgroup-%d", os.Getpid())
	t.Cleanup(func() { _ = exec.Command(docker, "rm", "-f", name).Run() })
	run := exec.Command(docker, "run", "-d", "--name", name, "--network", "host", "--cpus", "0.5", "--memory", "300m",
		"-e", "JETSERVE_NATS_URL="+n.URL, "-e", "JETSERVE_ID="+name, "-e", "JETSERVE_OPS_ADDR=127.0.0.1:0",
		"-e", "JETSERVE_GPU_DETECT=off", "-e", "JETSERVE_LOG_FORMAT=console", image)
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("docker run: %v\n%s", err, out)
	}
	var info protocol.WorkerInfo
	fleet.Eventually(t, fleet.StartTimeout, "the containerized worker registers", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		kv, err := js.KeyValue(ctx, names.BucketWorkers())
		if err != nil {
			return err
		}
		e, err := kv.Get(ctx, protocol.WorkerKey(name))
		if err != nil {
			out, _ := exec.Command(docker, "logs", "--tail", "5", name).CombinedOutput()
			return fmt.Errorf("%w; container log: %s", err, out)
		}
		return json.Unmarshal(e.Value(), &info)
	})
	if info.CPU != 0.5 || info.MemoryBytes != 300<<20 {
		t.Errorf("worker under --cpus 0.5 --memory 300m advertises %v CPU, %d bytes; want 0.5, %d", info.CPU, info.MemoryBytes, int64(300<<20))
	}
}

// TestRollingUpdateExampleOnTwoCPUs is issue 11 #5 as it was found: the
// example application uses 1.85 of a 2-CPU worker, and changing
// Pipeline's max_ongoing_requests stayed UPDATING forever ("pending: no
// worker has 0.25 CPU free"). Now Pipeline's two replicas are replaced one
// at a time and the pipeline answers throughout.
func TestRollingUpdateExampleOnTwoCPUs(t *testing.T) {
	f := startFleet(t, fleet.Options{WorkerCPU: 2})
	f.RequireHandlers(handlerPipeline)
	_, cfg := readExample(t)
	f.Deploy(serveConfig(t, cfg.Applications...))
	before := f.WaitApp(deployTimeout, exampleApp, replicas(cfg.Applications[0]), nil)
	oldVersion := before.Deployments[examplePipeline].Version

	body := []byte(`{"text":"` + review + `"}`)
	tr := fleet.StartTraffic(t, 2, http.MethodPost, f.URL()+examplePrefix+"/analyze", body, requestTimeout)
	tr.WaitOK(t, 20, requestTimeout)
	for i := range cfg.Applications[0].Deployments {
		if d := &cfg.Applications[0].Deployments[i]; d.Name == examplePipeline {
			d.MaxOngoingRequests++
		}
	}
	f.Deploy(serveConfig(t, cfg.Applications...))
	f.WaitApp(deployTimeout, exampleApp, replicas(cfg.Applications[0]), func(a protocol.AppStatus) error {
		if v := a.Deployments[examplePipeline].Version; v == oldVersion {
			return errorf("%s still at version %s", examplePipeline, v)
		}
		return nil
	})
	tr.WaitOK(t, 20, requestTimeout)
	res := tr.Stop()
	t.Logf("traffic to %s/analyze during the update: %v", examplePrefix, res)
	if res.Failed != 0 {
		t.Errorf("requests failed during the update: %v; first failures:\n%s", res, strings.Join(res.Failures, "\n"))
	}
	if !f.Scheduler(f.MustStatus().Leader).LogContains("drained first to make room") {
		t.Errorf("the scheduler's log does not show an old replica drained to make room (did the worker have spare CPU?)")
	}
}
