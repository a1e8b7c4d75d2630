package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/oip"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// affine is a real (tiny) model: y = x·W + b for a batch of 2-feature rows,
// W 2×2, answered as "y" (FP32 [n,2]) and "argmax" (INT64 [n]). It
// declares its metadata (version "1") and can be made not ready.
type affine struct {
	notReady atomic.Bool
}

func (a *affine) ModelMetadata(_ context.Context, model string) (*serve.ModelMetadata, error) {
	if model != "affine" {
		return nil, serve.Errorf(http.StatusNotFound, "unknown model %q", model)
	}
	return &serve.ModelMetadata{Name: "affine", Versions: []string{"1"},
		Inputs:  []serve.TensorMetadata{{Name: "x", Datatype: oip.FP32, Shape: []int64{-1, 2}}},
		Outputs: []serve.TensorMetadata{{Name: "y", Datatype: oip.FP32, Shape: []int64{-1, 2}}, {Name: "argmax", Datatype: oip.INT64, Shape: []int64{-1}}}}, nil
}

func (a *affine) ModelReady(context.Context, string) error {
	if a.notReady.Load() {
		return errors.New("weights not loaded")
	}
	return nil
}

func (a *affine) Infer(_ context.Context, req *serve.InferRequest) (*serve.InferResponse, error) {
	x, err := req.Input("x").Float32s()
	if err != nil {
		return nil, serve.Errorf(http.StatusBadRequest, "%v", err)
	}
	w := [2][2]float32{{1, 2}, {3, -1}}
	n := len(x) / 2
	y := make([]float32, 2*n)
	arg := make([]int64, n)
	for i := range n {
		for j := range 2 {
			y[2*i+j] = x[2*i]*w[0][j] + x[2*i+1]*w[1][j] + 0.5
		}
		if y[2*i+1] > y[2*i] {
			arg[i] = 1
		}
	}
	yt, err := oip.NewTensor("y", []int64{int64(n), 2}, y)
	if err != nil {
		return nil, err
	}
	at, err := oip.NewTensor("argmax", []int64{int64(n)}, arg)
	if err != nil {
		return nil, err
	}
	return &serve.InferResponse{Outputs: []*serve.Tensor{yt, at}}, nil
}

func localOIP(t *testing.T, inf serve.Inferer) *serve.Handle {
	t.Helper()
	reg := serve.NewRegistry()
	if err := reg.Register("affine", func(context.Context, serve.Init) (serve.Handler, error) { return serve.OIP(inf), nil }); err != nil {
		t.Fatal(err)
	}
	app := config.Application{Name: "m", RoutePrefix: "/m", Ingress: "Affine", Deployments: []config.Deployment{
		{Name: "Affine", Handler: "affine", Protocol: config.ProtocolOIP, OIPModels: []string{"affine"}}}}
	local, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return local.Ingress()
}

// call sends one request through the in-process backend and returns the
// status and the decoded JSON body.
func call(t *testing.T, h *serve.Handle, method, path, body string) (int, map[string]any) {
	t.Helper()
	resp, _ := h.Call(context.Background(), &serve.Request{Method: method, Path: path, Body: []byte(body)})
	if resp == nil {
		t.Fatalf("%s %s: no response", method, path)
	}
	var out map[string]any
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		t.Fatalf("%s %s = %d %q: not a JSON object: %v", method, path, resp.Status, resp.Body, err)
	}
	return resp.Status, out
}

