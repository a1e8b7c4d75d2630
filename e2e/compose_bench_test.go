package e2e

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// composeTarget is one path of BenchmarkComposition.
type composeTarget struct {
	name string // also the app and its route prefix (raw baselines: none)
	hops int    // handle calls per request (0: ingress → one replica)
	what string
	url  string
}

// BenchmarkComposition measures what composing deployments costs, in one
// run on the same box, through the real binaries (ingress, workers, router
// service, scheduler, nats-server: each its own process):
//
//	raw     net/http handler (the physical limit of an HTTP answer)
//	nats    HTTP → NATS request-reply → responder (the limit of one NATS hop)
//	n1,n5   raw NATS chains across processes: HTTP → gateway (this process,
//	        as nats) → NATS request-reply to responder 1 → … → responder N,
//	        each passing the body on with a plain nc.Request and answering
//	        with the answer; n5's responders alternate between two
//	        processes (as x5's deployments between two workers), n1's is
//	        one in another process: the physical limit of a chain of
//	        NATS-only services on this box
//	h1      ingress → one diag.Chain replica (chain of 1: the baseline)
//	x5,x10  chains of 5 and 10 diag.Chain deployments alternating between
//	        two workers: every handle call crosses workers (one NATS round
//	        trip, from the calling worker's embedded router)
//	l5,l10  the same chains on one worker: every handle call in-process
//	s5      a chain of 5 on a worker with router: service (handles through
//	        the router service: the path before embedded routing)
//	fx,fl   a 4-way fan-out (diag.FanOut) to four deployments on the
//	        other worker / the same worker
//	d5      a chain of 5 with no label selectors and its edges declared
//	        (uses: C1 → C2 → …, as `jetserve build` writes them): where
//	        the scheduler's default placement puts it on the two workers —
//	        what a user gets without pinning; the output lists the worker
//	        of every replica (status API)
//
// The worker with router: service (s5) is started after the other paths'
// applications are placed, so that d5 sees the two ordinary workers only.
//
// Latency at c=1: p50 and p99 of the Go closed-loop load generator (b.N
// requests per path). Throughput at c=32: wrk (when on PATH; else the Go
// load generator, which is itself CPU-bound on 2 cores), every path
// measured in each of several interleaved rounds so that the box's drift
// hits them alike — req/s, and the server-side CPU per request (every
// fleet process, this one and the raw chains' responders, from /proc:
// independent of the noise of other work on the box). It prints the cost
// per hop at c=1 — (p50(chainN) − p50(h1)) / (N − 1) — and the per-round
// median of each path's throughput relative to h1, each beside the raw
// NATS chain's (n5 against n1) and as a ratio to it. Run it with
//
//	go test -run '^$' -bench Composition -benchtime 2000x ./
func BenchmarkComposition(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	profiles := os.Getenv("JETSERVE_BENCH_PROFILES")
	traces := os.Getenv("JETSERVE_BENCH_TRACES")
	var env map[string]string
	if profiles != "" || traces != "" {
		env = map[string]string{"JETSERVE_OPS_PPROF": "true"}
	}
	workerEnv := []map[string]string{
		{"JETSERVE_LABELS": "zone=a"},
		{"JETSERVE_LABELS": "zone=b"},
		{"JETSERVE_LABELS": "zone=s", "JETSERVE_ROUTER": "service"},
	}
	// JETSERVE_COMPOSE_WORKER_ENV ("GOGC=400,GOMAXPROCS=1") is added to
	// the workers' environment, and to the raw chains' responders' (which
	// stand for workers): runtime settings measured against the same
	// run's baselines.
	var rawEnv []string
	if v := os.Getenv("JETSERVE_COMPOSE_WORKER_ENV"); v != "" {
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				b.Fatalf("JETSERVE_COMPOSE_WORKER_ENV: %q is not NAME=VALUE", kv)
			}
			for _, e := range workerEnv {
				e[k] = val
			}
			rawEnv = append(rawEnv, kv)
		}
	}
	// Two workers (zones a and b) at first: the third, with router:
	// service, is added below for s5 once the others are placed.
	f := fleet.Start(b, bins, fleet.Options{Env: env, Workers: 2, WorkerEnv: workerEnv})
	f.RequireHandlers(handlerChain, handlerFanOut)
	only := composePaths(b)
	apps := map[string]config.Application{
		"h1": chainOf("h1", 1, "a"),
		"x5": chainOf("x5", 5, "a", "b"), "x10": chainOf("x10", 10, "a", "b"),
		"l5": chainOf("l5", 5, "a"), "l10": chainOf("l10", 10, "a"),
		"fx": fanOutOf("fx", "a", "b"), "fl": fanOutOf("fl", "a", "a"),
		"d5": unpinnedChainOf("d5", 5),
	}
	var deploy []config.Application
	for _, name := range slices.Sorted(maps.Keys(apps)) {
		if only(name) {
			deploy = append(deploy, apps[name])
		}
	}
	f.Deploy(serveConfig(b, deploy...))
	for _, app := range deploy {
		f.WaitApp(deployTimeout, app.Name, len(app.Deployments), nil)
	}
	var placement string
	if only("d5") {
		placement = placementOf(b, f.MustStatus(), "d5", 5)
	}
	if only("s5") {
		f.AddWorker(true) // zone s, router: service
		s5 := chainOf("s5", 5, "s")
		f.Deploy(serveConfig(b, append(deploy, s5)...))
		f.WaitApp(deployTimeout, s5.Name, len(s5.Deployments), nil)
		if only("d5") { // the redeploy must not have moved it
			if again := placementOf(b, f.MustStatus(), "d5", 5); again != placement {
				b.Fatalf("d5 moved when s5 was deployed: %s, then %s", placement, again)
			}
		}
	}
	var rawPids []int
	if only("n1") || only("n5") {
		rawPids = startRawChains(b, f.NATS.URL, rawEnv, traces)
	}
	targets := []composeTarget{
		{"raw", 0, "raw net/http", startRawHTTP(b)},
		{"nats", 0, "raw HTTP → NATS → responder", startGateway(b, f.NATS.URL)},
		{"n1", 0, "raw NATS chain of 1, another process", ""},
		{"n5", 4, "raw NATS chain of 5 across 2 processes", ""},
		{"h1", 0, "chain of 1 (ingress → replica)", ""},
		{"x5", 4, "chain of 5 across 2 workers", ""},
		{"x10", 9, "chain of 10 across 2 workers", ""},
		{"l5", 4, "chain of 5 on one worker", ""},
		{"l10", 9, "chain of 10 on one worker", ""},
		{"s5", 4, "chain of 5 via the router service", ""},
		{"fx", 4, "fan-out to 4 on the other worker", ""},
		{"fl", 4, "fan-out to 4 on the same worker", ""},
		{"d5", 4, "chain of 5, default placement", ""},
	}
	targets = slices.DeleteFunc(targets, func(t composeTarget) bool { return !only(t.name) })
	for i := range targets {
		switch {
		case targets[i].url != "":
		case strings.HasPrefix(targets[i].name, "n"): // n1, n5
			targets[i].url = serveNATSGateway(b, f.NATS.URL, rawHopSubject(targets[i].name, 1))
		default:
			targets[i].url = f.URL() + "/" + targets[i].name + "/"
		}
	}
	results := map[string]*benchResult{}
	for _, tg := range targets {
		name := tg.name + "/c=1"
		b.Run(name, func(b *testing.B) { results[name] = closedLoop(b, tg.url, 1) })
	}
	if traces != "" {
		// Where a c=1 hop waits: execution traces of the two workers under
		// x5 and of the two raw responders under n5, 3 s each, same run.
		for _, tg := range targets {
			switch tg.name {
			case "x5":
				traceAtC1(b, tg.name, tg.url, func() []func() {
					return []func(){fetchTrace(b, traces, "worker-a", f.Workers[0].OpsURL()), fetchTrace(b, traces, "worker-b", f.Workers[1].OpsURL())}
				})
			case "n5":
				traceAtC1(b, tg.name, tg.url, func() []func() { return signalTraces(b, rawPids) })
			}
		}
		fmt.Printf("execution traces at c=1 (x5's workers, n5's responders): %s\n", traces)
	}
	at32 := slices.DeleteFunc([]string{"raw", "nats", "n1", "n5", "h1", "x5", "l5", "s5", "fx", "fl", "d5"}, func(n string) bool { return !only(n) })
	wrk, _ := exec.LookPath("wrk")
	var rounds []map[string]throughput
	if wrk == "" {
		for _, name := range at32 {
			tg := targets[slices.IndexFunc(targets, func(t composeTarget) bool { return t.name == name })]
			b.Run(name+"/c=32", func(b *testing.B) { results[name+"/c=32"] = closedLoop(b, tg.url, 32) })
		}
	} else {
		groups := map[string][]int{"test": {os.Getpid()}, "nats": {f.NATS.Pid()}}
		if len(rawPids) > 0 {
			groups["raw"] = rawPids
		}
		for kind, group := range map[string][]*fleet.Service{"ingress": f.Ingresses, "router": f.Routers, "workers": f.Workers, "scheduler": f.Schedulers} {
			for _, s := range group {
				groups[kind] = append(groups[kind], s.Pid())
			}
		}
		for range composeRounds {
			round := map[string]throughput{}
			for _, name := range at32 {
				tg := targets[slices.IndexFunc(targets, func(t composeTarget) bool { return t.name == name })]
				before := map[string]time.Duration{}
				for g, pids := range groups {
					before[g] = cpuTime(b, pids)
				}
				rps := wrkRate(b, wrk, tg.url, 32, composeWrkFor)
				n := rps * composeWrkFor.Seconds()
				t := throughput{rps: rps, byProcess: map[string]time.Duration{}}
				for g, pids := range groups {
					used := time.Duration(float64(cpuTime(b, pids)-before[g]) / n)
					t.byProcess[g] = used
					t.cpuPerReq += used
				}
				round[name] = t
			}
			rounds = append(rounds, round)
		}
	}
	printComposition(os.Stdout, targets, results, at32, rounds, placement)

	if profiles != "" && wrk != "" && only("x5") {
		// The caller's and the callee's worker (a chain of 5 alternates
		// between them) and the ingress, under the cross-worker chain, for
		// 15 s (enough samples to attribute a hop's microseconds).
		profileFor(b, wrk, wrkScript(b, false), f.URL()+"/x5/", 32, 15, profiles, map[string]string{
			"compose-ingress":  f.Ingresses[0].OpsURL(),
			"compose-worker-a": f.Workers[0].OpsURL(), "compose-worker-b": f.Workers[1].OpsURL()})
	}
}

