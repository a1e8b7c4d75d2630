package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/models"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// recordingCaller records every call and answers with answer(req).
type recordingCaller struct {
	calls  []string // "app/deployment"
	got    *serve.Request
	answer func(req *serve.Request) (*serve.Response, error)
}

func (c *recordingCaller) Call(ctx context.Context, app, dep string, req *serve.Request) (*serve.Response, error) {
	c.calls = append(c.calls, app+"/"+dep)
	c.got = req
	return c.answer(req)
}

func (c *recordingCaller) Stream(context.Context, string, string, *serve.Request, wire.StreamSink) error {
	return errors.New("no streaming")
}

func oipHandler(t *testing.T, c Caller, healthy error) *Handler {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := config.Parse([]byte(`applications:
- name: vision
  route_prefix: /vision
  ingress: Front
  deployments:
  - {name: Front, handler: front}
  - {name: Classifier, handler: cls, protocol: oip, oip_models: [iris, iris-small]}
`))
	if err != nil {
		t.Fatal(err)
	}
	tab, err := routes.FromConfig(sc)
	if err != nil {
		t.Fatal(err)
	}
	mt := models.FromConfig(sc)
	return New(Options{Caller: c, Routes: func() *routes.Table { return tab }, Models: func() *models.Table { return mt },
		Healthy: func() error { return healthy }, MaxBodyBytes: 1 << 20, Metrics: m, Log: zerolog.Nop()})
}

func do(h http.Handler, method, path, body string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func oipErrorOf(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == nil {
		t.Fatalf("body %q is not the protocol's {\"error\": ...}: %v", w.Body, err)
	}
	return *e.Error
}

const goodInfer = `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}`

func TestOIPForwardsToTheModelsDeployment(t *testing.T) {
	c := &recordingCaller{answer: func(*serve.Request) (*serve.Response, error) {
		return &serve.Response{Status: 200, Header: http.Header{"Content-Type": {"application/json"}, "X-Model": {"m"}},
			Body: []byte(`{"model_name":"iris-small","outputs":[]}`)}, nil
	}}
	h := oipHandler(t, c, nil)
	w := do(h, "POST", "/v2/models/iris-small/versions/3/infer?trace=1", goodInfer, "X-Request-Id", "rid-7", "serve_multiplexed_model_id", "spoofed")
	if w.Code != 200 || w.Body.String() != `{"model_name":"iris-small","outputs":[]}` || w.Header().Get("X-Model") != "m" {
		t.Fatalf("POST infer = %d %v %q, want the deployment's answer passed through", w.Code, w.Header(), w.Body)
	}
	if len(c.calls) != 1 || c.calls[0] != "vision/Classifier" {
		t.Fatalf("calls = %v, want one to vision/Classifier (the model's deployment, not the app's ingress)", c.calls)
	}
	got := c.got
	if got.Method != "POST" || got.Path != "/v2/models/iris-small/versions/3/infer" || string(got.Body) != goodInfer ||
		got.Query.Get("trace") != "1" || got.RequestID != "rid-7" {
		t.Errorf("forwarded %s %s ?%v id %q body %q; want the OIP path, query, id and body untouched", got.Method, got.Path, got.Query, got.RequestID, got.Body)
	}
	if v := got.Header.Values(protocol.HeaderModelID); len(v) != 1 || v[0] != "iris-small" {
		t.Errorf("forwarded %s = %v, want exactly [iris-small] (the URL's model, not the client's header)", protocol.HeaderModelID, v)
	}
	for _, p := range []string{"/v2/models/iris", "/v2/models/iris/ready"} {
		c.calls = nil
		if w := do(h, "GET", p, ""); w.Code != 200 || len(c.calls) != 1 || c.got.Path != p || c.got.Method != "GET" {
			t.Errorf("GET %s = %d, calls %v, forwarded path %q; want it passed to the deployment", p, w.Code, c.calls, c.got.Path)
		}
	}
}

func TestOIPRefusesBeforeForwarding(t *testing.T) {
	c := &recordingCaller{answer: func(*serve.Request) (*serve.Response, error) {
		t.Error("the deployment was called for a request the ingress must refuse")
		return &serve.Response{Status: 200}, nil
	}}
	h := oipHandler(t, c, nil)
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		want                     string
	}{
		{"malformed tensor", "POST", "/v2/models/iris/infer", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}`, nil, 400, `input "x": shape [1 4] × FP32 needs 4 elements, data has 3`},
		{"unknown datatype", "POST", "/v2/models/iris/infer", `{"inputs":[{"name":"petals","shape":[1],"datatype":"FP8","data":[1]}]}`, nil, 400, `input "petals": unknown datatype "FP8"`},
		{"missing input", "POST", "/v2/models/iris/infer", `{"inputs":[]}`, nil, 400, "inputs: must list at least one input"},
		{"not JSON", "POST", "/v2/models/iris/infer", `inputs=1`, nil, 400, "malformed JSON"},
		{"binary extension", "POST", "/v2/models/iris/infer", goodInfer, []string{"Inference-Header-Content-Length", "10"}, 400, "binary tensor data extension"},
		{"unknown model", "POST", "/v2/models/rose/infer", goodInfer, nil, 404, `unknown model "rose"; the models are iris, iris-small`},
		{"the app's ingress is no model", "GET", "/v2/models/Front", "", nil, 404, `unknown model "Front"`},
		{"no such endpoint", "GET", "/v2/models/iris/explain", "", nil, 404, "no Open Inference Protocol v2 endpoint"},
		{"no such endpoint either", "GET", "/v2/repository/index", "", nil, 404, "no Open Inference Protocol v2 endpoint"},
		{"GET infer", "GET", "/v2/models/iris/infer", "", nil, 405, "use POST"},
		{"POST metadata", "POST", "/v2/models/iris", "{}", nil, 405, "use GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := do(h, tt.method, tt.path, tt.body, tt.hdr...)
			if msg := oipErrorOf(t, w); w.Code != tt.status || !strings.Contains(msg, tt.want) {
				t.Errorf("%s %s = %d %q, want %d with an error containing %q", tt.method, tt.path, w.Code, msg, tt.status, tt.want)
			}
		})
	}
	if w := do(h, "GET", "/v2/models/iris/infer", ""); w.Header().Get("Allow") != "POST" {
		t.Errorf("405 Allow = %q, want POST", w.Header().Get("Allow"))
	}
}

func TestOIPErrorsKeepTheProtocolShape(t *testing.T) {
	tests := []struct {
		name       string
		resp       *serve.Response
		err        error
		path       string
		status     int
		want       string
		retryAfter bool
	}{
		{"queue full", &serve.Response{Status: 503, Header: http.Header{protocol.HdrError: {string(protocol.ErrQueueFull)}}, Body: []byte("queue full")},
			nil, "/v2/models/iris/infer", 503, "queue full", true},
		{"no router", nil, &serve.Error{Status: 503, Code: protocol.ErrUnavailable, Msg: "no router is running"}, "/v2/models/iris/infer", 503, "no router is running", true},
		{"transport failure", nil, errors.New("connection reset"), "/v2/models/iris/infer", 503, "upstream unavailable", true},
		{"replica panic (plain text)", &serve.Response{Status: 500, Header: http.Header{protocol.HdrError: {string(protocol.ErrInternal)}}, Body: []byte("handler panicked: boom")},
			nil, "/v2/models/iris/infer", 500, "handler panicked: boom", false},
		{"model's own error passes", &serve.Response{Status: 422, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"error":"petal too long"}`)},
			nil, "/v2/models/iris/infer", 422, "petal too long", false},
		{"ready times out", nil, &serve.Error{Status: 504, Code: protocol.ErrTimeout, Msg: "request timed out"}, "/v2/models/iris/ready", 503, `model "iris" is not ready: request timed out`, false},
		{"ready, deployment at zero", &serve.Response{Status: 503, Header: http.Header{protocol.HdrError: {string(protocol.ErrNoReplicas)}}, Body: []byte("no replicas")},
			nil, "/v2/models/iris/ready", 503, "not ready: no replicas", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &recordingCaller{answer: func(*serve.Request) (*serve.Response, error) { return tt.resp, tt.err }}
			method := "POST"
			if strings.HasSuffix(tt.path, "ready") {
				method = "GET"
			}
			w := do(oipHandler(t, c, nil), method, tt.path, goodInfer)
			if msg := oipErrorOf(t, w); w.Code != tt.status || !strings.Contains(msg, tt.want) || (w.Header().Get("Retry-After") != "") != tt.retryAfter {
				t.Errorf("%s = %d %v %q, want %d with error %q (Retry-After %v)", tt.path, w.Code, w.Header(), msg, tt.status, tt.want, tt.retryAfter)
			}
		})
	}
}

