// Package admin serves the scheduler's admin API (Ray Serve's REST
// semantics): PUT/GET/DELETE /api/serve/applications, PUT and DELETE
// /api/serve/applications/{name} (one application, the others left as they
// are; PUT with ?if_absent=true adds it only when no application of that
// name exists) and GET /api/serve/config.
//
// Any scheduler instance serves it. Writes go to the Apps bucket key
// "config" with a compare-and-set on its revision, retried on conflict, so
// concurrent writers through different instances never lose an update;
// status is read from the Status bucket, which only the leader writes, with
// each graph application's live traffic split added from the ingresses'
// reports (WithGraphStatus). The handler is safe for concurrent use.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"

	"github.com/go-chi/chi/v5"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/secrets"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ConfigKey is the Apps-bucket key holding the whole applied ServeConfig;
// StatusKey the Status-bucket key the leader writes protocol.Status to.
const (
	ConfigKey = fleetstate.ConfigKey
	StatusKey = fleetstate.StatusKey
)

// DefaultMaxBody caps a PUT body.
const DefaultMaxBody = 4 << 20

// Handler is the admin API.
type Handler struct {
	apps, status jetstream.KeyValue
	log          zerolog.Logger
	maxBody      int64
	router       chi.Router
	graphStatus  func(config.Application) *protocol.GraphStatus // nil: none shown
}

// WithGraphStatus makes GET /api/serve/applications show each graph
// application's live traffic split as f computes it (the ingresses'
// reports); it returns h.
func (h *Handler) WithGraphStatus(f func(config.Application) *protocol.GraphStatus) *Handler {
	h.graphStatus = f
	return h
}

// New returns the admin API over the Apps and Status buckets.
func New(apps, status jetstream.KeyValue, maxBody int64, log zerolog.Logger) *Handler {
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	h := &Handler{apps: apps, status: status, log: log, maxBody: maxBody}
	r := chi.NewRouter()
	r.Put("/api/serve/applications", h.put)
	r.Put("/api/serve/applications/", h.put)
	r.Get("/api/serve/applications", h.getStatus)
	r.Get("/api/serve/applications/", h.getStatus)
	r.Delete("/api/serve/applications", h.deleteAll)
	r.Put("/api/serve/applications/{name}", h.putOne)
	r.Delete("/api/serve/applications/{name}", h.deleteOne)
	r.Get("/api/serve/config", h.getConfig)
	r.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, protocol.ErrNotFound, "no such endpoint", nil)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, protocol.ErrMethodNotAllowed, "method not allowed", nil)
	})
	h.router = r
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.router.ServeHTTP(w, r) }

