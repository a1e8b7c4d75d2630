package graph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/graph"
	"github.com/jetserve/jetserve/pkg/graph/graphtest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/serve/servetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// registry holds the deployments the graphs below call.
func registry(t *testing.T, cancelled chan<- string) *serve.Registry {
	t.Helper()
	return graphtest.Registry(t, map[string]serve.Constructor{
		"upper": graphtest.Upper,
		"suffix": func(_ context.Context, in serve.Init) (serve.Handler, error) {
			return serve.Methods{
				"": func(_ context.Context, req *serve.Request) (*serve.Response, error) {
					return text(string(req.Body) + "!" + in.Deployment)
				},
				"ask": func(_ context.Context, req *serve.Request) (*serve.Response, error) {
					return text(string(req.Body) + "?" + in.Deployment)
				},
			}, nil
		},
		"name": func(_ context.Context, in serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(context.Context, *serve.Request) (*serve.Response, error) {
				return &serve.Response{Status: 200, Header: http.Header{"X-Version": {in.Deployment}}, Body: []byte(in.Deployment)}, nil
			}), nil
		},
		"lang": func(context.Context, serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
				lang := "en"
				if strings.Contains(string(req.Body), "bonjour") {
					lang = "fr"
				}
				return serve.JSON(map[string]any{"language": lang, "text": string(req.Body)})
			}), nil
		},
		"echo": func(context.Context, serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
				return &serve.Response{Status: 200, Header: http.Header{"X-Content-Type": {req.Header.Get("Content-Type")}}, Body: req.Body}, nil
			}), nil
		},
		"fail": func(context.Context, serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(context.Context, *serve.Request) (*serve.Response, error) {
				return nil, serve.Errorf(http.StatusUnprocessableEntity, "cannot take this")
			}), nil
		},
		"slow": func(_ context.Context, in serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(ctx context.Context, _ *serve.Request) (*serve.Response, error) {
				<-ctx.Done()
				if cancelled != nil {
					cancelled <- in.Deployment
				}
				return nil, ctx.Err()
			}), nil
		},
		"chunks": func(context.Context, serve.Init) (serve.Handler, error) { return chunks{}, nil },
		"meta": func(context.Context, serve.Init) (serve.Handler, error) {
			return serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
				_, dl := ctx.Deadline()
				return serve.JSON(map[string]any{"rid": req.RequestID, "tp": req.Header.Get("Traceparent"), "deadline": dl})
			}), nil
		},
	})
}

func text(s string) (*serve.Response, error) {
	return &serve.Response{Status: 200, Body: []byte(s)}, nil
}

// chunks streams its body's words one per chunk.
type chunks struct{}

func (chunks) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	return &serve.Response{Status: 200, Body: req.Body}, nil
}

func (chunks) ServeStream(_ context.Context, req *serve.Request, w serve.StreamWriter) error {
	for _, f := range strings.Fields(string(req.Body)) {
		if err := w.Write([]byte(f)); err != nil {
			return err
		}
	}
	return nil
}

// app parses a graph application over deployments named after their
// handlers (plus the extra ones given as name=handler).
func app(t *testing.T, nodes string, extra ...string) config.Application {
	t.Helper()
	deps := []string{"{name: upper, handler: upper}", "{name: suffix, handler: suffix}", "{name: lang, handler: lang}",
		"{name: echo, handler: echo}", "{name: fail, handler: fail}", "{name: slow, handler: slow}", "{name: chunks, handler: chunks}", "{name: meta, handler: meta}"}
	for _, e := range extra {
		n, h, _ := strings.Cut(e, "=")
		deps = append(deps, fmt.Sprintf("{name: %s, handler: %s}", n, h))
	}
	doc := "applications:\n- name: g\n  route_prefix: /g\n  deployments: [" + strings.Join(deps, ", ") + "]\n  graph: {nodes: " + nodes + "}\n"
	sc, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse = %v\n%s", err, doc)
	}
	return sc.Applications[0]
}

