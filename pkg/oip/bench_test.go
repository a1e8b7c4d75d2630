package oip

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
)

// fp32Request is an inference request with one FP32 input of shape,
// flat data, values as a Python client's json.dumps writes them.
func fp32Request(shape ...int64) []byte {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	r := rand.New(rand.NewPCG(1, 2))
	b := []byte(`{"id":"bench","inputs":[{"name":"input-0","shape":`)
	s, _ := json.Marshal(shape)
	b = append(b, s...)
	b = append(b, `,"datatype":"FP32","data":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendFloat(b, float64(r.Float32()*2-1), 'g', -1, 32)
	}
	return append(b, "]}]}"...)
}

// BenchmarkValidate measures the ingress's check of an inference request
// (Validate) and the SDK's typed decode (ParseInferRequest) against two
// baselines on the same body in the same run: encoding/json's syntax
// check alone (json.Valid: the least any JSON-reading gateway does) and
// encoding/json decoding the request into a struct with []float32 data
// (what a hand-written Go server would do). Compare ns/op as ratios.
func BenchmarkValidate(b *testing.B) {
	type stdInput struct {
		Name     string    `json:"name"`
		Shape    []int64   `json:"shape"`
		Datatype string    `json:"datatype"`
		Data     []float32 `json:"data"`
	}
	type stdRequest struct {
		ID     string     `json:"id"`
		Inputs []stdInput `json:"inputs"`
	}
	for _, shape := range [][]int64{{1, 64}, {1, 3, 224, 224}, {32, 3, 224, 224}} {
		body := fp32Request(shape...)
		if err := Validate(body); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("%v_%dKiB", shape, len(body)>>10)
		run := func(sub string, f func() error) {
			b.Run(name+"/"+sub, func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if err := f(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		run("json.Valid", func() error {
			if !json.Valid(body) {
				return fmt.Errorf("invalid")
			}
			return nil
		})
		run("Validate", func() error { return Validate(body) })
		run("json.Unmarshal", func() error { var r stdRequest; return json.Unmarshal(body, &r) })
		run("ParseInferRequest", func() error { _, err := ParseInferRequest(body); return err })
	}
}