func TestOIPServerEndpoints(t *testing.T) {
	c := &recordingCaller{answer: func(*serve.Request) (*serve.Response, error) { return nil, errors.New("not called") }}
	ready := oipHandler(t, c, nil)
	if w := do(ready, "GET", "/v2", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"name":"jetserve"`) || !strings.Contains(w.Body.String(), `"extensions":[]`) {
		t.Errorf("GET /v2 = %d %q, want server metadata", w.Code, w.Body)
	}
	for path, want := range map[string]string{"/v2/health/live": `"live":true`, "/v2/health/ready": `"ready":true`} {
		if w := do(ready, "GET", path, ""); w.Code != 200 || !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET %s = %d %q, want 200 %s", path, w.Code, w.Body, want)
		}
	}
	notReady := oipHandler(t, c, errors.New("route table not loaded"))
	if w := do(notReady, "GET", "/v2/health/ready", ""); w.Code != 503 || !strings.Contains(w.Body.String(), "route table not loaded") {
		t.Errorf("GET /v2/health/ready before the routes loaded = %d %q, want 503 with the reason", w.Code, w.Body)
	}
	if w := do(notReady, "GET", "/v2/health/live", ""); w.Code != 200 {
		t.Errorf("GET /v2/health/live while not ready = %d, want 200 (the ingress is up)", w.Code)
	}
	if w := do(ready, "GET", "/-/models", ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"iris":{"app":"vision","deployment":"Classifier","runtime":"go"}`) {
		t.Errorf("GET /-/models = %d %q, want the model table", w.Code, w.Body)
	}
	if len(c.calls) != 0 {
		t.Errorf("server endpoints called deployments: %v", c.calls)
	}
}
