// Package apidoc reads the operations of an OpenAPI document
// (schemas/openapi.yaml), so that a server's tests can check that every
// route its mux registers is documented. It reads paths and methods only;
// deploy/test validates answers against the whole document.
package apidoc

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Doc is the set of documented operations, "METHOD /path/{param}".
type Doc struct {
	ops map[string]bool
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Load reads the document at path.
func Load(path string) (Doc, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Doc{}, err
	}
	var d struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(b, &d); err != nil {
		return Doc{}, fmt.Errorf("%s: %w", path, err)
	}
	if len(d.Paths) == 0 {
		return Doc{}, fmt.Errorf("%s: no paths", path)
	}
	doc := Doc{ops: map[string]bool{}}
	for p, item := range d.Paths {
		for m := range item {
			if slices.Contains(methods, m) {
				doc.ops[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	return doc, nil
}

// Has reports whether the document has method on path. A path with a
// trailing slash is also found without it (routers register both forms of
// one endpoint).
func (d Doc) Has(method, path string) bool {
	if d.ops[method+" "+path] {
		return true
	}
	trimmed := strings.TrimSuffix(path, "/")
	return trimmed != path && trimmed != "" && d.ops[method+" "+trimmed]
}

// HasPath reports whether the document has any operation on path.
func (d Doc) HasPath(path string) bool {
	for _, m := range methods {
		if d.Has(strings.ToUpper(m), path) {
			return true
		}
	}
	return false
}
