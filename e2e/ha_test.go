package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go/jetstream"
)

// electionSlack is what a node loss may interrupt beyond the cluster's
// own leader elections (the goal: election time + 2 s).
const electionSlack = 2 * time.Second

// haOptions is the HA profile: a 3-node NATS cluster with a system
// account, every service twice (schedulers and autoscalers elect a
// leader), and three workers with different labels, the third declaring
// a GPU (through a worker config file, as resources.gpus is a list).
func haOptions(t testing.TB) fleet.Options {
	t.Helper()
	gpuConf := filepath.Join(t.TempDir(), "worker-gpu.yaml")
	if err := os.WriteFile(gpuConf, []byte("resources:\n  gpus:\n    - {index: 0, type: t4, memory: 16Gi}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return fleet.Options{
		NATSNodes: 3, Ingresses: 2, Routers: 2, Schedulers: 2, Autoscalers: 2, Workers: 3,
		WorkerEnv: []map[string]string{
			{"JETSERVE_LABELS": "zone=a"},
			{"JETSERVE_LABELS": "zone=b"},
			{"JETSERVE_LABELS": "zone=c", "JETSERVE_CONFIG": gpuConf},
		},
	}
}

// haApps are the HA fleet's applications: "ha" (diag.Echo, three
// replicas), "hajobs" (diag.Journal's async method, journaling to
// journal), "gpu" (needs the GPU) and "zoneb" (needs label zone=b).
func haApps(t testing.TB, journal string) []byte {
	t.Helper()
	echo := deployment{app: "ha", handler: handlerEcho, replicas: 3, maxOngoing: 32}.application()
	gpu := deployment{app: "gpu", handler: handlerEcho, replicas: 1, maxOngoing: 8}.application()
	one := 1.0
	gpu.Deployments[0].Resources.GPU = one
	zone := deployment{app: "zoneb", handler: handlerEcho, replicas: 1, maxOngoing: 8}.application()
	zone.Deployments[0].Resources.Labels = map[string]string{"zone": "b"}
	return serveConfig(t, echo, journalApp("hajobs", 2, journal), gpu, zone)
}

// startHA starts the HA fleet, deploys haApps and waits until every app
// runs where its resources say.
func startHA(t *testing.T, journal string) *fleet.Fleet {
	t.Helper()
	f := startFleet(t, haOptions(t))
	f.RequireHandlers(handlerEcho, handlerJournal)
	f.Deploy(haApps(t, journal))
	f.WaitApp(deployTimeout, "ha", 3, nil)
	f.WaitApp(deployTimeout, "hajobs", 2, nil)
	f.WaitApp(deployTimeout, "gpu", 1, func(a protocol.AppStatus) error {
		if w := fleet.ReplicasByWorker(a); w["worker-3"] != 1 {
			return fmt.Errorf("gpu replica on %v, want worker-3 (the one declaring a GPU)", w)
		}
		return nil
	})
	f.WaitApp(deployTimeout, "zoneb", 1, func(a protocol.AppStatus) error {
		if w := fleet.ReplicasByWorker(a); w["worker-2"] != 1 {
			return fmt.Errorf("zoneb replica on %v, want worker-2 (zone=b)", w)
		}
		return nil
	})
	return f
}

// liveIngresses returns the base URLs of f's live ingresses.
func liveIngresses(f *fleet.Fleet) func() []string {
	return func() []string {
		var urls []string
		for _, s := range f.Live(f.Ingresses) {
			urls = append(urls, s.URL())
		}
		return urls
	}
}

// TestHAClusterLosesANode runs the HA fleet under steady sync load (GETs,
// and POSTs with an Idempotency-Key) and a stream of async jobs, and kills
// -9 the NATS node leading the apps bucket, then (restarted) the one
// leading the replicas bucket (whose records routers route by: they must
// neither expire for good nor be taken for stale while it elects), then
// the one leading the job stream. Each time: nothing is interrupted for longer
// than the cluster's elections plus 2 s; the admin API (PUT and GET), job
// submit/status/result and sync requests work after it; the restarted
// node catches up. At the end every accepted job has exactly one
// terminal record and none ran after it was recorded.
func TestHAClusterLosesANode(t *testing.T) {
	journal := filepath.Join(t.TempDir(), "journal")
	f := startHA(t, journal)
	nc := f.Cluster.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := protocol.NewNames("")
	jobStream := jobs.Names{Names: names}.Stream("hajobs", methodRun)
	for _, s := range []string{"KV_" + names.BucketApps(), "KV_" + names.BucketReplicas(), jobStream, "KV_" + jobs.Names{Names: names}.Records("hajobs", methodRun)} {
		f.Eventually(30*time.Second, "stream "+s+" led, on 3 nodes (nats.replicas 3)", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, replicas, err := fleet.StreamLeader(ctx, js, s)
			if err != nil || len(replicas) != 3 {
				return fmt.Errorf("replicas %v (%v)", replicas, err)
			}
			return nil
		})
	}

	load := fleet.StartLoad(t, fleet.LoadOptions{Ingresses: liveIngresses(f), Path: "/ha/", Body: echoBody,
		Methods: []string{http.MethodGet, http.MethodPost}, Clients: 2, PerRequest: 30 * time.Second})
	jl := startJobs(t, liveIngresses(f), "/hajobs/"+methodRun, "ha", 50*time.Millisecond, 100, 60*time.Second)
	load.WaitOK(t, 200, requestTimeout)
	jl.waitAccepted(t, 20, requestTimeout) // through both ingresses

	for i, target := range []string{"KV_" + names.BucketApps(), "KV_" + names.BucketReplicas(), jobStream} {
		t.Run("kill the leader of "+target, func(t *testing.T) {
			leader, _, err := fleet.StreamLeader(context.Background(), js, target)
			if err != nil {
				t.Fatal(err)
			}
			node := f.Cluster.Node(leader)
			t.Logf("killing %s (kill -9), which leads %s", leader, target)
			killed := time.Now()
			node.Kill(t)
			elected, slowest := fleet.WaitLeaders(t, js, leader, 60*time.Second)
			election := elected.Sub(killed)
			t.Logf("every stream and consumer led again %v after the kill (the last to elect: %v)", election.Round(time.Millisecond), slowest)

			// The fleet works after it: the admin API, jobs, sync requests.
			admin := f.AdminURL()
			extra := deployment{app: fmt.Sprintf("after%d", i), handler: handlerEcho, replicas: 1}.application()
			body, err := json.Marshal(config.ServeConfig{Applications: []config.Application{extra}})
			if err != nil {
				t.Fatal(err)
			}
			r := fleet.MustDo(t, http.MethodPut, admin+"/api/serve/applications/"+extra.Name, body, http.Header{"Content-Type": {"application/json"}})
			if r.Status != http.StatusOK {
				t.Errorf("PUT %s/api/serve/applications/%s after the node loss = %v, want 200", admin, extra.Name, r)
			}
			// The leading scheduler follows the Apps bucket with kvfollow,
			// re-read as soon as its connection is on a live node and the
			// bucket's stream answers: it acts on the config within 2 s (a
			// bare KV watcher saw it 5–12 s late).
			acted := f.Eventually(deployTimeout, "the leading scheduler acting on "+extra.Name, func() error {
				st, err := f.Status()
				if a, ok := st.Applications[extra.Name]; err != nil || !ok || a.Status == protocol.AppNotStarted {
					return fmt.Errorf("%s not in the leader's status yet (%v)", extra.Name, err)
				}
				return nil
			})
			t.Logf("the leading scheduler acted on the config stored after the node loss in %v", acted.Round(time.Millisecond))
			if acted > 2*electionSlack {
				t.Errorf("the leading scheduler acted on the config stored after the node loss %v later, want within %v",
					acted.Round(time.Millisecond), 2*electionSlack)
			}
			f.WaitApp(deployTimeout, extra.Name, 1, nil)
			if _, err := fleet.StatusAt(admin); err != nil {
				t.Errorf("GET status after the node loss: %v", err)
			}
			checkJobRoundTrip(t, f, fmt.Sprintf("after-kill-%d", i))
			load.WaitOK(t, 200, requestTimeout)
			end := time.Now()

			samples := load.Samples()
			for _, kind := range []string{http.MethodGet, http.MethodPost} {
				w := fleet.Summarize(samples, kind, killed, end)
				t.Logf("%s during the node loss: %d requests, %.3f%% ok, p99 %v, longest time without a success %v, failures %v",
					kind, w.Total, 100*w.SuccessRate(), w.P99.Round(time.Millisecond), w.LongestGap.Round(time.Millisecond), w.ByError)
				if w.LongestGap > election+electionSlack {
					t.Errorf("%s: no request succeeded for %v, longer than the elections (%v) + %v", kind,
						w.LongestGap.Round(time.Millisecond), election.Round(time.Millisecond), electionSlack)
				}
			}
			logSlowest(t, samples, killed, end, 8)
			if d := fleet.Disrupted(samples, killed, end, 0, 2*time.Second); d > election+electionSlack {
				t.Errorf("requests failed or took over 2 s until %v after the kill, longer than the elections (%v) + %v",
					d.Round(time.Millisecond), election.Round(time.Millisecond), electionSlack)
			}
			jobGap := submitGap(jl.all(), killed, end)
			t.Logf("job submits: longest time without an accepted submit %v", jobGap.Round(time.Millisecond))
			logSubmitGap(t, jl.all(), killed, end)
			if jobGap > election+electionSlack {
				t.Errorf("no job submit was accepted for %v, longer than the elections (%v) + %v", jobGap.Round(time.Millisecond),
					election.Round(time.Millisecond), electionSlack)
			}

			restarted := time.Now()
			node.Restart(t) // waits for its /healthz: current with the meta leader and its streams
			f.Eventually(2*time.Minute, leader+" caught up: a current replica of every stream, no lag", func() error {
				return caughtUp(js, leader)
			})
			f.Cluster.WaitReady(time.Minute)
			t.Logf("%s restarted and caught up in %v", leader, time.Since(restarted).Round(time.Millisecond))
		})
	}

	jl.stop()
	load.Stop()
	acc := accountJobs(t, jl.all(), journal, 2*time.Minute, statusVia(liveIngresses(f), "/hajobs/"+methodRun))
	t.Logf("jobs: %v", acc)
	if acc.Accepted == 0 || acc.Lost != 0 || acc.RecordedTwice != 0 || acc.Failed != 0 {
		t.Errorf("jobs: %v; want some accepted, none lost, failed or recorded twice:\n%s", acc, strings.Join(acc.Problems[:min(len(acc.Problems), 20)], "\n"))
	}
	w := fleet.Summarize(load.Samples(), "", time.Time{}, time.Now())
	t.Logf("sync requests over the whole test: %d, %.3f%% ok, failures %v", w.Total, 100*w.SuccessRate(), w.ByError)
}

