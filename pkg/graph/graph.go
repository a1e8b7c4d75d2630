// Package graph runs an application's declarative request flow — a
// config.Graph, with KServe InferenceGraph's node types — over a
// serve.Caller, where the request enters: the ingress (its embedded
// router's caller), or serve.Local in a plain go test.
//
// A request enters the node named root with the request's body as its
// input. Nodes:
//
//   - sequence: the steps run one after the other; each gets the node's
//     input ($request, the default) or the previous step's output
//     ($response); the node answers with the last step's answer.
//   - ensemble: the steps run in parallel on the node's input; their
//     outputs, as one JSON object keyed by step name (an output that is
//     not JSON becomes a JSON string), go to the combiner, whose answer is
//     the node's.
//   - switch: the first step whose condition (package condition) holds on
//     the node's input runs; else the last step, the default.
//   - splitter: one step, chosen at random by weight (a canary: 95/5),
//     runs; Options.OnSplit is told which.
//
// A step calls a deployment of the application — a handle call with the
// request's method, path, query and headers, the step's input as body and
// the step's method, if any — or runs another node. Failure semantics are
// fixed: a failed step fails the request with its status and code, the
// step named (*StepError); in an ensemble the first failure cancels the
// other steps. Streaming (Stream) streams the answer of the step that
// answers for the graph; the steps before it are called whole.
//
// A Graph is immutable and safe for concurrent use; Serve and Stream
// start goroutines only for an ensemble's steps and wait for them.
package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/graph/condition"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"golang.org/x/sync/errgroup"
)

// Graph is a compiled application graph.
type Graph struct {
	app  string
	root *node
	// Splitters lists every splitter node with its steps and weights, in
	// graph order (for the status's traffic split).
	splitters []Splitter
}

// Splitter is a splitter node's configured split.
type Splitter struct {
	Node     string
	Branches []Branch
}

// Branch is one step of a splitter.
type Branch struct {
	Step string
	// Target is the deployment or node the step calls.
	Target string
	Weight int
}

type node struct {
	name     string
	typ      string
	steps    []*step
	combiner *step
}

type step struct {
	name       string
	deployment string
	method     string
	node       *node
	response   bool // data: $response
	cond       *condition.Expr
	weight     int
}

// Compile builds the graph of app (validated by config.Parse); it returns
// nil for an application without one.
func Compile(app config.Application) (*Graph, error) {
	if app.Graph == nil {
		return nil, nil
	}
	nodes := map[string]*node{}
	for _, n := range app.Graph.Nodes {
		if _, dup := nodes[n.Name]; dup {
			return nil, fmt.Errorf("graph of %s: duplicate node %q", app.Name, n.Name)
		}
		nodes[n.Name] = &node{name: n.Name, typ: n.Type}
	}
	g := &Graph{app: app.Name}
	mk := func(n config.GraphNode, s config.GraphStep) (*step, error) {
		st := &step{name: s.StepName(), deployment: s.Deployment, method: s.Method, response: s.Data == config.DataResponse}
		if s.Node != "" {
			st.node = nodes[s.Node]
			if st.node == nil {
				return nil, fmt.Errorf("graph of %s: node %s calls unknown node %q", app.Name, n.Name, s.Node)
			}
		}
		if s.Condition != "" {
			c, err := condition.Parse(s.Condition)
			if err != nil {
				return nil, fmt.Errorf("graph of %s: node %s, step %s: %w", app.Name, n.Name, st.name, err)
			}
			st.cond = c
		}
		if s.Weight != nil {
			st.weight = *s.Weight
		}
		return st, nil
	}
	for _, n := range app.Graph.Nodes {
		cn := nodes[n.Name]
		for _, s := range n.Steps {
			st, err := mk(n, s)
			if err != nil {
				return nil, err
			}
			cn.steps = append(cn.steps, st)
		}
		if n.Combiner != nil {
			st, err := mk(n, *n.Combiner)
			if err != nil {
				return nil, err
			}
			cn.combiner = st
		}
		if n.Type == config.NodeEnsemble && cn.combiner == nil {
			return nil, fmt.Errorf("graph of %s: ensemble %s has no combiner", app.Name, n.Name)
		}
		if n.Type == config.NodeSplitter {
			sp := Splitter{Node: n.Name}
			for _, st := range cn.steps {
				target := st.deployment
				if st.node != nil {
					target = st.node.name
				}
				sp.Branches = append(sp.Branches, Branch{Step: st.name, Target: target, Weight: st.weight})
			}
			g.splitters = append(g.splitters, sp)
		}
	}
	g.root = nodes[config.GraphRoot]
	if g.root == nil {
		return nil, fmt.Errorf("graph of %s: no node named %q", app.Name, config.GraphRoot)
	}
	return g, nil
}

