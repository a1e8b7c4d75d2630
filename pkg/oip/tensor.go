package oip

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
)

// Tensor is a named, shaped, typed array: an input of an inference request
// or an output of its response. Its elements are held as the Go slice of
// its datatype — []bool, []uint8 … []uint64, []int8 … []int64, []float32
// (FP32 and FP16), []float64 or [][]byte (BYTES) — in row-major order, and
// read with the accessor of that type (Float32s, Int64s, Bytes, …), which
// fails for any other datatype rather than converting silently.
type Tensor struct {
	Name       string
	Shape      []int64
	Datatype   Datatype
	Parameters Parameters
	data       any
}

// Element is a Go type that NewTensor maps to a datatype: bool → BOOL,
// intN → INTN, uintN → UINTN, float32 → FP32, float64 → FP64, and string
// or []byte → BYTES.
type Element interface {
	bool | int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32 | float64 | string | []byte
}

// NewTensor makes a tensor (typically a model's output) of data with the
// given shape; the datatype follows from T. The product of the shape must
// be len(data).
func NewTensor[T Element](name string, shape []int64, data []T) (*Tensor, error) {
	t := &Tensor{Name: name, Shape: shape}
	switch d := any(data).(type) {
	case []bool:
		t.Datatype, t.data = BOOL, d
	case []int8:
		t.Datatype, t.data = INT8, d
	case []int16:
		t.Datatype, t.data = INT16, d
	case []int32:
		t.Datatype, t.data = INT32, d
	case []int64:
		t.Datatype, t.data = INT64, d
	case []uint8:
		t.Datatype, t.data = UINT8, d
	case []uint16:
		t.Datatype, t.data = UINT16, d
	case []uint32:
		t.Datatype, t.data = UINT32, d
	case []uint64:
		t.Datatype, t.data = UINT64, d
	case []float32:
		t.Datatype, t.data = FP32, d
	case []float64:
		t.Datatype, t.data = FP64, d
	case [][]byte:
		t.Datatype, t.data = BYTES, d
	case []string:
		b := make([][]byte, len(d))
		for i, s := range d {
			b[i] = []byte(s)
		}
		t.Datatype, t.data = BYTES, b
	}
	if err := t.checkShape(len(data)); err != nil {
		return nil, err
	}
	return t, nil
}

// NewFP16Tensor makes an FP16 tensor of data; every value must be within
// FP16's range (±65504).
func NewFP16Tensor(name string, shape []int64, data []float32) (*Tensor, error) {
	for i, v := range data {
		if math.IsNaN(float64(v)) || math.Abs(float64(v)) > maxFP16 {
			return nil, &RequestError{Input: name, Output: true, Msg: fmt.Sprintf("element %d (%v) is out of FP16 range", i, v)}
		}
	}
	t := &Tensor{Name: name, Shape: shape, Datatype: FP16, data: data}
	if err := t.checkShape(len(data)); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *Tensor) checkShape(n int) error {
	want, err := elements(t.Shape, math.MaxInt)
	if err != nil {
		return &RequestError{Input: t.Name, Output: true, Msg: err.Error()}
	}
	if want != uint64(n) {
		return &RequestError{Input: t.Name, Output: true, Msg: fmt.Sprintf("shape %v has %d elements, data has %d", t.Shape, want, n)}
	}
	return nil
}

// elements is the product of shape; an error if a dimension is negative or
// the product exceeds limit.
func elements(shape []int64, limit uint64) (uint64, error) {
	n := uint64(1)
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v: dimension %d is %d, must be >= 0", shape, i, d)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > limit {
			return 0, fmt.Errorf("shape %v has more elements than the request can hold", shape)
		}
		n = lo
	}
	return n, nil
}

// Len is the number of elements.
func (t *Tensor) Len() int {
	switch d := t.data.(type) {
	case []bool:
		return len(d)
	case []int8:
		return len(d)
	case []int16:
		return len(d)
	case []int32:
		return len(d)
	case []int64:
		return len(d)
	case []uint8:
		return len(d)
	case []uint16:
		return len(d)
	case []uint32:
		return len(d)
	case []uint64:
		return len(d)
	case []float32:
		return len(d)
	case []float64:
		return len(d)
	case [][]byte:
		return len(d)
	}
	return 0
}

