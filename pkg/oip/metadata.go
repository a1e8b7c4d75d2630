package oip

import (
	"fmt"
	"slices"
	"strings"
)

// Check checks a parsed request against the model's declared inputs and
// outputs: every declared input is present, with the declared datatype and
// a shape that fits the declared one (-1 matches any size); no input is
// undeclared; every requested output is declared. A model that declares no
// inputs (or no outputs) is not checked on that side.
func (m *ModelMetadata) Check(req *InferRequest) error {
	if len(m.Inputs) > 0 {
		for _, want := range m.Inputs {
			t := req.Input(want.Name)
			if t == nil {
				return &RequestError{Input: want.Name, Msg: fmt.Sprintf("missing: model %q takes inputs %s", m.Name, names(m.Inputs))}
			}
			if t.Datatype != want.Datatype {
				return &RequestError{Input: t.Name, Msg: fmt.Sprintf("is %s, model %q takes %s", t.Datatype, m.Name, want.Datatype)}
			}
			if !fits(t.Shape, want.Shape) {
				return &RequestError{Input: t.Name, Msg: fmt.Sprintf("shape %v does not fit model %q's %v (-1: any size)", t.Shape, m.Name, want.Shape)}
			}
		}
		for _, t := range req.Inputs {
			if !slices.ContainsFunc(m.Inputs, func(w TensorMetadata) bool { return w.Name == t.Name }) {
				return &RequestError{Input: t.Name, Msg: fmt.Sprintf("model %q has no such input; its inputs are %s", m.Name, names(m.Inputs))}
			}
		}
	}
	if len(m.Outputs) > 0 {
		for _, o := range req.Outputs {
			if !slices.ContainsFunc(m.Outputs, func(w TensorMetadata) bool { return w.Name == o.Name }) {
				return &RequestError{Input: o.Name, Output: true, Msg: fmt.Sprintf("model %q has no such output; its outputs are %s", m.Name, names(m.Outputs))}
			}
		}
	}
	return nil
}

// HasVersion reports whether version is one of the model's versions ("",
// no version asked for, always is).
func (m *ModelMetadata) HasVersion(version string) bool {
	return version == "" || slices.Contains(m.Versions, version)
}

func fits(got, want []int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i, w := range want {
		if w >= 0 && got[i] != w {
			return false
		}
	}
	return true
}

func names(ts []TensorMetadata) string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = fmt.Sprintf("%s (%s %v)", t.Name, t.Datatype, t.Shape)
	}
	return strings.Join(s, ", ")
}
