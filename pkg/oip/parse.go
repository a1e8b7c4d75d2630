package oip

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
)

// InferRequest is the body of POST /v2/models/{model}[/versions/{v}]/infer.
type InferRequest struct {
	// Model and Version come from the URL (the server sets them), not from
	// the body.
	Model, Version string

	ID         string
	Parameters Parameters
	Inputs     []*Tensor
	// Outputs the client asked for; empty means every output.
	Outputs []RequestedOutput
}

// RequestedOutput names an output the client wants.
type RequestedOutput struct {
	Name       string     `json:"name"`
	Parameters Parameters `json:"parameters,omitempty"`
}

// Input returns the input named name, or nil.
func (r *InferRequest) Input(name string) *Tensor { return find(r.Inputs, name) }

// InferResponse is the body of a successful inference.
type InferResponse struct {
	ModelName    string
	ModelVersion string // omitted when empty (the model has no versions)
	ID           string // the request's id, if it had one
	Parameters   Parameters
	Outputs      []*Tensor
}

// Output returns the output named name, or nil.
func (r *InferResponse) Output(name string) *Tensor { return find(r.Outputs, name) }

func find(ts []*Tensor, name string) *Tensor {
	for _, t := range ts {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// MarshalJSON encodes the request as the protocol's inference request.
func (r *InferRequest) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	if r.ID != "" {
		b = append(b, `"id":`...)
		b = appendString(b, r.ID)
		b = append(b, ',')
	}
	var err error
	if b, err = appendParams(b, r.Parameters); err != nil {
		return nil, err
	}
	if b, err = appendTensors(b, `"inputs":[`, r.Inputs); err != nil {
		var re *RequestError
		if errors.As(err, &re) {
			re.Output = false
		}
		return nil, err
	}
	if len(r.Outputs) > 0 {
		o, err := json.Marshal(r.Outputs)
		if err != nil {
			return nil, fmt.Errorf("outputs: %w", err)
		}
		b = append(b, `,"outputs":`...)
		b = append(b, o...)
	}
	return append(b, '}'), nil
}

// UnmarshalJSON parses and checks an inference request (ParseInferRequest).
func (r *InferRequest) UnmarshalJSON(b []byte) error {
	req, err := ParseInferRequest(b)
	if err != nil {
		return err
	}
	*r = *req
	return nil
}

// MarshalJSON encodes the response as the protocol's inference response.
func (r *InferResponse) MarshalJSON() ([]byte, error) { return r.AppendJSON(nil) }

// AppendJSON appends the response's JSON encoding to b.
func (r *InferResponse) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"model_name":`...)
	b = appendString(b, r.ModelName)
	if r.ModelVersion != "" {
		b = append(b, `,"model_version":`...)
		b = appendString(b, r.ModelVersion)
	}
	if r.ID != "" {
		b = append(b, `,"id":`...)
		b = appendString(b, r.ID)
	}
	b = append(b, ',')
	var err error
	if b, err = appendParams(b, r.Parameters); err != nil {
		return nil, err
	}
	if b, err = appendTensors(b, `"outputs":[`, r.Outputs); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendTensors appends open (a key and the array's '[') and the tensors'
// JSON, comma-separated, and the closing ']'.
func appendTensors(b []byte, open string, ts []*Tensor) ([]byte, error) {
	b = append(b, open...)
	for i, t := range ts {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = t.appendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// UnmarshalJSON parses and checks an inference response (ParseInferResponse).
func (r *InferResponse) UnmarshalJSON(b []byte) error {
	resp, err := ParseInferResponse(b)
	if err != nil {
		return err
	}
	*r = *resp
	return nil
}

func appendParams(b []byte, p Parameters) ([]byte, error) {
	if len(p) == 0 {
		return b, nil
	}
	j, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	b = append(b, `"parameters":`...)
	b = append(b, j...)
	return append(b, ','), nil
}

// ParseInferRequest parses body as an inference request and checks it:
// "inputs" is a non-empty array of tensors with unique names, each with a
// "name", a "shape" of non-negative integers, a known "datatype" and
// "data" — nested as the shape or flat — whose element count is the
// product of the shape and whose every element fits the datatype;
// "outputs", if present, names each output once; "id" is a string;
// "parameters" objects are objects. Unknown fields are ignored. Errors are
// *RequestError values naming the input.
func ParseInferRequest(body []byte) (*InferRequest, error) { return parseRequest(body, true) }

// Validate makes every check of ParseInferRequest without keeping the
// tensors' data: what a gateway runs before passing the body on untouched.
func Validate(body []byte) error {
	_, err := parseRequest(body, false)
	return err
}

func parseRequest(body []byte, keep bool) (*InferRequest, error) {
	p := newParser(body, keep)
	req := &InferRequest{}
	sawInputs := false
	err := p.object(at("request body"), func(key string) error {
		var err error
		switch key {
		case "id":
			req.ID, err = p.str(at("id"))
		case "parameters":
			req.Parameters, err = p.params(at("parameters"), "", false)
		case "inputs":
			sawInputs = true
			req.Inputs, err = p.tensors("inputs", false)
		case "outputs":
			req.Outputs, err = p.requested()
		default:
			err = p.skip(at(key))
		}
		return err
	})
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, err
	}
	switch {
	case !sawInputs:
		return nil, &RequestError{Field: "inputs", Msg: "is required"}
	case len(req.Inputs) == 0:
		return nil, &RequestError{Field: "inputs", Msg: "must list at least one input"}
	}
	return req, nil
}

// ParseInferResponse parses and checks an inference response (the checks
// of ParseInferRequest, on "outputs"; "model_name" is required).
func ParseInferResponse(body []byte) (*InferResponse, error) {
	p := newParser(body, true)
	resp := &InferResponse{}
	sawName := false
	err := p.object(at("response body"), func(key string) error {
		var err error
		switch key {
		case "model_name":
			sawName = true
			resp.ModelName, err = p.str(at(key))
		case "model_version":
			resp.ModelVersion, err = p.str(at(key))
		case "id":
			resp.ID, err = p.str(at(key))
		case "parameters":
			resp.Parameters, err = p.params(at(key), "", true)
		case "outputs":
			resp.Outputs, err = p.tensors("outputs", true)
		default:
			err = p.skip(at(key))
		}
		return err
	})
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, err
	}
	if !sawName {
		return nil, &RequestError{Field: "model_name", Msg: "is required"}
	}
	return resp, nil
}

// loc is where in the document a value is, formatted only for errors.
type loc struct {
	name    string
	index   int
	indexed bool
}

func at(name string) loc          { return loc{name: name} }
func item(name string, i int) loc { return loc{name: name, index: i, indexed: true} }
func (l loc) String() string {
	if !l.indexed {
		return l.name
	}
	return l.name + "[" + strconv.Itoa(l.index) + "]"
}

type parser struct {
	dec   *jsontext.Decoder
	keep  bool   // keep tensors' data (parse) or only check it (validate)
	limit uint64 // most elements one tensor can have: one byte each
}

func newParser(b []byte, keep bool) *parser {
	return &parser{dec: jsontext.NewDecoder(bytes.NewBuffer(b)), keep: keep, limit: uint64(len(b))}
}

// syntaxError reports malformed JSON found at l.
func syntaxError(l loc, input string, output bool, err error) error {
	msg := strings.TrimPrefix(err.Error(), "jsontext: ")
	if errors.Is(err, jsontext.ErrDuplicateName) {
		msg = "duplicate field: " + msg
	} else {
		msg = "malformed JSON: " + msg
	}
	if input != "" {
		return &RequestError{Input: input, Output: output, Msg: msg}
	}
	return &RequestError{Field: l.String(), Msg: msg}
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "nothing"
}

// end checks that nothing but white space follows the document.
func (p *parser) end() error {
	if _, err := p.dec.ReadToken(); err == nil {
		return &RequestError{Msg: "malformed JSON: data after the top-level object"}
	} else if !errors.Is(err, io.EOF) {
		return syntaxError(at("body"), "", false, err)
	}
	return nil
}

// object reads a JSON object, calling f for every member (f must consume
// the member's value).
func (p *parser) object(l loc, f func(key string) error) error {
	if err := p.open(l, '{', "object"); err != nil {
		return err
	}
	for {
		switch p.dec.PeekKind() {
		case '}':
			return p.token(l)
		case '"':
			tok, err := p.dec.ReadToken()
			if err != nil {
				return syntaxError(l, "", false, err)
			}
			if err := f(tok.String()); err != nil {
				return err
			}
		default:
			_, err := p.dec.ReadToken()
			return syntaxError(l, "", false, err)
		}
	}
}

// array reads a JSON array, calling f for every element with its index.
func (p *parser) array(l loc, f func(i int) error) error {
	if err := p.open(l, '[', "array"); err != nil {
		return err
	}
	for i := 0; ; i++ {
		switch p.dec.PeekKind() {
		case ']':
			return p.token(l)
		case 0:
			_, err := p.dec.ReadToken()
			return syntaxError(l, "", false, err)
		}
		if err := f(i); err != nil {
			return err
		}
	}
}

// open reads the token that opens a value of kind want ('{' or '[',
// named what); a value of another kind is consumed and is a
// *RequestError for l.
func (p *parser) open(l loc, want jsontext.Kind, what string) error {
	if k := p.dec.PeekKind(); k != want {
		if k == 0 {
			_, err := p.dec.ReadToken()
			return syntaxError(l, "", false, err)
		}
		if err := p.skip(l); err != nil {
			return err
		}
		return &RequestError{Field: l.String(), Msg: "must be a JSON " + what + ", got " + kindName(k)}
	}
	return p.token(l)
}

// token reads the next token (one that opens or closes an object or an
// array).
func (p *parser) token(l loc) error {
	if _, err := p.dec.ReadToken(); err != nil {
		return syntaxError(l, "", false, err)
	}
	return nil
}

func (p *parser) skip(l loc) error { return p.skipIn(l, "", false) }

// str reads a JSON string; anything else is a *RequestError for l.
func (p *parser) str(l loc) (string, error) {
	s, msg, err := p.strOr()
	if err != nil {
		return "", syntaxError(l, "", false, err)
	}
	if msg != "" {
		return "", &RequestError{Field: l.String(), Msg: msg}
	}
	return s, nil
}

// strOr reads a string; msg says what it was if it was not one (the value
// is consumed either way); err is a syntax error.
func (p *parser) strOr() (s, msg string, err error) {
	if k := p.dec.PeekKind(); k != '"' {
		if err := p.dec.SkipValue(); err != nil {
			return "", "", err
		}
		return "", "must be a string, got " + kindName(k), nil
	}
	tok, err := p.dec.ReadToken()
	if err != nil {
		return "", "", err
	}
	return tok.String(), "", nil
}

// params reads a parameters object (values are not checked beyond being
// JSON). input names the tensor it belongs to, if any.
func (p *parser) params(l loc, input string, output bool) (Parameters, error) {
	k := p.dec.PeekKind()
	if k != '{' {
		if err := p.dec.SkipValue(); err != nil {
			return nil, syntaxError(l, input, output, err)
		}
		return nil, &RequestError{Field: l.String(), Msg: "must be a JSON object, got " + kindName(k)}
	}
	if !p.keep {
		return nil, p.skipIn(l, input, output)
	}
	v, err := p.dec.ReadValue()
	if err != nil {
		return nil, syntaxError(l, input, output, err)
	}
	var out Parameters
	if err := json.Unmarshal(v, &out); err != nil {
		return nil, syntaxError(l, input, output, err)
	}
	return out, nil
}

func (p *parser) skipIn(l loc, input string, output bool) error {
	if err := p.dec.SkipValue(); err != nil {
		return syntaxError(l, input, output, err)
	}
	return nil
}

// requested reads the "outputs" of a request.
func (p *parser) requested() ([]RequestedOutput, error) {
	var outs []RequestedOutput
	err := p.array(at("outputs"), func(i int) error {
		var o RequestedOutput
		l := item("outputs", i)
		sawName := false
		err := p.object(l, func(key string) error {
			var err error
			switch key {
			case "name":
				sawName = true
				o.Name, err = p.str(at(l.String() + ".name"))
			case "parameters":
				o.Parameters, err = p.params(at(l.String()+".parameters"), "", false)
			default:
				err = p.skip(l)
			}
			return err
		})
		if err != nil {
			return err
		}
		if !sawName {
			return &RequestError{Field: l.String(), Msg: `missing "name"`}
		}
		for _, prev := range outs {
			if prev.Name == o.Name {
				return &RequestError{Input: o.Name, Output: true, Msg: "requested twice in outputs"}
			}
		}
		outs = append(outs, o)
		return nil
	})
	return outs, err
}

// tensors reads an array of tensors with unique names.
func (p *parser) tensors(field string, output bool) ([]*Tensor, error) {
	var ts []*Tensor
	err := p.array(at(field), func(i int) error {
		t, err := p.tensor(item(field, i), output)
		if err != nil {
			return err
		}
		if find(ts, t.Name) != nil {
			return &RequestError{Input: t.Name, Output: output, Msg: "appears twice in " + field}
		}
		ts = append(ts, t)
		return nil
	})
	return ts, err
}

const (
	sawName = 1 << iota
	sawShape
	sawDatatype
	sawData
)

// tensor reads one tensor object. A semantic error is reported once the
// object has been read, so that it can name the tensor even when "name"
// comes last; data that precedes "shape" or "datatype" is checked after
// the object.
func (p *parser) tensor(l loc, output bool) (*Tensor, error) {
	t := &Tensor{}
	var saw int
	var first *RequestError // first semantic error
	var deferred jsontext.Value
	fail := func(msg string) {
		if first == nil {
			first = &RequestError{Output: output, Field: l.String(), Msg: msg}
		}
	}
	err := p.object(l, func(key string) error {
		switch key {
		case "name":
			s, msg, err := p.strOr()
			if err != nil {
				return syntaxError(l, t.Name, output, err)
			}
			if msg != "" {
				fail(`"name" ` + msg)
			}
			if s == "" && msg == "" {
				fail(`"name" must not be empty`)
			}
			t.Name, saw = s, saw|sawName
		case "shape":
			saw |= sawShape
			shape, msg, err := p.shape()
			if err != nil {
				return syntaxError(l, t.Name, output, err)
			}
			if msg != "" {
				fail(msg)
			}
			t.Shape = shape
		case "datatype":
			s, msg, err := p.strOr()
			if err != nil {
				return syntaxError(l, t.Name, output, err)
			}
			switch {
			case msg != "":
				fail(`"datatype" ` + msg)
			case !Datatype(s).Valid():
				fail(fmt.Sprintf("unknown datatype %q; the datatypes are %s", s, datatypeList()))
			}
			t.Datatype, saw = Datatype(s), saw|sawDatatype
		case "parameters":
			if k := p.dec.PeekKind(); k != '{' {
				fail(`"parameters" must be a JSON object, got ` + kindName(k))
				return p.skipIn(l, t.Name, output)
			}
			prm, err := p.params(l, t.Name, output)
			if err != nil {
				return err
			}
			t.Parameters = prm
		case "data":
			saw |= sawData
			if first != nil {
				return p.skipIn(l, t.Name, output)
			}
			if saw&(sawShape|sawDatatype) != sawShape|sawDatatype {
				v, err := p.dec.ReadValue()
				if err != nil {
					return syntaxError(l, t.Name, output, err)
				}
				deferred = v.Clone()
				return nil
			}
			msg, err := p.data(t)
			if err != nil {
				return syntaxError(l, t.Name, output, err)
			}
			if msg != "" {
				fail(msg)
			}
		default:
			return p.skipIn(l, t.Name, output)
		}
		return nil
	})
	if err != nil {
		if re := (*RequestError)(nil); errors.As(err, &re) && re.Input == "" && t.Name != "" {
			re.Input, re.Output = t.Name, output
		}
		return nil, err
	}
	missing := func(f string) *RequestError {
		return &RequestError{Input: t.Name, Output: output, Field: l.String(), Msg: `missing "` + f + `"`}
	}
	switch {
	case first != nil:
		first.Input = t.Name
		return nil, first
	case saw&sawName == 0:
		return nil, missing("name")
	case saw&sawShape == 0:
		return nil, missing("shape")
	case saw&sawDatatype == 0:
		return nil, missing("datatype")
	case saw&sawData == 0:
		return nil, missing("data")
	}
	if deferred != nil {
		sub := newParser(deferred, p.keep)
		sub.limit = p.limit
		msg, err := sub.data(t)
		if err != nil {
			return nil, syntaxError(l, t.Name, output, err)
		}
		if msg != "" {
			return nil, &RequestError{Input: t.Name, Output: output, Msg: msg}
		}
	}
	return t, nil
}

func datatypeList() string {
	var b strings.Builder
	for i, d := range Datatypes() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(d))
	}
	return b.String()
}

// shape reads a shape: an array of non-negative integers. msg describes a
// semantic problem (the value is consumed); err is a syntax error.
func (p *parser) shape() (shape []int64, msg string, err error) {
	if k := p.dec.PeekKind(); k != '[' {
		if err := p.dec.SkipValue(); err != nil {
			return nil, "", err
		}
		return nil, `"shape" must be an array of integers, got ` + kindName(k), nil
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return nil, "", err
	}
	shape = make([]int64, 0, 4)
	for i := 0; ; i++ {
		k := p.dec.PeekKind()
		if k == ']' {
			_, err := p.dec.ReadToken()
			return shape, msg, err
		}
		v, err := p.dec.ReadValue()
		if err != nil {
			return nil, "", err
		}
		if msg != "" {
			continue
		}
		if k != '0' {
			msg = fmt.Sprintf(`"shape" dimension %d is %s, must be an integer`, i, kindName(k))
			continue
		}
		d, perr := strconv.ParseInt(string(v), 10, 64)
		if perr != nil || d < 0 {
			msg = fmt.Sprintf(`"shape" dimension %d is %s, must be an integer >= 0`, i, v)
			continue
		}
		shape = append(shape, d)
	}
}

// data reads a tensor's data and checks it against t's shape and datatype,
// keeping the elements in t when the parser keeps data. msg describes a
// semantic problem (the value is consumed); err is a syntax error.
func (p *parser) data(t *Tensor) (msg string, err error) {
	want, serr := elements(t.Shape, p.limit)
	if k := p.dec.PeekKind(); k != '[' || serr != nil {
		if err := p.dec.SkipValue(); err != nil {
			return "", err
		}
		if serr != nil {
			return serr.Error(), nil
		}
		return `"data" must be a JSON array, got ` + kindName(k), nil
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return "", err
	}
	c := column{dt: t.Datatype, keep: p.keep}
	if c.keep {
		c.make(int(want))
	}
	// The data is flat, or nested exactly as the shape: each array at
	// depth d (1 = the outer one) holds shape[d-1] items.
	var counts [8]uint64
	stack := counts[:1]
	depth, leaf, maxDepth := 1, 0, 1
	var n uint64
	fail := func(m string) {
		if msg == "" {
			msg = m
		}
	}
	for depth > 0 {
		k := p.dec.PeekKind()
		switch k {
		case '[':
			if _, err := p.dec.ReadToken(); err != nil {
				return "", err
			}
			stack[depth-1]++
			depth++
			stack = append(stack, 0)
			maxDepth = max(maxDepth, depth)
			if leaf != 0 && depth > leaf {
				fail(`"data" mixes values and arrays at one depth`)
			}
			if depth > len(t.Shape) {
				fail(fmt.Sprintf(`"data" is nested %d deep, deeper than shape %v`, depth, t.Shape))
			}
			continue
		case ']':
			if _, err := p.dec.ReadToken(); err != nil {
				return "", err
			}
			if maxDepth > 1 && depth <= len(t.Shape) && stack[depth-1] != uint64(t.Shape[depth-1]) {
				fail(fmt.Sprintf(`"data" is not nested as shape %v: an array at depth %d has %d items, want %d`,
					t.Shape, depth, stack[depth-1], t.Shape[depth-1]))
			}
			stack = stack[:depth-1]
			depth--
			continue
		case 0:
			_, err := p.dec.ReadToken()
			return "", err
		}
		v, err := p.dec.ReadValue()
		if err != nil {
			return "", err
		}
		stack[depth-1]++
		if leaf == 0 {
			leaf = depth
		} else if depth != leaf {
			fail(`"data" mixes values and arrays at one depth`)
		}
		if msg == "" {
			if m := c.add(k, v, n); m != "" {
				fail(m)
			}
		}
		n++
	}
	if msg != "" {
		return msg, nil
	}
	if maxDepth > 1 && leaf != 0 && leaf != len(t.Shape) {
		return fmt.Sprintf(`"data" is not nested as shape %v: values at depth %d, want %d`, t.Shape, leaf, len(t.Shape)), nil
	}
	if n != want {
		return fmt.Sprintf("shape %v × %s needs %d elements, data has %d", t.Shape, t.Datatype, want, n), nil
	}
	if p.keep {
		t.data = c.slice()
	}
	return "", nil
}

// maxFP16 is the largest finite FP16 value.
const maxFP16 = 65504

// column checks elements against a datatype and keeps them as its Go type.
type column struct {
	dt   Datatype
	keep bool
	b    []bool
	i8   []int8
	i16  []int16
	i32  []int32
	i64  []int64
	u8   []uint8
	u16  []uint16
	u32  []uint32
	u64  []uint64
	f32  []float32
	f64  []float64
	raw  [][]byte
}

func (c *column) make(n int) {
	switch c.dt {
	case BOOL:
		c.b = make([]bool, 0, n)
	case INT8:
		c.i8 = make([]int8, 0, n)
	case INT16:
		c.i16 = make([]int16, 0, n)
	case INT32:
		c.i32 = make([]int32, 0, n)
	case INT64:
		c.i64 = make([]int64, 0, n)
	case UINT8:
		c.u8 = make([]uint8, 0, n)
	case UINT16:
		c.u16 = make([]uint16, 0, n)
	case UINT32:
		c.u32 = make([]uint32, 0, n)
	case UINT64:
		c.u64 = make([]uint64, 0, n)
	case FP16, FP32:
		c.f32 = make([]float32, 0, n)
	case FP64:
		c.f64 = make([]float64, 0, n)
	case BYTES:
		c.raw = make([][]byte, 0, n)
	}
}

func (c *column) slice() any {
	switch c.dt {
	case BOOL:
		return c.b
	case INT8:
		return c.i8
	case INT16:
		return c.i16
	case INT32:
		return c.i32
	case INT64:
		return c.i64
	case UINT8:
		return c.u8
	case UINT16:
		return c.u16
	case UINT32:
		return c.u32
	case UINT64:
		return c.u64
	case FP16, FP32:
		return c.f32
	case FP64:
		return c.f64
	case BYTES:
		return c.raw
	}
	return nil
}

// add checks element i (of kind k, raw JSON v) and keeps it; it returns
// what is wrong with it, or "".
func (c *column) add(k jsontext.Kind, v []byte, i uint64) string {
	bad := func(why string) string {
		return fmt.Sprintf("data element %d (%s) %s", i, v, why)
	}
	switch c.dt {
	case BOOL:
		if k != 't' && k != 'f' {
			return bad("is not a boolean, BOOL needs true or false")
		}
		if c.keep {
			c.b = append(c.b, k == 't')
		}
		return ""
	case BYTES:
		if k != '"' {
			return bad("is not a string, BYTES needs strings")
		}
		if c.keep {
			s, err := jsontext.AppendUnquote(nil, v)
			if err != nil {
				return bad(err.Error())
			}
			c.raw = append(c.raw, s)
		}
		return ""
	}
	if k != '0' {
		return bad("is not a number, " + string(c.dt) + " needs numbers")
	}
	switch c.dt {
	case INT8, INT16, INT32, INT64:
		x, err := strconv.ParseInt(string(v), 10, 8*c.dt.Size())
		if err != nil {
			return bad(intErr(err, c.dt))
		}
		if c.keep {
			switch c.dt {
			case INT8:
				c.i8 = append(c.i8, int8(x))
			case INT16:
				c.i16 = append(c.i16, int16(x))
			case INT32:
				c.i32 = append(c.i32, int32(x))
			default:
				c.i64 = append(c.i64, x)
			}
		}
	case UINT8, UINT16, UINT32, UINT64:
		x, err := strconv.ParseUint(string(v), 10, 8*c.dt.Size())
		if err != nil {
			if v[0] == '-' && !bytes.ContainsAny(v, ".eE") {
				return bad("is negative, out of range for " + string(c.dt))
			}
			return bad(intErr(err, c.dt))
		}
		if c.keep {
			switch c.dt {
			case UINT8:
				c.u8 = append(c.u8, uint8(x))
			case UINT16:
				c.u16 = append(c.u16, uint16(x))
			case UINT32:
				c.u32 = append(c.u32, uint32(x))
			default:
				c.u64 = append(c.u64, x)
			}
		}
	case FP16, FP32:
		if !c.keep && inRange(v, c.dt) {
			return ""
		}
		x, err := strconv.ParseFloat(string(v), 32)
		if err != nil || c.dt == FP16 && math.Abs(x) > maxFP16 {
			return bad("is out of range for " + string(c.dt))
		}
		if c.keep {
			c.f32 = append(c.f32, float32(x))
		}
	case FP64:
		if !c.keep && inRange(v, c.dt) {
			return ""
		}
		x, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return bad("is out of range for FP64")
		}
		if c.keep {
			c.f64 = append(c.f64, x)
		}
	}
	return ""
}

func intErr(err error, dt Datatype) string {
	if errors.Is(err, strconv.ErrRange) {
		return "is out of range for " + string(dt)
	}
	return "is not an integer, " + string(dt) + " needs integers"
}

// inRange reports, without parsing it, that the JSON number v is within
// the range of a float datatype: it has no exponent and few enough
// integer digits (false means "parse it to know").
func inRange(v []byte, dt Datatype) bool {
	digits := 0
loop:
	for _, ch := range v {
		switch ch {
		case 'e', 'E':
			return false
		case '.':
			break loop
		case '-':
		default:
			digits++
		}
	}
	if dt == FP16 {
		return digits <= 4
	}
	return digits <= 38
}
