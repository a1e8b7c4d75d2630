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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
)

// sweepConcurrency is the sweep of BenchmarkSweep (issue 15).
var sweepConcurrency = []int{1, 8, 64, 256, 512}

// BenchmarkSweep measures, with wrk, the fleet and the raw paths side by
// side at concurrency 1, 8, 64, 256 and 512 (make bench's "no collapse"
// and target rows):
//
//	raw:     net/http handler
//	nats:    HTTP → NATS request-reply → responder (the one-hop limit;
//	         gateway and responder in this process, as the issue's
//	         baseline has it)
//	nats2p:  the same with the responder in a process of its own (this
//	         binary re-executed), as the fleet's replica is
//	fleet:   HTTP → ingress (embedded router) → NATS → replica, unlimited
//	         queue (max_ongoing_requests 256)
//	bounded: the same with max_ongoing_requests 32 and
//	         max_queued_requests 64: excess load is refused 503 +
//	         Retry-After at once, and wrk's script honours Retry-After as
//	         well-behaved clients do (each refusal makes one connection
//	         wait that long before its next request)
//
// Rounds are interleaved (every target at every concurrency, then the
// next round, the targets' order rotated), and what is reported is the
// median per point and the median of the per-round ratios: this 2-core
// machine drifts by ±30% between minutes. It then checks the targets
// (fleet/nats p50 at c=1 ≤ 1.3×, wrk throughput at c=64 ≥ 0.8×) and the
// collapse criterion: from the saturating concurrency (the lowest whose
// good throughput is ≥ 95% of the peak) on, every point — 2× saturation
// included — keeps ≥ 95% of the peak, with no timeouts; the bounded
// deployment's refusals are counted, and are 503 with Retry-After.
//
// JETSERVE_SWEEP_ROUNDS (default 3) and JETSERVE_SWEEP_SECONDS (default 2)
// size it; JETSERVE_BENCH_PROFILES=DIR also takes CPU profiles of the
// ingress and worker processes under wrk at c=1, 64 and 512 and prints
// their top functions.
func BenchmarkSweep(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk is not on PATH (apt-get install wrk): the sweep needs a load generator that does not share this process")
	}
	rounds := envInt("JETSERVE_SWEEP_ROUNDS", 3)
	secs := envInt("JETSERVE_SWEEP_SECONDS", 2)
	f := fleet.Start(b, bins, fleet.Options{Env: map[string]string{"JETSERVE_OPS_PPROF": "true"}})
	f.RequireHandlers(handlerEcho)
	fl := deployment{app: "sweep", handler: handlerEcho, replicas: 1, maxOngoing: 256}
	bd := deployment{app: "sweepq", handler: handlerEcho, replicas: 1, maxOngoing: 32, maxQueued: 64}
	f.Deploy(serveConfig(b, fl.application(), bd.application()))
	f.WaitApp(deployTimeout, "sweep", 1, nil)
	f.WaitApp(deployTimeout, "sweepq", 1, nil)

	respPid := startResponderProcess(b, f.NATS.URL, nil)
	// The processes whose CPU each run is charged (per request).
	groups := map[string][]int{"test process": {os.Getpid()}, "responder": {respPid}, "nats-server": {f.NATS.Pid()},
		"ingress": {f.Ingresses[0].Pid()}, "worker": {f.Workers[0].Pid()}}
	targets := []sweepTarget{
		{"raw", startRawHTTP(b)},
		{"nats", startGateway(b, f.NATS.URL)},
		{"nats2p", serveNATSGateway(b, f.NATS.URL, responderSubject)},
		{"fleet", f.URL() + "/sweep/"},
		{"bounded", f.URL() + "/sweepq/"},
	}
	script := wrkScript(b, false)
	polite := wrkScript(b, true)
	checkRetryAfter(b, f.URL()+"/sweepq/")

	res := map[string][]wrkRun{} // "target/c" → one run per round
	for round := range rounds {
		for _, c := range sweepConcurrency {
			for i := range targets {
				tg := targets[(i+round)%len(targets)]
				sc := script
				if tg.name == "bounded" {
					sc = polite
				}
				r := wrkOnce(b, wrk, sc, tg.url, c, secs, groups)
				k := fmt.Sprintf("%s/%d", tg.name, c)
				res[k] = append(res[k], r)
			}
		}
	}
	printSweep(os.Stdout, res, targets, rounds)
	printCPU(os.Stdout, res, []string{"nats", "nats2p", "fleet"}, []int{1, 64})

	if dir := os.Getenv("JETSERVE_BENCH_PROFILES"); dir != "" {
		for _, c := range []int{1, 64, 512} {
			profileUnderLoad(b, wrk, script, f.URL()+"/sweep/", c, dir, map[string]string{
				"ingress": f.Ingresses[0].OpsURL(), "worker": f.Workers[0].OpsURL()})
		}
	}
}

