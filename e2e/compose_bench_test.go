package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
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
// at c=1 (p50, p99) and at c=32 (req/s of the Go closed-loop load
// generator, and of wrk when it is on PATH, 5 s). It prints the cost per
// hop at c=1 — (p50(chainN) − p50(h1)) / (N − 1) — and chain5/chain1
// throughput at c=32. Run it with
//
//	go test -run '^$' -bench Composition -benchtime 2000x ./
func BenchmarkComposition(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	f := fleet.Start(b, bins, fleet.Options{Workers: 3, WorkerEnv: []map[string]string{
		{"JETSERVE_LABELS": "zone=a"},
		{"JETSERVE_LABELS": "zone=b"},
		{"JETSERVE_LABELS": "zone=s", "JETSERVE_ROUTER": "service"},
	}})
	f.RequireHandlers(handlerChain, handlerFanOut)
	cfg := serveConfig(b,
		chainOf("h1", 1, "a"),
		chainOf("x5", 5, "a", "b"), chainOf("x10", 10, "a", "b"),
		chainOf("l5", 5, "a"), chainOf("l10", 10, "a"),
		chainOf("s5", 5, "s"),
		fanOutOf("fx", "a", "b"), fanOutOf("fl", "a", "a"))
	f.Deploy(cfg)
	for app, n := range map[string]int{"h1": 1, "x5": 5, "x10": 10, "l5": 5, "l10": 10, "s5": 5, "fx": 5, "fl": 5} {
		f.WaitApp(deployTimeout, app, n, nil)
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
	for i := range targets {
		if targets[i].url == "" {
			targets[i].url = f.URL() + "/" + targets[i].name + "/"
		}
	}
	at32 := map[string]bool{"raw": true, "nats": true, "h1": true, "x5": true, "l5": true, "s5": true, "fx": true, "fl": true}
	results := map[string]*benchResult{}
	for _, c := range []int{1, 32} {
		for _, tg := range targets {
			if c == 32 && !at32[tg.name] {
				continue
			}
			name := fmt.Sprintf("%s/c=%d", tg.name, c)
			b.Run(name, func(b *testing.B) { results[name] = closedLoop(b, tg.url, c) })
		}
	}
	wrk, _ := exec.LookPath("wrk")
	if wrk != "" {
		for _, tg := range targets {
			if r := results[tg.name+"/c=32"]; r != nil {
				r.wrkRPS, r.wrkP50, r.wrkP99 = runWrk(b, wrk, tg.url, 32)
			}
		}
	}
	printComposition(os.Stdout, targets, results)
}

func printComposition(w io.Writer, targets []composeTarget, rs map[string]*benchResult) {
	fmt.Fprintln(w, "\ncomposition, same box, same run (Go closed-loop load generator; wrk at c=32 when installed)")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "path\t\thops\tc\tn\tp50\tp99\treq/s\twrk req/s\t")
	for _, c := range []int{1, 32} {
		for _, tg := range targets {
			r := rs[fmt.Sprintf("%s/c=%d", tg.name, c)]
			if r == nil {
				continue
			}
			wr := "-"
			if r.wrkRPS > 0 {
				wr = fmt.Sprintf("%.0f", r.wrkRPS)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%v\t%v\t%.0f\t%s\t\n", tg.name, tg.what, tg.hops, c, r.n,
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.rps, wr)
		}
	}
	tw.Flush()

	base := rs["h1/c=1"]
	if base == nil {
		return
	}
	fmt.Fprintln(w, "\nper hop at c=1: (p50(chain N) − p50(chain 1)) / (N − 1)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	perHop := func(name string, hops int) time.Duration {
		r := rs[name+"/c=1"]
		if r == nil || hops == 0 {
			return 0
		}
		return (r.p50 - base.p50) / time.Duration(hops)
	}
	if raw, nats := rs["raw/c=1"], rs["nats/c=1"]; raw != nil && nats != nil {
		fmt.Fprintf(tw, "a raw NATS hop (nats − raw)\t%v\t\n", (nats.p50 - raw.p50).Round(time.Microsecond))
	}
	for _, row := range []struct {
		label, name string
		hops        int
		target      time.Duration
	}{
		{"across workers, chain 5", "x5", 4, 250 * time.Microsecond},
		{"across workers, chain 10", "x10", 9, 250 * time.Microsecond},
		{"within one worker, chain 5", "l5", 4, 50 * time.Microsecond},
		{"within one worker, chain 10", "l10", 9, 50 * time.Microsecond},
		{"via the router service, chain 5", "s5", 4, 0},
	} {
		if rs[row.name+"/c=1"] == nil {
			continue
		}
		d := perHop(row.name, row.hops)
		tgt := ""
		if row.target > 0 {
			tgt = fmt.Sprintf("target ≤ %v", row.target)
		}
		fmt.Fprintf(tw, "%s\t%v\t%s\t\n", row.label, d.Round(time.Microsecond), tgt)
	}
	for _, name := range []string{"fx", "fl"} {
		if r := rs[name+"/c=1"]; r != nil {
			fmt.Fprintf(tw, "fan-out to 4 (%s) − chain 1\t%v\t\n", name, (r.p50 - base.p50).Round(time.Microsecond))
		}
	}
	tw.Flush()

	b32 := rs["h1/c=32"]
	if b32 == nil {
		return
	}
	fmt.Fprintln(w, "\nthroughput at c=32 relative to chain 1 (target chain 5 ≥ 0.4×)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, name := range []string{"x5", "l5", "s5", "fx", "fl"} {
		r := rs[name+"/c=32"]
		if r == nil {
			continue
		}
		fmt.Fprintf(tw, "%s/h1\treq/s %.2fx", name, ratio(r.rps, b32.rps))
		if r.wrkRPS > 0 && b32.wrkRPS > 0 {
			fmt.Fprintf(tw, "\twrk req/s %.2fx", ratio(r.wrkRPS, b32.wrkRPS))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
