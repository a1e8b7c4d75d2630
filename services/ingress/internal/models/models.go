// Package models is the ingress's table of Open Inference Protocol models:
// each model name of a deployment with protocol oip (its oip_models, else
// its name; unique across the serve config) → the application and
// deployment that serve it. A Table is immutable and safe for concurrent
// use; the ingress swaps in a new one when the serve config changes.
package models

import (
	"sort"

	"github.com/jetserve/jetserve/pkg/config"
)

// Model is where requests for one model go.
type Model struct {
	Name       string `json:"-"`
	App        string `json:"app"`
	Deployment string `json:"deployment"`
	// Runtime is the deployment's runtime (go or process), for listings.
	Runtime string `json:"runtime"`
}

// Table maps model names to the deployments that serve them.
type Table struct {
	byName map[string]Model
}

// FromConfig builds the table of a serve config. The config is valid (model
// names are unique), so a later duplicate can only come from a config that
// skipped validation; the first one wins.
func FromConfig(sc config.ServeConfig) *Table {
	t := &Table{byName: map[string]Model{}}
	for _, a := range sc.Applications {
		for _, d := range a.Deployments {
			for _, name := range d.ModelNames() {
				if _, dup := t.byName[name]; dup {
					continue
				}
				rt := d.Runtime
				if rt == "" {
					rt = config.RuntimeGo
				}
				t.byName[name] = Model{Name: name, App: a.Name, Deployment: d.Name, Runtime: rt}
			}
		}
	}
	return t
}

// Lookup returns the model named name.
func (t *Table) Lookup(name string) (Model, bool) {
	if t == nil {
		return Model{}, false
	}
	m, ok := t.byName[name]
	return m, ok
}

// Names lists the model names, sorted.
func (t *Table) Names() []string {
	if t == nil {
		return nil
	}
	out := make([]string, 0, len(t.byName))
	for n := range t.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// All maps every model name to where it is served.
func (t *Table) All() map[string]Model {
	out := map[string]Model{}
	if t != nil {
		for n, m := range t.byName {
			out[n] = m
		}
	}
	return out
}