// submitGap is the longest time within [from, to) without an accepted
// job submit (between the ends of consecutive accepted submits).
func submitGap(submits []jobSubmit, from, to time.Time) time.Duration {
	var ends []time.Time
	for _, s := range submits {
		if s.Accepted() && !s.End.Before(from) && s.End.Before(to) {
			ends = append(ends, s.End)
		}
	}
	if len(ends) == 0 {
		return to.Sub(from)
	}
	slices.SortFunc(ends, time.Time.Compare)
	gap, prev := time.Duration(0), from
	for _, e := range ends {
		gap = max(gap, e.Sub(prev))
		prev = e
	}
	return gap
}

// logSubmitGap logs the submits that ended the longest gap within
// [from, to) and those in flight during it: when each started and ended,
// its attempts and last answer — where a submit waited.
func logSubmitGap(t *testing.T, submits []jobSubmit, from, to time.Time) {
	t.Helper()
	var acc []jobSubmit
	for _, s := range submits {
		if s.Accepted() && !s.End.Before(from) && s.End.Before(to) {
			acc = append(acc, s)
		}
	}
	slices.SortFunc(acc, func(a, b jobSubmit) int { return a.End.Compare(b.End) })
	gapStart, gapEnd, prev := from, from, from
	for _, s := range acc {
		if s.End.Sub(prev) > gapEnd.Sub(gapStart) {
			gapStart, gapEnd = prev, s.End
		}
		prev = s.End
	}
	if len(acc) == 0 {
		gapEnd = to
	}
	t.Logf("the longest submit gap: %v..%v after the kill", gapStart.Sub(from).Round(time.Millisecond), gapEnd.Sub(from).Round(time.Millisecond))
	n := 0
	for _, s := range submits {
		if s.Start.Before(gapEnd) && s.End.After(gapStart) && n < 12 {
			n++
			t.Logf("  %s: %v..%v after the kill, %d attempt(s) %v, last answer %d", s.ID, s.Start.Sub(from).Round(time.Millisecond),
				s.End.Sub(from).Round(time.Millisecond), s.Attempts, s.Tries, s.Status)
		}
	}
}

