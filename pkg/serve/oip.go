package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/jetserve/jetserve/pkg/oip"
)

// Typed tensors of the Open Inference Protocol v2 (package oip), for
// deployments written as an Inferer.
type (
	InferRequest    = oip.InferRequest
	InferResponse   = oip.InferResponse
	Tensor          = oip.Tensor
	RequestedOutput = oip.RequestedOutput
	ModelMetadata   = oip.ModelMetadata
	TensorMetadata  = oip.TensorMetadata
	Datatype        = oip.Datatype
)

// Inferer is a model served over the Open Inference Protocol v2: it gets
// the request's inputs as typed tensors (InferRequest.Model and .Version
// name the model the URL asked for) and answers output tensors (made with
// oip.NewTensor). Returning an *Error chooses the HTTP status (400 for a
// request the model cannot take); any other error is a 500. Infer is
// called concurrently.
type Inferer interface {
	Infer(ctx context.Context, req *InferRequest) (*InferResponse, error)
}

// ModelDescriber is implemented by Inferers that describe their models: the
// answer is GET /v2/models/{model}, and requests are checked against it
// before Infer (missing, undeclared or mistyped inputs, shapes that do not
// fit, unknown requested outputs and versions are 400 or 404 naming them).
// An error (an *Error with 404 for a model it does not serve) is answered
// as is.
type ModelDescriber interface {
	ModelMetadata(ctx context.Context, model string) (*ModelMetadata, error)
}

// ModelReadyChecker is implemented by Inferers that can tell whether a
// model is ready (GET /v2/models/{model}/ready); nil means ready. Without
// it a model is ready when the replica is up.
type ModelReadyChecker interface {
	ModelReady(ctx context.Context, model string) error
}

// OIP returns a Handler that serves inf over the Open Inference Protocol
// v2 (REST): POST /v2/models/{m}[/versions/{v}]/infer, GET
// /v2/models/{m}[/versions/{v}] and …/ready, and GET /v2, /v2/health/live
// and /v2/health/ready for a client that talks to the deployment's own
// route. Bodies are parsed and checked as the protocol says (package oip);
// every failure is answered with the protocol's {"error": "..."} and a 4xx
// or 5xx status, never as a Go error. The Handler passes CheckHealth,
// Reconfigure and Close on to inf when it implements them. It works the
// same in the fleet and in NewLocal.
func OIP(inf Inferer) *OIPHandler { return &OIPHandler{inf: inf} }

// OIPHandler is the Handler OIP returns.
type OIPHandler struct {
	inf Inferer
}

var _ interface {
	Handler
	HealthChecker
	Reconfigurer
	Closer
} = (*OIPHandler)(nil)

