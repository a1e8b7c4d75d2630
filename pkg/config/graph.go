package config

import (
	"fmt"
	"strings"

	"github.com/jetserve/jetserve/pkg/graph/condition"
)

// Graph node types: KServe InferenceGraph's router types.
const (
	// NodeSequence runs its steps one after the other; the node answers
	// with the last step's output.
	NodeSequence = "sequence"
	// NodeEnsemble runs its steps in parallel and hands their outputs,
	// as one JSON object keyed by step name, to its combiner, whose answer
	// is the node's.
	NodeEnsemble = "ensemble"
	// NodeSwitch runs the first step whose condition holds on the node's
	// input, else its default (last, condition-less) step.
	NodeSwitch = "switch"
	// NodeSplitter runs one step chosen at random by weight (a canary:
	// 95/5); the weights sum to 100.
	NodeSplitter = "splitter"
)

// Step data: what a step receives.
const (
	// DataRequest is the node's input (default): the request for the
	// root node, what the step that names a node passed to it otherwise.
	DataRequest = "$request"
	// DataResponse is the previous step's output (sequence steps after
	// the first).
	DataResponse = "$response"
)

// GraphRoot is the name of the node requests enter (KServe's rule).
const GraphRoot = "root"

// Graph is a declarative request flow over an application's deployments,
// with KServe InferenceGraph's node types, run by the ingress where the
// request enters. Requests enter the node named root.
type Graph struct {
	Nodes []GraphNode `json:"nodes" jsonschema:"required,minItems=1,description=The graph's nodes; requests enter the one named root."`
}

// GraphNode is one routing node.
type GraphNode struct {
	// Name is unique in the graph; steps name nodes by it.
	Name string `json:"name" jsonschema:"required,pattern=^[A-Za-z0-9_-]+$"`
	// Type is sequence, ensemble, switch or splitter.
	Type  string      `json:"type" jsonschema:"required,enum=sequence,enum=ensemble,enum=switch,enum=splitter"`
	Steps []GraphStep `json:"steps" jsonschema:"required,minItems=1"`
	// Combiner receives the ensemble's outputs as {"<step>": output, …}
	// and answers for the node (ensemble only; required there).
	Combiner *GraphStep `json:"combiner,omitempty"`
}

// GraphStep is one step of a node: a call of a deployment (a handle call)
// or of another node.
type GraphStep struct {
	// Name is unique in its node; default: the deployment's or node's
	// name. It keys the step's output in an ensemble and names the step
	// in errors and in the status's traffic split.
	Name string `json:"name,omitempty" jsonschema:"pattern=^[A-Za-z0-9_.-]+$"`
	// Deployment is the deployment of the application the step calls;
	// Node the graph node it runs instead. Exactly one is set.
	Deployment string `json:"deployment,omitempty"`
	Node       string `json:"node,omitempty"`
	// Method is the deployment method called (a handle call's method;
	// default: the request's path decides, as for an ingress deployment).
	Method string `json:"method,omitempty"`
	// Data is what the step receives: $request (default: the node's
	// input) or $response (the previous step's output; sequence steps
	// after the first).
	Data string `json:"data,omitempty" jsonschema:"enum=$request,enum=$response"`
	// Condition chooses the step in a switch (see package
	// graph/condition): the first step whose condition holds on the
	// node's input runs; the last step has none and is the default.
	Condition string `json:"condition,omitempty"`
	// Weight is the step's share of traffic in a splitter, 0..100; the
	// weights of a splitter sum to 100.
	Weight *int `json:"weight,omitempty" jsonschema:"minimum=0,maximum=100"`
}

// StepName is the step's name: Name, else its deployment's or node's.
func (s GraphStep) StepName() string {
	switch {
	case s.Name != "":
		return s.Name
	case s.Deployment != "":
		return s.Deployment
	}
	return s.Node
}

// Node returns the node named name, or false.
func (g *Graph) Node(name string) (GraphNode, bool) {
	for _, n := range g.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return GraphNode{}, false
}