// composePaths reads JETSERVE_COMPOSE_PATHS (comma-separated path names
// of BenchmarkComposition, e.g. "h1,x5"; empty: all) and returns whether
// a path is measured; h1, the baseline of every ratio, always is.
func composePaths(b *testing.B) func(string) bool {
	v := os.Getenv("JETSERVE_COMPOSE_PATHS")
	if v == "" {
		return func(string) bool { return true }
	}
	known := []string{"raw", "nats", "n1", "n5", "h1", "x5", "x10", "l5", "l10", "s5", "fx", "fl", "d5"}
	set := map[string]bool{"h1": true}
	for _, n := range strings.Split(v, ",") {
		n = strings.TrimSpace(n)
		if !slices.Contains(known, n) {
			b.Fatalf("JETSERVE_COMPOSE_PATHS: unknown path %q (known: %s)", n, strings.Join(known, ", "))
		}
		set[n] = true
	}
	return func(n string) bool { return set[n] }
}

// Interleaved wrk rounds at c=32 and the length of each run.
const (
	composeRounds = 3
	composeWrkFor = 3 * time.Second
)

// throughput is one wrk run: req/s and server-side CPU per request, in
// all and by process kind.
type throughput struct {
	rps       float64
	cpuPerReq time.Duration
	byProcess map[string]time.Duration
}

