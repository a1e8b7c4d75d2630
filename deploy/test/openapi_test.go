package test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/jetserve/jetserve/pkg/protocol"
)

const openAPIPath = "../../schemas/openapi.yaml"

// openAPIDoc loads schemas/openapi.yaml with the JSON Schemas it refers
// to beside it, and checks that it is a valid OpenAPI document.
func openAPIDoc(t *testing.T) *openapi3.T {
	t.Helper()
	l := openapi3.NewLoader()
	l.IsExternalRefsAllowed = true
	doc, err := l.LoadFromFile(openAPIPath)
	if err != nil {
		t.Fatalf("load %s: %v", openAPIPath, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s is not a valid OpenAPI document: %v", openAPIPath, err)
	}
	return doc
}

// TestOpenAPIErrorCodesAreTheCatalogue: the document's ErrorCode enum is
// schemas/errors.json's list.
func TestOpenAPIErrorCodesAreTheCatalogue(t *testing.T) {
	doc := openAPIDoc(t)
	s, ok := doc.Components.Schemas["ErrorCode"]
	if !ok {
		t.Fatal("no components/schemas/ErrorCode")
	}
	var got, want []string
	for _, v := range s.Value.Enum {
		got = append(got, fmt.Sprint(v))
	}
	for _, c := range protocol.ErrorCodes() {
		want = append(want, string(c))
	}
	if !slices.Equal(got, want) {
		t.Errorf("openapi.yaml ErrorCode enum = %v, want the catalogue's %v", got, want)
	}
}

// apiCall is one request the test sends and the answer it wants.
type apiCall struct {
	admin          bool   // to the admin API, else the ingress
	method, target string // target: path and query as sent
	op             string // the document's path template it exercises
	body           string
	header         map[string]string
	want           int
}

// apiChecker sends calls and validates each answer against the document:
// the status is documented for the operation, the content type is one it
// lists, headers and body match their schemas.
type apiChecker struct {
	t       *testing.T
	doc     *openapi3.T
	f       *fleet
	client  *http.Client
	covered map[string]bool // "METHOD template"
}

func (c *apiChecker) check(call apiCall) (int, []byte) {
	t := c.t
	t.Helper()
	item := c.doc.Paths.Value(call.op)
	if item == nil {
		t.Fatalf("%s %s: no path %s in the document", call.method, call.target, call.op)
	}
	op := item.GetOperation(call.method)
	if op == nil {
		t.Fatalf("%s %s: the document has no %s on %s", call.method, call.target, call.method, call.op)
	}
	path, _, _ := strings.Cut(call.target, "?")
	if !matchTemplate(call.op, path) {
		t.Fatalf("%s %s: path does not match the template %s", call.method, call.target, call.op)
	}
	base := c.f.ingress
	if call.admin {
		base = c.f.admin
	}
	req, err := http.NewRequest(call.method, base+call.target, strings.NewReader(call.body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range call.header {
		req.Header.Set(k, v)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", call.method, call.target, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: read body: %v", call.method, call.target, err)
	}
	c.covered[call.method+" "+call.op] = true
	if resp.StatusCode != call.want {
		t.Errorf("%s %s = %d %s, want %d", call.method, call.target, resp.StatusCode, truncate(b), call.want)
		return resp.StatusCode, b
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req,
			Route:   &routers.Route{Spec: c.doc, Path: call.op, PathItem: item, Method: call.method, Operation: op},
		},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Body:    io.NopCloser(bytes.NewReader(b)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s = %d (%s) %s: disagrees with %s: %v", call.method, call.target, resp.StatusCode,
			resp.Header.Get("Content-Type"), truncate(b), openAPIPath, err)
	}
	return resp.StatusCode, b
}

// matchTemplate reports whether path has the template's segments, a
// {param} matching any one non-empty segment.
func matchTemplate(tmpl, path string) bool {
	ts, ps := strings.Split(tmpl, "/"), strings.Split(path, "/")
	if len(ts) != len(ps) {
		return false
	}
	for i := range ts {
		if strings.HasPrefix(ts[i], "{") && strings.HasSuffix(ts[i], "}") {
			if ps[i] == "" {
				return false
			}
			continue
		}
		if ts[i] != ps[i] {
			return false
		}
	}
	return true
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// TestOpenAPIEveryEndpoint runs the five services in-process and drives
// every operation of schemas/openapi.yaml on the ingress and the admin
// API — successes and the errors each answers — validating status,
// content type, headers and body of each answer against the document; it
// fails on an operation of the document it did not drive.
func TestOpenAPIEveryEndpoint(t *testing.T) {
	doc := openAPIDoc(t)
	f := startFleet(t, "testdata/openapi-fleet.yaml")
	c := &apiChecker{t: t, doc: doc, f: f, covered: map[string]bool{},
		client: &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	f.waitFor(t, 90*time.Second, "echo, iris and the job API", func() error {
		if _, err := f.do(http.MethodPost, f.ingress+"/echo/", "hi", nil); err != nil {
			return err
		}
		if _, err := f.do(http.MethodGet, f.ingress+"/v2/models/iris/ready", "", nil); err != nil {
			return err
		}
		_, err := f.do(http.MethodGet, f.ingress+"/text/train/list", "", nil)
		return err
	})
	f.waitFor(t, 30*time.Second, "the dashboard's first snapshot", func() error {
		_, err := f.do(http.MethodGet, f.admin+"/api/dashboard", "", nil)
		return err
	})
	config, err := os.ReadFile("testdata/openapi-fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const extra = "applications:\n- name: extra\n  route_prefix: /extra\n  ingress: X\n  deployments: [{name: X, handler: diag.Echo, resources: {cpu: 0.1}}]\n"
	infer := `{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}`
	yaml := map[string]string{"Content-Type": "application/yaml"}
	json := map[string]string{"Content-Type": "application/json"}

	for _, call := range []apiCall{
		// The admin API.
		{admin: true, method: "PUT", target: "/api/serve/applications", op: "/api/serve/applications", body: string(config), header: yaml, want: 200},
		{admin: true, method: "PUT", target: "/api/serve/applications", op: "/api/serve/applications", body: "applications: [{name: x, route_prefix: 3}]", header: yaml, want: 400},
		{admin: true, method: "GET", target: "/api/serve/applications", op: "/api/serve/applications", want: 200},
		{admin: true, method: "GET", target: "/api/serve/config", op: "/api/serve/config", want: 200},
		{admin: true, method: "PUT", target: "/api/serve/applications/extra", op: "/api/serve/applications/{name}", body: extra, header: yaml, want: 200},
		{admin: true, method: "PUT", target: "/api/serve/applications/extra?if_absent=true", op: "/api/serve/applications/{name}", body: extra, header: yaml, want: 200},
		{admin: true, method: "PUT", target: "/api/serve/applications/other", op: "/api/serve/applications/{name}", body: extra, header: yaml, want: 400},
		{admin: true, method: "DELETE", target: "/api/serve/applications/extra", op: "/api/serve/applications/{name}", want: 200},
		{admin: true, method: "DELETE", target: "/api/serve/applications/extra", op: "/api/serve/applications/{name}", want: 404},
		{admin: true, method: "GET", target: "/api/dashboard", op: "/api/dashboard", want: 200},
		{admin: true, method: "GET", target: "/dashboard/", op: "/dashboard/", want: 200},
		{admin: true, method: "GET", target: "/", op: "/", want: 302},
		// The ingress's own endpoints.
		{method: "GET", target: "/-/routes", op: "/-/routes", want: 200},
		{method: "GET", target: "/-/limits", op: "/-/limits", want: 200},
		{method: "GET", target: "/-/healthz", op: "/-/healthz", want: 200},
		{method: "GET", target: "/-/models", op: "/-/models", want: 200},
		// The Open Inference Protocol.
		{method: "GET", target: "/v2", op: "/v2", want: 200},
		{method: "GET", target: "/v2/health/live", op: "/v2/health/live", want: 200},
		{method: "GET", target: "/v2/health/ready", op: "/v2/health/ready", want: 200},
		{method: "GET", target: "/v2/models/iris", op: "/v2/models/{model}", want: 200},
		{method: "GET", target: "/v2/models/nope", op: "/v2/models/{model}", want: 404},
		{method: "GET", target: "/v2/models/iris/versions/1", op: "/v2/models/{model}/versions/{version}", want: 404}, // iris has no versions
		{method: "GET", target: "/v2/models/iris/ready", op: "/v2/models/{model}/ready", want: 200},
		{method: "GET", target: "/v2/models/nope/ready", op: "/v2/models/{model}/ready", want: 404},
		{method: "GET", target: "/v2/models/iris/versions/1/ready", op: "/v2/models/{model}/versions/{version}/ready", want: 404},
		{method: "POST", target: "/v2/models/iris/infer", op: "/v2/models/{model}/infer", body: infer, header: json, want: 200},
		{method: "POST", target: "/v2/models/iris/infer", op: "/v2/models/{model}/infer", body: `{"inputs":[]}`, header: json, want: 400},
		{method: "POST", target: "/v2/models/nope/infer", op: "/v2/models/{model}/infer", body: infer, header: json, want: 404},
		{method: "POST", target: "/v2/models/iris/versions/1/infer", op: "/v2/models/{model}/versions/{version}/infer", body: infer, header: json, want: 404},
		// Applications: sync requests.
		{method: "POST", target: "/echo/x", op: "/{route_prefix}/{path}", body: "hi", header: map[string]string{"Content-Type": "text/plain"}, want: 200},
		{method: "GET", target: "/echo/x", op: "/{route_prefix}/{path}", header: map[string]string{"Content-Type": "text/plain"}, want: 200}, // echoed
		{method: "POST", target: "/nowhere/x", op: "/{route_prefix}/{path}", body: "hi", want: 404},
		{method: "GET", target: "/nowhere/x", op: "/{route_prefix}/{path}", want: 404},
		{method: "POST", target: "/echo/x?fail=1", op: "/{route_prefix}/{path}", body: "hi", want: 500},
		{method: "GET", target: "/echo/x?fail=1", op: "/{route_prefix}/{path}", want: 500},
		{method: "POST", target: "/echo/x?delay_ms=3000", op: "/{route_prefix}/{path}", body: "slow", want: 504},
		{method: "POST", target: "/echo/x", op: "/{route_prefix}/{path}", body: strings.Repeat("x", 64<<20+1), want: 413},
		// Applications: the job API.
		{method: "POST", target: "/text/train?request_id=o1&num_epochs=1", op: "/{route_prefix}/{path}", want: 202},
		{method: "POST", target: "/text/train?request_id=o1&num_epochs=1", op: "/{route_prefix}/{path}", want: 200},
		{method: "POST", target: "/text/train?request_id=o3", op: "/{route_prefix}/{path}", want: 400},
		{method: "GET", target: "/text/train", op: "/{route_prefix}/{path}", want: 405},
		{method: "GET", target: "/text/train/status?request_id=o1", op: "/{route_prefix}/{method}/status", want: 200},
		{method: "GET", target: "/text/train/status?request_id=nope", op: "/{route_prefix}/{method}/status", want: 404},
		{method: "GET", target: "/text/train/status", op: "/{route_prefix}/{method}/status", want: 400},
		{method: "GET", target: "/text/train/list", op: "/{route_prefix}/{method}/list", want: 200},
		{method: "GET", target: "/text/train/list?filter_status=RUNNING&limit=5", op: "/{route_prefix}/{method}/list", want: 200},
		{method: "GET", target: "/text/train/list?limit=0", op: "/{route_prefix}/{method}/list", want: 400},
		{method: "GET", target: "/text/train/result?request_id=nope", op: "/{route_prefix}/{method}/result", want: 404},
		{method: "POST", target: "/text/train/cancel?request_id=nope", op: "/{route_prefix}/{method}/cancel", want: 404},
	} {
		c.check(call)
	}

	// A job's result: 202 while it runs (or 200 if it was quick), 200
	// once it succeeded; a cancelled job's result is 409.
	if st, _ := c.check(apiCall{method: "POST", target: "/text/train?request_id=o2&num_epochs=200&size=100000&dataset=synthetic", op: "/{route_prefix}/{path}", want: 202}); st != 202 {
		t.FailNow()
	}
	c.check(apiCall{method: "GET", target: "/text/train/result?request_id=o2", op: "/{route_prefix}/{method}/result", want: 202})
	c.check(apiCall{method: "POST", target: "/text/train/cancel?request_id=o2", op: "/{route_prefix}/{method}/cancel", want: 200})
	f.waitFor(t, 60*time.Second, "job o2 CANCELLED and o1 SUCCEEDED", func() error {
		for id, want := range map[string]string{"o2": `"CANCELLED"`, "o1": `"SUCCEEDED"`} {
			b, err := f.do(http.MethodGet, f.ingress+"/text/train/status?request_id="+id, "", nil)
			if err == nil && !strings.Contains(b, want) {
				err = errors.New(b)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	c.check(apiCall{method: "GET", target: "/text/train/result?request_id=o2", op: "/{route_prefix}/{method}/result", want: 409})
	c.check(apiCall{method: "GET", target: "/text/train/result?request_id=o1", op: "/{route_prefix}/{method}/result", want: 200})
	// Workflows (the Trainer's retrain pipeline): history and signal.
	c.check(apiCall{method: "POST", target: "/text/retrain?request_id=wo1", op: "/{route_prefix}/{path}", body: `{"num_epochs":1,"min_heldout":0.01}`, want: 202})
	f.waitFor(t, 60*time.Second, "workflow wo1 SUCCEEDED", func() error {
		b, err := f.do(http.MethodGet, f.ingress+"/text/retrain/status?request_id=wo1", "", nil)
		if err == nil && !strings.Contains(b, `"SUCCEEDED"`) {
			err = errors.New(b)
		}
		return err
	})
	c.check(apiCall{method: "GET", target: "/text/retrain/history?request_id=wo1", op: "/{route_prefix}/{method}/history", want: 200})
	c.check(apiCall{method: "GET", target: "/text/retrain/history?request_id=nope", op: "/{route_prefix}/{method}/history", want: 404})
	c.check(apiCall{method: "POST", target: "/text/retrain/signal?request_id=wo1", op: "/{route_prefix}/{method}/signal", want: 400})
	c.check(apiCall{method: "POST", target: "/text/retrain/signal?request_id=nope&name=go", op: "/{route_prefix}/{method}/signal", want: 404})
	c.check(apiCall{method: "POST", target: "/text/retrain/signal?request_id=wo1&name=go", op: "/{route_prefix}/{method}/signal", want: 409})
	// Last: deleting every application.
	c.check(apiCall{admin: true, method: "DELETE", target: "/api/serve/applications", op: "/api/serve/applications", want: 200})

	var missing []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			if !c.covered[method+" "+path] {
				missing = append(missing, method+" "+path)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("operations of %s no request drove: %s", openAPIPath, strings.Join(missing, ", "))
	}
}