// caughtUp reports why node is not yet a current replica of every stream
// it holds (nil when it is).
func caughtUp(js jetstream.JetStream, node string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	l := js.ListStreams(ctx)
	n := 0
	for info := range l.Info() {
		if info.Cluster == nil {
			continue
		}
		if info.Cluster.Leader == node {
			n++
			continue
		}
		found := false
		for _, p := range info.Cluster.Replicas {
			if p.Name != node {
				continue
			}
			found = true
			if !p.Current || p.Offline || p.Lag > 0 {
				return fmt.Errorf("stream %s: replica %s current=%v offline=%v lag=%d", info.Config.Name, node, p.Current, p.Offline, p.Lag)
			}
		}
		if !found {
			return fmt.Errorf("stream %s: %s is not among its replicas %+v", info.Config.Name, node, info.Cluster.Replicas)
		}
		n++
	}
	if err := l.Err(); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("no stream listed")
	}
	return nil
}

// checkJobRoundTrip submits one job through an ingress and waits for its
// result: submit, status and result work.
func checkJobRoundTrip(t *testing.T, f *fleet.Fleet, id string) {
	t.Helper()
	base := f.URL() + "/hajobs/" + methodRun
	r := fleet.MustDo(t, http.MethodPost, base+"?request_id="+id+"&ms=10", nil, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("submit %s = %v, want 202", id, r)
	}
	f.Eventually(30*time.Second, "job "+id+" SUCCEEDED", func() error {
		r := fleet.MustDo(t, http.MethodGet, base+"/status?request_id="+id, nil, nil)
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"SUCCEEDED"`) {
			return fmt.Errorf("status = %v", r)
		}
		return nil
	})
	r = fleet.MustDo(t, http.MethodGet, base+"/result?request_id="+id, nil, nil)
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"`+id+`"`) {
		t.Errorf("result of %s = %v, want 200 naming the job", id, r)
	}
}

// TestHAOperatorBucketsStayR3: buckets and a job stream an operator
// created with 3 replicas stay R3 when services that ask for 1 replica
// (the default nats.replicas) start on the cluster; what the services
// create themselves gets the 1 they ask for.
func TestHAOperatorBucketsStayR3(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	c := fleet.StartCluster(t, bins, 3)
	nc := c.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := protocol.NewNames("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.BucketApps(), History: 10, Replicas: 3}); err != nil {
		t.Fatalf("operator creates %s R3: %v", names.BucketApps(), err)
	}
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.BucketStatus(), Replicas: 3}); err != nil {
		t.Fatalf("operator creates %s R3: %v", names.BucketStatus(), err)
	}
	jn := jobs.Names{Names: names}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: jn.Stream("hajobs", methodRun),
		Subjects: []string{jn.JobWildcard("hajobs", methodRun)}, Retention: jetstream.WorkQueuePolicy, Replicas: 3}); err != nil {
		t.Fatalf("operator creates the job stream R3: %v", err)
	}

	f := startFleet(t, fleet.Options{Cluster: c, Env: map[string]string{"JETSERVE_NATS_REPLICAS": "1"}})
	f.RequireHandlers(handlerJournal)
	f.Deploy(serveConfig(t, journalApp("hajobs", 1, "")))
	f.WaitApp(deployTimeout, "hajobs", 1, nil)
	checkJobRoundTrip(t, f, "r3-1")

	for stream, want := range map[string]int{
		"KV_" + names.BucketApps():              3,
		"KV_" + names.BucketStatus():            3,
		jn.Stream("hajobs", methodRun):          3,
		"KV_" + names.BucketWorkers():           1,
		"KV_" + jn.Records("hajobs", methodRun): 1,
	} {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Errorf("stream %s: %v", stream, err)
			continue
		}
		if got := s.CachedInfo().Config.Replicas; got != want {
			t.Errorf("stream %s has %d replicas, want %d", stream, got, want)
		}
	}
}

// logSlowest logs the n slowest or failed requests that started in
// [from, to), relative to from.
func logSlowest(t *testing.T, samples []fleet.Sample, from, to time.Time, n int) {
	t.Helper()
	var in []fleet.Sample
	for _, s := range samples {
		if !s.Start.Before(from) && s.Start.Before(to) {
			in = append(in, s)
		}
	}
	slices.SortFunc(in, func(a, b fleet.Sample) int {
		if a.OK() != b.OK() {
			if a.OK() {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.Latency(), a.Latency())
	})
	for _, s := range in[:min(n, len(in))] {
		t.Logf("  %s %s started +%v, took %v, %d attempt(s), last at %s: %d %s", s.Kind, s.RequestID, s.Start.Sub(from).Round(time.Millisecond),
			s.Latency().Round(time.Millisecond), s.Attempts, s.Ingress, s.Status, s.Err)
	}
}