// serveGraph compiles a's graph and runs it over serve.Local.
func serveGraph(t *testing.T, a config.Application, cancelled chan<- string) (*graph.Graph, graph.Options) {
	t.Helper()
	l := servetest.Local(t, registry(t, cancelled), a)
	g, err := graph.Compile(a)
	if err != nil {
		t.Fatalf("Compile = %v", err)
	}
	return g, graph.Options{Caller: l}
}

func call(t *testing.T, g *graph.Graph, o graph.Options, body string) (*serve.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return g.Serve(ctx, &serve.Request{Method: "POST", Path: "/", Body: []byte(body), RequestID: "r1"}, o)
}

func TestNodes(t *testing.T) {
	tests := []struct {
		name, nodes, body, want string
	}{
		{"sequence passes $response on", `[{name: root, type: sequence, steps: [{deployment: upper}, {deployment: suffix, data: $response}]}]`,
			"hi", "HI!suffix"},
		{"sequence steps get the node's input by default", `[{name: root, type: sequence, steps: [{deployment: upper}, {deployment: suffix}]}]`,
			"hi", "hi!suffix"},
		{"a step's method", `[{name: root, type: sequence, steps: [{deployment: suffix, method: ask}]}]`, "hi", "hi?suffix"},
		{"ensemble hands its outputs to the combiner", `[{name: root, type: ensemble, steps: [{deployment: lang}, {name: shout, deployment: upper}], combiner: {deployment: echo}}]`,
			"hello", `{"lang":{"language":"en","text":"hello"},"shout":"HELLO"}`},
		{"switch takes the first condition that holds", `[{name: root, type: switch, steps: [
			{deployment: upper, condition: '$.mode == "loud"'}, {deployment: suffix, condition: '$.mode == "ask"', method: ask}, {deployment: echo}]}]`,
			`{"mode":"ask"}`, `{"mode":"ask"}?suffix`},
		{"switch falls to its default", `[{name: root, type: switch, steps: [{deployment: upper, condition: '$.mode == "loud"'}, {deployment: echo}]}]`,
			`{"mode":"quiet"}`, `{"mode":"quiet"}`},
		{"switch on a step's output, through nodes", `[
			{name: root, type: sequence, steps: [{deployment: lang}, {node: route, data: $response}]},
			{name: route, type: switch, steps: [{deployment: upper, condition: '$.language == "fr"'}, {node: tail}]},
			{name: tail, type: sequence, steps: [{deployment: suffix}]}]`,
			"bonjour", `{"LANGUAGE":"FR","TEXT":"BONJOUR"}`},
		{"switch default on a step's output", `[
			{name: root, type: sequence, steps: [{deployment: lang}, {node: route, data: $response}]},
			{name: route, type: switch, steps: [{deployment: upper, condition: '$.language == "fr"'}, {node: tail}]},
			{name: tail, type: sequence, steps: [{deployment: suffix}]}]`,
			"hello", `{"language":"en","text":"hello"}!suffix`},
		{"splitter at 0/100", `[{name: root, type: splitter, steps: [{deployment: upper, weight: 0}, {deployment: suffix, weight: 100}]}]`,
			"x", "x!suffix"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, o := serveGraph(t, app(t, tc.nodes), nil)
			resp, err := call(t, g, o, tc.body)
			if err != nil {
				t.Fatalf("Serve(%s) = %v", tc.body, err)
			}
			if string(resp.Body) != tc.want || resp.Status != 200 {
				t.Errorf("Serve(%s) = %d %s, want 200 %s", tc.body, resp.Status, resp.Body, tc.want)
			}
		})
	}
}

