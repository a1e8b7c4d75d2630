package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
)

// The example workflow (examples/trips): trips.Travel's "book".
const (
	handlerTravel = "trips.Travel"
	workflowBook  = "book"
)

// tripsApp is the trips application on replicas Travel replicas with a
// short lease, so that a killed worker's runs move within seconds.
func tripsApp(replicas int) config.Application {
	d := deployment{app: "trips", handler: handlerTravel, replicas: replicas, cpu: 0.5, maxOngoing: 64,
		gracefulShutdown: 3 * time.Second}
	a := d.application()
	a.Deployments[0].AsyncMethods = []config.AsyncMethod{{Name: workflowBook, MaxQueued: 5000, MaxRunning: 200,
		LeaseTimeout: config.Duration(2 * time.Second), Backoff: []config.Duration{config.Duration(200 * time.Millisecond)}}}
	return a
}

type wfRecord struct {
	ID          string          `json:"request_id"`
	Status      string          `json:"status"`
	Error       string          `json:"error"`
	Attempts    int             `json:"attempts"`
	Suspensions int             `json:"suspensions"`
	Waiting     []string        `json:"waiting"`
	Result      json.RawMessage `json:"result"`
}

type wfEntry struct {
	Pos      int    `json:"pos"`
	Kind     string `json:"kind"`
	Name     string `json:"name"`
	Error    string `json:"error"`
	Attempts int    `json:"attempts"`
}

// doReq is one HTTP request bounded by 10 s.
func doReq(method, url string, body []byte, header http.Header) (fleet.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return fleet.Do(ctx, method, url, body, header)
}

func wfURL(f *fleet.Fleet, op, id string) string {
	u := f.URL() + "/trips/" + workflowBook
	if op != "" {
		u += "/" + op
	}
	return u + "?request_id=" + id
}

func wfStatus(f *fleet.Fleet, id string) (wfRecord, error) {
	r, err := doReq(http.MethodGet, wfURL(f, "status", id), nil, nil)
	if err != nil {
		return wfRecord{}, err
	}
	if r.Status != http.StatusOK {
		return wfRecord{}, fmt.Errorf("GET status of %s = %v", id, r)
	}
	var rec wfRecord
	err = json.Unmarshal(r.Body, &rec)
	return rec, err
}

func waitRun(t *testing.T, f *fleet.Fleet, timeout time.Duration, id, want string) wfRecord {
	t.Helper()
	var rec wfRecord
	f.Eventually(timeout, "run "+id+" "+want, func() error {
		var err error
		if rec, err = wfStatus(f, id); err != nil {
			return err
		}
		if rec.Status != want {
			if (rec.Status == "SUCCEEDED" || rec.Status == "FAILED" || rec.Status == "CANCELLED") && want != "" {
				t.Fatalf("run %s ended %s (%s), want %s", id, rec.Status, rec.Error, want)
			}
			return fmt.Errorf("status %s", rec.Status)
		}
		return nil
	})
	return rec
}

func startTrip(t *testing.T, f *fleet.Fleet, id, body string) {
	t.Helper()
	r, err := doReq(http.MethodPost, f.URL()+"/trips/"+workflowBook+"?request_id="+id, []byte(body),
		http.Header{"Content-Type": {"application/json"}})
	if err != nil || (r.Status != http.StatusAccepted && r.Status != http.StatusOK) {
		t.Errorf("start %s = %v, %v; want 202", id, r, err)
	}
}

// history reads a run's journal and checks that no position holds the
// same kind of entry twice (a step journaled twice).
func history(t *testing.T, f *fleet.Fleet, id string) []wfEntry {
	t.Helper()
	r, err := doReq(http.MethodGet, wfURL(f, "history", id), nil, nil)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("GET history of %s = %v, %v", id, r, err)
	}
	var h struct {
		Entries []wfEntry `json:"entries"`
	}
	if err := json.Unmarshal(r.Body, &h); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range h.Entries {
		k := fmt.Sprintf("%d/%s", e.Pos, e.Kind)
		if seen[k] {
			t.Errorf("run %s: %s %q journaled twice at position %d", id, e.Kind, e.Name, e.Pos)
		}
		seen[k] = true
	}
	return h.Entries
}

func countNamed(es []wfEntry, kind, name string) int {
	n := 0
	for _, e := range es {
		if e.Kind == kind && e.Name == name {
			n++
		}
	}
	return n
}

