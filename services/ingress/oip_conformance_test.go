package ingress

// A client of the Open Inference Protocol v2 REST API written from the
// specification (kserve/open-inference-protocol,
// specification/protocol/inference_rest.md), not from jetserve's code:
// requests are the specification's JSON, written by hand, and every check
// is a sentence of it. This file deliberately imports no jetserve OIP type.
// The server under test is a real ingress on a real JetStream serving the
// specification's example model "mymodel" (see oip_test.go).

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
)

// specDatatypes is the specification's table of tensor data types.
var specDatatypes = map[string]bool{"BOOL": true, "UINT8": true, "UINT16": true, "UINT32": true, "UINT64": true,
	"INT8": true, "INT16": true, "INT32": true, "INT64": true, "FP16": true, "FP32": true, "FP64": true, "BYTES": true}

type specClient struct {
	t    *testing.T
	base string
}

// do sends a request and decodes the JSON object of the answer.
func (c specClient) do(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s = %d %q: the body is not a JSON object: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode, out
}

// wantError checks "a failed request must be indicated by an HTTP error
// status (typically 400). The HTTP body must contain the … error response
// object": {"error": $string}, here also naming what is wrong.
func (c specClient) wantError(method, path, body string, status int, mentions ...string) {
	c.t.Helper()
	code, out := c.do(method, path, body)
	msg, ok := out["error"].(string)
	if code != status || !ok || msg == "" {
		c.t.Errorf("%s %s = %d %v, want %d with {\"error\": $string}", method, path, code, out, status)
		return
	}
	for _, m := range mentions {
		if !strings.Contains(msg, m) {
			c.t.Errorf("%s %s error = %q, want it to mention %s", method, path, msg, m)
		}
	}
}

// checkMetadataTensor checks a $metadata_tensor: name, datatype of the
// table, shape an array of numbers (-1 for variable dimensions).
func checkMetadataTensor(t *testing.T, v any) {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Errorf("metadata tensor %v is not an object", v)
		return
	}
	if name, _ := m["name"].(string); name == "" {
		t.Errorf("metadata tensor %v has no name", m)
	}
	if dt, _ := m["datatype"].(string); !specDatatypes[dt] {
		t.Errorf("metadata tensor %v: datatype is not one of the specification's", m)
	}
	shape, ok := m["shape"].([]any)
	if !ok {
		t.Errorf("metadata tensor %v: shape is not an array", m)
	}
	for _, d := range shape {
		if f, ok := d.(float64); !ok || f != math.Trunc(f) || f < -1 {
			t.Errorf("metadata tensor %v: dimension %v is not an integer >= -1", m, d)
		}
	}
}

// flatten returns a tensor's data in row-major order ("Tensor elements may
// be presented in their natural multi-dimensional representation, or as a
// flattened one-dimensional representation").
func flatten(v any) []any {
	a, ok := v.([]any)
	if !ok {
		return []any{v}
	}
	var out []any
	for _, e := range a {
		out = append(out, flatten(e)...)
	}
	return out
}

// The specification's inference request example, with input1's data made
// to agree with its shape [3] (the example itself sends one value for three
// elements; see the error case below).
const specInferRequest = `{
  "id" : "42",
  "inputs" : [
    {
      "name" : "input0",
      "shape" : [ 2, 2 ],
      "datatype" : "UINT32",
      "data" : [ 1, 2, 3, 4 ]
    },
    {
      "name" : "input1",
      "shape" : [ 3 ],
      "datatype" : "BOOL",
      "data" : [ true, true, true ]
    }
  ],
  "outputs" : [
    {
      "name" : "output0"
    }
  ]
}`

