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

// TestEveryRouteIsDocumented walks the ingress's mux (its own /-/
// endpoints): every route it registers is an operation of
// schemas/openapi.yaml; and what ServeHTTP serves past the mux — the OIP
// endpoints, with and without a version, and the application path (sync
// and the job operations) — is documented too.
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
		seen[route] = true
		if strings.Contains(route, "*") {
			t.Errorf("route %s: a catch-all this test does not know; say which endpoints it serves", route)
			return nil
		}
		want(method, route, "route "+route)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"/-/healthz", "/-/routes", "/-/models", "/-/limits"} {
		if !seen[r] {
			t.Errorf("the walk did not see route %s", r)
		}
	}
	// Served by serveObserved, outside the mux (the hot path).
	want(oip.ServerMeta.Method(), "/v2", "OIP server metadata")
	for _, e := range []oip.Endpoint{oip.ModelMeta, oip.ModelReady, oip.ModelInfer} {
		for _, v := range []string{"", "{version}"} {
			want(e.Method(), oip.Path(e, "{model}", v), "OIP")
		}
	}
	want(oip.ServerLive.Method(), "/v2/health/live", "OIP")
	want(oip.ServerReady.Method(), "/v2/health/ready", "OIP")
	want(http.MethodPost, "/{route_prefix}/{path}", "sync requests and job submits")
	want(http.MethodGet, "/{route_prefix}/{path}", "sync requests")
	for _, op := range append(jobsapi.Ops(), jobsapi.WorkflowOps()...) {
		m, _ := jobsapi.OpMethod(op)
		want(m, "/{route_prefix}/{method}/"+op, "the job API")
	}
}
