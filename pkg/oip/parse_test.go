package oip

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestParseRejects: every malformed request is refused by both
// ParseInferRequest and Validate with a *RequestError naming the input (or
// the field) and saying what is wrong.
func TestParseRejects(t *testing.T) {
	in := func(fields string) string { return `{"inputs":[` + fields + `]}` }
	tests := []struct {
		name, body string
		want       []string // substrings of the error
	}{
		{"not JSON", `{"inputs":[`, []string{"malformed JSON"}},
		{"not an object", `[1,2]`, []string{"request body", "must be a JSON object"}},
		{"trailing data", `{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]} x`, []string{"malformed JSON"}},
		{"no inputs", `{"id":"1"}`, []string{"inputs", "is required"}},
		{"empty inputs", `{"inputs":[]}`, []string{"inputs", "at least one input"}},
		{"inputs not an array", `{"inputs":{"name":"a"}}`, []string{"inputs", "must be a JSON array"}},
		{"id not a string", `{"id":42,"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]}`, []string{"id", "must be a string"}},
		{"parameters not an object", `{"parameters":[1],"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]}`, []string{"parameters", "must be a JSON object"}},
		{"missing name", in(`{"shape":[1],"datatype":"FP32","data":[1]}`), []string{"inputs[0]", `missing "name"`}},
		{"empty name", in(`{"name":"","shape":[1],"datatype":"FP32","data":[1]}`), []string{"inputs[0]", `"name" must not be empty`}},
		{"missing shape", in(`{"name":"x","datatype":"FP32","data":[1]}`), []string{`input "x"`, `missing "shape"`}},
		{"missing datatype", in(`{"name":"x","shape":[1],"data":[1]}`), []string{`input "x"`, `missing "datatype"`}},
		{"missing data", in(`{"name":"x","shape":[1],"datatype":"FP32"}`), []string{`input "x"`, `missing "data"`}},
		{"unknown datatype", in(`{"name":"x","shape":[1],"datatype":"FLOAT32","data":[1]}`), []string{`input "x"`, `unknown datatype "FLOAT32"`, "FP32"}},
		{"lower-case datatype", in(`{"name":"x","shape":[1],"datatype":"fp32","data":[1]}`), []string{`input "x"`, `unknown datatype "fp32"`}},
		{"unknown datatype, name last", in(`{"shape":[1],"datatype":"F","data":[1],"name":"late"}`), []string{`input "late"`, "unknown datatype"}},
		{"too few elements", in(`{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]}`), []string{`input "x"`, "shape [2 2] × FP32 needs 4 elements, data has 3"}},
		{"too many elements", in(`{"name":"x","shape":[3],"datatype":"BOOL","data":[true,true,true,false]}`), []string{`input "x"`, "needs 3 elements, data has 4"}},
		{"count checked when data comes first", in(`{"data":[1,2,3],"name":"x","shape":[2],"datatype":"INT32"}`), []string{`input "x"`, "needs 2 elements, data has 3"}},
		{"the specification's own example (shape [3], one BOOL)", in(`{"name":"input1","shape":[3],"datatype":"BOOL","data":[true]}`), []string{`input "input1"`, "needs 3 elements, data has 1"}},
		{"nesting against shape", in(`{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2,3],[4]]}`), []string{`input "x"`, "not nested as shape [2 2]"}},
		{"nested deeper than shape", in(`{"name":"x","shape":[4],"datatype":"FP32","data":[[1,2],[3,4]]}`), []string{`input "x"`, "deeper than shape"}},
		{"mixed nesting", in(`{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],3,4]}`), []string{`input "x"`, "mixes values and arrays"}},
		{"partly flattened", in(`{"name":"x","shape":[2,2,1],"datatype":"FP32","data":[[1,2],[3,4]]}`), []string{`input "x"`, "not nested as shape"}},
		{"data not an array", in(`{"name":"x","shape":[1],"datatype":"FP32","data":1.5}`), []string{`input "x"`, `"data" must be a JSON array`}},
		{"negative dimension", in(`{"name":"x","shape":[-1,2],"datatype":"FP32","data":[1,2]}`), []string{`input "x"`, "dimension 0 is -1"}},
		{"fractional dimension", in(`{"name":"x","shape":[1.5],"datatype":"FP32","data":[1]}`), []string{`input "x"`, "dimension 0 is 1.5"}},
		{"shape not an array", in(`{"name":"x","shape":4,"datatype":"FP32","data":[1,2,3,4]}`), []string{`input "x"`, `"shape" must be an array`}},
		{"shape beyond the body", in(`{"name":"x","shape":[100000,100000],"datatype":"FP32","data":[1]}`), []string{`input "x"`, "more elements than the request can hold"}},
		{"string in FP32", in(`{"name":"x","shape":[2],"datatype":"FP32","data":[1,"2"]}`), []string{`input "x"`, `element 1 ("2") is not a number`}},
		{"null in FP64", in(`{"name":"x","shape":[1],"datatype":"FP64","data":[null]}`), []string{`input "x"`, "element 0 (null) is not a number"}},
		{"FP32 overflow", in(`{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}`), []string{`input "x"`, "out of range for FP32"}},
		{"FP32 overflow without exponent", in(`{"name":"x","shape":[1],"datatype":"FP32","data":[340282366920938463463374607431768211456000.5]}`), []string{`input "x"`, "out of range for FP32"}},
		{"FP16 overflow", in(`{"name":"x","shape":[1],"datatype":"FP16","data":[70000]}`), []string{`input "x"`, "out of range for FP16"}},
		{"FP64 overflow", in(`{"name":"x","shape":[1],"datatype":"FP64","data":[1e309]}`), []string{`input "x"`, "out of range for FP64"}},
		{"fraction in INT32", in(`{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}`), []string{`input "x"`, "not an integer"}},
		{"INT8 overflow", in(`{"name":"x","shape":[2],"datatype":"INT8","data":[1,128]}`), []string{`input "x"`, "element 1 (128) is out of range for INT8"}},
		{"INT64 overflow", in(`{"name":"x","shape":[1],"datatype":"INT64","data":[9223372036854775808]}`), []string{`input "x"`, "out of range for INT64"}},
		{"negative UINT8", in(`{"name":"x","shape":[1],"datatype":"UINT8","data":[-1]}`), []string{`input "x"`, "negative"}},
		{"UINT16 overflow", in(`{"name":"x","shape":[1],"datatype":"UINT16","data":[65536]}`), []string{`input "x"`, "out of range for UINT16"}},
		{"number in BOOL", in(`{"name":"x","shape":[1],"datatype":"BOOL","data":[1]}`), []string{`input "x"`, "BOOL needs true or false"}},
		{"number in BYTES", in(`{"name":"x","shape":[1],"datatype":"BYTES","data":[1]}`), []string{`input "x"`, "BYTES needs strings"}},
		{"duplicate input", in(`{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[2]}`), []string{`input "x"`, "twice"}},
		{"duplicate field", in(`{"name":"x","shape":[1],"datatype":"FP32","data":[1],"data":[2]}`), []string{`input "x"`, "duplicate"}},
		{"input parameters not an object", in(`{"name":"x","shape":[1],"datatype":"FP32","parameters":"p","data":[1]}`), []string{`input "x"`, `"parameters" must be a JSON object, got a string`}},
		{"input parameters not an object, name last", in(`{"parameters":[1],"shape":[1],"datatype":"FP32","data":[1],"name":"y"}`), []string{`input "y"`, `"parameters" must be a JSON object, got an array`}},
		{"malformed data", in(`{"name":"x","shape":[2],"datatype":"FP32","data":[1,,2]}`), []string{`input "x"`, "malformed JSON"}},
		{"output without name", `{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{}]}`, []string{"outputs[0]", `missing "name"`}},
		{"output twice", `{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"o"},{"name":"o"}]}`, []string{`output "o"`, "twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for fn, f := range map[string]func([]byte) error{
				"ParseInferRequest": func(b []byte) error { _, err := ParseInferRequest(b); return err },
				"Validate":          Validate,
			} {
				err := f([]byte(tt.body))
				var re *RequestError
				if !errors.As(err, &re) {
					t.Fatalf("%s(%s) = %v (%T), want a *RequestError", fn, tt.body, err, err)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s(%s) = %q, want it to contain %q", fn, tt.body, err, w)
					}
				}
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	body := `{
	  "id": "42",
	  "parameters": {"content_type": "np", "top_k": 3, "debug": false},
	  "inputs": [
	    {"name": "a", "shape": [2, 2], "datatype": "UINT32", "data": [[1, 2], [3, 4]]},
	    {"name": "b", "shape": [3], "datatype": "BOOL", "data": [true, false, true]},
	    {"data": ["hé", "\u00e9\n"], "datatype": "BYTES", "shape": [2, 1], "name": "c"},
	    {"name": "d", "shape": [1, 2], "datatype": "FP16", "data": [65504, -0.5]},
	    {"name": "e", "shape": [2], "datatype": "INT8", "data": [-128, 127], "parameters": {"x": 1}},
	    {"name": "f", "shape": [0], "datatype": "FP64", "data": []},
	    {"name": "g", "shape": [], "datatype": "INT64", "data": [-9223372036854775808]},
	    {"name": "h", "shape": [2, 0], "datatype": "FP32", "data": [[], []]},
	    {"name": "i", "shape": [1], "datatype": "FP32", "data": [1e-50], "extra": {"ignored": [1, 2]}}
	  ],
	  "outputs": [{"name": "o", "parameters": {"binary_data": false}}],
	  "unknown": null
	}`
	if err := Validate([]byte(body)); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	req, err := ParseInferRequest([]byte(body))
	if err != nil {
		t.Fatalf("ParseInferRequest() = %v", err)
	}
	if req.ID != "42" || req.Parameters["top_k"] != 3.0 || len(req.Inputs) != 9 || len(req.Outputs) != 1 || req.Outputs[0].Name != "o" {
		t.Fatalf("ParseInferRequest() = %+v, want id 42, 9 inputs, output o", req)
	}
	check := func(name string, got, want any, err error) {
		t.Helper()
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("input %s = %#v, %v; want %#v", name, got, err, want)
		}
	}
	u, err := req.Input("a").Uint32s()
	check("a", u, []uint32{1, 2, 3, 4}, err)
	b, err := req.Input("b").Bools()
	check("b", b, []bool{true, false, true}, err)
	s, err := req.Input("c").Strings()
	check("c", s, []string{"hé", "é\n"}, err)
	f16, err := req.Input("d").Float32s()
	check("d", f16, []float32{65504, -0.5}, err)
	i8, err := req.Input("e").Int8s()
	check("e", i8, []int8{-128, 127}, err)
	f64, err := req.Input("f").Float64s()
	check("f", f64, []float64{}, err)
	i64, err := req.Input("g").Int64s()
	check("g", i64, []int64{-9223372036854775808}, err)
	if req.Input("e").Parameters["x"] != 1.0 {
		t.Errorf("input e parameters = %v, want x=1", req.Input("e").Parameters)
	}
	if _, err := req.Input("a").Float32s(); err == nil || !strings.Contains(err.Error(), `input "a": is UINT32, not FP32`) {
		t.Errorf("Float32s() of a UINT32 input = %v, want an error naming the input and both datatypes", err)
	}
}

// TestRoundTrip: a request and a response encode to the protocol's JSON
// and parse back to the same tensors.
func TestRoundTrip(t *testing.T) {
	probs, err := NewTensor("probabilities", []int64{2, 3}, []float32{0.1, 0.2, 0.7, 1, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	labels, _ := NewTensor("label", []int64{2}, []string{"virginica", "setosa"})
	ids, _ := NewTensor("class", []int64{2}, []int64{2, 0})
	resp := &InferResponse{ModelName: "iris", ID: "r1", Outputs: []*Tensor{probs, labels, ids}}
	b, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"model_name":"iris","id":"r1","outputs":[` +
		`{"name":"probabilities","shape":[2,3],"datatype":"FP32","data":[0.1,0.2,0.7,1,0,0]},` +
		`{"name":"label","shape":[2],"datatype":"BYTES","data":["virginica","setosa"]},` +
		`{"name":"class","shape":[2],"datatype":"INT64","data":[2,0]}]}`
	if string(b) != want {
		t.Fatalf("json.Marshal(response) =\n%s\nwant\n%s", b, want)
	}
	var back InferResponse
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, resp) {
		t.Errorf("response round trip = %+v, want %+v", back, resp)
	}

	x, _ := NewTensor("x", []int64{1, 2}, []float64{1.5, -2})
	req := &InferRequest{ID: "7", Inputs: []*Tensor{x}, Outputs: []RequestedOutput{{Name: "label"}}}
	rb, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(rb); err != nil {
		t.Fatalf("Validate(%s) = %v", rb, err)
	}
	var rback InferRequest
	if err := json.Unmarshal(rb, &rback); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&rback, req) {
		t.Errorf("request round trip = %+v, want %+v", rback, req)
	}
}

func TestNewTensorChecks(t *testing.T) {
	if _, err := NewTensor("y", []int64{2, 2}, []float32{1, 2, 3}); err == nil || !strings.Contains(err.Error(), `output "y"`) {
		t.Errorf("NewTensor(shape [2 2], 3 values) = %v, want an error naming the output", err)
	}
	if _, err := NewFP16Tensor("h", []int64{1}, []float32{70000}); err == nil {
		t.Error("NewFP16Tensor(70000) = nil error, want out of range")
	}
	nan, _ := NewTensor("n", []int64{1}, []float64{0})
	d, _ := nan.Float64s()
	d[0] = d[0] / d[0] // NaN, which JSON cannot carry
	if _, err := json.Marshal(&InferResponse{ModelName: "m", Outputs: []*Tensor{nan}}); err == nil || !strings.Contains(err.Error(), `output "n"`) {
		t.Errorf("json.Marshal(NaN output) = %v, want an error naming the output", err)
	}
}

func TestParsePath(t *testing.T) {
	tests := []struct {
		path string
		want Route
		ok   bool
	}{
		{"/v2", Route{Endpoint: ServerMeta}, true},
		{"/v2/", Route{Endpoint: ServerMeta}, true},
		{"/v2/health/live", Route{Endpoint: ServerLive}, true},
		{"/v2/health/ready", Route{Endpoint: ServerReady}, true},
		{"/v2/models/iris", Route{Endpoint: ModelMeta, Model: "iris"}, true},
		{"/v2/models/iris/ready", Route{Endpoint: ModelReady, Model: "iris"}, true},
		{"/v2/models/iris/infer", Route{Endpoint: ModelInfer, Model: "iris"}, true},
		{"/v2/models/iris/versions/3", Route{Endpoint: ModelMeta, Model: "iris", Version: "3"}, true},
		{"/v2/models/iris/versions/3/ready", Route{Endpoint: ModelReady, Model: "iris", Version: "3"}, true},
		{"/v2/models/iris/versions/3/infer", Route{Endpoint: ModelInfer, Model: "iris", Version: "3"}, true},
		{"/v2/models/iris/versions", Route{}, false},
		{"/v2/models/iris/predict", Route{}, false},
		{"/v2/models/", Route{}, false},
		{"/v2/models//infer", Route{}, false},
		{"/v2/health", Route{}, false},
		{"/v1/models/iris", Route{}, false},
		{"/v20", Route{}, false},
	}
	for _, tt := range tests {
		got, ok := ParsePath(tt.path)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
		if ok && got.Model != "" {
			if p := Path(got.Endpoint, got.Model, got.Version); p != strings.TrimSuffix(tt.path, "/") {
				t.Errorf("Path(%v, %q, %q) = %q, want %q", got.Endpoint, got.Model, got.Version, p, tt.path)
			}
		}
	}
}