// TestWorkflowsE2E: the trip booking saga through the real binaries —
// the fault flag compensates the car and the hotel once each; a run
// awaiting a signal is suspended, signalled with the CLI and finishes; a
// NATS restart (kill -9) with runs suspended loses none; a worker killed
// (kill -9) while 1,000 runs go through loses none, journals no step
// twice and runs each compensation once.
func TestWorkflowsE2E(t *testing.T) {
	f := startFleet(t, fleet.Options{Workers: 2})
	f.RequireHandlers(handlerTravel)
	f.Deploy(serveConfig(t, tripsApp(2)))
	f.WaitApp(deployTimeout, "trips", 2, nil)
	cli := bins.Path(t, fleet.CLI)

	t.Run("fault flag compensates once each", func(t *testing.T) {
		startTrip(t, f, "fail1", `{"trip_id":"fail1","fail_flight":true}`)
		rec := waitRun(t, f, 30*time.Second, "fail1", "FAILED")
		if !strings.Contains(rec.Error, "no flight available") {
			t.Errorf("error = %q, want the flight's", rec.Error)
		}
		h := history(t, f, "fail1")
		for _, u := range []string{"cancel-car", "cancel-hotel"} {
			if n := countNamed(h, "undo", u); n != 1 {
				t.Errorf("%s journaled %d times, want 1: %+v", u, n, h)
			}
		}
		if h[len(h)-2].Name != "cancel-car" || h[len(h)-1].Name != "cancel-hotel" {
			t.Errorf("compensations %+v, want the car then the hotel", h[len(h)-2:])
		}
	})

	t.Run("a suspended run signalled with the CLI", func(t *testing.T) {
		startTrip(t, f, "conf1", `{"await_confirm":true}`)
		rec := waitRun(t, f, 30*time.Second, "conf1", "SUSPENDED")
		if len(rec.Waiting) != 1 || rec.Waiting[0] != "signal:confirm" {
			t.Errorf("waiting = %v, want signal:confirm", rec.Waiting)
		}
		out, errOut, err := fleet.RunCmd(t, 30*time.Second, cli, "workflows", "signal", "trips/book", "conf1", "--name", "confirm",
			"--key", "k1", "--payload", `{"by":"ann"}`, "--url", f.URL())
		if err != nil || !strings.Contains(out, "signal confirm sent to conf1") {
			t.Fatalf("workflows signal = %q, %q, %v", out, errOut, err)
		}
		rec = waitRun(t, f, 30*time.Second, "conf1", "SUCCEEDED")
		if !strings.Contains(string(rec.Result), `"confirmed_by":"ann"`) || rec.Suspensions < 1 {
			t.Errorf("run = %+v, want confirmed by ann after a suspension", rec)
		}
		out, _, err = fleet.RunCmd(t, 30*time.Second, cli, "workflows", "history", "trips/book", "conf1", "--url", f.URL())
		if err != nil || !strings.Contains(out, "book-flight") || !regexp.MustCompile(`signal +confirm`).MatchString(out) {
			t.Errorf("workflows history = %q, %v; want the steps and the signal", out, err)
		}
	})

	t.Run("NATS restart with runs suspended", func(t *testing.T) {
		const n = 20
		for i := range n {
			startTrip(t, f, fmt.Sprintf("nr%d", i), `{"await_confirm":true}`)
		}
		for i := range n {
			waitRun(t, f, 30*time.Second, fmt.Sprintf("nr%d", i), "SUSPENDED")
		}
		before := f.NATS.Pid()
		f.RestartNATS()
		if f.NATS.Pid() == before {
			t.Fatalf("nats-server pid %d after its restart, want a new process", before)
		}
		for i := range n {
			id := fmt.Sprintf("nr%d", i)
			f.Eventually(60*time.Second, "signal "+id, func() error {
				r, err := doReq(http.MethodPost, wfURL(f, "signal", id)+"&name=confirm&key=k", []byte(`{"by":"ops"}`), nil)
				if err != nil {
					return err
				}
				if r.Status != http.StatusAccepted {
					return fmt.Errorf("signal = %v", r)
				}
				return nil
			})
		}
		for i := range n {
			id := fmt.Sprintf("nr%d", i)
			waitRun(t, f, 60*time.Second, id, "SUCCEEDED")
			history(t, f, id)
		}
	})

	t.Run("1,000 runs through a worker kill -9", func(t *testing.T) {
		const n = 1000
		var started atomic.Int64
		var wg sync.WaitGroup
		ids := make(chan int)
		for range 32 {
			wg.Go(func() {
				for i := range ids {
					startTrip(t, f, fmt.Sprintf("k%d", i), fmt.Sprintf(`{"trip_id":"k%d","fail_flight":%v}`, i, i%2 == 1))
					started.Add(1)
				}
			})
		}
		killed := false
		for i := range n {
			ids <- i
			if !killed && started.Load() >= n/3 {
				f.Kill(f.Workers[1].Proc)
				killed = true
			}
		}
		close(ids)
		wg.Wait()
		if !killed {
			t.Fatal("no worker was killed")
		}
		retried := 0
		for i := range n {
			want := "SUCCEEDED"
			if i%2 == 1 {
				want = "FAILED"
			}
			if rec := waitRun(t, f, 120*time.Second, fmt.Sprintf("k%d", i), want); rec.Attempts-rec.Suspensions > 1 {
				retried++
			}
		}
		t.Logf("%d of %d runs were resumed by another attempt after the kill", retried, n)
		if retried == 0 {
			t.Error("no run was in flight on the killed worker: the kill tested nothing")
		}
		for i := range n {
			h := history(t, f, fmt.Sprintf("k%d", i))
			if i%2 == 1 {
				for _, u := range []string{"cancel-car", "cancel-hotel"} {
					if c := countNamed(h, "undo", u); c != 1 {
						t.Errorf("k%d: %s journaled %d times, want 1", i, u, c)
					}
				}
			}
		}
	})
}