// errorBody is httperr's body plus, for invalid_config, every invalid
// field with its path.
type errorBody struct {
	httperr.Body
	Fields []config.FieldError `json:"fields,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code protocol.ErrorCode, msg string, fields []config.FieldError) {
	httperr.WriteBody(w, 0, code, errorBody{Body: httperr.Body{Error: code, Message: msg}, Fields: fields})
}

func (h *Handler) internal(w http.ResponseWriter, r *http.Request, err error) {
	h.log.Error().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("admin request failed")
	writeError(w, protocol.ErrInternal, err.Error(), nil)
}

func appNames(c config.ServeConfig) []string {
	names := make([]string, 0, len(c.Applications))
	for _, a := range c.Applications {
		names = append(names, a.Name)
	}
	return names
}

// readConfig reads and parses a PUT body; it answers the error itself and
// returns ok=false when the body is too large or not a valid config.
func (h *Handler) readConfig(w http.ResponseWriter, r *http.Request) (config.ServeConfig, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, protocol.ErrBodyTooLarge,
				fmt.Sprintf("body exceeds %d bytes", h.maxBody), nil)
			return config.ServeConfig{}, false
		}
		writeError(w, protocol.ErrBadRequest, "read body: "+err.Error(), nil)
		return config.ServeConfig{}, false
	}
	cfg, err := config.Parse(body)
	if err != nil {
		invalidConfig(w, err)
		return config.ServeConfig{}, false
	}
	return cfg, true
}

func invalidConfig(w http.ResponseWriter, err error) {
	var fe config.Errors
	if errors.As(err, &fe) {
		writeError(w, protocol.ErrInvalidConfig, fe.Error(), fe)
		return
	}
	writeError(w, protocol.ErrInvalidConfig, err.Error(), nil)
}

// updateFailed answers a failed write of the config: 413 when it does not
// fit one NATS message, else 500.
func (h *Handler) updateFailed(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, nats.ErrMaxPayload) {
		writeError(w, protocol.ErrBodyTooLarge,
			"the config does not fit one NATS message (the server's max_payload); nothing changed", nil)
		return
	}
	h.internal(w, r, err)
}

// put applies a whole config: applications absent from it are deleted.
func (h *Handler) put(w http.ResponseWriter, r *http.Request) {
	cfg, ok := h.readConfig(w, r)
	if !ok {
		return
	}
	if err := h.update(r.Context(), func(config.ServeConfig) (config.ServeConfig, error) { return cfg, nil }); err != nil {
		h.updateFailed(w, r, err)
		return
	}
	h.log.Info().Strs("applications", appNames(cfg)).Msg("config applied")
	writeJSON(w, http.StatusOK, withWarnings(map[string]any{"applications": appNames(cfg), "applied": true}, cfg))
}

// errExists stops an if_absent PUT of an application that exists.
var errExists = errors.New("the application exists")

// putOne adds or replaces the application named in the path and leaves
// every other one as it is. The body is a serve config holding exactly
// that application; the config that results is validated as a whole
// (route prefixes and OIP model names stay unique). With ?if_absent=true
// an existing application of that name is left as it is (200, "applied":
// false) — what a one-shot deployer of an example runs, so that re-running
// it never undoes an operator's change and never races another deployer.
func (h *Handler) putOne(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	ifAbsent := r.URL.Query().Get("if_absent")
	if ifAbsent != "" && ifAbsent != "true" && ifAbsent != "false" {
		writeError(w, protocol.ErrBadRequest, fmt.Sprintf("if_absent: want true or false, got %q", ifAbsent), nil)
		return
	}
	cfg, ok := h.readConfig(w, r)
	if !ok {
		return
	}
	if len(cfg.Applications) != 1 || cfg.Applications[0].Name != name {
		writeError(w, protocol.ErrInvalidConfig,
			fmt.Sprintf("the body must hold exactly one application, named %q (it holds %q)", name, appNames(cfg)), nil)
		return
	}
	var next config.ServeConfig
	err := h.update(r.Context(), func(cur config.ServeConfig) (config.ServeConfig, error) {
		out := config.ServeConfig{Applications: make([]config.Application, 0, len(cur.Applications)+1)}
		replaced := false
		for _, a := range cur.Applications {
			if a.Name == name {
				if ifAbsent == "true" {
					next = cur
					return cur, errExists
				}
				a, replaced = cfg.Applications[0], true
			}
			out.Applications = append(out.Applications, a)
		}
		if !replaced {
			out.Applications = append(out.Applications, cfg.Applications[0])
		}
		if errs := out.Validate(); len(errs) > 0 {
			return cur, errs
		}
		next = out
		return out, nil
	})
	var fe config.Errors
	switch {
	case errors.Is(err, errExists):
		h.log.Info().Str("app", name).Msg("if_absent: application exists, left as it is")
		writeJSON(w, http.StatusOK, map[string]any{"applications": appNames(next), "applied": false,
			"message": fmt.Sprintf("not applied: application %q exists (if_absent)", name)})
		return
	case errors.As(err, &fe):
		invalidConfig(w, fe)
		return
	case err != nil:
		h.updateFailed(w, r, err)
		return
	}
	h.log.Info().Str("app", name).Msg("application applied")
	writeJSON(w, http.StatusOK, withWarnings(map[string]any{"applications": appNames(next), "applied": true}, cfg))
}

var errNotFound = errors.New("not found")

func (h *Handler) deleteAll(w http.ResponseWriter, r *http.Request) {
	if err := h.update(r.Context(), func(config.ServeConfig) (config.ServeConfig, error) {
		return config.ServeConfig{Applications: []config.Application{}}, nil
	}); err != nil {
		h.internal(w, r, err)
		return
	}
	h.log.Info().Msg("all applications deleted")
	writeJSON(w, http.StatusOK, map[string][]string{"applications": {}})
}

func (h *Handler) deleteOne(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	var left config.ServeConfig
	err := h.update(r.Context(), func(c config.ServeConfig) (config.ServeConfig, error) {
		out := config.ServeConfig{Applications: []config.Application{}}
		found := false
		for _, a := range c.Applications {
			if a.Name == name {
				found = true
				continue
			}
			out.Applications = append(out.Applications, a)
		}
		if !found {
			return c, errNotFound
		}
		left = out
		return out, nil
	})
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, protocol.ErrNotFound, fmt.Sprintf("application %q not found", name), nil)
		return
	case err != nil:
		h.internal(w, r, err)
		return
	}
	h.log.Info().Str("app", name).Msg("application deleted")
	writeJSON(w, http.StatusOK, map[string][]string{"applications": appNames(left)})
}

// update applies change to the stored config with a compare-and-set on its
// revision, retrying when another writer got in between.
func (h *Handler) update(ctx context.Context, change func(config.ServeConfig) (config.ServeConfig, error)) error {
	for attempt := 0; attempt < 20; attempt++ {
		cur, rev, err := Load(ctx, h.apps)
		if err != nil {
			return err
		}
		next, err := change(cur)
		if err != nil {
			return err
		}
		data, err := json.Marshal(next)
		if err != nil {
			return fmt.Errorf("encode config: %w", err)
		}
		if rev == 0 {
			_, err = h.apps.Create(ctx, ConfigKey, data)
		} else {
			_, err = h.apps.Update(ctx, ConfigKey, data, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("write config: %w", err)
		}
	}
	return errors.New("write config: too many concurrent updates")
}

// Load reads the stored config and its revision (0 when there is none, or
// when the key was deleted).
func Load(ctx context.Context, apps jetstream.KeyValue) (config.ServeConfig, uint64, error) {
	empty := config.ServeConfig{Applications: []config.Application{}}
	ent, err := apps.Get(ctx, ConfigKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return empty, 0, nil
	}
	if err != nil {
		return empty, 0, fmt.Errorf("read config: %w", err)
	}
	c, err := Decode(ent.Value())
	if err != nil {
		return empty, 0, err
	}
	return c, ent.Revision(), nil
}

// Decode parses a stored config (validated again, defaults filled;
// versioning on a plain async method, stored before Parse refused it,
// dropped).
func Decode(data []byte) (config.ServeConfig, error) {
	var probe config.ServeConfig
	if err := json.Unmarshal(data, &probe); err != nil {
		return config.ServeConfig{}, fmt.Errorf("decode stored config: %w", err)
	}
	if len(probe.Applications) == 0 {
		return config.ServeConfig{Applications: []config.Application{}}, nil
	}
	if probe.DropPlainVersioning() {
		// Stored before Parse refused them (they did nothing).
		var err error
		if data, err = json.Marshal(probe); err != nil {
			return config.ServeConfig{}, fmt.Errorf("decode stored config: %w", err)
		}
	}
	c, err := config.Parse(data)
	if err != nil {
		return config.ServeConfig{}, fmt.Errorf("decode stored config: %w", err)
	}
	return c, nil
}

func (h *Handler) getConfig(w http.ResponseWriter, r *http.Request) {
	c, _, err := Load(r.Context(), h.apps)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, Redacted(c))
}

// Redacted returns c with every value that looks like a secret written in
// plain text (a string under a key such as password, token or api_key in a
// user_config; an env value under such a name) masked — what GET
// /api/serve/config answers. References ("${secret:NAME}", resolved by the
// workers) are kept: they hold no secret.
func Redacted(c config.ServeConfig) config.ServeConfig {
	out := config.ServeConfig{Applications: make([]config.Application, len(c.Applications))}
	for i, a := range c.Applications {
		a.Deployments = append([]config.Deployment(nil), a.Deployments...)
		for j := range a.Deployments {
			d := &a.Deployments[j]
			d.UserConfig, _ = secrets.Redact(d.UserConfig, "user_config")
			d.Env, _ = secrets.RedactEnv(d.Env)
		}
		out.Applications[i] = a
	}
	return out
}

// SecretWarnings lists the plain-text secrets of c (see Redacted), each
// with its path and what to do instead.
func SecretWarnings(c config.ServeConfig) []string {
	var out []string
	for i, a := range c.Applications {
		for j, d := range a.Deployments {
			at := fmt.Sprintf("applications[%d].deployments[%d].", i, j)
			_, paths := secrets.Redact(d.UserConfig, "user_config")
			_, names := secrets.RedactEnv(d.Env)
			for _, n := range names {
				paths = append(paths, "env."+n)
			}
			for _, p := range paths {
				out = append(out, at+p+`: looks like a secret in plain text: it is stored in NATS and masked on read; `+
					`put it in a file on the workers and write "${secret:NAME}" instead`)
			}
		}
	}
	return out
}

func withWarnings(body map[string]any, c config.ServeConfig) map[string]any {
	if w := SecretWarnings(c); len(w) > 0 {
		body["warnings"] = w
	}
	return body
}

// getStatus answers the leader's last status; applications in the config
// that the leader has not reported yet are NOT_STARTED.
func (h *Handler) getStatus(w http.ResponseWriter, r *http.Request) {
	st := protocol.Status{Applications: map[string]protocol.AppStatus{}, Workers: []protocol.WorkerStatus{}}
	ent, err := h.status.Get(r.Context(), StatusKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		h.internal(w, r, fmt.Errorf("read status: %w", err))
		return
	default:
		if err := json.Unmarshal(ent.Value(), &st); err != nil {
			h.internal(w, r, fmt.Errorf("decode status: %w", err))
			return
		}
		if st.Applications == nil {
			st.Applications = map[string]protocol.AppStatus{}
		}
	}
	c, _, err := Load(r.Context(), h.apps)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	for _, a := range c.Applications {
		if _, ok := st.Applications[a.Name]; ok {
			continue
		}
		deps := map[string]protocol.DeploymentStatus{}
		for _, d := range a.Deployments {
			deps[d.Name] = protocol.DeploymentStatus{Name: d.Name, Status: protocol.DeploymentUpdating,
				TargetReplicas: d.Replicas(), Replicas: []protocol.ReplicaStatus{}}
		}
		st.Applications[a.Name] = protocol.AppStatus{Name: a.Name, RoutePrefix: a.RoutePrefix, Ingress: a.Ingress,
			Status: protocol.AppNotStarted, Message: "waiting for the scheduler leader", Deployments: deps}
	}
	if h.graphStatus != nil {
		for _, a := range c.Applications {
			if as, ok := st.Applications[a.Name]; ok && a.Graph != nil {
				as.Graph = h.graphStatus(a)
				st.Applications[a.Name] = as
			}
		}
	}
	sort.Slice(st.Workers, func(i, j int) bool { return st.Workers[i].ID < st.Workers[j].ID })
	writeJSON(w, http.StatusOK, st)
}