type sweepTarget struct{ name, url string }

// wrkRun is one wrk measurement.
type wrkRun struct {
	total, non2xx, timeouts, errs int
	secs                          float64
	p50, p99                      time.Duration
	// cpu is the CPU time per request of each process group, wrk's own
	// included ("wrk").
	cpu map[string]time.Duration
}

// good is the throughput of 2xx answers.
func (r wrkRun) good() float64 {
	if r.secs == 0 {
		return 0
	}
	return float64(r.total-r.non2xx) / r.secs
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// wrkScript writes wrk's script: POST echoBody; when retryAfter, a
// connection answered 503 with Retry-After waits that long before its next
// request (wrk calls response and then delay for the same connection).
func wrkScript(b *testing.B, retryAfter bool) string {
	script := filepath.Join(b.TempDir(), fmt.Sprintf("post-%v.lua", retryAfter))
	lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"application/json\"\n", echoBody)
	if retryAfter {
		// wrk calls delay when a connection is next writable, after
		// other connections' responses may have come in: each refusal
		// makes the next connection to send wait, so the offered load is
		// that of clients that wait as told.
		lua += `local waits = {}
function response(status, headers, body)
  local ra = headers["Retry-After"]
  if status == 503 and ra then table.insert(waits, (tonumber(ra) or 1) * 1000) end
end
function delay()
  return table.remove(waits, 1) or 0
end
`
	}
	if err := os.WriteFile(script, []byte(lua), 0o600); err != nil {
		b.Fatal(err)
	}
	return script
}

