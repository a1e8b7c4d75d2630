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

// Handler serves the page at PagePath (and redirects / to it) and the
// snapshot at APIPath. Other paths are not its own: mount it beside the
// admin API.
func (d *Dashboard) Handler() http.Handler {
	files := http.FileServerFS(static)
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PagePath, func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/static/" + strings.TrimPrefix(r.URL.Path, PagePath)
		files.ServeHTTP(w, r2)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, PagePath, http.StatusFound)
	})
	mux.HandleFunc("GET "+APIPath, d.serveSnapshot)
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
