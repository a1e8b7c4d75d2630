package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/nats-io/nats.go/jetstream"
)

// The chaos suite's knobs (make chaos CHAOS_DURATION=3m CHAOS_SEED=7).
// Without CHAOS_DURATION, TestChaos is skipped: make e2e does not run it.
const (
	envChaosDuration = "CHAOS_DURATION"
	envChaosSeed     = "CHAOS_SEED"
	// envChaosReport names a file the table is also written to (Markdown).
	envChaosReport = "CHAOS_REPORT"
	// envChaosSamples names a file that gets the faults and every sync
	// request that failed or took over 2 s, with its X-Request-Id (the
	// services log it) and ingress.
	envChaosSamples = "CHAOS_SAMPLES"
	// envChaosFaults limits the fault kinds (comma-separated, as in the
	// table: "kill -9 worker,partition NATS node"); default all.
	envChaosFaults = "CHAOS_FAULTS"
)

// Fault kinds.
const (
	faultKillWorker     = "kill -9 worker"
	faultStopWorker     = "stop worker"
	faultKillRouter     = "kill -9 router"
	faultStopRouter     = "stop router"
	faultKillIngress    = "kill -9 ingress"
	faultStopIngress    = "stop ingress"
	faultKillScheduler  = "kill -9 scheduler"
	faultStopScheduler  = "stop scheduler"
	faultKillAutoscaler = "kill -9 autoscaler"
	faultStopAutoscaler = "stop autoscaler"
	faultKillNATS       = "kill -9 NATS node"
	faultPartitionNATS  = "partition NATS node"
	faultOversized      = "oversized request"
)

var faultKinds = []string{
	faultKillWorker, faultStopWorker, faultKillRouter, faultStopRouter, faultKillIngress, faultStopIngress,
	faultKillScheduler, faultStopScheduler, faultKillAutoscaler, faultStopAutoscaler,
	faultKillNATS, faultPartitionNATS, faultOversized,
}

// fault is one injected fault: what, on whom, when it began, when the
// fleet was whole again (the victim back and healthy), and for NATS
// faults when every Raft group had a leader again.
type fault struct {
	kind, victim string
	at, restored time.Time
	end          time.Time // the next fault's start (or the run's end)
	election     time.Duration
	note         string
	err          error // the fleet was not whole again within wholeTimeout
}

