package admin

import (
	"net/http"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/jetserve/jetserve/pkg/apidoc"
	"github.com/rs/zerolog"
)

// TestEveryRouteIsDocumented walks the admin API's router: every route
// it registers is an operation of schemas/openapi.yaml.
func TestEveryRouteIsDocumented(t *testing.T) {
	doc, err := apidoc.Load("../../../../schemas/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := New(nil, nil, 0, zerolog.Nop())
	n := 0
	err = chi.Walk(h.router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		n++
		if !doc.Has(method, route) {
			t.Errorf("%s %s is not in schemas/openapi.yaml", method, route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 6 {
		t.Errorf("walked %d routes, want the admin API's (≥ 6)", n)
	}
}
