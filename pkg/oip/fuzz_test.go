package oip

import (
	"testing"
)

// FuzzInferRequest: the ingress's check (Validate) and the SDK's decode
// (ParseInferRequest) agree on every body, and what the SDK decoded
// encodes into a body both accept again, with the same tensors.
func FuzzInferRequest(f *testing.F) {
	for _, s := range []string{
		`{"id":"1","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}`,
		`{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT64","data":[[1,2],[3,4]]}],"outputs":[{"name":"y"}],"parameters":{"a":1}}`,
		`{"inputs":[{"name":"b","shape":[2],"datatype":"BYTES","data":["a","b"]},{"name":"t","shape":[1],"datatype":"BOOL","data":[true]}]}`,
		`{"inputs":[{"name":"h","shape":[1],"datatype":"FP16","data":[65504]}]}`,
		`{"inputs":[{"name":"u","shape":[1],"datatype":"UINT8","data":[256]}]}`,
		`{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","data":[1]}]}`,
		`{"inputs":[]}`, `{}`, `[]`, `{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[]}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		verr := Validate(body)
		req, perr := ParseInferRequest(body)
		if (verr == nil) != (perr == nil) {
			t.Fatalf("Validate = %v but ParseInferRequest = %v for %q", verr, perr, body)
		}
		if perr != nil {
			return
		}
		b, err := req.MarshalJSON()
		if err != nil {
			t.Fatalf("encode a parsed request: %v", err)
		}
		if err := Validate(b); err != nil {
			t.Fatalf("the SDK's encoding %s of %q is refused: %v", b, body, err)
		}
		again, err := ParseInferRequest(b)
		if err != nil || len(again.Inputs) != len(req.Inputs) {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		for i, in := range req.Inputs {
			a := again.Inputs[i]
			if a.Name != in.Name || a.Datatype != in.Datatype || len(a.Shape) != len(in.Shape) {
				t.Fatalf("input %d changed in the round trip: %+v vs %+v", i, a, in)
			}
		}
	})
}