// Splitters returns the graph's splitter nodes with their configured
// weights.
func (g *Graph) Splitters() []Splitter { return g.splitters }

// Options are what one run needs.
type Options struct {
	// Caller calls the application's deployments. Stream falls back to a
	// whole answer when it is not a serve.StreamCaller.
	Caller serve.Caller
	// OnSplit, if set, is told every splitter's choice: the node and the
	// chosen step. It must not block.
	OnSplit func(node, step string)
	// IntN, if set, picks a number in [0, n) for a splitter; default
	// math/rand/v2's.
	IntN func(n int) int
}

// StepError is a failed step: the request fails with its status and code.
type StepError struct {
	// Step names the failed step: "<node>/<step>".
	Step string
	Err  *serve.Error
}

func (e *StepError) Error() string { return fmt.Sprintf("step %s: %v", e.Step, e.Err) }

// Unwrap returns the step's *serve.Error.
func (e *StepError) Unwrap() error { return e.Err }

// Serve runs the graph for req and returns the answer of the step that
// answers for it (status, headers, body), or a *StepError.
func (g *Graph) Serve(ctx context.Context, req *serve.Request, o Options) (*serve.Response, error) {
	r := run{g: g, o: o, req: req}
	return r.node(ctx, g.root, req.Body, nil)
}

// Stream runs the graph for req, streaming the answer of the step that
// answers for it to sink: an error before the head is returned as a
// *StepError and nothing reached sink; one after it once the chunks
// before it were written.
func (g *Graph) Stream(ctx context.Context, req *serve.Request, sink serve.StreamSink, o Options) error {
	r := run{g: g, o: o, req: req}
	_, err := r.node(ctx, g.root, req.Body, sink)
	return err
}

// run is one request through the graph.
type run struct {
	g   *Graph
	o   Options
	req *serve.Request
}

// node runs n on input. With a sink, the step that answers for n streams
// to it and the returned response is nil.
func (r run) node(ctx context.Context, n *node, input []byte, sink serve.StreamSink) (*serve.Response, error) {
	switch n.typ {
	case config.NodeSequence:
		var prev *serve.Response
		for i, s := range n.steps {
			in := input
			if s.response && prev != nil {
				in = prev.Body
			}
			var out serve.StreamSink
			if i == len(n.steps)-1 {
				out = sink
			}
			resp, err := r.step(ctx, n, s, in, out)
			if err != nil {
				return nil, err
			}
			prev = resp
		}
		return prev, nil
	case config.NodeEnsemble:
		outs := make([]json.RawMessage, len(n.steps))
		eg, ectx := errgroup.WithContext(ctx)
		for i, s := range n.steps {
			eg.Go(func() error {
				resp, err := r.step(ectx, n, s, input, nil)
				if err != nil {
					return err
				}
				outs[i] = asJSON(resp.Body)
				return nil
			})
		}
		if err := eg.Wait(); err != nil {
			return nil, err // the first failure; the others were cancelled by it
		}
		merged := make(map[string]json.RawMessage, len(n.steps))
		for i, s := range n.steps {
			merged[s.name] = outs[i]
		}
		body, err := json.Marshal(merged)
		if err != nil {
			return nil, &StepError{Step: n.name + "/" + n.combiner.name, Err: serve.AsError(fmt.Errorf("encode the ensemble's outputs: %w", err))}
		}
		return r.step(ctx, n, n.combiner, body, sink)
	case config.NodeSwitch:
		var data any
		if len(input) > 0 && json.Unmarshal(input, &data) != nil {
			data = nil
		}
		chosen := n.steps[len(n.steps)-1]
		for _, s := range n.steps[:len(n.steps)-1] {
			if s.cond.EvalValue(data) {
				chosen = s
				break
			}
		}
		return r.step(ctx, n, chosen, input, sink)
	case config.NodeSplitter:
		intN := r.o.IntN
		if intN == nil {
			intN = rand.IntN
		}
		x := intN(100)
		chosen := n.steps[len(n.steps)-1]
		for _, s := range n.steps {
			if x < s.weight {
				chosen = s
				break
			}
			x -= s.weight
		}
		if r.o.OnSplit != nil {
			r.o.OnSplit(n.name, chosen.name)
		}
		return r.step(ctx, n, chosen, input, sink)
	}
	return nil, &StepError{Step: n.name, Err: &serve.Error{Status: http.StatusInternalServerError, Code: protocol.ErrInternal,
		Msg: fmt.Sprintf("node %s has unknown type %q", n.name, n.typ)}}
}

