package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/jetserve/jetserve/pkg/apidoc"
	"github.com/jetserve/jetserve/pkg/oip"
	"github.com/jetserve/jetserve/services/ingress/internal/jobsapi"
)

// TestEveryRouteIsDocumented walks the ingress's mux: every route it
// registers is an operation of schemas/openapi.yaml — the catch-alls as
// the endpoints behind them (each OIP endpoint, with and without a
// version; the application path, sync and the job operations).
func TestEveryRouteIsDocumented(t *testing.T) {
	doc, err := apidoc.Load("../../../../schemas/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := newHandler(t, &fakeCaller{}, nil)
	routes, ok := h.mux.(chi.Routes)
	if !ok {
		t.Fatalf("the ingress mux is a %T, want a chi router", h.mux)
	}
	want := func(method, path, why string) {
		t.Helper()
		if !doc.Has(method, path) {
			t.Errorf("%s %s (%s) is not in schemas/openapi.yaml", method, path, why)
		}
	}
	seen := map[string]bool{}
	err = chi.Walk(routes, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		if seen[route] && (route == "/v2" || strings.Contains(route, "*")) {
			return nil // a handler for every method: checked once
		}
		seen[route] = true
		switch {
		case route == "/v2/*":
			for _, e := range []oip.Endpoint{oip.ModelMeta, oip.ModelReady, oip.ModelInfer} {
				for _, v := range []string{"", "{version}"} {
					want(e.Method(), oip.Path(e, "{model}", v), "route "+route)
				}
			}
			want(oip.ServerLive.Method(), "/v2/health/live", "route "+route)
			want(oip.ServerReady.Method(), "/v2/health/ready", "route "+route)
		case route == "/*":
			want(http.MethodPost, "/{route_prefix}/{path}", "sync requests and job submits")
			want(http.MethodGet, "/{route_prefix}/{path}", "sync requests")
			for _, op := range jobsapi.Ops() {
				m, _ := jobsapi.OpMethod(op)
				want(m, "/{route_prefix}/{method}/"+op, "the job API")
			}
		case strings.Contains(route, "*"):
			t.Errorf("route %s: a catch-all this test does not know; say which endpoints it serves", route)
		case route == "/v2":
			want(oip.ServerMeta.Method(), route, "route "+route)
		default:
			want(method, route, "route "+route)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"/-/healthz", "/-/routes", "/-/models", "/-/limits", "/v2", "/v2/*", "/*"} {
		if !seen[r] {
			t.Errorf("the walk did not see route %s", r)
		}
	}
}