func TestOIPAdapterInfers(t *testing.T) {
	h := localOIP(t, &affine{})
	body := `{"id":"q1","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,0],[0,1]]}]}`
	for _, path := range []string{"/v2/models/affine/infer", "/v2/models/affine/versions/1/infer"} {
		status, out := call(t, h, "POST", path, body)
		if status != 200 || out["model_name"] != "affine" || out["id"] != "q1" {
			t.Fatalf("POST %s = %d %v, want 200 from model affine with id q1", path, status, out)
		}
		outs := out["outputs"].([]any)
		y := outs[0].(map[string]any)
		if y["name"] != "y" || y["datatype"] != "FP32" || !equalJSON(y["shape"], []any{2.0, 2.0}) || !equalJSON(y["data"], []any{1.5, 2.5, 3.5, -0.5}) {
			t.Errorf("POST %s output y = %v, want FP32 [2,2] [1.5 2.5 3.5 -0.5]", path, y)
		}
		if am := outs[1].(map[string]any); !equalJSON(am["data"], []any{1.0, 0.0}) {
			t.Errorf("POST %s output argmax = %v, want [1 0]", path, am)
		}
		if v, versioned := out["model_version"]; versioned != strings.Contains(path, "versions") || versioned && v != "1" {
			t.Errorf("POST %s model_version = %v (present %v), want it only for the versioned path", path, v, versioned)
		}
	}
	t.Run("requested outputs only", func(t *testing.T) {
		_, out := call(t, h, "POST", "/v2/models/affine/infer",
			`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,1]}],"outputs":[{"name":"argmax"}]}`)
		outs := out["outputs"].([]any)
		if len(outs) != 1 || outs[0].(map[string]any)["name"] != "argmax" {
			t.Errorf("outputs = %v, want only argmax", outs)
		}
	})
	t.Run("typed chaining with serve.Infer", func(t *testing.T) {
		x, _ := oip.NewTensor("x", []int64{1, 2}, []float32{2, 1})
		resp, err := serve.Infer(context.Background(), h, "affine", &serve.InferRequest{Inputs: []*serve.Tensor{x}})
		if err != nil {
			t.Fatal(err)
		}
		y, err := resp.Output("y").Float32s()
		if err != nil || len(y) != 2 || y[0] != 5.5 || y[1] != 3.5 {
			t.Errorf("serve.Infer y = %v, %v; want [5.5 3.5]", y, err)
		}
		bad, _ := oip.NewTensor("x", []int64{1, 3}, []float32{1, 2, 3})
		_, err = serve.Infer(context.Background(), h, "affine", &serve.InferRequest{Inputs: []*serve.Tensor{bad}})
		var e *serve.Error
		if !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Msg, `input "x"`) || strings.Contains(e.Msg, "{") {
			t.Errorf("serve.Infer(wrong shape) = %v, want a 400 *serve.Error whose message is the model's error text", err)
		}
	})
}

func TestOIPAdapterRefuses(t *testing.T) {
	h := localOIP(t, &affine{})
	x := func(shape, dt, data string) string {
		return `{"inputs":[{"name":"x","shape":` + shape + `,"datatype":"` + dt + `","data":` + data + `}]}`
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
	}{
		{"malformed tensor", "POST", "/v2/models/affine/infer", x("[2,2]", "FP32", "[1,2,3]"), 400, `input "x": shape [2 2] × FP32 needs 4 elements, data has 3`},
		{"unknown datatype", "POST", "/v2/models/affine/infer", x("[1,2]", "FLOAT", "[1,2]"), 400, `input "x": unknown datatype "FLOAT"`},
		{"declared input missing", "POST", "/v2/models/affine/infer", `{"inputs":[{"name":"z","shape":[1],"datatype":"FP32","data":[1]}]}`, 400, `input "x": missing`},
		{"undeclared input", "POST", "/v2/models/affine/infer",
			`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]},{"name":"z","shape":[1],"datatype":"FP32","data":[1]}]}`, 400, `input "z": model "affine" has no such input`},
		{"wrong datatype", "POST", "/v2/models/affine/infer", x("[1,2]", "FP64", "[1,2]"), 400, `input "x": is FP64, model "affine" takes FP32`},
		{"shape does not fit", "POST", "/v2/models/affine/infer", x("[1,3]", "FP32", "[1,2,3]"), 400, `input "x": shape [1 3] does not fit`},
		{"unknown output", "POST", "/v2/models/affine/infer",
			`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[1,2]}],"outputs":[{"name":"q"}]}`, 400, `output "q": model "affine" has no such output`},
		{"unknown version", "POST", "/v2/models/affine/versions/9/infer", x("[1,2]", "FP32", "[1,2]"), 404, `model "affine" has no version "9"; its versions are 1`},
		{"unknown model", "GET", "/v2/models/other", "", 404, `unknown model "other"`},
		{"no such endpoint", "GET", "/v2/models/affine/explain", "", 404, "no Open Inference Protocol v2 endpoint"},
		{"GET infer", "GET", "/v2/models/affine/infer", "", 405, "use POST"},
		{"POST metadata", "POST", "/v2/models/affine", "{}", 405, "use GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, out := call(t, h, tt.method, tt.path, tt.body)
			msg, _ := out["error"].(string)
			if status != tt.status || !strings.Contains(msg, tt.want) {
				t.Errorf("%s %s = %d %v, want %d with an error containing %q", tt.method, tt.path, status, out, tt.status, tt.want)
			}
		})
	}
}