// step runs s of node n on input (streaming to sink, if set).
func (r run) step(ctx context.Context, n *node, s *step, input []byte, sink serve.StreamSink) (*serve.Response, error) {
	if s.node != nil {
		return r.node(ctx, s.node, input, sink)
	}
	name := n.name + "/" + s.name
	req := *r.req
	req.Call = s.method
	if !sameBytes(input, r.req.Body) {
		// Another body than the client's: its length and, for a
		// combiner's input, its type are not the client's.
		req.Header = req.Header.Clone()
		if req.Header == nil {
			req.Header = http.Header{}
		}
		req.Header.Del("Content-Length")
		if s == n.combiner {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	req.Body = input
	if sink != nil {
		if sc, ok := r.o.Caller.(serve.StreamCaller); ok {
			if err := sc.Stream(ctx, r.g.app, s.deployment, &req, sink); err != nil {
				return nil, stepError(name, err)
			}
			return nil, nil
		}
	}
	resp, err := r.o.Caller.Call(ctx, r.g.app, s.deployment, &req)
	if err == nil && resp.Status >= 400 {
		code := protocol.ErrorCode(resp.Header.Get(protocol.HdrError))
		if code == "" {
			code = protocol.ErrHandler
		}
		err = &serve.Error{Status: resp.Status, Code: code, Msg: string(resp.Body)}
	}
	if err != nil {
		return nil, stepError(name, err)
	}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
	}
	if sink != nil { // a caller that cannot stream: the answer in one chunk
		if err := sink.Head(resp.Status, resp.Header); err != nil {
			return nil, err
		}
		if len(resp.Body) > 0 {
			if err := sink.Chunk(resp.Body); err != nil {
				return nil, err
			}
		}
		return nil, nil
	}
	return resp, nil
}

// stepError is the failure of step name: the fleet's answer (a
// *serve.Error), the request's own end (cancelled, deadline), or else a
// transport failure, 503 unavailable.
func stepError(name string, err error) *StepError {
	var se *serve.Error
	if !errors.As(err, &se) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return &StepError{Step: name, Err: &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable, Msg: err.Error()}}
	}
	return &StepError{Step: name, Err: serve.AsError(err)}
}

// sameBytes reports whether a and b are the same slice (the client's
// body passed on unchanged).
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// asJSON is body as a JSON value: itself when it is JSON, else a JSON
// string of it.
func asJSON(body []byte) json.RawMessage {
	if len(body) > 0 && json.Valid(body) {
		return body
	}
	b, _ := json.Marshal(string(body))
	return b
}

// AsStepError returns err's *StepError, if it has one.
func AsStepError(err error) (*StepError, bool) {
	var se *StepError
	ok := errors.As(err, &se)
	return se, ok
}