// TestChaos starts the HA fleet on loopback (3 NATS nodes, every service
// twice, three workers), drives steady sync load (GETs, and POSTs with an
// Idempotency-Key) and a stream of async jobs with client-chosen ids, and
// for CHAOS_DURATION injects the faults above one after another, in an
// order drawn from CHAOS_SEED (printed; random when unset). Each fault
// holds for a few seconds, then the victim is restarted (or resumed) and
// the fleet must be whole again before the next one. It prints per fault
// kind: sync success rate, p99 during the fault, time to recover (the
// last failed or >2 s request after the fault began), jobs accepted, lost
// and recorded twice; and checks the goals: ≥ 99.99 % sync success
// over the run, no accepted job lost or recorded twice, and every fault
// recovered within the NATS elections it caused plus 2 s.
func TestChaos(t *testing.T) {
	durStr := os.Getenv(envChaosDuration)
	if durStr == "" {
		t.Skip("chaos: set " + envChaosDuration + " (e.g. make chaos CHAOS_DURATION=3m)")
	}
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	duration, err := time.ParseDuration(durStr)
	if err != nil || duration < 10*time.Second {
		t.Fatalf("%s=%q: want a Go duration of at least 10s (e.g. 3m)", envChaosDuration, durStr)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envChaosSeed); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: want an unsigned integer", envChaosSeed, s)
		}
	}
	fmt.Printf("chaos: seed %d (rerun with %s=%d), duration %v\n", seed, envChaosSeed, seed, duration)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	journal := filepath.Join(t.TempDir(), "journal")
	f := startHA(t, journal)
	js, err := jetstream.New(f.Cluster.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	load := fleet.StartLoad(t, fleet.LoadOptions{Ingresses: liveIngresses(f), Path: "/ha/", Body: echoBody,
		Methods: []string{http.MethodGet, http.MethodPost}, Clients: 2, PerRequest: 30 * time.Second})
	jl := startJobs(t, liveIngresses(f), "/hajobs/"+methodRun, "chaos", 100*time.Millisecond, 200, 60*time.Second)
	load.WaitOK(t, 100, requestTimeout)

	kinds := faultKinds
	if only := os.Getenv(envChaosFaults); only != "" {
		kinds = nil
		for _, k := range strings.Split(only, ",") {
			if k = strings.TrimSpace(k); !slices.Contains(faultKinds, k) {
				t.Fatalf("%s: unknown fault kind %q (kinds: %s)", envChaosFaults, k, strings.Join(faultKinds, ", "))
			}
			kinds = append(kinds, strings.TrimSpace(k))
		}
	}
	c := &chaos{t: t, f: f, js: js, rng: rng}
	if err := c.whole(); err != nil { // the first fault, too, meets a whole fleet
		t.Fatalf("the fleet is not whole before the first fault: %v", err)
	}
	start := time.Now()
	var faults []*fault
	for i := 0; time.Since(start) < duration; i++ {
		// Every kind once per round, in a random order: a short run still
		// sees each kind, a long one sees each many times.
		if i%len(kinds) == 0 {
			c.order = slices.Clone(kinds)
			rng.Shuffle(len(c.order), func(a, b int) { c.order[a], c.order[b] = c.order[b], c.order[a] })
		}
		kind := c.order[i%len(kinds)]
		ft := c.inject(kind)
		if len(faults) > 0 {
			faults[len(faults)-1].end = ft.at
		}
		faults = append(faults, ft)
		fmt.Printf("chaos: %6.1fs %-20s %-12s restored after %v%s\n", time.Since(start).Seconds(), ft.kind, ft.victim,
			ft.restored.Sub(ft.at).Round(time.Millisecond), ft.note)
		if ft.err != nil {
			t.Errorf("after %s of %s the fleet was not whole again within %v: %v", ft.kind, ft.victim, wholeTimeout, ft.err)
			fmt.Printf("chaos: stopping: the fleet is not whole: %v\n", ft.err)
			break
		}
		load.WaitOK(t, 50, requestTimeout) // some traffic on the whole fleet before the next fault
	}
	// Quiet time after the last fault, then everything stops.
	load.WaitOK(t, 100, requestTimeout)
	faults[len(faults)-1].end = time.Now()
	jl.stop()
	load.Stop()
	end := time.Now()

	acc := accountJobs(t, jl.all(), journal, 3*time.Minute, statusVia(liveIngresses(f), "/hajobs/"+methodRun))
	rows := chaosTable(load.Samples(), jl.all(), acc, faults, kinds, start, end)
	if p := os.Getenv(envChaosSamples); p != "" {
		if err := os.WriteFile(p, chaosSamples(load.Samples(), faults, start), 0o644); err != nil {
			t.Errorf("write %s: %v", p, err)
		}
	}
	var table strings.Builder
	writeChaosTable(&table, rows, seed, end.Sub(start))
	fmt.Print(table.String())
	if p := os.Getenv(envChaosReport); p != "" {
		if err := os.WriteFile(p, []byte(table.String()), 0o644); err != nil {
			t.Errorf("write %s: %v", p, err)
		}
	}

	total := rows[len(rows)-1]
	if total.sync.SuccessRate() < 0.9999 {
		t.Errorf("sync success %.4f%% over the run, want ≥ 99.99%%; failures %v", 100*total.sync.SuccessRate(), total.sync.ByError)
	}
	if acc.Lost != 0 || acc.RecordedTwice != 0 || acc.Accepted == 0 {
		t.Errorf("jobs: %v; want some accepted, none lost or recorded twice:\n%s", acc, strings.Join(acc.Problems[:min(len(acc.Problems), 20)], "\n"))
	}
	samples := load.Samples()
	for _, ft := range faults {
		if d := disruptedBy(samples, ft, 2*time.Second); d > max(ft.election, 0)+electionSlack {
			t.Logf("%s of %s at %s: requests failed or were slow until %v after it:", ft.kind, ft.victim, ft.at.Format("15:04:05.000"), d.Round(time.Millisecond))
			logSlowest(t, samples, ft.at.Add(-2*time.Second), ft.end, 6) // with those caught as it began
		}
	}
	for _, r := range rows[:len(rows)-1] {
		if r.recoverMax > r.allowed {
			t.Errorf("%s: recovered after up to %v, want within %v (the NATS elections it caused + %v)", r.kind,
				r.recoverMax.Round(time.Millisecond), r.allowed.Round(time.Millisecond), electionSlack)
		}
	}
}

