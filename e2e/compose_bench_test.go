package e2e

import (
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
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
//	h1      ingress → one diag.Chain replica (chain of 1: the baseline)
//	x5,x10  chains of 5 and 10 diag.Chain deployments alternating between
//	        two workers: every handle call crosses workers (one NATS round
//	        trip, from the calling worker's embedded router)
//	l5,l10  the same chains on one worker: every handle call in-process
//	s5      a chain of 5 on a worker with router: service (handles through
//	        the router service: the path before embedded routing)
//	fx,fl   a 4-way fan-out (diag.FanOut) to four deployments on the
//	        other worker / the same worker
//
// Latency at c=1: p50 and p99 of the Go closed-loop load generator (b.N
// requests per path). Throughput at c=32: wrk (when on PATH; else the Go
// load generator, which is itself CPU-bound on 2 cores), every path
// measured in each of several interleaved rounds so that the box's drift
// hits them alike — req/s, and the server-side CPU per request (every
// fleet process and this one, from /proc: independent of the noise of
// other work on the box). It prints the cost per hop at c=1 —
// (p50(chainN) − p50(h1)) / (N − 1) — and the per-round median of each
// path's throughput relative to h1. Run it with
//
//	go test -run '^$' -bench Composition -benchtime 2000x ./
func BenchmarkComposition(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	profiles := os.Getenv("JETSERVE_BENCH_PROFILES")
	var env map[string]string
	if profiles != "" {
		env = map[string]string{"JETSERVE_OPS_PPROF": "true"}
	}
	workerEnv := []map[string]string{
		{"JETSERVE_LABELS": "zone=a"},
		{"JETSERVE_LABELS": "zone=b"},
		{"JETSERVE_LABELS": "zone=s", "JETSERVE_ROUTER": "service"},
	}
	// JETSERVE_COMPOSE_WORKER_ENV ("GOGC=400,GOMAXPROCS=1") is added to
	// the workers' environment: runtime settings measured against the same
	// run's baselines.
	if v := os.Getenv("JETSERVE_COMPOSE_WORKER_ENV"); v != "" {
		for _, kv := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(kv, "=")
			if !ok {
				b.Fatalf("JETSERVE_COMPOSE_WORKER_ENV: %q is not NAME=VALUE", kv)
			}
			for _, e := range workerEnv {
				e[k] = val
			}
		}
	}
	f := fleet.Start(b, bins, fleet.Options{Env: env, Workers: 3, WorkerEnv: workerEnv})
	f.RequireHandlers(handlerChain, handlerFanOut)
	only := composePaths(b)
	apps := map[string]config.Application{
		"h1": chainOf("h1", 1, "a"),
		"x5": chainOf("x5", 5, "a", "b"), "x10": chainOf("x10", 10, "a", "b"),
		"l5": chainOf("l5", 5, "a"), "l10": chainOf("l10", 10, "a"),
		"s5": chainOf("s5", 5, "s"),
		"fx": fanOutOf("fx", "a", "b"), "fl": fanOutOf("fl", "a", "a"),
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
	targets := []composeTarget{
		{"raw", 0, "raw net/http", startRawHTTP(b)},
		{"nats", 0, "raw HTTP → NATS → responder", startGateway(b, f.NATS.URL)},
		{"h1", 0, "chain of 1 (ingress → replica)", ""},
		{"x5", 4, "chain of 5 across 2 workers", ""},
		{"x10", 9, "chain of 10 across 2 workers", ""},
		{"l5", 4, "chain of 5 on one worker", ""},
		{"l10", 9, "chain of 10 on one worker", ""},
		{"s5", 4, "chain of 5 via the router service", ""},
		{"fx", 4, "fan-out to 4 on the other worker", ""},
		{"fl", 4, "fan-out to 4 on the same worker", ""},
	}
	targets = slices.DeleteFunc(targets, func(t composeTarget) bool { return !only(t.name) })
	for i := range targets {
		if targets[i].url == "" {
			targets[i].url = f.URL() + "/" + targets[i].name + "/"
		}
	}
	results := map[string]*benchResult{}
	for _, tg := range targets {
		name := tg.name + "/c=1"
		b.Run(name, func(b *testing.B) { results[name] = closedLoop(b, tg.url, 1) })
	}
	at32 := slices.DeleteFunc([]string{"raw", "nats", "h1", "x5", "l5", "s5", "fx", "fl"}, func(n string) bool { return !only(n) })
	wrk, _ := exec.LookPath("wrk")
	var rounds []map[string]throughput
	if wrk == "" {
		for _, name := range at32 {
			tg := targets[slices.IndexFunc(targets, func(t composeTarget) bool { return t.name == name })]
			b.Run(name+"/c=32", func(b *testing.B) { results[name+"/c=32"] = closedLoop(b, tg.url, 32) })
		}
	} else {
		groups := map[string][]int{"test": {os.Getpid()}, "nats": {f.NATS.Pid()}}
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
	printComposition(os.Stdout, targets, results, at32, rounds)

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
	known := []string{"raw", "nats", "h1", "x5", "x10", "l5", "l10", "s5", "fx", "fl"}
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

func printComposition(w io.Writer, targets []composeTarget, rs map[string]*benchResult, at32 []string, rounds []map[string]throughput) {
	fmt.Fprintln(w, "\ncomposition, same box, same run: latency at c=1 (Go closed-loop load generator)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\t\thops\tn\tp50\tp99\t")
	for _, tg := range targets {
		if r := rs[tg.name+"/c=1"]; r != nil {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%v\t%v\t\n", tg.name, tg.what, tg.hops, r.n, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
		}
	}
	tw.Flush()

	if base := rs["h1/c=1"]; base != nil {
		fmt.Fprintln(w, "\nper hop at c=1: (p50(chain N) − p50(chain 1)) / (N − 1), and its ratio to a raw NATS hop (nats − raw) of the same run")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		var natsHop time.Duration
		if raw, nats := rs["raw/c=1"], rs["nats/c=1"]; raw != nil && nats != nil {
			natsHop = nats.p50 - raw.p50
			fmt.Fprintf(tw, "a raw NATS hop (nats − raw)\t%v\t1.00x\t\n", natsHop.Round(time.Microsecond))
		}
		hopRatio := func(d time.Duration) string {
			if natsHop <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2fx", float64(d)/float64(natsHop))
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
		} {
			if r := rs[row.name+"/c=1"]; r != nil {
				d := (r.p50 - base.p50) / time.Duration(row.hops)
				fmt.Fprintf(tw, "%s\t%v\t%s\t%s\t\n", row.label, d.Round(time.Microsecond), hopRatio(d), row.target)
			}
		}
		for _, name := range []string{"fx", "fl"} {
			if r := rs[name+"/c=1"]; r != nil {
				fmt.Fprintf(tw, "fan-out to 4 (%s) − chain 1\t%v\t\n", name, (r.p50 - base.p50).Round(time.Microsecond))
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
		tw.Flush()
		return
	}
	fmt.Fprintf(w, "\nthroughput at c=32 (wrk, %d interleaved rounds of %v; medians): req/s, server CPU per request, ratio to h1 within each round (target chain 5 ≥ 0.4x)\n", len(rounds), composeWrkFor)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	kinds := []string{"nats", "ingress", "workers", "router", "scheduler", "test"}
	fmt.Fprintf(tw, "path\treq/s\tCPU/req\tvs h1\tper round\t%s\t\n", strings.Join(kinds, "\t"))
	for _, name := range at32 {
		var rps, cpu, rel []float64
		var per []string
		by := map[string][]float64{}
		for _, r := range rounds {
			rps = append(rps, r[name].rps)
			cpu = append(cpu, float64(r[name].cpuPerReq))
			x := ratio(r[name].rps, r["h1"].rps)
			rel = append(rel, x)
			per = append(per, fmt.Sprintf("%.2f", x))
			for _, k := range kinds {
				by[k] = append(by[k], float64(r[name].byProcess[k]))
			}
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%.2fx\t%s\t", name, median(rps), time.Duration(median(cpu)).Round(time.Microsecond), median(rel), strings.Join(per, " "))
		for _, k := range kinds {
			fmt.Fprintf(tw, "%v\t", time.Duration(median(by[k])).Round(time.Microsecond))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	var h1 []float64
	for _, r := range rounds {
		h1 = append(h1, float64(r["h1"].cpuPerReq))
	}
	base := median(h1)
	cpuOf := func(name string) float64 {
		var c []float64
		for _, r := range rounds {
			c = append(c, float64(r[name].cpuPerReq))
		}
		return median(c)
	}
	natsCPU := cpuOf("nats") - cpuOf("raw") // a raw NATS round trip's CPU
	fmt.Fprintf(w, "\nserver CPU per hop at c=32: (CPU/req(chain 5) − CPU/req(chain 1)) / 4, and its ratio to a raw NATS round trip's (%v)\n",
		time.Duration(natsCPU).Round(time.Microsecond))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, row := range []struct{ label, name string }{{"across workers", "x5"}, {"within one worker", "l5"}, {"via the router service", "s5"}} {
		if !slices.Contains(at32, row.name) {
			continue
		}
		hop := (cpuOf(row.name) - base) / 4
		fmt.Fprintf(tw, "%s\t%v\t%.2fx\t\n", row.label, time.Duration(hop).Round(time.Microsecond), ratio(hop, natsCPU))
	}
	tw.Flush()
}