// ServeRequest serves one OIP request (see OIP).
func (h *OIPHandler) ServeRequest(ctx context.Context, req *Request) (*Response, error) {
	r, ok := oip.ParsePath(req.Path)
	if !ok {
		return oipError(http.StatusNotFound, "no Open Inference Protocol v2 endpoint at "+req.Path), nil
	}
	if m := r.Endpoint.Method(); req.Method != m && (m != http.MethodGet || req.Method != http.MethodHead) {
		resp := oipError(http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", req.Method, req.Path, m))
		resp.Header.Set("Allow", m)
		return resp, nil
	}
	switch r.Endpoint {
	case oip.ServerMeta:
		return oipJSON(http.StatusOK, oip.Server()), nil
	case oip.ServerLive:
		return oipJSON(http.StatusOK, map[string]bool{"live": true}), nil
	case oip.ServerReady:
		return oipJSON(http.StatusOK, map[string]bool{"live": true, "ready": true}), nil
	}
	md, fail := h.metadata(ctx, r)
	if fail != nil {
		return fail, nil
	}
	switch r.Endpoint {
	case oip.ModelMeta:
		return oipJSON(http.StatusOK, md), nil
	case oip.ModelReady:
		if rc, ok := h.inf.(ModelReadyChecker); ok {
			if err := rc.ModelReady(ctx, r.Model); err != nil {
				return oipJSON(http.StatusServiceUnavailable, map[string]any{"name": r.Model, "ready": false, "error": err.Error()}), nil
			}
		}
		return oipJSON(http.StatusOK, map[string]any{"name": r.Model, "ready": true}), nil
	}
	return h.infer(ctx, r, md, req.Body), nil
}

// metadata returns the model's metadata (a minimal one when inf does not
// describe models) or the answer refusing the request.
func (h *OIPHandler) metadata(ctx context.Context, r oip.Route) (*ModelMetadata, *Response) {
	d, ok := h.inf.(ModelDescriber)
	if !ok {
		return &ModelMetadata{Name: r.Model, Platform: oip.Platform, Inputs: []TensorMetadata{}, Outputs: []TensorMetadata{}}, nil
	}
	md, err := d.ModelMetadata(ctx, r.Model)
	if err != nil {
		e := AsError(err)
		return nil, oipError(e.Status, e.Msg)
	}
	if md == nil {
		return nil, oipError(http.StatusNotFound, fmt.Sprintf("unknown model %q", r.Model))
	}
	if !md.HasVersion(r.Version) {
		have := "it has no versions"
		if len(md.Versions) > 0 {
			have = "its versions are " + strings.Join(md.Versions, ", ")
		}
		return nil, oipError(http.StatusNotFound, fmt.Sprintf("model %q has no version %q; %s", r.Model, r.Version, have))
	}
	out := *md
	if out.Name == "" {
		out.Name = r.Model
	}
	if out.Platform == "" {
		out.Platform = oip.Platform
	}
	if out.Inputs == nil {
		out.Inputs = []TensorMetadata{}
	}
	if out.Outputs == nil {
		out.Outputs = []TensorMetadata{}
	}
	return &out, nil
}

func (h *OIPHandler) infer(ctx context.Context, r oip.Route, md *ModelMetadata, body []byte) *Response {
	req, err := oip.ParseInferRequest(body)
	if err != nil {
		return oipError(http.StatusBadRequest, err.Error())
	}
	req.Model, req.Version = r.Model, r.Version
	if err := md.Check(req); err != nil {
		return oipError(http.StatusBadRequest, err.Error())
	}
	resp, err := h.inf.Infer(ctx, req)
	if err != nil {
		e := AsError(err)
		return oipError(e.Status, e.Msg)
	}
	if resp == nil {
		return oipError(http.StatusInternalServerError, fmt.Sprintf("model %q answered no response", r.Model))
	}
	if resp.ModelName == "" {
		resp.ModelName = r.Model
	}
	if resp.ModelVersion == "" {
		resp.ModelVersion = r.Version
	}
	if resp.ID == "" {
		resp.ID = req.ID
	}
	if len(req.Outputs) > 0 {
		kept := make([]*Tensor, 0, len(req.Outputs))
		for _, o := range req.Outputs {
			t := resp.Output(o.Name)
			if t == nil {
				return oipError(http.StatusBadRequest, fmt.Sprintf("output %q: model %q does not produce it", o.Name, r.Model))
			}
			kept = append(kept, t)
		}
		resp.Outputs = kept
	}
	b, err := resp.AppendJSON(nil)
	if err != nil {
		return oipError(http.StatusInternalServerError, "encode response: "+err.Error())
	}
	return &Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}
}

// CheckHealth calls inf's CheckHealth, if it has one.
func (h *OIPHandler) CheckHealth(ctx context.Context) error {
	if hc, ok := h.inf.(HealthChecker); ok {
		return hc.CheckHealth(ctx)
	}
	return nil
}

// errNotReconfigurable: the Inferer has no Reconfigure; the replica is
// restarted instead.
var errNotReconfigurable = errors.New("the Inferer does not implement serve.Reconfigurer")

// Reconfigure calls inf's Reconfigure; without one it fails, so that the
// fleet restarts the replica with the new user_config.
func (h *OIPHandler) Reconfigure(ctx context.Context, userConfig json.RawMessage) error {
	if rc, ok := h.inf.(Reconfigurer); ok {
		return rc.Reconfigure(ctx, userConfig)
	}
	return errNotReconfigurable
}

// Close calls inf's Close, if it has one.
func (h *OIPHandler) Close(ctx context.Context) error {
	if c, ok := h.inf.(Closer); ok {
		return c.Close(ctx)
	}
	return nil
}

// Infer calls model on the OIP deployment behind h with typed tensors: the
// typed way to chain to an OIP deployment. A refusal is an *Error whose
// message is the model's {"error"} text.
func Infer(ctx context.Context, h *Handle, model string, req *InferRequest) (*InferResponse, error) {
	body, err := req.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode request for %s: %w", model, err)
	}
	resp, err := h.Call(ctx, &Request{Method: http.MethodPost, Path: oip.Path(oip.ModelInfer, model, req.Version),
		Header: http.Header{"Content-Type": {"application/json"}}, Body: body})
	if err != nil {
		var e *Error
		if errors.As(err, &e) && resp != nil {
			var eb oip.ErrorBody
			if json.Unmarshal(resp.Body, &eb) == nil && eb.Error != "" {
				return nil, &Error{Status: e.Status, Code: e.Code, Msg: eb.Error}
			}
		}
		return nil, err
	}
	out, err := oip.ParseInferResponse(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("response of model %s: %w", model, err)
	}
	return out, nil
}

func oipJSON(status int, v any) *Response {
	b, err := json.Marshal(v)
	if err != nil {
		return oipError(http.StatusInternalServerError, "encode answer: "+err.Error())
	}
	return &Response{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}
}

func oipError(status int, msg string) *Response {
	b, _ := json.Marshal(oip.ErrorBody{Error: msg})
	return &Response{Status: status, Header: http.Header{"Content-Type": {"application/json"}}, Body: b}
}
