package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/oip"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/services/ingress/internal/models"
	"github.com/rs/zerolog"
)

// DefaultOIPReadyTimeout bounds a model-ready request when
// Options.OIPReadyTimeout is unset.
const DefaultOIPReadyTimeout = 5 * time.Second

// serveOIP serves the Open Inference Protocol v2 under /v2. The server
// endpoints are the ingress's own: GET /v2 (metadata), /v2/health/live (the
// ingress answers) and /v2/health/ready (NATS connected, routes and router
// loaded: what /-/healthz says). A model endpoint goes to the deployment
// that serves the model (models.Table), with the path kept as it is
// ("/v2/models/m/infer"), the body untouched and protocol.HeaderModelID naming the
// model; an inference request is parsed and checked first (package oip),
// so that no runtime sees a malformed tensor. Every error is the
// protocol's {"error": "..."} (with "code" and "request_id" added).
func (h *Handler) serveOIP(x *exchange, r *http.Request) {
	x.label = "/v2"
	route, ok := oip.ParsePath(r.URL.Path)
	if !ok {
		x.code = protocol.ErrNotFound
		writeOIPError(x, http.StatusNotFound, "no Open Inference Protocol v2 endpoint at "+r.URL.Path+
			"; they are /v2, /v2/health/{live,ready}, /v2/models/{model}[/versions/{version}][/ready|/infer]")
		return
	}
	if m := route.Endpoint.Method(); r.Method != m && (m != http.MethodGet || r.Method != http.MethodHead) {
		x.code = protocol.ErrMethodNotAllowed
		x.w.Header().Set("Allow", m)
		writeOIPError(x, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, m))
		return
	}
	switch route.Endpoint {
	case oip.ServerMeta:
		writeJSON(x.w, http.StatusOK, oip.Server())
		return
	case oip.ServerLive:
		writeJSON(x.w, http.StatusOK, map[string]bool{"live": true})
		return
	case oip.ServerReady:
		if err := h.o.Healthy(); err != nil {
			x.code = protocol.ErrUnavailable
			writeJSON(x.w, http.StatusServiceUnavailable, map[string]any{"live": true, "ready": false, "error": err.Error()})
			return
		}
		writeJSON(x.w, http.StatusOK, map[string]bool{"live": true, "ready": true})
		return
	}

	var tab *models.Table
	if h.o.Models != nil {
		tab = h.o.Models()
	}
	model, ok := tab.Lookup(route.Model)
	if !ok {
		x.code = protocol.ErrNotFound
		known := "none is configured (a deployment opts in with protocol: oip)"
		if names := tab.Names(); len(names) > 0 {
			known = "the models are " + strings.Join(names, ", ")
		}
		writeOIPError(x, http.StatusNotFound, fmt.Sprintf("unknown model %q; %s", route.Model, known))
		return
	}
	x.label = "/v2/models/" + model.Name
	if p := h.principal(r); !p.CanApp(model.App) {
		x.code = protocol.ErrForbidden
		writeOIPError(x, http.StatusForbidden, fmt.Sprintf("%s may not call application %s (model %s)", p.Name, model.App, model.Name))
		return
	}
	limit := h.Limits().InlineBodyBytes
	body, err := readBody(x.w, r, limit)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			x.code = protocol.ErrBodyTooLarge
			writeOIPError(x, http.StatusRequestEntityTooLarge, "request body exceeds "+strconv.FormatInt(limit, 10)+" bytes")
			return
		}
		x.code = protocol.ErrBadRequest
		writeOIPError(x, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	if route.Endpoint == oip.ModelInfer {
		if r.Header.Get("Inference-Header-Content-Length") != "" {
			x.code = protocol.ErrBadRequest
			writeOIPError(x, http.StatusBadRequest, "the binary tensor data extension (Inference-Header-Content-Length) is not supported: send the tensors as JSON")
			return
		}
		if err := oip.Validate(body); err != nil {
			x.code = protocol.ErrBadRequest
			writeOIPError(x, http.StatusBadRequest, err.Error())
			return
		}
	}

	hdr := forwardHeaders(r.Header)
	hdr.Set(protocol.HeaderModelID, model.Name)
	req := &serve.Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: hdr, Body: body, RequestID: x.rid}
	timeout := h.o.RequestTimeout
	if route.Endpoint == oip.ModelReady {
		timeout = h.o.OIPReadyTimeout
		if timeout <= 0 {
			timeout = DefaultOIPReadyTimeout
		}
	}
	ctx := r.Context()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	log := func() zerolog.Logger {
		return h.o.Log.With().Str("request_id", x.rid).Str("model", model.Name).Str("app", model.App).Logger()
	}
	resp, err := h.o.Caller.Call(ctx, model.App, model.Deployment, req)
	if err != nil {
		e := serve.AsError(err)
		var se *serve.Error
		if !errors.As(err, &se) {
			l := log()
			l.Error().Err(err).Msg("call OIP model deployment")
			e = &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable, Msg: "upstream unavailable"}
		}
		x.code = e.Code
		if route.Endpoint == oip.ModelReady {
			httperr.SetHeaders(x.w.Header(), e.Code)
			writeJSON(x.w, http.StatusServiceUnavailable, map[string]any{"name": model.Name, "ready": false,
				"error": fmt.Sprintf("model %q is not ready: %s", model.Name, e.Msg), "code": e.Code, "request_id": x.rid})
			return
		}
		writeOIPError(x, errorStatus(e.Code, e.Status), e.Msg)
		return
	}
	code := protocol.ErrorCode(resp.Header.Get(protocol.HdrError))
	x.code = code
	if platformError(code) {
		status := errorStatus(code, resp.Status)
		if route.Endpoint == oip.ModelReady {
			httperr.SetHeaders(x.w.Header(), code)
			writeJSON(x.w, http.StatusServiceUnavailable, map[string]any{"name": model.Name, "ready": false,
				"error": fmt.Sprintf("model %q is not ready: %s", model.Name, resp.Body), "code": code, "request_id": x.rid})
			return
		}
		writeOIPError(x, status, string(resp.Body))
		return
	}
	if resp.Status >= 400 && !isOIPError(resp.Body) {
		// A runtime's own failure (a panic, a child that is not an OIP
		// server): still the protocol's error shape.
		if code == "" {
			x.code = protocol.ErrHandler
		}
		writeOIPError(x, resp.Status, strings.TrimSpace(string(resp.Body)))
		return
	}
	copyResponseHeaders(x.w.Header(), resp.Header)
	httperr.SetHeaders(x.w.Header(), code)
	x.w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	x.w.WriteHeader(resp.Status)
	_, _ = x.w.Write(resp.Body)
}

// isOIPError reports whether body is a JSON object with a string "error".
func isOIPError(body []byte) bool {
	var e struct {
		Error *string `json:"error"`
	}
	return json.Unmarshal(body, &e) == nil && e.Error != nil
}

// oipErrorBody is the protocol's error object plus jetserve's code and
// request id.
type oipErrorBody struct {
	Error     string             `json:"error"`
	Code      protocol.ErrorCode `json:"code,omitempty"`
	RequestID string             `json:"request_id,omitempty"`
}

func writeOIPError(x *exchange, status int, msg string) {
	httperr.WriteBody(x.w, status, x.code, oipErrorBody{Error: msg, Code: x.code, RequestID: x.rid})
}

func (h *Handler) serveModels(w http.ResponseWriter, _ *http.Request) {
	var tab *models.Table
	if h.o.Models != nil {
		tab = h.o.Models()
	}
	writeJSON(w, http.StatusOK, tab.All())
}
