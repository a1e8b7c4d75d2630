package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/nats-io/nats.go"
)

// BenchmarkFleetVsRaw compares, in one run and on the same box, what a
// request costs through
//
//	raw:   net/http handler (the physical limit of an HTTP answer)
//	nats:  HTTP → gateway → NATS request-reply → responder (the limit of
//	       any design with one NATS hop; gateway and responder run in this
//	       process with their own connections to the nats-server process)
//	fleet: HTTP → ingress → NATS → router → NATS → replica (echo handler),
//	       every hop its own process
//	process: the fleet path to a process-runtime replica whose child is a
//	       no-op Go HTTP server (examples/diag/echoserver): fleet plus the
//	       worker → child HTTP hop over loopback
//
// at concurrency 1 and 64, reporting p50/p99 latency and req/s of a closed
// loop Go load generator (b.N requests per sub-benchmark, reported with
// b.ReportMetric), plus wrk's throughput and latency at c=64 (1 thread,
// 5 s per target, in the table only) when wrk is on PATH. A table with
// fleet/raw and fleet/nats ratios is printed at the end. The load
// generator, the gateway and the responder share this process and all of
// it shares the box's cores with the fleet: compare ratios within one run,
// not absolute numbers across runs. Run it with
//
//	go test -run '^$' -bench FleetVsRaw -benchtime 3000x ./
func BenchmarkFleetVsRaw(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	f := fleet.Start(b, bins, fleet.Options{})
	f.RequireHandlers(handlerEcho)
	d := deployment{app: "bench", handler: handlerEcho, replicas: 1, maxOngoing: 256}
	proc := processApp("benchproc", 30*time.Second, bins.Path(b, fleet.EchoServer))
	proc.Deployments[0].MaxOngoingRequests = 256
	proc.Deployments[0].HealthPath = "/healthz"
	f.Deploy(serveConfig(b, d.application(), proc))
	f.WaitApp(deployTimeout, "bench", 1, nil)
	f.WaitApp(deployTimeout, "benchproc", 1, nil)

	targets := []struct{ name, url string }{
		{"raw", startRawHTTP(b)},
		{"nats", startGateway(b, f.NATS.URL)},
		{"fleet", f.URL() + "/bench/"},
		{"process", f.URL() + "/benchproc/"},
	}
	wrk, _ := exec.LookPath("wrk")
	results := map[string]*benchResult{}
	for _, c := range []int{1, 64} {
		for _, tg := range targets {
			name := fmt.Sprintf("%s/c=%d", tg.name, c)
			b.Run(name, func(b *testing.B) {
				results[name] = closedLoop(b, tg.url, c)
			})
		}
	}
	// wrk runs once per target, outside b.Run: a sub-benchmark body runs
	// several times (b.N = 1 first), and each wrk run takes seconds.
	if wrk != "" {
		for _, tg := range targets {
			if r := results[tg.name+"/c=64"]; r != nil {
				r.wrkRPS, r.wrkP50, r.wrkP99 = runWrk(b, wrk, tg.url, 64)
			}
		}
	}
	printTable(os.Stdout, results, wrk != "")
}

// benchResult is one sub-benchmark's last (largest b.N) run.
type benchResult struct {
	n              int
	p50, p99       time.Duration
	rps            float64
	wrkRPS         float64
	wrkP50, wrkP99 time.Duration
}