// chaos injects faults into a running HA fleet.
type chaos struct {
	t     *testing.T
	f     *fleet.Fleet
	js    jetstream.JetStream
	rng   *rand.Rand
	order []string
}

// hold is how long a killed or stopped process stays down.
const hold = 3 * time.Second

func (c *chaos) inject(kind string) *fault {
	t, f := c.t, c.f
	ft := &fault{kind: kind}
	service := func(group []*fleet.Service, kill bool) {
		live := f.Live(group)
		s := live[c.rng.IntN(len(live))]
		ft.victim = s.Name
		ft.at = time.Now()
		if kill {
			f.Kill(s.Proc)
		} else if err := f.Term(s.Proc, 60*time.Second); err != nil {
			ft.note = fmt.Sprintf(" (exit: %v)", err)
		}
		time.Sleep(hold)
		f.Restart(s)
	}
	switch kind {
	case faultKillWorker, faultStopWorker:
		service(f.Workers, kind == faultKillWorker)
	case faultKillRouter, faultStopRouter:
		service(f.Routers, kind == faultKillRouter)
	case faultKillIngress, faultStopIngress:
		service(f.Ingresses, kind == faultKillIngress)
	case faultKillScheduler, faultStopScheduler:
		service(f.Schedulers, kind == faultKillScheduler)
	case faultKillAutoscaler, faultStopAutoscaler:
		service(f.Autoscalers, kind == faultKillAutoscaler)
	case faultKillNATS, faultPartitionNATS:
		n := f.Cluster.Nodes[c.rng.IntN(len(f.Cluster.Nodes))]
		ft.victim = n.Name
		ft.at = time.Now()
		if kind == faultKillNATS {
			n.Kill(t)
		} else {
			n.Pause(t)
		}
		elected, _ := fleet.WaitLeaders(t, c.js, n.Name, 60*time.Second)
		ft.election = elected.Sub(ft.at)
		ft.note = fmt.Sprintf(", elections %v", ft.election.Round(time.Millisecond))
		if rest := hold - time.Since(ft.at); rest > 0 {
			time.Sleep(rest)
		}
		if kind == faultKillNATS {
			n.Restart(t)
		} else {
			n.Resume(t)
		}
		f.Cluster.WaitReady(2 * time.Minute)
	case faultOversized:
		ft.victim = "ingress"
		ft.at = time.Now()
		live := f.Live(f.Ingresses)
		r, err := fleet.PostSized(live[c.rng.IntN(len(live))].URL()+"/ha/", 65<<20)
		if err != nil || r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("oversized request (65 MiB, over max_body_bytes): %v %v, want 413", r, err)
		}
	}
	ft.err = c.whole()
	ft.restored = time.Now()
	return ft
}

// whole waits (up to wholeTimeout) until the fleet is whole again: every
// process healthy, every ingress serving /ha/, the status naming every
// worker, every app running its replicas. It returns why not when the time is up.
func (c *chaos) whole() error {
	deadline := time.Now().Add(wholeTimeout)
	for {
		err := c.wholeNow()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(fleet.PollInterval)
	}
}

const wholeTimeout = 90 * time.Second

