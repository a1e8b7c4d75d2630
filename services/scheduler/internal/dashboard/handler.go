package dashboard

import (
	"embed"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/protocol"
)

//go:embed static
var static embed.FS

// Paths the Handler serves.
const (
	PagePath = "/dashboard/"
	APIPath  = "/api/dashboard"
)

// Patterns are the http.ServeMux patterns Handler serves: the page, the
// redirect of / to it, and the snapshot. Mount Handler on each beside the
// admin API.
func Patterns() []string {
	return []string{"GET " + PagePath, "GET /{$}", "GET " + APIPath}
}

// Handler serves the page at PagePath (and redirects / to it) and the
// snapshot at APIPath (Patterns). Other paths are not its own.
func (d *Dashboard) Handler() http.Handler {
	files := http.FileServerFS(static)
	p := Patterns()
	mux := http.NewServeMux()
	mux.HandleFunc(p[0], func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/static/" + strings.TrimPrefix(r.URL.Path, PagePath)
		files.ServeHTTP(w, r2)
	})
	mux.HandleFunc(p[1], func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, PagePath, http.StatusFound)
	})
	mux.HandleFunc(p[2], d.serveSnapshot)
	return mux
}

func (d *Dashboard) serveSnapshot(w http.ResponseWriter, _ *http.Request) {
	s, err := d.Snapshot()
	w.Header().Set("Cache-Control", "no-store")
	if errors.Is(err, ErrNotRunning) {
		httperr.Write(w, protocol.ErrUnavailable, err.Error(), "")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(s)
}