func as[T any](t *Tensor, want ...Datatype) ([]T, error) {
	for _, w := range want {
		if t.Datatype == w {
			if d, ok := t.data.([]T); ok {
				return d, nil
			}
			if t.data == nil {
				return nil, nil
			}
		}
	}
	return nil, &RequestError{Input: t.Name, Msg: fmt.Sprintf("is %s, not %s", t.Datatype, want[0])}
}

// Bools returns the elements of a BOOL tensor.
func (t *Tensor) Bools() ([]bool, error) { return as[bool](t, BOOL) }

// Int8s returns the elements of an INT8 tensor.
func (t *Tensor) Int8s() ([]int8, error) { return as[int8](t, INT8) }

// Int16s returns the elements of an INT16 tensor.
func (t *Tensor) Int16s() ([]int16, error) { return as[int16](t, INT16) }

// Int32s returns the elements of an INT32 tensor.
func (t *Tensor) Int32s() ([]int32, error) { return as[int32](t, INT32) }

// Int64s returns the elements of an INT64 tensor.
func (t *Tensor) Int64s() ([]int64, error) { return as[int64](t, INT64) }

// Uint8s returns the elements of a UINT8 tensor.
func (t *Tensor) Uint8s() ([]uint8, error) { return as[uint8](t, UINT8) }

// Uint16s returns the elements of a UINT16 tensor.
func (t *Tensor) Uint16s() ([]uint16, error) { return as[uint16](t, UINT16) }

// Uint32s returns the elements of a UINT32 tensor.
func (t *Tensor) Uint32s() ([]uint32, error) { return as[uint32](t, UINT32) }

// Uint64s returns the elements of a UINT64 tensor.
func (t *Tensor) Uint64s() ([]uint64, error) { return as[uint64](t, UINT64) }

// Float32s returns the elements of an FP32 or FP16 tensor.
func (t *Tensor) Float32s() ([]float32, error) { return as[float32](t, FP32, FP16) }

// Float64s returns the elements of an FP64 tensor.
func (t *Tensor) Float64s() ([]float64, error) { return as[float64](t, FP64) }

// Bytes returns the elements of a BYTES tensor.
func (t *Tensor) Bytes() ([][]byte, error) { return as[[]byte](t, BYTES) }

// Strings returns the elements of a BYTES tensor as strings.
func (t *Tensor) Strings() ([]string, error) {
	b, err := t.Bytes()
	if err != nil {
		return nil, err
	}
	s := make([]string, len(b))
	for i, v := range b {
		s[i] = string(v)
	}
	return s, nil
}

// MarshalJSON encodes the tensor as the protocol's tensor object with its
// data flattened: {"name","shape","datatype","parameters"?,"data"}.
func (t *Tensor) MarshalJSON() ([]byte, error) { return t.appendJSON(nil) }

// UnmarshalJSON decodes and checks a tensor object (as an input).
func (t *Tensor) UnmarshalJSON(b []byte) error {
	p := newParser(b, true)
	nt, err := p.tensor(at("tensor"), false)
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return err
	}
	*t = *nt
	return nil
}

var errNonFinite = errors.New("is not finite")

