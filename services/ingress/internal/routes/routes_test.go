package routes

import (
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
)

func TestMatch(t *testing.T) {
	tab := New([]Route{
		{Prefix: "/text", App: "text", Ingress: "t"},
		{Prefix: "/text/v2", App: "text2", Ingress: "t2"},
		{Prefix: "/img", App: "img", Ingress: "i"},
	})
	tests := []struct {
		path, app, rest string
		ok              bool
	}{
		{"/text", "text", "/", true},
		{"/text/", "text", "/", true},
		{"/text/x/y", "text", "/x/y", true},
		{"/textual", "", "", false},
		{"/text/v2", "text2", "/", true},
		{"/text/v2/gen", "text2", "/gen", true},
		{"/text/v20", "text", "/v20", true},
		{"/img", "img", "/", true},
		{"/", "", "", false},
		{"/other", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			r, rest, ok := tab.Match(tt.path)
			if ok != tt.ok || r.App != tt.app || rest != tt.rest {
				t.Errorf("Match(%q) = %q, %q, %v, want %q, %q, %v", tt.path, r.App, rest, ok, tt.app, tt.rest, tt.ok)
			}
		})
	}
}

func TestMatchRoot(t *testing.T) {
	tab := New([]Route{{Prefix: "/", App: "root"}, {Prefix: "/a", App: "a"}})
	for path, want := range map[string]string{"/": "root", "/x": "root", "/a/b": "a", "/ab": "root"} {
		if r, _, _ := tab.Match(path); r.App != want {
			t.Errorf("Match(%q) = %q, want %q", path, r.App, want)
		}
	}
	var nilTab *Table
	if _, _, ok := nilTab.Match("/"); ok {
		t.Error("nil table matched")
	}
}

func TestFromConfigCompilesGraphs(t *testing.T) {
	sc, err := config.Parse([]byte(`applications:
- {name: plain, route_prefix: /p, ingress: d, deployments: [{name: d, handler: h}]}
- name: canary
  route_prefix: /c
  deployments: [{name: v1, handler: h}, {name: v2, handler: h}]
  graph: {nodes: [{name: root, type: splitter, steps: [{deployment: v1, weight: 95}, {deployment: v2, weight: 5}]}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := FromConfig(sc)
	if err != nil {
		t.Fatalf("FromConfig = %v", err)
	}
	p, _, _ := tab.Match("/p/x")
	c, _, _ := tab.Match("/c/x")
	if p.Graph != nil || p.Ingress != "d" || c.Graph == nil || c.Ingress != "" {
		t.Fatalf("routes = %+v, %+v; want /p to its ingress and /c through its graph", p, c)
	}
	if s := c.Graph.Splitters(); len(s) != 1 || s[0].Branches[1].Weight != 5 {
		t.Errorf("Splitters() = %+v, want root 95/5", s)
	}

	// A graph that does not compile (a stored config is validated first,
	// so only a bug gets here) leaves its application out, with an error.
	sc.Applications[1].Graph.Nodes[0].Name = "main"
	tab, err = FromConfig(sc)
	if err == nil || !strings.Contains(err.Error(), `no node named "root"`) {
		t.Errorf("FromConfig(no root) = %v, want an error naming it", err)
	}
	if _, _, ok := tab.Match("/c"); ok {
		t.Error("/c is routed, want it left out")
	}
	if _, _, ok := tab.Match("/p"); !ok {
		t.Error("/p is not routed, want the other applications kept")
	}
}
