package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/config"
)

// graphOf is app name whose graph is one node of type typ over n diag.Chain
// ends G1..Gn (Gi on the worker labelled zones[(i-1) % len]): a splitter
// weighs them 95/5, a sequence passes each one's answer to the next.
func graphOf(name, typ string, n int, zones ...string) config.Application {
	app := config.Application{Name: name, RoutePrefix: "/" + name}
	node := config.GraphNode{Name: config.GraphRoot, Type: typ}
	for i := 1; i <= n; i++ {
		d := fmt.Sprintf("G%d", i)
		app.Deployments = append(app.Deployments, composeDeployment(d, handlerChain, zones[(i-1)%len(zones)], map[string]string{}))
		s := config.GraphStep{Deployment: d}
		switch {
		case typ == config.NodeSplitter:
			w := 95
			if i > 1 {
				w = 5
			}
			s.Weight = &w
		case i > 1:
			s.Data = config.DataResponse
		}
		node.Steps = append(node.Steps, s)
	}
	app.Graph = &config.Graph{Nodes: []config.GraphNode{node}}
	return app
}

// BenchmarkGraph is what a graph costs in the fleet, against the same
// calls without one, measured in interleaved rounds of the same run
// (`go test -run '^$' -bench BenchmarkGraph -benchtime 2000x ./e2e`):
//
//	gs vs h1: a splitter (95/5 over two deployments) vs an ingress
//	          deployment — both one round trip from the ingress to a replica
//	g3 vs x3: a sequence of three steps run by the ingress (three round
//	          trips from it) vs a chain of three through handles across two
//	          workers (ingress → C1 → C2 → C3, one round trip per hop)
//
// It prints p50 at c=1 and req/s at c=32 per round and the medians of the
// ratios.
func BenchmarkGraph(b *testing.B) {
	if testing.Short() {
		b.Skip("e2e: skipped in -short mode")
	}
	f := fleet.Start(b, bins, fleet.Options{Workers: 2, WorkerEnv: zoned("a", "b")})
	f.RequireHandlers(handlerChain)
	f.Deploy(serveConfig(b, chainOf("h1", 1, "a"), graphOf("gs", config.NodeSplitter, 2, "a"),
		chainOf("x3", 3, "a", "b"), graphOf("g3", config.NodeSequence, 3, "a", "b")))
	for app, n := range map[string]int{"h1": 1, "gs": 2, "x3": 3, "g3": 3} {
		f.WaitApp(deployTimeout, app, n, nil)
	}
	const rounds = 3
	names := []string{"h1", "gs", "x3", "g3"}
	p50 := map[string][]float64{} // µs, by round
	rps := map[string][]float64{}
	for _, name := range names {
		p50[name], rps[name] = make([]float64, rounds), make([]float64, rounds)
	}
	for r := range rounds {
		for _, name := range names {
			url := f.URL() + "/" + name + "/"
			// b.Run may call the function more than once (b.N = 1 first):
			// the last call, the measured one, is kept.
			b.Run(fmt.Sprintf("%s/c=1/round%d", name, r), func(b *testing.B) {
				p50[name][r] = float64(closedLoop(b, url, 1).p50.Microseconds())
			})
			b.Run(fmt.Sprintf("%s/c=32/round%d", name, r), func(b *testing.B) { rps[name][r] = closedLoop(b, url, 32).rps })
		}
	}
	ratio := func(a, base string) (lat, thr float64) {
		var ls, ts []float64
		for r := range rounds {
			ls = append(ls, p50[a][r]/p50[base][r])
			ts = append(ts, rps[a][r]/rps[base][r])
		}
		return median(ls), median(ts)
	}
	w := os.Stdout
	fmt.Fprintf(w, "\n%-36s %14s %14s   (medians of %d rounds)\n", "", "p50 µs, c=1", "req/s, c=32", rounds)
	for _, name := range names {
		fmt.Fprintf(w, "%-36s %14.0f %14.0f\n", name, median(p50[name]), median(rps[name]))
	}
	l, t := ratio("gs", "h1")
	fmt.Fprintf(w, "splitter / ingress deployment        p50 %.2fx   req/s %.2fx\n", l, t)
	l, t = ratio("g3", "x3")
	fmt.Fprintf(w, "sequence of 3 / chain of 3           p50 %.2fx   req/s %.2fx\n", l, t)
}
