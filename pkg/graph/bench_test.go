package graph_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/graph"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// BenchmarkGraph measures what the graph executor adds to the calls it
// makes, in-process (serve.Local, a no-op echo deployment), against the
// same calls made directly through handles, interleaved in the same run:
//
//	splitter_vs_call      a splitter choosing one step    vs one handle call
//	sequence3_vs_chain3   a sequence of three ($response) vs three chained handle calls
//	ensemble2_vs_fanout2  an ensemble of two + combiner   vs serve.FanOut of two + CallJSON (typed, JSON decoded)
//
// graph/direct is the ratio; in the fleet every step is a NATS round trip
// of ~100-250 µs, against which the executor's cost is the difference of
// the pair's ns per call.
func BenchmarkGraph(b *testing.B) {
	reg := serve.NewRegistry()
	if err := reg.Register("echo", func(context.Context, serve.Init) (serve.Handler, error) {
		return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
			return &serve.Response{Status: 200, Body: req.Body}, nil
		}), nil
	}); err != nil {
		b.Fatal(err)
	}
	sc, err := config.Parse([]byte(`applications:
- name: g
  route_prefix: /g
  deployments: [{name: A, handler: echo}, {name: B, handler: echo}, {name: C, handler: echo}]
  graph:
    nodes:
    - {name: root, type: splitter, steps: [{deployment: A, weight: 100}]}
    - {name: seq, type: sequence, steps: [{deployment: A}, {deployment: B, data: $response}, {deployment: C, data: $response}]}
    - {name: ens, type: ensemble, steps: [{deployment: A}, {deployment: B}], combiner: {deployment: C}}
`))
	if err != nil {
		b.Fatal(err)
	}
	app := sc.Applications[0]
	l, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	compile := func(root string) *graph.Graph {
		a := app
		g := *app.Graph
		g.Nodes = append([]config.GraphNode(nil), g.Nodes...)
		for i := range g.Nodes {
			switch {
			case root == "root":
			case g.Nodes[i].Name == "root":
				g.Nodes[i].Name = "unused"
			case g.Nodes[i].Name == root:
				g.Nodes[i].Name = "root"
			}
		}
		a.Graph = &g
		cg, err := graph.Compile(a)
		if err != nil {
			b.Fatal(err)
		}
		return cg
	}
	body := []byte(`{"text":"a small request body"}`)
	ctx := context.Background()
	req := &serve.Request{Method: "POST", Path: "/", Body: body, RequestID: "b"}
	o := graph.Options{Caller: l}
	ha, hb, hc := l.Handle("A"), l.Handle("B"), l.Handle("C")
	// pair times base and graph interleaved, 16 calls of one then 16 of
	// the other, so that this shared machine's bursts of load hit both
	// alike; it reports each side's ns per call and their ratio.
	pair := func(name string, base, graphed func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var tb, tg time.Duration
			const batch = 16
			for b.Loop() {
				start := time.Now()
				for range batch {
					if err := base(); err != nil {
						b.Fatal(err)
					}
				}
				mid := time.Now()
				for range batch {
					if err := graphed(); err != nil {
						b.Fatal(err)
					}
				}
				tb, tg = tb+mid.Sub(start), tg+time.Since(mid)
			}
			n := float64(b.N * batch)
			b.ReportMetric(float64(tb.Nanoseconds())/n, "direct-ns/call")
			b.ReportMetric(float64(tg.Nanoseconds())/n, "graph-ns/call")
			b.ReportMetric(float64(tg)/float64(tb), "graph/direct")
		})
	}
	splitter, seq, ens := compile("root"), compile("seq"), compile("ens")
	pair("splitter_vs_call", func() error {
		_, err := ha.Call(ctx, &serve.Request{Body: body})
		return err
	}, func() error {
		_, err := splitter.Serve(ctx, req, o)
		return err
	})
	pair("sequence3_vs_chain3", func() error {
		r, err := ha.Call(ctx, &serve.Request{Body: body})
		if err != nil {
			return err
		}
		if r, err = hb.Call(ctx, &serve.Request{Body: r.Body}); err != nil {
			return err
		}
		_, err = hc.Call(ctx, &serve.Request{Body: r.Body})
		return err
	}, func() error {
		_, err := seq.Serve(ctx, req, o)
		return err
	})
	pair("ensemble2_vs_fanout2", func() error {
		outs, err := serve.FanOut[map[string]any](ctx, []*serve.Handle{ha, hb}, "", map[string]any{"text": "a small request body"})
		if err != nil {
			return err
		}
		_, err = serve.CallJSON[map[string]any](ctx, hc, "", map[string]any{"A": outs[0], "B": outs[1]})
		return err
	}, func() error {
		_, err := ens.Serve(ctx, req, o)
		return err
	})
}
