package dashboard

import (
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/apidoc"
)

// TestEveryPatternIsDocumented: what the dashboard serves on the admin
// port is in schemas/openapi.yaml.
func TestEveryPatternIsDocumented(t *testing.T) {
	doc, err := apidoc.Load("../../../../schemas/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Patterns() {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			t.Fatalf("pattern %q has no method", p)
		}
		path = strings.TrimSuffix(path, "{$}")
		if !doc.Has(method, path) {
			t.Errorf("%s %s (pattern %q) is not in schemas/openapi.yaml", method, path, p)
		}
	}
}