// validateGraph checks an application's graph (p is the graph's path) and
// that deployments' uses name deployments of the application.
func validateGraph(a Application, p string, deps map[string]int, add func(field, format string, args ...any)) {
	g := a.Graph
	if len(g.Nodes) == 0 {
		add(p+".nodes", "must list at least one node (requests enter the one named %q)", GraphRoot)
		return
	}
	known := make([]string, 0, len(a.Deployments))
	for _, d := range a.Deployments {
		known = append(known, d.Name)
	}
	nodes := map[string]int{}
	for i, n := range g.Nodes {
		np := fmt.Sprintf("%s.nodes[%d]", p, i)
		uniqueName(add, nodes, np, i, n.Name, "node name", "nodes")
	}
	if _, ok := nodes[GraphRoot]; !ok {
		add(p+".nodes", "no node is named %q: requests enter the graph there", GraphRoot)
	}
	nodeNames := make([]string, 0, len(g.Nodes))
	for _, n := range g.Nodes {
		nodeNames = append(nodeNames, n.Name)
	}
	checkStep := func(sp, node string, s GraphStep, kind string, first bool) {
		switch {
		case s.Deployment != "" && s.Node != "":
			add(sp, "sets both deployment %q and node %q: a step calls one", s.Deployment, s.Node)
		case s.Deployment == "" && s.Node == "":
			add(sp, "must set deployment (a deployment of the application) or node (a node of the graph)")
		case s.Deployment != "":
			if _, ok := deps[s.Deployment]; !ok {
				add(sp+".deployment", "node %s calls deployment %q, which is not a deployment of application %s (its deployments: %s)",
					node, s.Deployment, a.Name, strings.Join(known, ", "))
			}
		default:
			if _, ok := nodes[s.Node]; !ok {
				add(sp+".node", "node %s calls node %q, which is not a node of the graph (its nodes: %s)", node, s.Node, strings.Join(nodeNames, ", "))
			}
			if s.Method != "" {
				add(sp+".method", "applies only to a step calling a deployment")
			}
		}
		if s.Name != "" && !nameOrDotRE.MatchString(s.Name) {
			add(sp+".name", "must be 1-64 letters, digits, '.', '-' or '_', got %q", s.Name)
		}
		switch s.Data {
		case "", DataRequest:
		case DataResponse:
			if kind != NodeSequence {
				add(sp+".data", "%s passes the previous step's output: only steps of a sequence have one, and %s is a %s", DataResponse, node, kind)
			} else if first {
				add(sp+".data", "%s passes the previous step's output: the first step of a sequence has none", DataResponse)
			}
		default:
			add(sp+".data", "must be %s (the node's input, default) or %s (the previous step's output), got %q", DataRequest, DataResponse, s.Data)
		}
		if s.Condition != "" && kind != NodeSwitch {
			add(sp+".condition", "applies only to the steps of a switch")
		}
		if s.Weight != nil && kind != NodeSplitter {
			add(sp+".weight", "applies only to the steps of a splitter")
		}
	}
	for i, n := range g.Nodes {
		np := fmt.Sprintf("%s.nodes[%d]", p, i)
		switch n.Type {
		case NodeSequence, NodeEnsemble, NodeSwitch, NodeSplitter:
		default:
			add(np+".type", "must be %s, %s, %s or %s, got %q", NodeSequence, NodeEnsemble, NodeSwitch, NodeSplitter, n.Type)
			continue
		}
		if len(n.Steps) == 0 {
			add(np+".steps", "must list at least one step")
			continue
		}
		names := map[string]int{}
		sum := 0
		for j, s := range n.Steps {
			sp := fmt.Sprintf("%s.steps[%d]", np, j)
			checkStep(sp, n.Name, s, n.Type, j == 0)
			if name := s.StepName(); name != "" {
				if k, dup := names[name]; dup {
					add(sp+".name", "duplicate step name %q in node %s (also steps[%d]): name one of them", name, n.Name, k)
				} else {
					names[name] = j
				}
			}
			switch n.Type {
			case NodeSwitch:
				last := j == len(n.Steps)-1
				switch {
				case last && s.Condition != "":
					add(sp+".condition", "switch %s has no default: its last step must have no condition (it runs when no condition holds)", n.Name)
				case !last && s.Condition == "":
					add(sp+".condition", "is required: only the last step of a switch is its default, without a condition")
				case s.Condition != "":
					if _, err := condition.Parse(s.Condition); err != nil {
						add(sp+".condition", "%v", err)
					}
				}
			case NodeSplitter:
				if s.Weight == nil {
					add(sp+".weight", "is required in a splitter (0..100; the weights sum to 100)")
					continue
				}
				if *s.Weight < 0 || *s.Weight > 100 {
					add(sp+".weight", "must be 0..100, got %d", *s.Weight)
				}
				sum += *s.Weight
			}
		}
		if n.Type == NodeSplitter && sum != 100 {
			ws := make([]string, 0, len(n.Steps))
			for _, s := range n.Steps {
				if s.Weight != nil {
					ws = append(ws, fmt.Sprint(*s.Weight))
				}
			}
			add(np+".steps", "the weights of splitter %s must sum to 100, they sum to %d (%s)", n.Name, sum, strings.Join(ws, " + "))
		}
		if n.Type == NodeEnsemble {
			if n.Combiner == nil {
				add(np+".combiner", "is required: ensemble %s hands its steps' outputs ({\"<step>\": output, …}) to a combiner step", n.Name)
			} else {
				cp := np + ".combiner"
				checkStep(cp, n.Name, *n.Combiner, NodeEnsemble+" combiner", false)
				if n.Combiner.Data != "" {
					add(cp+".data", "does not apply to a combiner: it receives the ensemble's outputs")
				}
			}
		} else if n.Combiner != nil {
			add(np+".combiner", "applies only to an ensemble")
		}
	}
	if cycle := graphCycle(g, nodes); cycle != nil {
		i := nodes[cycle[0]]
		add(fmt.Sprintf("%s.nodes[%d]", p, i), "cycle: %s (a node may not run itself, directly or through others)", strings.Join(cycle, " → "))
	}
}

