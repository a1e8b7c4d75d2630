package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/jetserve/jetserve/services/ingress/internal/routes"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// fakeCaller answers every call with resp/err and records the request.
type fakeCaller struct {
	resp *serve.Response
	err  error
	got  *serve.Request
}

func (f *fakeCaller) Call(_ context.Context, _, _ string, req *serve.Request) (*serve.Response, error) {
	f.got = req
	return f.resp, f.err
}

func (f *fakeCaller) Stream(context.Context, string, string, *serve.Request, wire.StreamSink) error {
	return f.err
}

func newHandler(t *testing.T, c Caller, healthy error) *Handler {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	tab := routes.New([]routes.Route{{Prefix: "/a", App: "a", Ingress: "A"}})
	return New(Options{Caller: c, Routes: func() *routes.Table { return tab }, Healthy: func() error { return healthy },
		MaxBodyBytes: 16, Metrics: m, Log: zerolog.Nop()})
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name       string
		resp       *serve.Response
		err        error
		wantStatus int
		wantBody   string
		retryAfter bool
	}{
		{"handler error keeps status and body",
			&serve.Response{Status: 422, Header: http.Header{protocol.HdrError: {string(protocol.ErrBadRequest)}}, Body: []byte("bad field")},
			nil, 422, "bad field", false},
		{"queue full", &serve.Response{Status: 503, Header: http.Header{protocol.HdrError: {string(protocol.ErrQueueFull)}}, Body: []byte("full")},
			nil, 503, `"queue_full"`, true},
		{"router timeout", &serve.Response{Status: 504, Header: http.Header{protocol.HdrError: {string(protocol.ErrTimeout)}}},
			nil, 504, `"timeout"`, false},
		{"no router", nil, &serve.Error{Status: 503, Code: protocol.ErrUnavailable, Msg: "no router is running"}, 503, `"unavailable"`, true},
		{"replica's child broke off", &serve.Response{Status: 503, Header: http.Header{protocol.HdrError: {string(protocol.ErrUnavailable)}},
			Body: []byte("child process broke off the request")}, nil, 503, "child process broke off", true},
		{"caller timeout", nil, &serve.Error{Status: 504, Code: protocol.ErrTimeout, Msg: "request timed out"}, 504, `"timeout"`, false},
		{"transport failure", nil, io.ErrUnexpectedEOF, 503, `"unavailable"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler(t, &fakeCaller{resp: tt.resp, err: tt.err}, nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("POST", "/a/x", strings.NewReader("{}")))
			if w.Code != tt.wantStatus || !strings.Contains(w.Body.String(), tt.wantBody) || (w.Header().Get("Retry-After") != "") != tt.retryAfter {
				t.Errorf("POST /a/x = %d %v %q, want %d containing %q (Retry-After %v)",
					w.Code, w.Header(), w.Body, tt.wantStatus, tt.wantBody, tt.retryAfter)
			}
		})
	}
}

// TestPlatformCodesAnswerAsTheCatalogueSays: every code the fleet
// answers by itself reaches the client with the status and Retry-After
// of schemas/errors.json, whatever status the NATS reply carried, both as
// a reply and as a call error.
func TestPlatformCodesAnswerAsTheCatalogueSays(t *testing.T) {
	n := 0
	for _, code := range protocol.ErrorCodes() {
		if !platformError(code) {
			continue
		}
		n++
		for _, c := range []*fakeCaller{
			{resp: &serve.Response{Status: 500, Header: http.Header{protocol.HdrError: {string(code)}}, Body: []byte("why")}},
			{err: &serve.Error{Status: 500, Code: code, Msg: "why"}},
		} {
			w := httptest.NewRecorder()
			newHandler(t, c, nil).ServeHTTP(w, httptest.NewRequest("POST", "/a/x", strings.NewReader("{}")))
			if w.Code != code.HTTPStatus() || (w.Header().Get("Retry-After") != "") != code.RetryAfter() ||
				w.Header().Get("X-Jetserve-Error") != string(code) || !strings.Contains(w.Body.String(), `"error":"`+string(code)+`"`) {
				t.Errorf("%s (reply %v, error %v): answered %d %v %s, want %d, Retry-After %v",
					code, c.resp != nil, c.err != nil, w.Code, w.Header(), w.Body, code.HTTPStatus(), code.RetryAfter())
			}
		}
	}
	if n < 8 {
		t.Fatalf("%d platform codes, want the fleet's (≥ 8)", n)
	}
}

func TestHopByHopHeadersDropped(t *testing.T) {
	c := &fakeCaller{resp: &serve.Response{Status: 200, Header: http.Header{"Connection": {"close"}, "X-Out": {"1"}}}}
	h := newHandler(t, c, nil)
	r := httptest.NewRequest("GET", "/a?q=1", nil)
	r.Header.Set("Connection", "X-Secret")
	r.Header.Set("X-Secret", "s")
	r.Header.Set("Keep-Alive", "timeout=5")
	r.Header.Set("X-Keep", "k")
	r.Header.Set("X-Request-Id", "rid-1")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || w.Header().Get("X-Request-Id") != "rid-1" || w.Header().Get("X-Out") != "1" || w.Header().Get("Connection") != "" {
		t.Fatalf("GET /a = %d %v, want 200 echoing X-Request-Id rid-1 and X-Out, no Connection", w.Code, w.Header())
	}
	got := c.got
	if got.Path != "/" || got.Query.Get("q") != "1" || got.RequestID != "rid-1" {
		t.Errorf("forwarded path %q query %v id %q, want / q=1 rid-1", got.Path, got.Query, got.RequestID)
	}
	for _, k := range []string{"Connection", "X-Secret", "Keep-Alive", "X-Request-Id"} {
		if got.Header.Get(k) != "" {
			t.Errorf("forwarded header %s = %q, want dropped", k, got.Header.Get(k))
		}
	}
	if got.Header.Get("X-Keep") != "k" {
		t.Errorf("forwarded X-Keep = %q, want k", got.Header.Get("X-Keep"))
	}
}

func TestHealthz(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want int
	}{{"ready", nil, 200}, {"not ready", io.EOF, 503}} {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			newHandler(t, &fakeCaller{}, tt.err).ServeHTTP(w, httptest.NewRequest("GET", "/-/healthz", nil))
			if w.Code != tt.want {
				t.Errorf("GET /-/healthz = %d, want %d", w.Code, tt.want)
			}
		})
	}
}

func TestBodyLimitChunked(t *testing.T) {
	h := newHandler(t, &fakeCaller{resp: &serve.Response{Status: 200}}, nil)
	r := httptest.NewRequest("POST", "/a", io.NopCloser(strings.NewReader(strings.Repeat("x", 100))))
	r.ContentLength = -1 // unknown length: the limit must still hold
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("POST 100 bytes chunked = %d, want 413", w.Code)
	}
}

// TestNoRouteWhileNotReady: a path no route matches is 404 only once the
// ingress is ready; before (route table not loaded: an ingress just
// started) it is 503 unavailable with Retry-After, since the route may
// exist.
func TestNoRouteWhileNotReady(t *testing.T) {
	for _, tt := range []struct {
		healthy    error
		wantStatus int
		wantBody   string
	}{
		{nil, 404, `"not_found"`},
		{errors.New("route table not loaded"), 503, "route table not loaded"},
	} {
		w := httptest.NewRecorder()
		newHandler(t, &fakeCaller{}, tt.healthy).ServeHTTP(w, httptest.NewRequest("POST", "/b/x", strings.NewReader("{}")))
		if w.Code != tt.wantStatus || !strings.Contains(w.Body.String(), tt.wantBody) || (w.Code == 503) != (w.Header().Get("Retry-After") != "") {
			t.Errorf("healthy=%v: POST /b/x = %d %v %q, want %d containing %q", tt.healthy, w.Code, w.Header(), w.Body, tt.wantStatus, tt.wantBody)
		}
	}
}
