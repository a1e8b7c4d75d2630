package config

import (
	"errors"
	"strings"
	"testing"
)

// graphApp is an application with deployments A, B and C and the graph
// given (YAML flow style, the value of graph.nodes).
func graphApp(nodes string) string {
	return "applications:\n- name: g\n  route_prefix: /g\n  deployments: [{name: A, handler: h}, {name: B, handler: h}, {name: C, handler: h}]\n" +
		"  graph: {nodes: " + nodes + "}\n"
}

func TestParseGraph(t *testing.T) {
	doc := graphApp(`[
	  {name: root, type: sequence, steps: [{deployment: A}, {node: pick, data: $response}]},
	  {name: pick, type: switch, steps: [{deployment: B, method: ask, condition: '$.text matches "(?i)what"'}, {node: both}]},
	  {name: both, type: ensemble, steps: [{deployment: B}, {name: c1, deployment: C}], combiner: {deployment: A, method: combine}},
	  {name: canary, type: splitter, steps: [{deployment: B, weight: 95}, {name: B2, deployment: C, weight: 5}]}]`)
	cfg, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse = %v", err)
	}
	g := cfg.Applications[0].Graph
	if g == nil || len(g.Nodes) != 4 {
		t.Fatalf("graph = %+v, want 4 nodes", g)
	}
	n, ok := g.Node("canary")
	if !ok || *n.Steps[0].Weight != 95 || n.Steps[1].StepName() != "B2" || n.Steps[0].StepName() != "B" {
		t.Errorf("Node(canary) = %+v, want steps B (95) and B2 (5)", n)
	}
	if cfg.Applications[0].Ingress != "" {
		t.Errorf("Ingress = %q, want none with a graph", cfg.Applications[0].Ingress)
	}
}