// TestStepsCarryTheRequestsContext: every step, also one given another
// body than the client's (a sequence's $response, an ensemble's
// combiner), gets the request id, the trace context and the deadline.
func TestStepsCarryTheRequestsContext(t *testing.T) {
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	want := `{"deadline":true,"rid":"r1","tp":"` + tp + `"}`
	for name, nodes := range map[string]string{
		"sequence":           `[{name: root, type: sequence, steps: [{deployment: meta}]}]`,
		"sequence $response": `[{name: root, type: sequence, steps: [{deployment: upper}, {deployment: meta, data: $response}]}]`,
		"ensemble combiner":  `[{name: root, type: ensemble, steps: [{deployment: upper}, {deployment: suffix}], combiner: {deployment: meta}}]`,
	} {
		t.Run(name, func(t *testing.T) {
			g, o := serveGraph(t, app(t, nodes), nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := g.Serve(ctx, &serve.Request{Method: "POST", Path: "/", Body: []byte("hi"), RequestID: "r1",
				Header: http.Header{"Traceparent": {tp}}}, o)
			if err != nil {
				t.Fatalf("Serve = %v", err)
			}
			if string(resp.Body) != want {
				t.Errorf("the last step saw %s, want %s", resp.Body, want)
			}
		})
	}
}

func TestCombinerGetsJSON(t *testing.T) {
	g, o := serveGraph(t, app(t, `[{name: root, type: ensemble, steps: [{deployment: upper}], combiner: {deployment: echo}}]`), nil)
	resp, err := call(t, g, o, "plain text")
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("X-Content-Type"); ct != "application/json" {
		t.Errorf("combiner's Content-Type = %q, want application/json", ct)
	}
	var m map[string]string
	if err := json.Unmarshal(resp.Body, &m); err != nil || m["upper"] != "PLAIN TEXT" {
		t.Errorf("combiner input = %s (%v), want {\"upper\":\"PLAIN TEXT\"}: an output that is not JSON is a string", resp.Body, err)
	}
}

// TestSplitterFollowsTheWeights: 95/5 over many requests lands within a
// tight bound of 5 %, every choice is reported, and the answer is the
// chosen step's.
func TestSplitterFollowsTheWeights(t *testing.T) {
	a := app(t, `[{name: root, type: splitter, steps: [{name: v1, deployment: V1, weight: 95}, {name: v2, deployment: V2, weight: 5}]}]`,
		"V1=name", "V2=name")
	g, o := serveGraph(t, a, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	var mu sync.Mutex
	seen := map[string]int{}
	o.IntN = rng.IntN
	o.OnSplit = func(node, step string) {
		mu.Lock()
		seen[node+"/"+step]++
		mu.Unlock()
	}
	answered := map[string]int{}
	const n = 4000
	for range n {
		resp, err := call(t, g, o, "x")
		if err != nil {
			t.Fatal(err)
		}
		answered[resp.Header.Get("X-Version")]++
	}
	if seen["root/v1"]+seen["root/v2"] != n || answered["V1"] != seen["root/v1"] || answered["V2"] != seen["root/v2"] {
		t.Fatalf("splits = %v, answers = %v: want every request reported and answered by its choice", seen, answered)
	}
	share := float64(seen["root/v2"]) / n
	// 5 % of 4000 is 200 with a standard deviation of 13.8: ±3.5σ.
	if share < 0.038 || share > 0.062 {
		t.Errorf("v2's share = %.3f, want 0.05 ± 0.012", share)
	}
	if want := []graph.Branch{{Step: "v1", Target: "V1", Weight: 95}, {Step: "v2", Target: "V2", Weight: 5}}; fmt.Sprint(g.Splitters()[0].Branches) != fmt.Sprint(want) {
		t.Errorf("Splitters() = %v, want %v", g.Splitters(), want)
	}
}

// TestAFailedStepFailsTheRequest: the request fails with the step's status
// and code, the step named — never a 200 with an error inside.
func TestAFailedStepFailsTheRequest(t *testing.T) {
	for _, tc := range []struct{ name, nodes, step string }{
		{"in a sequence", `[{name: root, type: sequence, steps: [{deployment: upper}, {deployment: fail, data: $response}, {deployment: suffix, data: $response}]}]`, "root/fail"},
		{"in a nested node", `[{name: root, type: sequence, steps: [{node: inner}]}, {name: inner, type: switch, steps: [{name: bad, deployment: fail, condition: '$'}, {deployment: echo}]}]`, "inner/bad"},
		{"the combiner", `[{name: root, type: ensemble, steps: [{deployment: upper}], combiner: {name: comb, deployment: fail}}]`, "root/comb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, o := serveGraph(t, app(t, tc.nodes), nil)
			resp, err := call(t, g, o, `"x"`)
			se, ok := graph.AsStepError(err)
			if !ok {
				t.Fatalf("Serve = %v, %v; want a *StepError", resp, err)
			}
			if se.Step != tc.step || se.Err.Status != http.StatusUnprocessableEntity || se.Err.Code != protocol.ErrBadRequest || !strings.Contains(se.Err.Msg, "cannot take this") {
				t.Errorf("StepError = %s %d %s %q, want %s 422 bad_request naming the failure", se.Step, se.Err.Status, se.Err.Code, se.Err.Msg, tc.step)
			}
			if serve.AsError(err).Status != http.StatusUnprocessableEntity {
				t.Errorf("serve.AsError(err).Status = %d, want 422", serve.AsError(err).Status)
			}
		})
	}
}

// TestEnsembleFailureCancelsTheOthers: the first failure fails the request
// and the steps still running are cancelled.
func TestEnsembleFailureCancelsTheOthers(t *testing.T) {
	cancelled := make(chan string, 1)
	g, o := serveGraph(t, app(t, `[{name: root, type: ensemble, steps: [{deployment: slow}, {deployment: fail}], combiner: {deployment: echo}}]`), cancelled)
	_, err := call(t, g, o, "x")
	se, ok := graph.AsStepError(err)
	if !ok || se.Step != "root/fail" {
		t.Fatalf("Serve = %v, want the failure of root/fail", err)
	}
	select {
	case d := <-cancelled:
		if d != "slow" {
			t.Errorf("cancelled %s, want slow", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the slow step was not cancelled")
	}
}

func TestUnknownDeploymentIsAStepError(t *testing.T) {
	a := app(t, `[{name: root, type: sequence, steps: [{deployment: echo}]}]`)
	g, o := serveGraph(t, a, nil)
	a.Graph.Nodes[0].Steps[0].Deployment = "gone" // the config changed under a compiled graph
	g2, err := graph.Compile(a)
	if err != nil {
		t.Fatal(err)
	}
	_, err = call(t, g2, o, "x")
	se, ok := graph.AsStepError(err)
	if !ok || se.Step != "root/gone" || se.Err.Status != http.StatusNotFound {
		t.Errorf("Serve = %v, want a 404 of step root/gone", err)
	}
	if _, err := call(t, g, o, "x"); err != nil {
		t.Errorf("Serve = %v", err)
	}
}

func TestStreamStreamsTheAnsweringStep(t *testing.T) {
	g, o := serveGraph(t, app(t, `[{name: root, type: sequence, steps: [{deployment: upper}, {deployment: chunks, data: $response}]}]`), nil)
	var rec serve.StreamRecorder
	err := g.Stream(context.Background(), &serve.Request{Method: "POST", Path: "/", Body: []byte("a b c")}, sink{&rec}, o)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rec.Strings(), "|"); got != "A|B|C" || rec.Status != 200 {
		t.Errorf("streamed %d %q, want 200 A|B|C", rec.Status, got)
	}
	// A step that fails before the answering one: nothing streamed.
	g, o = serveGraph(t, app(t, `[{name: root, type: sequence, steps: [{deployment: fail}, {deployment: chunks}]}]`), nil)
	var rec2 serve.StreamRecorder
	err = g.Stream(context.Background(), &serve.Request{Method: "POST", Path: "/", Body: []byte("a b")}, sink{&rec2}, o)
	if se, ok := graph.AsStepError(err); !ok || se.Step != "root/fail" || rec2.Status != 0 {
		t.Errorf("Stream = %v with head %d, want root/fail's error and nothing streamed", err, rec2.Status)
	}
}

type sink struct{ w serve.StreamWriter }

func (s sink) Head(status int, h http.Header) error { return s.w.WriteHead(status, h) }
func (s sink) Chunk(b []byte) error                 { return s.w.Write(b) }

func TestCompileWithoutGraph(t *testing.T) {
	g, err := graph.Compile(config.Application{Name: "a", Ingress: "x"})
	if g != nil || err != nil {
		t.Errorf("Compile(no graph) = %v, %v; want nil, nil", g, err)
	}
}
