// Package routes is the ingress route table: application route prefixes
// matched by longest prefix on whole path segments. A Table is immutable and
// safe for concurrent use; the ingress swaps in a new one when the serve
// config changes.
package routes

import (
	"fmt"
	"sort"
	"strings"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/graph"
)

// Route sends requests below Prefix to the App's Ingress deployment, or
// through its Graph when it has one.
type Route struct {
	Prefix  string // "/text", or "/" for everything
	App     string
	Ingress string
	Graph   *graph.Graph // nil: the app has no graph
}

// Table is a set of routes, longest prefix first.
type Table struct {
	routes []Route
}

// FromConfig builds the table of a serve config, with each application's
// graph compiled. An application whose graph does not compile (the config
// is validated before it is stored, so only a bug gets here) is left out
// and its error returned.
func FromConfig(sc config.ServeConfig) (*Table, error) {
	rs := make([]Route, 0, len(sc.Applications))
	var errs []string
	for _, a := range sc.Applications {
		g, err := graph.Compile(a)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		p := a.RoutePrefix
		if p == "" {
			continue
		}
		if len(p) > 1 {
			p = strings.TrimRight(p, "/")
			if p == "" {
				p = "/"
			}
		}
		rs = append(rs, Route{Prefix: p, App: a.Name, Ingress: a.Ingress, Graph: g})
	}
	if len(errs) > 0 {
		return New(rs), fmt.Errorf("routes: %s", strings.Join(errs, "; "))
	}
	return New(rs), nil
}

// New builds a table of rs.
func New(rs []Route) *Table {
	rs = append([]Route(nil), rs...)
	sort.SliceStable(rs, func(i, j int) bool { return len(rs[i].Prefix) > len(rs[j].Prefix) })
	return &Table{routes: rs}
}

// Match returns the route whose prefix is the longest one matching path on
// segment boundaries ("/text" matches "/text" and "/text/x", not
// "/textual") and the path below it ("/" at least).
func (t *Table) Match(path string) (Route, string, bool) {
	if t == nil {
		return Route{}, "", false
	}
	for _, r := range t.routes {
		if r.Prefix == "/" {
			if path == "" {
				path = "/"
			}
			return r, path, true
		}
		rest, ok := strings.CutPrefix(path, r.Prefix)
		if !ok {
			continue
		}
		if rest == "" {
			return r, "/", true
		}
		if rest[0] == '/' {
			return r, rest, true
		}
	}
	return Route{}, "", false
}

// Prefixes maps each route prefix to its application name.
func (t *Table) Prefixes() map[string]string {
	out := map[string]string{}
	if t == nil {
		return out
	}
	for _, r := range t.routes {
		out[r.Prefix] = r.App
	}
	return out
}
