package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// BenchmarkScaleOut measures, on this machine, what a second ingress
// process and a second worker process give: one fleet of two ingresses
// and two workers serves
//
//	1x1: app "single" (one replica) through one ingress, one wrk at c=64;
//	2x2: app "scale" (two replicas, one per worker: each asks for 5 of a
//	     worker's 8 CPUs) through both ingresses, one wrk at c=32 on each;
//
// beside the raw HTTP → NATS baseline at c=64, rounds interleaved
// (JETSERVE_SCALE_ROUNDS, default 3, of JETSERVE_SWEEP_SECONDS each),
// with the CPU per request of each process kind. On two cores the second
// pair of processes shares the same CPU: what it shows is whether
// anything but CPU (a lock, the routing library, NATS) held one pair back.
func BenchmarkScaleOut(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		b.Skip("wrk is not on PATH (apt-get install wrk)")
	}
	rounds := envInt("JETSERVE_SCALE_ROUNDS", 3)
	secs := envInt("JETSERVE_SWEEP_SECONDS", 2)
	f := fleet.Start(b, bins, fleet.Options{Ingresses: 2, Workers: 2})
	f.RequireHandlers(handlerEcho)
	single := deployment{app: "single", handler: handlerEcho, replicas: 1, cpu: 2, maxOngoing: 256}
	scale := deployment{app: "scale", handler: handlerEcho, replicas: 2, cpu: 5, maxOngoing: 256}
	f.Deploy(serveConfig(b, single.application(), scale.application()))
	f.WaitApp(deployTimeout, "single", 1, nil)
	f.WaitApp(deployTimeout, "scale", 2, func(st protocol.AppStatus) error {
		workers := map[string]bool{}
		for _, d := range st.Deployments {
			for _, r := range d.Replicas {
				workers[r.WorkerID] = true
			}
		}
		if len(workers) != 2 {
			return fmt.Errorf("scale's replicas on %d workers, want 2", len(workers))
		}
		return nil
	})
	nats := startGateway(b, f.NATS.URL)
	script := wrkScript(b, false)
	pids := func(ss []*fleet.Service) []int {
		var out []int
		for _, s := range ss {
			out = append(out, s.Pid())
		}
		return out
	}
	groups := map[string][]int{"nats-server": {f.NATS.Pid()}, "ingresses": pids(f.Ingresses), "workers": pids(f.Workers),
		"test process": {os.Getpid()}}

	var raw, one, two []wrkRun
	for range rounds {
		raw = append(raw, wrkOnce(b, wrk, script, nats, 64, secs, groups))
		one = append(one, wrkOnce(b, wrk, script, f.Ingresses[0].URL()+"/single/", 64, secs, groups))
		two = append(two, wrkPair(b, wrk, script, []string{f.Ingresses[0].URL() + "/scale/", f.Ingresses[1].URL() + "/scale/"}, 32, secs, groups))
	}
	fmt.Printf("\nscale-out on this machine (wrk, c=64 in all; medians of %d interleaved rounds)\n", rounds)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\treq/s\tvs raw\tp50\tCPU µs/req: ingresses\tworkers\tnats-server\ttest process\t")
	for _, row := range []struct {
		name string
		runs []wrkRun
	}{{"raw HTTP→NATS", raw}, {"1 ingress x 1 worker", one}, {"2 ingresses x 2 workers", two}} {
		cpu := func(g string) float64 {
			return medianOf(row.runs, func(r wrkRun) float64 { return float64(r.cpu[g].Microseconds()) })
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2fx\t%v\t%.0f\t%.0f\t%.0f\t%.0f\t\n", row.name, medianOf(row.runs, goods), ratioMedian(row.runs, raw, goods),
			time.Duration(medianOf(row.runs, p50s)*1e9).Round(time.Microsecond), cpu("ingresses"), cpu("workers"), cpu("nats-server"), cpu("test process"))
	}
	tw.Flush()
	fmt.Printf("2x2 / 1x1 throughput: %.2fx\n", ratioMedian(two, one, goods))
}

// wrkPair runs one wrk per url at once (c connections each) and returns
// their sum (requests, non-2xx, timeouts) with the slower p50 and p99 and
// the CPU of groups per request of both.
func wrkPair(b *testing.B, wrk, script string, urls []string, c, secs int, groups map[string][]int) wrkRun {
	before := map[string]time.Duration{}
	for g, pids := range groups {
		before[g] = cpuTime(b, pids)
	}
	runs := make([]wrkRun, len(urls))
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Go(func() { runs[i], _, errs[i] = runWrkCmd(wrk, script, u, c, secs) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	var sum wrkRun
	for _, r := range runs {
		sum.total += r.total
		sum.non2xx += r.non2xx
		sum.timeouts += r.timeouts
		sum.secs = max(sum.secs, r.secs)
		sum.p50, sum.p99 = max(sum.p50, r.p50), max(sum.p99, r.p99)
	}
	if sum.total > 0 {
		sum.cpu = map[string]time.Duration{}
		for g, pids := range groups {
			sum.cpu[g] = (cpuTime(b, pids) - before[g]) / time.Duration(sum.total)
		}
	}
	return sum
}