// closedLoop sends b.N requests from c goroutines, each waiting for its
// answer before the next, after a short warm-up.
func closedLoop(b *testing.B, url string, c int) *benchResult {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy: nil, MaxIdleConns: 2 * c, MaxIdleConnsPerHost: 2 * c,
	}}
	defer client.CloseIdleConnections()
	one := func() error {
		resp, err := client.Post(url, "application/json", strings.NewReader(string(echoBody)))
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST %s: %s", url, resp.Status)
		}
		return err
	}
	run := func(total int, lat []time.Duration) (errs int, first error) {
		var (
			mu   sync.Mutex
			next int
			wg   sync.WaitGroup
		)
		for range c {
			wg.Go(func() {
				for {
					mu.Lock()
					i := next
					next++
					mu.Unlock()
					if i >= total {
						return
					}
					start := time.Now()
					err := one()
					if lat != nil {
						lat[i] = time.Since(start)
					}
					if err != nil {
						mu.Lock()
						errs++
						if first == nil {
							first = err
						}
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		return errs, first
	}
	if errs, err := run(max(200, 4*c), nil); errs > 0 {
		b.Fatalf("warm-up: %d errors, first: %v", errs, err)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	errs, err := run(b.N, lat)
	elapsed := time.Since(start)
	b.StopTimer()
	if errs > 0 {
		b.Errorf("%d of %d requests failed, first: %v", errs, b.N, err)
	}
	slices.Sort(lat)
	res := &benchResult{n: b.N, p50: fleet.Percentile(lat, 50), p99: fleet.Percentile(lat, 99), rps: float64(b.N) / elapsed.Seconds()}
	b.ReportMetric(float64(res.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(res.p99.Microseconds()), "p99-µs")
	b.ReportMetric(res.rps, "req/s")
	return res
}

// startRawHTTP serves an echo handler with plain net/http.
func startRawHTTP(b *testing.B) string {
	return serveHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
}

// startGateway serves HTTP by a NATS request to a responder, each with its
// own connection to the nats-server process.
func startGateway(b *testing.B, natsURL string) string {
	resp, err := nats.Connect(natsURL, nats.Name("bench-responder"))
	if err != nil {
		b.Fatalf("connect responder: %v", err)
	}
	b.Cleanup(resp.Close)
	sub, err := resp.QueueSubscribe("bench.echo", "bench", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatalf("subscribe: %v", err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := resp.Flush(); err != nil {
		b.Fatal(err)
	}
	return serveNATSGateway(b, natsURL, "bench.echo")
}

// serveNATSGateway serves HTTP by a NATS request on subject, on a
// connection of its own; an answer that is a raw chain hop's error
// (rawHopFailed) is 502.
func serveNATSGateway(b *testing.B, natsURL, subject string) string {
	gw, err := nats.Connect(natsURL, nats.Name("bench-gateway"))
	if err != nil {
		b.Fatalf("connect gateway: %v", err)
	}
	b.Cleanup(gw.Close)
	return serveHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		m, err := gw.RequestWithContext(r.Context(), subject, body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if msg, failed := rawHopFailed(m); failed {
			http.Error(w, msg, http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(m.Data)
	}))
}

func serveHTTP(b *testing.B, h http.Handler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return "http://" + ln.Addr().String() + "/"
}

// runWrk measures url with wrk (1 thread, c connections, 5 s) and parses
// its throughput and latency percentiles.
func runWrk(b *testing.B, wrk, url string, c int) (rps float64, p50, p99 time.Duration) {
	script := wrkScript(b, false)
	out, err := exec.Command(wrk, "-t1", fmt.Sprintf("-c%d", c), "-d5s", "--latency", "-s", script, url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	rps, p50, p99, err = parseWrk(string(out))
	if err != nil {
		b.Fatalf("wrk output: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		b.Errorf("wrk saw errors:\n%s", out)
	}
	return rps, p50, p99
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct = regexp.MustCompile(`^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// parseWrk reads Requests/sec and the 50%/99% lines of wrk --latency.
func parseWrk(out string) (rps float64, p50, p99 time.Duration, err error) {
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("no Requests/sec line")
	}
	if rps, err = strconv.ParseFloat(m[1], 64); err != nil {
		return 0, 0, 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := wrkPct.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		d, err := time.ParseDuration(m[2] + strings.Replace(m[3], "us", "µs", 1))
		if err != nil {
			return 0, 0, 0, err
		}
		if m[1] == "50" {
			p50 = d
		} else {
			p99 = d
		}
	}
	return rps, p50, p99, nil
}

func printTable(w io.Writer, rs map[string]*benchResult, haveWrk bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "\nfleet vs raw, same box, same run (Go closed-loop load generator; it shares the cores)")
	fmt.Fprintln(tw, "path\tc\tn\tp50\tp99\treq/s\twrk req/s\twrk p50\twrk p99\t")
	for _, c := range []int{1, 64} {
		for _, p := range []string{"raw", "nats", "fleet", "process"} {
			r := rs[fmt.Sprintf("%s/c=%d", p, c)]
			if r == nil {
				continue
			}
			wr, w50, w99 := "-", "-", "-"
			if r.wrkRPS > 0 {
				wr, w50, w99 = fmt.Sprintf("%.0f", r.wrkRPS), r.wrkP50.String(), r.wrkP99.String()
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%v\t%.0f\t%s\t%s\t%s\t\n", p, c, r.n, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.rps, wr, w50, w99)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nratios (latency > 1 and throughput < 1 mean the fleet is slower)")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, base := range []string{"raw", "nats"} {
		for _, c := range []int{1, 64} {
			fl, bs := rs[fmt.Sprintf("fleet/c=%d", c)], rs[fmt.Sprintf("%s/c=%d", base, c)]
			if fl == nil || bs == nil {
				continue
			}
			fmt.Fprintf(tw, "fleet/%s c=%d\tp50 %.2fx\tp99 %.2fx\treq/s %.2fx", base, c,
				ratio(fl.p50.Seconds(), bs.p50.Seconds()), ratio(fl.p99.Seconds(), bs.p99.Seconds()), ratio(fl.rps, bs.rps))
			if fl.wrkRPS > 0 && bs.wrkRPS > 0 {
				fmt.Fprintf(tw, "\twrk req/s %.2fx", ratio(fl.wrkRPS, bs.wrkRPS))
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "\nthe process boundary: process-runtime replica (no-op Go child) vs the Go replica (diag.Echo), same run")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range []int{1, 64} {
		pr, fl := rs[fmt.Sprintf("process/c=%d", c)], rs[fmt.Sprintf("fleet/c=%d", c)]
		if pr == nil || fl == nil {
			continue
		}
		fmt.Fprintf(tw, "process/fleet c=%d\tp50 %.2fx (+%v)\tp99 %.2fx\treq/s %.2fx", c,
			ratio(pr.p50.Seconds(), fl.p50.Seconds()), (pr.p50 - fl.p50).Round(time.Microsecond),
			ratio(pr.p99.Seconds(), fl.p99.Seconds()), ratio(pr.rps, fl.rps))
		if pr.wrkRPS > 0 && fl.wrkRPS > 0 {
			fmt.Fprintf(tw, "\twrk req/s %.2fx", ratio(pr.wrkRPS, fl.wrkRPS))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if pr, fl := rs["process/c=1"], rs["fleet/c=1"]; pr != nil && fl != nil {
		fmt.Fprintf(w, "added p50 at c=1: %v (target <= 500µs)\n", (pr.p50 - fl.p50).Round(time.Microsecond))
	}
	if !haveWrk {
		fmt.Fprintln(w, "\nwrk is not on PATH: throughput at c=64 is the Go load generator's, which is itself CPU-bound on 2 cores (see /work/shared/research/limits-this-machine.md); install wrk for server-side capacity.")
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