// graphCycle returns the first cycle among the nodes (the node names, the
// first repeated at the end), or nil.
func graphCycle(g *Graph, nodes map[string]int) []string {
	const (
		unseen = iota
		active
		done
	)
	state := make([]int, len(g.Nodes))
	var path []string
	var visit func(i int) []string
	visit = func(i int) []string {
		state[i] = active
		path = append(path, g.Nodes[i].Name)
		n := g.Nodes[i]
		steps := n.Steps
		if n.Combiner != nil {
			steps = append(append([]GraphStep(nil), steps...), *n.Combiner)
		}
		for _, s := range steps {
			j, ok := nodes[s.Node]
			if s.Node == "" || !ok {
				continue
			}
			switch state[j] {
			case active:
				for k, name := range path {
					if name == s.Node {
						return append(append([]string(nil), path[k:]...), s.Node)
					}
				}
			case unseen:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		path = path[:len(path)-1]
		state[i] = done
		return nil
	}
	for i := range g.Nodes {
		if state[i] == unseen {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// validateUses checks a deployment's uses (dp is its path).
func validateUses(a Application, d Deployment, dp string, deps map[string]int, add func(field, format string, args ...any)) {
	known := make([]string, 0, len(a.Deployments))
	for _, o := range a.Deployments {
		known = append(known, o.Name)
	}
	seen := map[string]int{}
	for k, u := range d.Uses {
		up := fmt.Sprintf("%s.uses[%d]", dp, k)
		if j, dup := seen[u]; dup {
			add(up, "%q is listed twice (also uses[%d])", u, j)
			continue
		}
		seen[u] = k
		if _, ok := deps[u]; !ok {
			add(up, "deployment %s uses %q, which is not a deployment of application %s (its deployments: %s)",
				d.Name, u, a.Name, strings.Join(known, ", "))
		}
	}
}
