package graph_test

import (
	"context"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/graph"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// BenchmarkGraph measures what the graph executor adds to the calls it
// makes, in-process (serve.Local, a no-op echo deployment), against the
// same calls made directly through handles in the same run:
//
//	direct/1      one handle call                 vs  splitter/1: a splitter choosing one step
//	direct/3      three chained handle calls      vs  sequence/3: a sequence of three ($response)
//	fanout/2      serve.FanOut of two + one call  vs  ensemble/2: an ensemble of two and its combiner
//
// The ratio that matters is graph/direct; in the fleet every step is a
// NATS round trip of ~100-250 µs, against which the executor's cost shows
// as the difference of the pairs here.
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
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("direct/1", func() error {
		_, err := ha.Call(ctx, &serve.Request{Body: body})
		return err
	})
	splitter := compile("root")
	run("splitter/1", func() error {
		_, err := splitter.Serve(ctx, req, o)
		return err
	})
	run("direct/3", func() error {
		r, err := ha.Call(ctx, &serve.Request{Body: body})
		if err != nil {
			return err
		}
		if r, err = hb.Call(ctx, &serve.Request{Body: r.Body}); err != nil {
			return err
		}
		_, err = hc.Call(ctx, &serve.Request{Body: r.Body})
		return err
	})
	seq := compile("seq")
	run("sequence/3", func() error {
		_, err := seq.Serve(ctx, req, o)
		return err
	})
	run("fanout/2", func() error {
		outs, err := serve.FanOut[map[string]any](ctx, []*serve.Handle{ha, hb}, "", map[string]any{"text": "a small request body"})
		if err != nil {
			return err
		}
		_, err = serve.CallJSON[map[string]any](ctx, hc, "", map[string]any{"A": outs[0], "B": outs[1]})
		return err
	})
	ens := compile("ens")
	run("ensemble/2", func() error {
		_, err := ens.Serve(ctx, req, o)
		return err
	})
}