func (c *chaos) wholeNow() error {
	f := c.f
	f.CheckAlive()
	for _, group := range [][]*fleet.Service{f.Ingresses, f.Routers, f.Workers, f.Schedulers, f.Autoscalers} {
		for _, s := range group {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := fleet.Do(ctx, http.MethodGet, s.OpsURL()+"/healthz", nil, nil)
			cancel()
			if err != nil || r.Status != http.StatusOK {
				return fmt.Errorf("%s not healthy: %v %v", s.Name, r, err)
			}
		}
	}
	// Every ingress routes the apps: one whose copy of the applied config
	// is behind (its watch's consumer on a node that lagged, then was cut
	// off) answers 404 until its watch is restarted, and a fault injected
	// then would be charged with it.
	for _, s := range f.Live(f.Ingresses) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := fleet.Do(ctx, http.MethodGet, s.URL()+"/ha/", nil, nil)
		cancel()
		if err != nil || r.Status != http.StatusOK {
			return fmt.Errorf("%s does not serve /ha/ yet: %v %v", s.Name, r, err)
		}
	}
	st, err := f.Status()
	if err != nil {
		return err
	}
	if len(st.Workers) != len(f.Workers) {
		return fmt.Errorf("status lists %d workers, want %d", len(st.Workers), len(f.Workers))
	}
	for app, n := range map[string]int{"ha": 3, "hajobs": 2, "gpu": 1, "zoneb": 1} {
		a, ok := st.Applications[app]
		if !ok {
			return fmt.Errorf("app %s not in the status", app)
		}
		if err := fleet.RunningWith(a, n); err != nil {
			return err
		}
	}
	return nil
}

// chaosRow is one line of the table: one fault kind, or the whole run.
type chaosRow struct {
	kind            string
	n               int
	sync            fleet.Window
	get, post       fleet.Window
	recoverMax      time.Duration
	allowed         time.Duration
	jobsAccepted    int
	jobsLost, twice int
}

// disruptedBy returns how long after ft began requests that went wrong
// while it was the latest fault were still failing or slow: the latest
// end of a request that failed or took longer than slow, counted against
// the fault in effect when it went wrong — when it failed, or when it
// had taken slow — rather than when it started: a request sent a
// millisecond before the next fault (a node paused) and caught by it is
// that fault's, not the one before. 0 when none did.
func disruptedBy(samples []fleet.Sample, ft *fault, slow time.Duration) time.Duration {
	var d time.Duration
	for _, s := range samples {
		if s.OK() && s.Latency() <= slow {
			continue
		}
		wrong := s.End
		if s.Latency() > slow {
			wrong = s.Start.Add(slow)
		}
		if !wrong.Before(ft.at) && wrong.Before(ft.end) {
			d = max(d, s.End.Sub(ft.at))
		}
	}
	return d
}

func chaosTable(samples []fleet.Sample, submits []jobSubmit, acc jobAccount, faults []*fault, kinds []string, start, end time.Time) []chaosRow {
	var rows []chaosRow
	for _, kind := range kinds {
		r := chaosRow{kind: kind, allowed: electionSlack}
		var in []fleet.Sample
		for _, ft := range faults {
			if ft.kind != kind {
				continue
			}
			r.n++
			for _, s := range samples {
				if !s.Start.Before(ft.at) && s.Start.Before(ft.end) {
					in = append(in, s)
				}
			}
			r.recoverMax = max(r.recoverMax, disruptedBy(samples, ft, 2*time.Second))
			r.allowed = max(r.allowed, ft.election+electionSlack)
			for _, j := range submits {
				if j.Accepted() && !j.Start.Before(ft.at) && j.Start.Before(ft.end) {
					r.jobsAccepted++
					if acc.lost[j.ID] {
						r.jobsLost++
					}
					if acc.twice[j.ID] {
						r.twice++
					}
				}
			}
		}
		if r.n == 0 {
			continue
		}
		r.sync = fleet.Summarize(in, "", time.Time{}, end)
		r.get = fleet.Summarize(in, http.MethodGet, time.Time{}, end)
		r.post = fleet.Summarize(in, http.MethodPost, time.Time{}, end)
		rows = append(rows, r)
	}
	total := chaosRow{kind: "whole run", n: len(faults)}
	total.sync = fleet.Summarize(samples, "", start, end)
	total.get = fleet.Summarize(samples, http.MethodGet, start, end)
	total.post = fleet.Summarize(samples, http.MethodPost, start, end)
	for _, r := range rows {
		total.recoverMax = max(total.recoverMax, r.recoverMax)
	}
	total.jobsAccepted = acc.Accepted
	total.jobsLost = acc.Lost
	total.twice = acc.RecordedTwice
	return append(rows, total)
}

