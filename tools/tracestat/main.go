// Command tracestat reads a Go execution trace (runtime/trace, or GET
// /debug/pprof/trace on a jetserve ops port) and prints, for each kind of
// goroutine (named by the function it started in), how often it was
// woken, how long it waited runnable, ran and sat in syscalls — per
// request, given how many requests the trace holds. It answers "where
// does a request wait" at low load, which CPU profiles cannot:
//
//	go run ./tools/tracestat -requests 2874 worker-a.trace
//
// BenchmarkComposition writes such traces with JETSERVE_BENCH_TRACES=dir
// (docs/performance.md).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

func main() {
	requests := flag.Float64("requests", 1, "requests the trace holds: the table is per request")
	minRun := flag.Float64("min-run", 0.3, "leave out goroutine kinds that ran less than this many µs per request")
	flag.Parse()
	if flag.NArg() != 1 || *requests <= 0 {
		fmt.Fprintln(os.Stderr, "usage: tracestat [-requests N] [-min-run µs] TRACE")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracestat:", err)
		os.Exit(1)
	}
	defer f.Close()
	kinds, err := summarize(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracestat:", err)
		os.Exit(1)
	}
	print(os.Stdout, kinds, *requests, *minRun)
}

// print writes kinds as a table, per request, busiest first.
func print(w io.Writer, kinds []*kind, requests, minRun float64) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "goroutine (started in)\twakes\twaiting µs\trunning µs\tsyscalls\tin syscalls µs\twoken mostly by\t")
	per := func(ns int64) float64 { return float64(ns) / requests / 1e3 }
	for _, k := range kinds {
		if per(k.run) < minRun {
			continue
		}
		by, n := k.topWaker()
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%s (%.2f)\t\n", short(k.root, 60), float64(k.wakes)/requests,
			per(k.wait), per(k.run), float64(k.syscalls)/requests, per(k.sys), short(by, 50), float64(n)/requests)
	}
	tw.Flush()
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n+1:]
}
