package httperr_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// TestWriteEveryCode: every code of the catalogue is answered with its
// status, Retry-After exactly where the catalogue says, the code in
// X-Jetserve-Error and a JSON body naming it.
func TestWriteEveryCode(t *testing.T) {
	for _, code := range protocol.ErrorCodes() {
		w := httptest.NewRecorder()
		httperr.Write(w, code, "why", "rid-1")
		if w.Code != code.HTTPStatus() {
			t.Errorf("Write(%s) status = %d, want %d", code, w.Code, code.HTTPStatus())
		}
		if got, want := w.Header().Get("Retry-After") != "", code.RetryAfter(); got != want {
			t.Errorf("Write(%s) Retry-After %q, want present = %v", code, w.Header().Get("Retry-After"), want)
		}
		if got := w.Header().Get(httperr.Header); got != string(code) {
			t.Errorf("Write(%s) %s = %q", code, httperr.Header, got)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("Write(%s) Content-Type = %q, want application/json", code, ct)
		}
		var b httperr.Body
		if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil || b != (httperr.Body{Error: code, Message: "why", RequestID: "rid-1"}) {
			t.Errorf("Write(%s) body = %s (%v)", code, w.Body, err)
		}
	}
}

func TestWriteBodyKeepsAHandlersStatusAndExtraFields(t *testing.T) {
	w := httptest.NewRecorder()
	httperr.WriteBody(w, http.StatusTeapot, protocol.ErrHandler, struct {
		httperr.Body
		Step string `json:"step"`
	}{httperr.Body{Error: protocol.ErrHandler, Message: "m"}, "s1"})
	if w.Code != http.StatusTeapot || w.Body.String() != `{"error":"handler_error","message":"m","step":"s1"}`+"\n" {
		t.Errorf("WriteBody = %d %s, want 418 with the step", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	httperr.WriteBody(w, 0, protocol.ErrQueueFull, httperr.Body{Error: protocol.ErrQueueFull})
	if w.Code != 503 || w.Header().Get("Retry-After") != strconv.Itoa(httperr.RetryAfterSeconds) {
		t.Errorf("WriteBody(status 0, queue_full) = %d Retry-After %q, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
}