func writeChaosTable(w io.Writer, rows []chaosRow, seed uint64, took time.Duration) {
	fmt.Fprintf(w, "\nchaos: seed %d, %v, %d faults\n\n", seed, took.Round(time.Second), rows[len(rows)-1].n)
	fmt.Fprintln(w, "| fault | n | sync ok (GET / POST) | p99 during | recovered within (allowed) | jobs accepted | lost | recorded twice |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	pct := func(x fleet.Window) string {
		return fmt.Sprintf("%.3f%%", 100*x.SuccessRate())
	}
	for _, r := range rows {
		allowed := fmt.Sprintf("%v (%v)", r.recoverMax.Round(10*time.Millisecond), r.allowed.Round(10*time.Millisecond))
		if r.kind == "whole run" {
			allowed = fmt.Sprintf("%v", r.recoverMax.Round(10*time.Millisecond))
		}
		fmt.Fprintf(w, "| %s | %d | %s of %d (%s / %s) | %v | %s | %d | %d | %d |\n", r.kind, r.n, pct(r.sync), r.sync.Total,
			pct(r.get), pct(r.post), r.sync.P99.Round(100*time.Microsecond), allowed, r.jobsAccepted, r.jobsLost, r.twice)
	}
	last := rows[len(rows)-1]
	if len(last.sync.ByError) > 0 {
		fmt.Fprintf(w, "\nfailed sync requests by answer: %v\n", last.sync.ByError)
	}
	fmt.Fprintln(w)
}

// chaosSamples lists the faults, then every sync request that failed or
// took longer than 2 s, times relative to start (CHAOS_SAMPLES).
func chaosSamples(samples []fleet.Sample, faults []*fault, start time.Time) []byte {
	var b []byte
	for _, ft := range faults {
		b = fmt.Appendf(b, "fault %s of %s at +%.3fs (%s), elections %v, next fault at +%.3fs\n", ft.kind, ft.victim,
			ft.at.Sub(start).Seconds(), ft.at.Format("15:04:05.000"), ft.election.Round(time.Millisecond), ft.end.Sub(start).Seconds())
	}
	for _, s := range samples {
		if s.OK() && s.Latency() <= 2*time.Second {
			continue
		}
		b = fmt.Appendf(b, "%s %s sent +%.3fs (%s) took %v, %d attempt(s), last at %s: %d %s %s\n", s.Kind, s.RequestID,
			s.Start.Sub(start).Seconds(), s.Start.Format("15:04:05.000"), s.Latency().Round(time.Millisecond), s.Attempts,
			s.Ingress, s.Status, s.Err, s.Msg)
	}
	return b
}

// TestDisruptedBy: a request is counted against the fault in effect when
// it went wrong: a slow one sent just before a fault began is that
// fault's; one that failed at once, or went slow, before the next fault
// began is its own fault's.
func TestDisruptedBy(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	worker := &fault{kind: faultKillWorker, at: at(0), end: at(3.2)}
	pause := &fault{kind: faultPartitionNATS, at: at(3.2), end: at(20)}
	samples := []fleet.Sample{
		{Start: at(1), End: at(1.01), Status: 200},    // fine
		{Start: at(1.5), End: at(1.6), Status: 503},   // failed at once, during the worker's kill
		{Start: at(3.19), End: at(10.3), Status: 200}, // sent just before the pause, slow in it
		{Start: at(2.0), End: at(4.5), Status: 200},   // slow (over 2 s at 4.0) during the pause
		{Start: at(0.5), End: at(2.9), Status: 200},   // slow at 2.5, during the worker's kill
	}
	for _, tc := range []struct {
		ft   *fault
		want time.Duration
	}{
		{worker, 2900 * time.Millisecond},
		{pause, 7100 * time.Millisecond},
	} {
		if got := disruptedBy(samples, tc.ft, 2*time.Second); got.Round(time.Millisecond) != tc.want {
			t.Errorf("disruptedBy(%s) = %v, want %v", tc.ft.kind, got, tc.want)
		}
	}
}