func TestParseRejectsBadGraphsWithFieldNamed(t *testing.T) {
	tests := []struct {
		name, doc, field, msg string
	}{
		{"no nodes", graphApp(`[]`), "applications[0].graph.nodes", "at least one node"},
		{"no root", graphApp(`[{name: main, type: sequence, steps: [{deployment: A}]}]`), "applications[0].graph.nodes", `no node is named "root"`},
		{"unknown node type", graphApp(`[{name: root, type: parallel, steps: [{deployment: A}]}]`), "applications[0].graph.nodes[0].type", "sequence, ensemble, switch or splitter"},
		{"unknown node", graphApp(`[{name: root, type: sequence, steps: [{node: nowhere}]}]`), "applications[0].graph.nodes[0].steps[0].node", `node root calls node "nowhere", which is not a node of the graph`},
		{"unknown deployment", graphApp(`[{name: root, type: sequence, steps: [{deployment: Z}]}]`), "applications[0].graph.nodes[0].steps[0].deployment", `node root calls deployment "Z", which is not a deployment of application g (its deployments: A, B, C)`},
		{"cycle", graphApp(`[{name: root, type: sequence, steps: [{node: x}]}, {name: x, type: sequence, steps: [{deployment: A}, {node: y}]}, {name: y, type: switch, steps: [{node: x, condition: '$.a'}, {deployment: B}]}]`),
			"applications[0].graph.nodes[1]", "cycle: x → y → x"},
		{"self cycle", graphApp(`[{name: root, type: sequence, steps: [{deployment: A}, {node: root}]}]`), "applications[0].graph.nodes[0]", "cycle: root → root"},
		{"weights not 100", graphApp(`[{name: root, type: splitter, steps: [{deployment: A, weight: 90}, {deployment: B, weight: 5}]}]`),
			"applications[0].graph.nodes[0].steps", "must sum to 100, they sum to 95 (90 + 5)"},
		{"weight missing", graphApp(`[{name: root, type: splitter, steps: [{deployment: A, weight: 100}, {deployment: B}]}]`), "applications[0].graph.nodes[0].steps[1].weight", "is required in a splitter"},
		{"weight negative", graphApp(`[{name: root, type: splitter, steps: [{deployment: A, weight: 101}, {deployment: B, weight: -1}]}]`), "applications[0].graph.nodes[0].steps[1].weight", "must be >= 0"},
		{"weight over 100", graphApp(`[{name: root, type: splitter, steps: [{deployment: A, weight: 101}]}]`), "applications[0].graph.nodes[0].steps[0].weight", "0..100"},
		{"weight outside a splitter", graphApp(`[{name: root, type: sequence, steps: [{deployment: A, weight: 100}]}]`), "applications[0].graph.nodes[0].steps[0].weight", "only to the steps of a splitter"},
		{"missing combiner", graphApp(`[{name: root, type: ensemble, steps: [{deployment: A}, {deployment: B}]}]`), "applications[0].graph.nodes[0].combiner", "is required"},
		{"combiner outside an ensemble", graphApp(`[{name: root, type: sequence, steps: [{deployment: A}], combiner: {deployment: B}}]`), "applications[0].graph.nodes[0].combiner", "only to an ensemble"},
		{"combiner to nowhere", graphApp(`[{name: root, type: ensemble, steps: [{deployment: A}], combiner: {deployment: Q}}]`), "applications[0].graph.nodes[0].combiner.deployment", `calls deployment "Q"`},
		{"switch without default", graphApp(`[{name: root, type: switch, steps: [{deployment: A, condition: '$.a == 1'}, {deployment: B, condition: '$.a == 2'}]}]`),
			"applications[0].graph.nodes[0].steps[1].condition", "switch root has no default"},
		{"switch step without condition", graphApp(`[{name: root, type: switch, steps: [{deployment: A}, {deployment: B}]}]`), "applications[0].graph.nodes[0].steps[0].condition", "is required"},
		{"bad condition", graphApp(`[{name: root, type: switch, steps: [{deployment: A, condition: '$.a = 1'}, {deployment: B}]}]`), "applications[0].graph.nodes[0].steps[0].condition", "equality is =="},
		{"condition outside a switch", graphApp(`[{name: root, type: sequence, steps: [{deployment: A, condition: '$.a'}]}]`), "applications[0].graph.nodes[0].steps[0].condition", "only to the steps of a switch"},
		{"$response first", graphApp(`[{name: root, type: sequence, steps: [{deployment: A, data: $response}]}]`), "applications[0].graph.nodes[0].steps[0].data", "the first step of a sequence has none"},
		{"$response in an ensemble", graphApp(`[{name: root, type: ensemble, steps: [{deployment: A}, {deployment: B, data: $response}], combiner: {deployment: C}}]`), "applications[0].graph.nodes[0].steps[1].data", "only steps of a sequence"},
		{"bad data", graphApp(`[{name: root, type: sequence, steps: [{deployment: A, data: $input}]}]`), "applications[0].graph.nodes[0].steps[0].data", `got "$input"`},
		{"both targets", graphApp(`[{name: root, type: sequence, steps: [{deployment: A, node: root}]}]`), "applications[0].graph.nodes[0].steps[0]", "a step calls one"},
		{"no target", graphApp(`[{name: root, type: sequence, steps: [{name: x}]}]`), "applications[0].graph.nodes[0].steps[0]", "must set deployment"},
		{"duplicate step", graphApp(`[{name: root, type: ensemble, steps: [{deployment: A}, {deployment: A}], combiner: {deployment: B}}]`), "applications[0].graph.nodes[0].steps[1].name", `duplicate step name "A"`},
		{"duplicate node", graphApp(`[{name: root, type: sequence, steps: [{deployment: A}]}, {name: root, type: sequence, steps: [{deployment: B}]}]`), "applications[0].graph.nodes[1].name", "duplicate node name"},
		{"no steps", graphApp(`[{name: root, type: sequence, steps: []}]`), "applications[0].graph.nodes[0].steps", "at least one step"},
		{"method on a node step", graphApp(`[{name: root, type: sequence, steps: [{node: x, method: m}]}, {name: x, type: sequence, steps: [{deployment: A}]}]`), "applications[0].graph.nodes[0].steps[0].method", "only to a step calling a deployment"},
		{"unknown step field", graphApp(`[{name: root, type: sequence, steps: [{deployment: A, service_name: A}]}]`), "applications[0].graph.nodes[0].steps[0].service_name", "unknown field"},
		{"ingress with a graph", strings.Replace(graphApp(`[{name: root, type: sequence, steps: [{deployment: A}]}]`), "route_prefix: /g", "route_prefix: /g\n  ingress: A", 1),
			"applications[0].ingress", "must not be set with a graph"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantFieldError(t, tc.doc, tc.field, tc.msg)
		})
	}
}

func TestParseUses(t *testing.T) {
	ok := "applications:\n- {name: a, route_prefix: /a, ingress: F, deployments: [{name: F, handler: h, uses: [B, F]}, {name: B, handler: h}]}\n"
	cfg, err := Parse([]byte(ok))
	if err != nil {
		t.Fatalf("Parse(uses: [B, F]) = %v", err)
	}
	if got := cfg.Applications[0].Deployments[0].Uses; len(got) != 2 || got[0] != "B" {
		t.Errorf("Uses = %v, want [B F]", got)
	}
	for _, tc := range []struct{ name, uses, field, msg string }{
		{"absent deployment", "[B, Bee]", "applications[0].deployments[0].uses[1]", `deployment F uses "Bee", which is not a deployment of application a (its deployments: F, B)`},
		{"listed twice", "[B, B]", "applications[0].deployments[0].uses[1]", `"B" is listed twice`},
		{"not a list", "B", "applications[0].deployments[0].uses", "must be a list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(ok, "uses: [B, F]", "uses: "+tc.uses, 1)
			wantFieldError(t, doc, tc.field, tc.msg)
		})
	}
}

// wantFieldError checks that Parse(doc) fails with an error for field
// whose message contains msg.
func wantFieldError(t *testing.T, doc, field, msg string) {
	t.Helper()
	_, err := Parse([]byte(doc))
	var fe Errors
	if !errors.As(err, &fe) {
		t.Fatalf("Parse = %v, want field errors", err)
	}
	for _, e := range fe {
		if e.Field == field && strings.Contains(e.Msg, msg) {
			return
		}
	}
	t.Errorf("Parse = %v, want %s: …%s…", err, field, msg)
}
