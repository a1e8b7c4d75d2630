package service

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOpsPprof: the profiles are served only when asked for; a CPU
// profile of one second comes back as a gzipped protobuf, an execution
// trace as a trace ("go 1.N trace"), an unknown profile is 404.
func TestOpsPprof(t *testing.T) {
	get := func(h http.Handler, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		return w
	}
	off := OpsMux(NewRegistry(), NewHealth(), false)
	if w := get(off, "/debug/pprof/heap"); w.Code != http.StatusNotFound {
		t.Errorf("pprof off: GET /debug/pprof/heap = %d, want 404", w.Code)
	}
	on := OpsMux(NewRegistry(), NewHealth(), true)
	for _, tt := range []struct {
		path string
		want int
	}{
		{"/debug/pprof/profile?seconds=1", 200},
		{"/debug/pprof/heap", 200},
		{"/debug/pprof/goroutine", 200},
		{"/debug/pprof/nosuch", 404},
		{"/debug/pprof/trace?seconds=1", 200},
	} {
		w := get(on, tt.path)
		if w.Code != tt.want {
			t.Errorf("GET %s = %d, want %d", tt.path, w.Code, tt.want)
			continue
		}
		if b := w.Body.Bytes(); tt.want == 200 && (len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b) && !strings.HasPrefix(tt.path, "/debug/pprof/trace") {
			t.Errorf("GET %s: body is not a gzipped profile (% x…)", tt.path, b[:min(len(b), 8)])
		}
	}
	if b := get(on, "/debug/pprof/trace?seconds=1").Body.String(); !strings.HasPrefix(b, "go 1.") {
		t.Errorf("GET /debug/pprof/trace: body is not an execution trace (%q…)", b[:min(len(b), 16)])
	}
	if w := get(on, "/healthz"); w.Code != 200 {
		t.Errorf("pprof on: GET /healthz = %d, want 200", w.Code)
	}
}