func (t *Tensor) appendJSON(b []byte) ([]byte, error) {
	if !t.Datatype.Valid() {
		return nil, &RequestError{Input: t.Name, Output: true, Msg: fmt.Sprintf("unknown datatype %q", t.Datatype)}
	}
	if !holds(t.Datatype, t.data) {
		return nil, &RequestError{Input: t.Name, Output: true, Msg: fmt.Sprintf("holds %T, not the data of %s", t.data, t.Datatype)}
	}
	if err := t.checkShape(t.Len()); err != nil {
		return nil, err
	}
	b = append(b, `{"name":`...)
	b = appendString(b, t.Name)
	b = append(b, `,"shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	b = append(b, `],"datatype":"`...)
	b = append(b, t.Datatype...)
	b = append(b, '"')
	if len(t.Parameters) > 0 {
		p, err := json.Marshal(t.Parameters)
		if err != nil {
			return nil, &RequestError{Input: t.Name, Output: true, Msg: "parameters: " + err.Error()}
		}
		b = append(b, `,"parameters":`...)
		b = append(b, p...)
	}
	b = append(b, `,"data":[`...)
	switch d := t.data.(type) {
	case []bool:
		b = appendAll(b, d, strconv.AppendBool)
	case []int8:
		b = appendAll(b, d, func(b []byte, v int8) []byte { return strconv.AppendInt(b, int64(v), 10) })
	case []int16:
		b = appendAll(b, d, func(b []byte, v int16) []byte { return strconv.AppendInt(b, int64(v), 10) })
	case []int32:
		b = appendAll(b, d, func(b []byte, v int32) []byte { return strconv.AppendInt(b, int64(v), 10) })
	case []int64:
		b = appendAll(b, d, func(b []byte, v int64) []byte { return strconv.AppendInt(b, v, 10) })
	case []uint8:
		b = appendAll(b, d, func(b []byte, v uint8) []byte { return strconv.AppendUint(b, uint64(v), 10) })
	case []uint16:
		b = appendAll(b, d, func(b []byte, v uint16) []byte { return strconv.AppendUint(b, uint64(v), 10) })
	case []uint32:
		b = appendAll(b, d, func(b []byte, v uint32) []byte { return strconv.AppendUint(b, uint64(v), 10) })
	case []uint64:
		b = appendAll(b, d, func(b []byte, v uint64) []byte { return strconv.AppendUint(b, v, 10) })
	case []float32:
		for i, v := range d {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return nil, &RequestError{Input: t.Name, Output: true, Msg: fmt.Sprintf("element %d %s: JSON has no NaN or infinity", i, errNonFinite)}
			}
		}
		b = appendAll(b, d, func(b []byte, v float32) []byte { return strconv.AppendFloat(b, float64(v), 'g', -1, 32) })
	case []float64:
		for i, v := range d {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, &RequestError{Input: t.Name, Output: true, Msg: fmt.Sprintf("element %d %s: JSON has no NaN or infinity", i, errNonFinite)}
			}
		}
		b = appendAll(b, d, func(b []byte, v float64) []byte { return strconv.AppendFloat(b, v, 'g', -1, 64) })
	case [][]byte:
		for i, v := range d {
			if !utf8.Valid(v) {
				return nil, &RequestError{Input: t.Name, Output: true, Msg: fmt.Sprintf("element %d is not UTF-8: BYTES travel as JSON strings", i)}
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, string(v))
		}
	}
	return append(b, "]}"...), nil
}

func appendAll[T any](b []byte, d []T, f func([]byte, T) []byte) []byte {
	for i, v := range d {
		if i > 0 {
			b = append(b, ',')
		}
		b = f(b, v)
	}
	return b
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD
// (as encoding/json does).
func appendString(b []byte, s string) []byte {
	q, err := jsontext.AppendQuote(b, s)
	if err != nil {
		q, _ = jsontext.AppendQuote(b, strings.ToValidUTF8(s, "\uFFFD"))
	}
	return q
}

// holds reports whether data is the Go slice type of datatype d.
func holds(d Datatype, data any) bool {
	switch data.(type) {
	case nil:
		return true
	case []bool:
		return d == BOOL
	case []int8:
		return d == INT8
	case []int16:
		return d == INT16
	case []int32:
		return d == INT32
	case []int64:
		return d == INT64
	case []uint8:
		return d == UINT8
	case []uint16:
		return d == UINT16
	case []uint32:
		return d == UINT32
	case []uint64:
		return d == UINT64
	case []float32:
		return d == FP32 || d == FP16
	case []float64:
		return d == FP64
	case [][]byte:
		return d == BYTES
	}
	return false
}