var (
	wrkTotal   = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(ms|s|m)`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrkRun reads a wrk --latency output.
func parseWrkRun(out string) (wrkRun, error) {
	var r wrkRun
	m := wrkTotal.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no 'requests in' line")
	}
	r.total, _ = strconv.Atoi(m[1])
	d, err := time.ParseDuration(m[2] + m[3])
	if err != nil {
		return r, err
	}
	r.secs = d.Seconds()
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkSockErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:4] {
			n, _ := strconv.Atoi(s)
			r.errs += n
		}
		r.timeouts, _ = strconv.Atoi(m[4])
	}
	_, r.p50, r.p99, err = parseWrk(out)
	return r, err
}

// wrkOnce runs wrk (1 thread: the same load generator for every target)
// for secs at c connections; wrk's own timeout is 10 s, so a "timeout" is
// a request that took that long.
// groups (name → pids), if not nil, are charged their CPU time per
// request in the result.
func wrkOnce(b *testing.B, wrk, script, url string, c, secs int, groups map[string][]int) wrkRun {
	before := map[string]time.Duration{}
	for g, pids := range groups {
		before[g] = cpuTime(b, pids)
	}
	r, cmd, err := runWrkCmd(wrk, script, url, c, secs)
	if err != nil {
		b.Fatal(err)
	}
	if groups != nil && r.total > 0 {
		r.cpu = map[string]time.Duration{"wrk": (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()) / time.Duration(r.total)}
		for g, pids := range groups {
			r.cpu[g] = (cpuTime(b, pids) - before[g]) / time.Duration(r.total)
		}
	}
	return r
}

// runWrkCmd runs wrk and parses its output; safe on any goroutine.
func runWrkCmd(wrk, script, url string, c, secs int) (wrkRun, *exec.Cmd, error) {
	cmd := exec.Command(wrk, "-t1", fmt.Sprintf("-c%d", c), fmt.Sprintf("-d%ds", secs), "--timeout", "10s",
		"--latency", "-s", script, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return wrkRun{}, cmd, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	r, err := parseWrkRun(string(out))
	if err != nil {
		return wrkRun{}, cmd, fmt.Errorf("wrk output: %w\n%s", err, out)
	}
	return r, cmd, nil
}

// printCPU prints the CPU time per request of each process group (medians
// over the rounds) for paths at concurrencies cs, and the cores they kept
// busy: a path using well under the machine's 2 cores is bound by
// latency (wake-ups across processes), not by CPU.
func printCPU(w io.Writer, res map[string][]wrkRun, paths []string, cs []int) {
	groups := []string{"wrk", "test process", "responder", "nats-server", "ingress", "worker"}
	fmt.Fprintln(w, "\nCPU per request by process (µs, /proc and wrk's rusage; 10 ms ticks, medians of the rounds)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "path\tc")
	for _, g := range groups {
		fmt.Fprintf(tw, "\t%s", g)
	}
	fmt.Fprintln(tw, "\ttotal\tcores busy\t")
	for _, c := range cs {
		for _, p := range paths {
			runs := res[fmt.Sprintf("%s/%d", p, c)]
			if len(runs) == 0 || runs[0].cpu == nil {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d", p, c)
			var total float64
			for _, g := range groups {
				us := medianOf(runs, func(r wrkRun) float64 { return float64(r.cpu[g].Microseconds()) })
				total += us
				fmt.Fprintf(tw, "\t%.0f", us)
			}
			fmt.Fprintf(tw, "\t%.0f\t%.2f\t\n", total, total*medianOf(runs, func(r wrkRun) float64 { return float64(r.total) / r.secs })/1e6)
		}
	}
	tw.Flush()
}

// checkRetryAfter overloads url (max_ongoing_requests 32 + 64 queued)
// with 160 concurrent requests and requires some 503s, each with
// Retry-After and error code queue_full, and no other failure.
func checkRetryAfter(b *testing.B, url string) {
	b.Helper()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 200}}
	defer client.CloseIdleConnections()
	var (
		mu      sync.Mutex
		refused int
		bad     []string
		wg      sync.WaitGroup
	)
	for range 160 {
		wg.Go(func() {
			for range 20 {
				resp, err := client.Post(url, "application/json", strings.NewReader(string(echoBody)))
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				switch {
				case resp.StatusCode == http.StatusOK:
				case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" &&
					resp.Header.Get("X-Jetserve-Error") == "queue_full":
					refused++
				default:
					bad = append(bad, fmt.Sprintf("%s Retry-After=%q error=%q", resp.Status, resp.Header.Get("Retry-After"), resp.Header.Get("X-Jetserve-Error")))
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		b.Fatalf("overload: %d answers other than 200 or 503 queue_full + Retry-After, first: %s", len(bad), bad[0])
	}
	fmt.Printf("overload check: 160 clients on max_ongoing 32 + max_queued 64: %d of 3200 refused 503 queue_full with Retry-After, the rest 200\n", refused)
}

// medianOf is the median over the rounds of f(run).
func medianOf(runs []wrkRun, f func(wrkRun) float64) float64 {
	xs := make([]float64, len(runs))
	for i, r := range runs {
		xs[i] = f(r)
	}
	return median(xs)
}

// ratioMedian is the median over rounds of f(a[i]) / f(b[i]).
func ratioMedian(a, b []wrkRun, f func(wrkRun) float64) float64 {
	var xs []float64
	for i := range min(len(a), len(b)) {
		if d := f(b[i]); d > 0 {
			xs = append(xs, f(a[i])/d)
		}
	}
	return median(xs)
}

func p50s(r wrkRun) float64  { return r.p50.Seconds() }
func goods(r wrkRun) float64 { return r.good() }

func printSweep(w io.Writer, res map[string][]wrkRun, targets []sweepTarget, rounds int) {
	fmt.Fprintf(w, "\nconcurrency sweep (wrk, 1 thread; medians of %d interleaved rounds)\n", rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\tc\tgood req/s\tp50\tp99\t503s\ttimeouts\treq/s vs nats / nats2p\tp50 vs nats / nats2p\t")
	for _, tg := range targets {
		for _, c := range sweepConcurrency {
			runs := res[fmt.Sprintf("%s/%d", tg.name, c)]
			if runs == nil {
				continue
			}
			var non2xx, timeouts int
			for _, r := range runs {
				non2xx += r.non2xx
				timeouts += r.timeouts
			}
			rr, rp := "", ""
			if tg.name == "fleet" || tg.name == "bounded" {
				nats, n2 := res[fmt.Sprintf("nats/%d", c)], res[fmt.Sprintf("nats2p/%d", c)]
				rr = fmt.Sprintf("%.2fx / %.2fx", ratioMedian(runs, nats, goods), ratioMedian(runs, n2, goods))
				rp = fmt.Sprintf("%.2fx / %.2fx", ratioMedian(runs, nats, p50s), ratioMedian(runs, n2, p50s))
			}
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%v\t%v\t%d\t%d\t%s\t%s\t\n", tg.name, c, medianOf(runs, goods),
				time.Duration(medianOf(runs, p50s)*1e9).Round(time.Microsecond),
				time.Duration(medianOf(runs, func(r wrkRun) float64 { return r.p99.Seconds() })*1e9).Round(time.Microsecond),
				non2xx, timeouts, rr, rp)
		}
	}
	tw.Flush()

	fmt.Fprintln(w, "\ntargets (medians of per-round ratios to the same run's raw HTTP→NATS)")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT MET"
	}
	if p := ratioMedian(res["fleet/1"], res["nats/1"], p50s); p > 0 {
		fmt.Fprintf(w, "  fleet p50 at c=1: %.2fx raw HTTP→NATS (target <= 1.3x): %s\n", p, verdict(p <= 1.3))
	}
	if t := ratioMedian(res["fleet/64"], res["nats/64"], goods); t > 0 {
		fmt.Fprintf(w, "  fleet throughput at c=64: %.2fx raw HTTP→NATS (target >= 0.8x): %s\n", t, verdict(t >= 0.8))
	}
	if p := ratioMedian(res["fleet/1"], res["nats2p/1"], p50s); p > 0 {
		fmt.Fprintf(w, "  (against the responder in its own process: p50 at c=1 %.2fx, throughput at c=64 %.2fx)\n",
			p, ratioMedian(res["fleet/64"], res["nats2p/64"], goods))
	}
	for _, name := range []string{"raw", "nats", "nats2p", "fleet", "bounded"} {
		var peak float64
		var peakC int
		goodAt := map[int]float64{}
		for _, c := range sweepConcurrency {
			g := medianOf(res[fmt.Sprintf("%s/%d", name, c)], goods)
			goodAt[c] = g
			if g > peak {
				peak, peakC = g, c
			}
		}
		if peak == 0 {
			continue
		}
		sat := 0
		for _, c := range sweepConcurrency {
			if goodAt[c] >= 0.95*peak {
				sat = c
				break
			}
		}
		worst, worstC, timeouts := 2.0, 0, 0
		for _, c := range sweepConcurrency {
			if c < sat {
				continue
			}
			if x := goodAt[c] / peak; x < worst {
				worst, worstC = x, c
			}
			for _, r := range res[fmt.Sprintf("%s/%d", name, c)] {
				timeouts += r.timeouts
			}
		}
		at2x := "not in the sweep"
		if g, ok := goodAt[2*sat]; ok {
			at2x = fmt.Sprintf("%.0f%% of peak", 100*g/peak)
		}
		fmt.Fprintf(w, "  no collapse, %s: peak %.0f req/s at c=%d, saturated from c=%d; at 2x saturation %s; lowest from saturation on %.0f%% (c=%d); timeouts %d: %s\n",
			name, peak, peakC, sat, at2x, 100*worst, worstC, timeouts, verdict(worst >= 0.95 && timeouts == 0))
	}
}

// profileUnderLoad takes 4 s CPU profiles of each process (name → ops
// URL) while wrk loads url at c, writes them to dir and prints the top
// functions of each.
func profileUnderLoad(b *testing.B, wrk, script, url string, c int, dir string, procs map[string]string) {
	profileFor(b, wrk, script, url, c, 4, dir, procs)
}

// profileFor is profileUnderLoad with profiles of secs seconds.
func profileFor(b *testing.B, wrk, script, url string, c, secs int, dir string, procs map[string]string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	files := map[string]string{}
	var mu sync.Mutex
	for name, ops := range procs {
		file := filepath.Join(dir, fmt.Sprintf("%s-c%d.pprof", name, c))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", ops, secs), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Errorf("profile %s: %v", name, err)
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != http.StatusOK {
				b.Errorf("profile %s: %s %v", name, resp.Status, err)
				return
			}
			if err := os.WriteFile(file, body, 0o644); err != nil {
				b.Error(err)
				return
			}
			mu.Lock()
			files[name] = file
			mu.Unlock()
		})
	}
	time.Sleep(200 * time.Millisecond) // the profiles have started
	r := wrkOnce(b, wrk, script, url, c, secs+1, nil)
	wg.Wait()
	fmt.Printf("\nCPU profiles of the fleet at c=%d (%.0f req/s under wrk): %s\n", c, r.good(), dir)
	names := slices.Sorted(maps.Keys(files))
	for _, n := range names {
		out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=25", files[n]).CombinedOutput()
		if err != nil {
			b.Errorf("go tool pprof %s: %v\n%s", files[n], err, out)
			continue
		}
		fmt.Printf("-- %s, c=%d\n%s", n, c, out)
	}
}
