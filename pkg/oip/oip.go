// Package oip is the wire format of the Open Inference Protocol v2 (KServe's
// "V2 inference protocol") over HTTP/REST: tensor datatypes, the endpoint
// paths, the metadata objects, and parsing, validating and encoding
// inference requests and responses.
//
// Parsing is one streaming pass over the JSON (package jsontext): every
// input's name, shape and datatype are checked, and every data element is
// checked against the datatype as it is read — ParseInferRequest keeps the
// elements as typed Go slices, Validate only counts them. Errors are
// *RequestError values that name the input (or the field) at fault.
//
// The package has no state; every function is safe for concurrent use. A
// Tensor is not safe for concurrent mutation.
package oip

import (
	"fmt"
	"strings"
)

// Datatype is a tensor element type of the protocol.
type Datatype string

// The protocol's datatypes.
const (
	BOOL   Datatype = "BOOL"
	UINT8  Datatype = "UINT8"
	UINT16 Datatype = "UINT16"
	UINT32 Datatype = "UINT32"
	UINT64 Datatype = "UINT64"
	INT8   Datatype = "INT8"
	INT16  Datatype = "INT16"
	INT32  Datatype = "INT32"
	INT64  Datatype = "INT64"
	FP16   Datatype = "FP16"
	FP32   Datatype = "FP32"
	FP64   Datatype = "FP64"
	BYTES  Datatype = "BYTES"
)

// Datatypes lists every datatype, in the specification's order.
func Datatypes() []Datatype {
	return []Datatype{BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES}
}

// Valid reports whether d is one of the protocol's datatypes (names are
// case-sensitive).
func (d Datatype) Valid() bool {
	switch d {
	case BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES:
		return true
	}
	return false
}

// Size is the size of one element in bytes (0 for BYTES, which varies).
func (d Datatype) Size() int {
	switch d {
	case BOOL, UINT8, INT8:
		return 1
	case UINT16, INT16, FP16:
		return 2
	case UINT32, INT32, FP32:
		return 4
	case UINT64, INT64, FP64:
		return 8
	}
	return 0
}

// Parameters are the protocol's free-form "parameters" objects: names to
// strings, numbers (float64) or booleans.
type Parameters map[string]any

// jetserve's answer to GET /v2.
const (
	ServerName    = "jetserve"
	ServerVersion = "0.1.0"
	// Platform is the "platform" of a Go model's metadata ("<project>_<format>").
	Platform = "jetserve_go"
)

// Server returns jetserve's server metadata (no protocol extensions).
func Server() ServerMetadata {
	return ServerMetadata{Name: ServerName, Version: ServerVersion, Extensions: []string{}}
}

// ServerMetadata is the answer to GET /v2.
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// ModelMetadata is the answer to GET /v2/models/{model}[/versions/{v}]:
// what the model takes and gives. Shapes use -1 for a variable dimension.
type ModelMetadata struct {
	Name string `json:"name"`
	// Versions a client may ask for; empty when the model has none.
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// TensorMetadata describes one input or output of a model.
type TensorMetadata struct {
	Name     string   `json:"name"`
	Datatype Datatype `json:"datatype"`
	Shape    []int64  `json:"shape"`
}

// ErrorBody is the protocol's error object, the body of every failed
// request: {"error": "..."}.
type ErrorBody struct {
	Error string `json:"error"`
}

// RequestError is a malformed inference request (or response). Input names
// the tensor concerned when there is one; Field is the JSON location
// ("inputs[2].shape") when the tensor has no usable name.
type RequestError struct {
	Input  string
	Output bool // the tensor is an output (of a response, or a requested one)
	Field  string
	Msg    string
}

func (e *RequestError) Error() string {
	kind := "input"
	if e.Output {
		kind = "output"
	}
	switch {
	case e.Input != "":
		return fmt.Sprintf("%s %q: %s", kind, e.Input, e.Msg)
	case e.Field != "":
		return e.Field + ": " + e.Msg
	}
	return e.Msg
}

// Endpoint is one of the protocol's REST endpoints.
type Endpoint int

// The endpoints; EndpointNone is a path that is none of them.
const (
	EndpointNone Endpoint = iota
	ServerMeta            // GET  /v2
	ServerLive            // GET  /v2/health/live
	ServerReady           // GET  /v2/health/ready
	ModelMeta             // GET  /v2/models/{m}[/versions/{v}]
	ModelReady            // GET  /v2/models/{m}[/versions/{v}]/ready
	ModelInfer            // POST /v2/models/{m}[/versions/{v}]/infer
)

// Method is the HTTP method of the endpoint (GET, or POST for infer).
func (e Endpoint) Method() string {
	if e == ModelInfer {
		return "POST"
	}
	return "GET"
}

// Route is a parsed OIP path.
type Route struct {
	Endpoint Endpoint
	Model    string
	Version  string // "" when the path names none
}

// ParsePath parses an OIP path ("/v2/models/iris/versions/1/infer"); ok is
// false for any other path. A trailing slash is tolerated.
func ParsePath(path string) (r Route, ok bool) {
	rest, found := strings.CutPrefix(path, "/v2")
	if !found {
		return Route{}, false
	}
	rest = strings.TrimSuffix(rest, "/")
	switch rest {
	case "":
		return Route{Endpoint: ServerMeta}, true
	case "/health/live":
		return Route{Endpoint: ServerLive}, true
	case "/health/ready":
		return Route{Endpoint: ServerReady}, true
	}
	rest, found = strings.CutPrefix(rest, "/models/")
	if !found {
		return Route{}, false
	}
	seg := strings.Split(rest, "/")
	for _, s := range seg {
		if s == "" {
			return Route{}, false
		}
	}
	r.Model = seg[0]
	seg = seg[1:]
	if len(seg) >= 2 && seg[0] == "versions" {
		r.Version = seg[1]
		seg = seg[2:]
	}
	switch {
	case len(seg) == 0:
		r.Endpoint = ModelMeta
	case len(seg) == 1 && seg[0] == "ready":
		r.Endpoint = ModelReady
	case len(seg) == 1 && seg[0] == "infer":
		r.Endpoint = ModelInfer
	default:
		return Route{}, false
	}
	return r, true
}

// Path is the OIP path of a model endpoint (ModelMeta, ModelReady or
// ModelInfer) for model and, if not empty, version.
func Path(e Endpoint, model, version string) string {
	p := "/v2/models/" + model
	if version != "" {
		p += "/versions/" + version
	}
	switch e {
	case ModelReady:
		p += "/ready"
	case ModelInfer:
		p += "/infer"
	}
	return p
}
