// Package httperr writes jetserve's HTTP error answers, the same from
// every server (ingress, jobs API, admin API, dashboard, auth layer): the
// status schemas/errors.json gives the code (protocol.ErrorCode.HTTPStatus),
// Retry-After where the catalogue says so, the code in X-Jetserve-Error,
// and a JSON body whose "error" field is the code. Functions only; safe for
// concurrent use.
package httperr

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/jetserve/jetserve/pkg/protocol"
)

// Header carries the error code of every error answer, also when the body
// is not jetserve's (a deployment's own error, an Open Inference Protocol
// error object).
const Header = "X-Jetserve-Error"

// RetryAfterSeconds is the Retry-After of every answer that carries one.
const RetryAfterSeconds = 1

// Body is the JSON body of an error answer. Answers with more fields
// embed it.
type Body struct {
	Error     protocol.ErrorCode `json:"error"`
	Message   string             `json:"message"`
	RequestID string             `json:"request_id,omitempty"`
}

// Write answers code with its catalogue status and a Body.
func Write(w http.ResponseWriter, code protocol.ErrorCode, msg, requestID string) {
	WriteBody(w, 0, code, Body{Error: code, Message: msg, RequestID: requestID})
}

// WriteBody answers code with body (JSON) and status; status 0 is the
// code's catalogue status. Only answers that pass on a deployment's own
// status (handler_error, or a 4xx the handler chose) give one.
func WriteBody(w http.ResponseWriter, status int, code protocol.ErrorCode, body any) {
	SetHeaders(w.Header(), code)
	if status == 0 {
		status = code.HTTPStatus()
	}
	b, err := json.Marshal(body)
	if err != nil {
		// Bodies are jetserve's own structs; this is a bug, answered
		// as one rather than with half a body.
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal","message":"encode error body"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// SetHeaders sets the code's headers (X-Jetserve-Error, and Retry-After
// where the catalogue says so, unless h has one already: a rate limiter
// knows better) on h, for answers whose body is written another way (a
// deployment's own error body passed through).
func SetHeaders(h http.Header, code protocol.ErrorCode) {
	if code == "" {
		return
	}
	h.Set(Header, string(code))
	if code.RetryAfter() && h.Get("Retry-After") == "" {
		h.Set("Retry-After", strconv.Itoa(RetryAfterSeconds))
	}
}