func TestOIPConformance(t *testing.T) {
	c := specClient{t: t, base: startOIPFleet(t).base}

	t.Run("server metadata", func(t *testing.T) {
		c.t = t
		code, out := c.do("GET", "/v2", "")
		if code != http.StatusOK {
			t.Fatalf("GET v2 = %d, want 200", code)
		}
		if name, _ := out["name"].(string); name == "" {
			t.Errorf("server metadata %v: \"name\" must be a string", out)
		}
		if _, ok := out["version"].(string); !ok {
			t.Errorf("server metadata %v: \"version\" must be a string", out)
		}
		ext, ok := out["extensions"].([]any)
		if !ok {
			t.Errorf("server metadata %v: \"extensions\" must be an array", out)
		}
		for _, e := range ext {
			if _, ok := e.(string); !ok {
				t.Errorf("extension %v is not a string", e)
			}
		}
	})

	t.Run("server live and ready", func(t *testing.T) {
		c.t = t
		for _, p := range []string{"/v2/health/live", "/v2/health/ready"} {
			code, out := c.do("GET", p, "")
			if code != http.StatusOK {
				t.Errorf("GET %s = %d, want 200", p, code)
			}
			// $live_server_response and $ready_server_response: {"live": $bool}
			if live, ok := out["live"].(bool); !ok || !live {
				t.Errorf("GET %s = %v, want {\"live\": true}", p, out)
			}
		}
	})

	t.Run("model metadata", func(t *testing.T) {
		c.t = t
		for _, p := range []string{"/v2/models/mymodel", "/v2/models/mymodel/versions/1"} {
			code, out := c.do("GET", p, "")
			if code != http.StatusOK {
				t.Fatalf("GET %s = %d %v, want 200", p, code, out)
			}
			if out["name"] != "mymodel" {
				t.Errorf("GET %s name = %v, want mymodel", p, out["name"])
			}
			if _, ok := out["platform"].(string); !ok {
				t.Errorf("GET %s: \"platform\" must be a string", p)
			}
			if v, ok := out["versions"]; ok {
				vs, isArr := v.([]any)
				if !isArr || len(vs) == 0 || vs[0] != "1" {
					t.Errorf("GET %s versions = %v, want [\"1\"]", p, v)
				}
			}
			for _, side := range []string{"inputs", "outputs"} {
				ts, ok := out[side].([]any)
				if !ok || len(ts) == 0 {
					t.Errorf("GET %s: %q = %v, want the model's tensors", p, side, out[side])
				}
				for _, tm := range ts {
					checkMetadataTensor(t, tm)
				}
			}
		}
	})

	t.Run("model ready", func(t *testing.T) {
		c.t = t
		for _, p := range []string{"/v2/models/mymodel/ready", "/v2/models/mymodel/versions/1/ready"} {
			code, out := c.do("GET", p, "")
			// $ready_model_response: {"name": $string, "ready": $bool}
			if code != http.StatusOK || out["name"] != "mymodel" || out["ready"] != true {
				t.Errorf("GET %s = %d %v, want 200 {\"name\": \"mymodel\", \"ready\": true}", p, code, out)
			}
		}
	})

	t.Run("inference", func(t *testing.T) {
		c.t = t
		nested := strings.Replace(specInferRequest, `"data" : [ 1, 2, 3, 4 ]`, `"data" : [ [ 1, 2 ], [ 3, 4 ] ]`, 1)
		cases := []struct{ name, path, body, version string }{
			{"flat data", "/v2/models/mymodel/infer", specInferRequest, ""},
			{"natural multi-dimensional data", "/v2/models/mymodel/infer", nested, ""},
			{"versioned path", "/v2/models/mymodel/versions/1/infer", specInferRequest, "1"},
		}
		for _, tc := range cases {
			code, out := c.do("POST", tc.path, tc.body)
			if code != http.StatusOK {
				t.Fatalf("%s: POST %s = %d %v, want 200", tc.name, tc.path, code, out)
			}
			// "model_name": the name of the model used for inference.
			if out["model_name"] != "mymodel" {
				t.Errorf("%s: model_name = %v, want mymodel", tc.name, out["model_name"])
			}
			// "id": if specified in the request, it must be returned.
			if out["id"] != "42" {
				t.Errorf("%s: id = %v, want 42", tc.name, out["id"])
			}
			if v, ok := out["model_version"]; ok && v != tc.version || !ok && tc.version != "" {
				t.Errorf("%s: model_version = %v (present %v), want %q", tc.name, v, ok, tc.version)
			}
			// "the inference server must return the output0 output tensor",
			// a [3, 2] FP32 tensor: [1.0, 1.1, 2.0, 2.1, 3.0, 3.1].
			outs, _ := out["outputs"].([]any)
			if len(outs) != 1 {
				t.Fatalf("%s: outputs = %v, want exactly the requested output0", tc.name, out["outputs"])
			}
			o, _ := outs[0].(map[string]any)
			if o["name"] != "output0" || o["datatype"] != "FP32" {
				t.Errorf("%s: output %v, want output0 FP32", tc.name, o)
			}
			if shape, _ := json.Marshal(o["shape"]); string(shape) != "[3,2]" {
				t.Errorf("%s: output0 shape = %s, want [3,2]", tc.name, shape)
			}
			want := []float64{1.0, 1.1, 2.0, 2.1, 3.0, 3.1}
			got := flatten(o["data"])
			if len(got) != len(want) {
				t.Fatalf("%s: output0 data = %v, want %v", tc.name, o["data"], want)
			}
			for i, w := range want {
				if g, ok := got[i].(float64); !ok || math.Abs(g-w) > 1e-6 {
					t.Errorf("%s: output0 data[%d] = %v, want %v", tc.name, i, got[i], w)
				}
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		c.t = t
		infer := "/v2/models/mymodel/infer"
		swap := func(from, to string) string {
			if !strings.Contains(specInferRequest, from) {
				t.Fatalf("the example has no %q", from)
			}
			return strings.Replace(specInferRequest, from, to, 1)
		}
		// The specification's example verbatim sends [ true ] for shape [ 3 ].
		verbatim := swap(`"data" : [ true, true, true ]`, `"data" : [ true ]`)
		c.wantError("POST", infer, verbatim, 400, "input1")
		// Shape × datatype disagreeing with the data length.
		c.wantError("POST", infer, swap(`"data" : [ 1, 2, 3, 4 ]`, `"data" : [ 1, 2, 3 ]`), 400, "input0")
		// An unknown datatype ("the data-type … as defined in Tensor Data Types").
		c.wantError("POST", infer, swap(`"datatype" : "UINT32"`, `"datatype" : "UINT31"`), 400, "input0", "UINT31")
		// Values that are not of the datatype.
		c.wantError("POST", infer, swap(`[ 1, 2, 3, 4 ]`, `[ 1, 2, "three", 4 ]`), 400, "input0")
		c.wantError("POST", infer, swap(`[ 1, 2, 3, 4 ]`, `[ 1, 2, -3, 4 ]`), 400, "input0")
		// A missing input, and inputs missing their required fields.
		c.wantError("POST", infer, `{"id":"42","inputs":[{"name":"input0","shape":[2,2],"datatype":"UINT32","data":[1,2,3,4]}]}`, 400, "input1")
		c.wantError("POST", infer, `{"inputs":[]}`, 400, "inputs")
		c.wantError("POST", infer, `{"id":"42"}`, 400, "inputs")
		c.wantError("POST", infer, swap(`"name" : "input0",`, ``), 400, "name")
		c.wantError("POST", infer, swap(`"shape" : [ 2, 2 ],`, ``), 400, "input0", "shape")
		c.wantError("POST", infer, swap(`"datatype" : "UINT32",`, ``), 400, "input0", "datatype")
		c.wantError("POST", infer, swap(`,
      "data" : [ 1, 2, 3, 4 ]`, ``), 400, "input0", "data")
		// A body that is not an $inference_request.
		c.wantError("POST", infer, `not json`, 400)
		// A model the server does not have.
		c.wantError("POST", "/v2/models/nosuchmodel/infer", specInferRequest, 404, "nosuchmodel")
		c.wantError("GET", "/v2/models/nosuchmodel", "", 404, "nosuchmodel")
		c.wantError("GET", "/v2/models/nosuchmodel/ready", "", 404, "nosuchmodel")
		// A version the model does not have.
		c.wantError("POST", "/v2/models/mymodel/versions/9/infer", specInferRequest, 404, "9")
		c.wantError("GET", "/v2/models/mymodel/versions/9", "", 404, "9")
		// An output the model does not produce.
		c.wantError("POST", infer, swap(`"name" : "output0"`, `"name" : "output9"`), 400, "output9")
	})
}