func TestOIPAdapterMetadataAndHealth(t *testing.T) {
	model := &affine{}
	h := localOIP(t, model)
	status, out := call(t, h, "GET", "/v2/models/affine", "")
	if status != 200 || out["name"] != "affine" || out["platform"] != oip.Platform || !equalJSON(out["versions"], []any{"1"}) ||
		!equalJSON(out["inputs"], []any{map[string]any{"name": "x", "datatype": "FP32", "shape": []any{-1.0, 2.0}}}) {
		t.Errorf("GET /v2/models/affine = %d %v, want its metadata", status, out)
	}
	if status, out := call(t, h, "GET", "/v2/models/affine/ready", ""); status != 200 || out["ready"] != true || out["name"] != "affine" {
		t.Errorf("GET ready = %d %v, want 200 ready", status, out)
	}
	model.notReady.Store(true)
	if status, out := call(t, h, "GET", "/v2/models/affine/versions/1/ready", ""); status != 503 || out["ready"] != false || !strings.Contains(out["error"].(string), "weights not loaded") {
		t.Errorf("GET ready while not ready = %d %v, want 503 ready false with the reason", status, out)
	}
	if status, out := call(t, h, "GET", "/v2", ""); status != 200 || out["name"] != "jetserve" || out["version"] == "" || out["extensions"] == nil {
		t.Errorf("GET /v2 = %d %v, want server metadata", status, out)
	}
	for _, p := range []string{"/v2/health/live", "/v2/health/ready"} {
		if status, out := call(t, h, "GET", p, ""); status != 200 || out["live"] != true {
			t.Errorf("GET %s = %d %v, want 200 live", p, status, out)
		}
	}
}

// plain has no metadata: any model name reaches Infer, which sees it.
type plain struct{}

func (plain) Infer(_ context.Context, req *serve.InferRequest) (*serve.InferResponse, error) {
	if req.Model == "broken" {
		return nil, errors.New("model crashed")
	}
	out, _ := oip.NewTensor("model", []int64{1}, []string{req.Model + "@" + req.Version})
	return &serve.InferResponse{Outputs: []*serve.Tensor{out}}, nil
}

func TestOIPAdapterWithoutMetadata(t *testing.T) {
	h := localOIP(t, plain{})
	body := `{"inputs":[{"name":"anything","shape":[1],"datatype":"BYTES","data":["a"]}]}`
	status, out := call(t, h, "POST", "/v2/models/m2/versions/7/infer", body)
	if status != 200 || !equalJSON(out["outputs"].([]any)[0].(map[string]any)["data"], []any{"m2@7"}) {
		t.Errorf("POST infer = %d %v, want the model and version the URL named", status, out)
	}
	if status, out := call(t, h, "POST", "/v2/models/broken/infer", body); status != 500 || out["error"] != "model crashed" {
		t.Errorf("POST infer to a failing model = %d %v, want 500 with its error", status, out)
	}
	if status, out := call(t, h, "GET", "/v2/models/m2", ""); status != 200 || out["name"] != "m2" || out["inputs"] == nil {
		t.Errorf("GET metadata = %d %v, want a minimal metadata object", status, out)
	}
	if err := serve.OIP(plain{}).Reconfigure(context.Background(), nil); err == nil {
		t.Error("Reconfigure of an Inferer without Reconfigure = nil, want an error (the replica restarts)")
	}
}

func equalJSON(got any, want any) bool {
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	return string(g) == string(w)
}