// wrkRate runs wrk against url for d at concurrency c and returns req/s.
func wrkRate(b *testing.B, wrk, url string, c int, d time.Duration) float64 {
	script := wrkScript(b, false)
	out, err := exec.Command(wrk, "-t1", fmt.Sprintf("-c%d", c), fmt.Sprintf("-d%ds", int(d.Seconds())), "-s", script, url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		b.Errorf("wrk saw errors on %s:\n%s", url, out)
	}
	rps, _, _, err := parseWrk(string(out))
	if err != nil {
		b.Fatalf("wrk output: %v\n%s", err, out)
	}
	return rps
}

// cpuTime sums the user and system CPU time the processes pids used so
// far (/proc/<pid>/stat, in clock ticks of 10 ms).
func cpuTime(b *testing.B, pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatalf("read CPU time of %d: %v", pid, err)
		}
		// Fields after the command name (which may hold spaces) in parens.
		fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
		for _, i := range []int{11, 12} { // utime, stime (fields 14, 15)
			n, err := strconv.ParseInt(fields[i], 10, 64)
			if err != nil {
				b.Fatalf("/proc/%d/stat: %v", pid, err)
			}
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// unpinnedChainOf is chainOf with no label selectors (the scheduler's
// default placement) and every edge declared, Ci uses Ci+1, as `jetserve
// build` writes it (what the scheduler's co-location of callers and
// callees reads).
func unpinnedChainOf(name string, n int) config.Application {
	app := chainOf(name, n, "")
	for i := range app.Deployments {
		d := &app.Deployments[i]
		d.Resources.Labels = nil
		if i+1 < n {
			d.Uses = []string{app.Deployments[i+1].Name}
		}
	}
	return app
}

// placementOf says where the replicas of chain app (deployments C1..Cn,
// one replica each) run, from the status st: the worker (and its zone
// label) of each, and how many of the n − 1 handle hops cross workers.
func placementOf(b testing.TB, st protocol.Status, app string, n int) string {
	b.Helper()
	zone := map[string]string{}
	for _, w := range st.Workers {
		zone[w.ID] = w.Labels["zone"]
	}
	a, ok := st.Applications[app]
	if !ok {
		b.Fatalf("placement of %s: not in the status", app)
	}
	var where []string
	var workers []string
	for i := 1; i <= n; i++ {
		dep := fmt.Sprintf("C%d", i)
		d := a.Deployments[dep]
		if len(d.Replicas) != 1 {
			b.Fatalf("placement of %s/%s: %d replicas, want 1: %s", app, dep, len(d.Replicas), fleet.Describe(a))
		}
		w := d.Replicas[0].WorkerID
		workers = append(workers, w)
		where = append(where, fmt.Sprintf("%s %s (zone %s)", dep, w, zone[w]))
	}
	across := 0
	for i := 1; i < n; i++ {
		if workers[i] != workers[i-1] {
			across++
		}
	}
	return fmt.Sprintf("%s; %d of %d hops cross workers", strings.Join(where, ", "), across, n-1)
}

func printComposition(w io.Writer, targets []composeTarget, rs map[string]*benchResult, at32 []string, rounds []map[string]throughput, placement string) {
	fmt.Fprintln(w, "\ncomposition, same box, same run: latency at c=1 (Go closed-loop load generator)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\t\thops\tn\tp50\tp99\t")
	for _, tg := range targets {
		if r := rs[tg.name+"/c=1"]; r != nil {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%v\t%v\t\n", tg.name, tg.what, tg.hops, r.n, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
		}
	}
	tw.Flush()
	if placement != "" {
		fmt.Fprintf(w, "d5's replicas (status API): %s\n", placement)
	}

	if base := rs["h1/c=1"]; base != nil {
		fmt.Fprintln(w, "\nper hop at c=1: (p50(chain N) − p50(chain 1)) / (N − 1), and its ratio to a raw NATS hop (nats − raw) and to a raw NATS chain's hop across processes ((n5 − n1) / 4) of the same run")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "\tper hop\tvs nats − raw\tvs (n5 − n1)/4\t\t")
		var natsHop, chainHop time.Duration
		if raw, nats := rs["raw/c=1"], rs["nats/c=1"]; raw != nil && nats != nil {
			natsHop = nats.p50 - raw.p50
		}
		if n1, n5 := rs["n1/c=1"], rs["n5/c=1"]; n1 != nil && n5 != nil {
			chainHop = (n5.p50 - n1.p50) / 4
		}
		hopRatio := func(d, to time.Duration) string {
			if to <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2fx", float64(d)/float64(to))
		}
		if natsHop != 0 {
			fmt.Fprintf(tw, "a raw NATS hop (nats − raw)\t%v\t1.00x\t%s\t\t\n", natsHop.Round(time.Microsecond), hopRatio(natsHop, chainHop))
		}
		if chainHop != 0 {
			fmt.Fprintf(tw, "a raw NATS chain's hop across 2 processes ((n5 − n1) / 4)\t%v\t%s\t1.00x\t\t\n", chainHop.Round(time.Microsecond), hopRatio(chainHop, natsHop))
		}
		for _, row := range []struct {
			label, name string
			hops        int
			target      string
		}{
			{"across workers, chain 5", "x5", 4, "target ≤ 250µs"},
			{"across workers, chain 10", "x10", 9, "target ≤ 250µs"},
			{"within one worker, chain 5", "l5", 4, "target ≤ 50µs"},
			{"within one worker, chain 10", "l10", 9, "target ≤ 50µs"},
			{"via the router service, chain 5", "s5", 4, ""},
			{"default placement, chain 5", "d5", 4, ""},
		} {
			if r := rs[row.name+"/c=1"]; r != nil {
				d := (r.p50 - base.p50) / time.Duration(row.hops)
				fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t%s\t\n", row.label, d.Round(time.Microsecond), hopRatio(d, natsHop), hopRatio(d, chainHop), row.target)
			}
		}
		for _, name := range []string{"fx", "fl"} {
			if r := rs[name+"/c=1"]; r != nil {
				fmt.Fprintf(tw, "fan-out to 4 (%s) − chain 1\t%v\t\t\t\t\n", name, (r.p50 - base.p50).Round(time.Microsecond))
			}
		}
		tw.Flush()
	}

	if len(rounds) == 0 {
		fmt.Fprintln(w, "\nthroughput at c=32, Go load generator (wrk is not on PATH; install it for server-side capacity)")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, name := range at32 {
			if r, b := rs[name+"/c=32"], rs["h1/c=32"]; r != nil && b != nil {
				fmt.Fprintf(tw, "%s\t%.0f req/s\t%.2fx h1\t\n", name, r.rps, ratio(r.rps, b.rps))
			}
		}
		if r, b := rs["n5/c=32"], rs["n1/c=32"]; r != nil && b != nil {
			fmt.Fprintf(tw, "n5\t%.0f req/s\t%.2fx n1\t\n", r.rps, ratio(r.rps, b.rps))
		}
		tw.Flush()
		return
	}
	fmt.Fprintf(w, "\nthroughput at c=32 (wrk, %d interleaved rounds of %v; medians): req/s, server CPU per request, ratio to h1 within each round (target chain 5 ≥ 0.4x)\n", len(rounds), composeWrkFor)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	kinds := []string{"nats", "ingress", "workers", "router", "scheduler", "test", "raw"}
	fmt.Fprintf(tw, "path\treq/s\tCPU/req\tvs h1\tper round\t%s\t\n", strings.Join(kinds, "\t"))
	for _, name := range at32 {
		var rps, cpu []float64
		by := map[string][]float64{}
		for _, r := range rounds {
			rps = append(rps, r[name].rps)
			cpu = append(cpu, float64(r[name].cpuPerReq))
			for _, k := range kinds {
				by[k] = append(by[k], float64(r[name].byProcess[k]))
			}
		}
		rel, per := roundRatio(rounds, name, "h1")
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%.2fx\t%s\t", name, median(rps), time.Duration(median(cpu)).Round(time.Microsecond), rel, per)
		for _, k := range kinds {
			fmt.Fprintf(tw, "%v\t", time.Duration(median(by[k])).Round(time.Microsecond))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()

	// Chain 5 / chain 1, jetserve's beside the raw NATS chain's.
	var rawChain float64
	if slices.Contains(at32, "n1") && slices.Contains(at32, "n5") {
		rawChain, _ = roundRatio(rounds, "n5", "n1")
	}
	fmt.Fprintln(w, "\nchain 5 / chain 1 req/s at c=32 (median of the rounds' ratios; per round), and as a fraction of the raw NATS chain's (n5 / n1)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range []struct{ label, name, base string }{
		{"raw NATS chain across 2 processes (n5 / n1)", "n5", "n1"},
		{"across workers (x5 / h1)", "x5", "h1"},
		{"default placement (d5 / h1)", "d5", "h1"},
		{"within one worker (l5 / h1)", "l5", "h1"},
		{"via the router service (s5 / h1)", "s5", "h1"},
	} {
		if !slices.Contains(at32, row.name) || !slices.Contains(at32, row.base) {
			continue
		}
		rel, per := roundRatio(rounds, row.name, row.base)
		of := "-"
		if rawChain > 0 {
			of = fmt.Sprintf("%.2f of raw", rel/rawChain)
		}
		fmt.Fprintf(tw, "%s\t%.2fx\t(%s)\t%s\t\n", row.label, rel, per, of)
	}
	tw.Flush()

	cpuOf := func(name string) float64 {
		var c []float64
		for _, r := range rounds {
			c = append(c, float64(r[name].cpuPerReq))
		}
		return median(c)
	}
	base := cpuOf("h1")
	natsCPU := cpuOf("nats") - cpuOf("raw") // a raw NATS round trip's CPU
	var chainCPU float64                    // a raw NATS chain's hop across processes
	if slices.Contains(at32, "n1") && slices.Contains(at32, "n5") {
		chainCPU = (cpuOf("n5") - cpuOf("n1")) / 4
	}
	cpuRatio := func(hop, to float64) string {
		if to <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", hop/to)
	}
	fmt.Fprintln(w, "\nserver CPU per hop at c=32: (CPU/req(chain 5) − CPU/req(chain 1)) / 4, and its ratio to a raw NATS round trip's (nats − raw) and to a raw NATS chain's hop across processes ((n5 − n1) / 4)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tper hop\tvs nats − raw\tvs (n5 − n1)/4\t")
	if slices.Contains(at32, "nats") && slices.Contains(at32, "raw") {
		fmt.Fprintf(tw, "a raw NATS round trip (nats − raw)\t%v\t1.00x\t%s\t\n", time.Duration(natsCPU).Round(time.Microsecond), cpuRatio(natsCPU, chainCPU))
	} else {
		natsCPU = 0
	}
	if chainCPU != 0 {
		fmt.Fprintf(tw, "a raw NATS chain's hop across 2 processes\t%v\t%s\t1.00x\t\n", time.Duration(chainCPU).Round(time.Microsecond), cpuRatio(chainCPU, natsCPU))
	}
	for _, row := range []struct{ label, name string }{{"across workers", "x5"}, {"within one worker", "l5"}, {"via the router service", "s5"}, {"default placement", "d5"}} {
		if !slices.Contains(at32, row.name) {
			continue
		}
		hop := (cpuOf(row.name) - base) / 4
		fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t\n", row.label, time.Duration(hop).Round(time.Microsecond), cpuRatio(hop, natsCPU), cpuRatio(hop, chainCPU))
	}
	tw.Flush()
}

// roundRatio is the median over rounds of name's req/s relative to base's
// in the same round, and the rounds' ratios as text.
func roundRatio(rounds []map[string]throughput, name, base string) (float64, string) {
	var rel []float64
	var per []string
	for _, r := range rounds {
		x := ratio(r[name].rps, r[base].rps)
		rel = append(rel, x)
		per = append(per, fmt.Sprintf("%.2f", x))
	}
	return median(rel), strings.Join(per, " ")
}

// traceTime is how long BenchmarkComposition's execution traces last.
const traceTime = 3 * time.Second

// traceAtC1 sends requests to url one at a time while start's tracers
// run (start begins them and returns a wait for each), until every
// tracer is done, and prints the rate (to put the traces per request).
func traceAtC1(b *testing.B, name, url string, start func() []func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var sent atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		client := &http.Client{Timeout: 30 * time.Second}
		for ctx.Err() == nil {
			resp, err := client.Post(url, "application/json", strings.NewReader(string(echoBody)))
			if err != nil {
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sent.Add(1)
		}
	})
	time.Sleep(500 * time.Millisecond) // warm
	from, t0 := sent.Load(), time.Now()
	for _, wait := range start() { // each blocks until its trace is written
		wait()
	}
	fmt.Printf("%s traced at c=1: %.0f requests/s\n", name, float64(sent.Load()-from)/time.Since(t0).Seconds())
	cancel()
	wg.Wait()
}

// fetchTrace starts GET /debug/pprof/trace on a service's ops server and
// returns a wait that writes it to dir/name.trace.
func fetchTrace(b *testing.B, dir, name, ops string) func() {
	done := make(chan struct{})
	go func() {
		resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/trace?seconds=%d", ops, int(traceTime.Seconds())))
		if err != nil {
			b.Errorf("trace %s: %v", name, err)
			close(done)
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Errorf("trace %s: %s %v", name, resp.Status, err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".trace"), body, 0o644); err != nil {
			b.Error(err)
		}
		close(done)
	}()
	return func() { <-done }
}

// signalTraces makes the raw responders (pids) trace for traceTime
// (SIGUSR1, then SIGUSR2: responderTraceEnv) and returns a wait.
func signalTraces(b *testing.B, pids []int) []func() {
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
			b.Fatal(err)
		}
	}
	return []func(){func() {
		time.Sleep(traceTime)
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
				b.Error(err)
			}
		}
		time.Sleep(200 * time.Millisecond) // written
	}}
}
