package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// ParseLevel parses a zerolog level name.
func ParseLevel(s string) (zerolog.Level, error) {
	l, err := zerolog.ParseLevel(strings.ToLower(s))
	if err != nil || s == "" {
		return zerolog.InfoLevel, fmt.Errorf("unknown level %q (want trace, debug, info, warn or error)", s)
	}
	return l, nil
}

// NewLogger builds the service's logger writing to w.
func NewLogger(c LogConfig, w io.Writer, svc string) zerolog.Logger {
	lvl, _ := ParseLevel(c.Level)
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	// Millisecond timestamps without touching zerolog's global
	// TimeFieldFormat (which is second-precision RFC 3339).
	return zerolog.New(w).Level(lvl).Hook(zerolog.HookFunc(func(e *zerolog.Event, _ zerolog.Level, _ string) {
		e.Str(zerolog.TimestampFieldName, time.Now().UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	})).With().Str("service", svc).Logger()
}

// NewRegistry returns a Prometheus registry with the Go and process
// collectors, for one service (or, in dev, for the whole process).
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Health collects named readiness checks; /healthz answers 200 only when
// every check passes. Safe for concurrent use.
type Health struct {
	mu     sync.RWMutex
	checks map[string]func() error // guarded by mu
}

// NewHealth returns an empty Health (healthy).
func NewHealth() *Health { return &Health{checks: map[string]func() error{}} }

// Add registers a check.
func (h *Health) Add(name string, check func() error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = check
}

// Check runs every check and joins the failures.
func (h *Health) Check() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var errs []error
	for name, c := range h.checks {
		if err := c(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// ServeHTTP answers /healthz.
func (h *Health) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	if err := h.Check(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = io.WriteString(w, "ok\n")
}

// NATSCheck is a health check that fails while nc is not connected.
func NATSCheck(nc *nats.Conn) func() error {
	return func() error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats %s", nc.Status())
		}
		return nil
	}
}

// OpsMux returns a mux with /metrics and /healthz, and with pprofOn
// Go's profiles under /debug/pprof/ (profile, trace, heap, allocs,
// goroutine, …).
func OpsMux(reg *prometheus.Registry, health *Health, pprofOn bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("GET /healthz", health)
	if pprofOn {
		mux.HandleFunc("GET /debug/pprof/profile", timedProfile(pprof.StartCPUProfile, pprof.StopCPUProfile))
		mux.HandleFunc("GET /debug/pprof/trace", timedProfile(trace.Start, trace.Stop))
		mux.HandleFunc("GET /debug/pprof/{name}", namedProfile)
	}
	return mux
}

// timedProfile answers GET /debug/pprof/profile?seconds=N (a CPU
// profile) or /debug/pprof/trace?seconds=N (an execution trace, for `go
// tool trace`: where a request waited — wake-ups, hand-offs between
// goroutines), N default 10, at most 120, as net/http/pprof's do; that
// package is not imported because its init registers on
// http.DefaultServeMux.
func timedProfile(start func(io.Writer) error, stop func()) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
		if err != nil || secs <= 0 {
			secs = 10
		}
		secs = min(secs, 120)
		w.Header().Set("Content-Type", "application/octet-stream")
		if err := start(w); err != nil {
			http.Error(w, "start profile: "+err.Error(), http.StatusInternalServerError)
			return
		}
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-r.Context().Done():
		}
		stop()
	}
}

// namedProfile answers GET /debug/pprof/{heap,allocs,goroutine,mutex,block,…}.
func namedProfile(w http.ResponseWriter, r *http.Request) {
	p := pprof.Lookup(r.PathValue("name"))
	if p == nil {
		http.Error(w, "no such profile", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := p.WriteTo(w, 0); err != nil {
		http.Error(w, "write profile: "+err.Error(), http.StatusInternalServerError)
	}
}

// ServeHTTP runs h on addr until ctx ends, then shuts it down, waiting
// up to drain for in-flight requests. ready, if not nil, receives the bound
// address once listening. ServeServer takes TLS and limits too.
func ServeHTTP(ctx context.Context, addr string, h http.Handler, drain time.Duration, ready func(net.Addr)) error {
	return ServeServer(ctx, Server{Addr: addr, Handler: h, Drain: drain, Ready: ready})
}

// Connect dials NATS and keeps reconnecting for ever; the first connect is
// retried until ctx ends, so services may start before NATS. Every failure
// to connect is logged with its reason (a refused credential, a TLS
// failure, a server that cannot be reached) and never with a password or
// token; so are the server's asynchronous errors (a permissions
// violation). st, if not nil, records the state for /healthz.
func Connect(ctx context.Context, c NATSConfig, name string, log zerolog.Logger) (*nats.Conn, error) {
	return ConnectWatched(ctx, c, name, log, nil)
}

// ConnectWatched is Connect recording the connection's state in st.
func ConnectWatched(ctx context.Context, c NATSConfig, name string, log zerolog.Logger, st *ConnState) (*nats.Conn, error) {
	if st == nil {
		st = NewConnState()
	}
	urls := RedactURL(c.URL)
	st.set(false, "connecting to "+urls, nil)
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(c.PingInterval),
		nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(nc *nats.Conn) { st.set(true, "", nil) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: a deliberate close or drain
				log.Warn().Err(err).Msg("nats disconnected")
				st.set(false, "disconnected", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			st.set(true, "", nil)
			log.Info().Str("url", nc.ConnectedUrlRedacted()).Int64("max_payload", nc.MaxPayload()).Msg("nats reconnected")
		}),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) {
			// Once per failed attempt (250 ms apart): log a changed
			// reason at once, the same one every 10 s.
			if st.failed(err) {
				log.Error().Err(redactErr(err, c.URL)).Str("url", urls).Str("hint", connectHint(err)).Msg("nats connect failed; retrying")
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Error().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				st.denied(err)
				ev.Str("hint", "this service's NATS user is not allowed that subject (deploy/auth generates the permissions)").Msg("nats permissions violation")
				return
			}
			if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
				st.set(false, "", err)
			}
			ev.Msg("nats async error")
		}),
	}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
		prefix, err := CredsInboxPrefix(c.Creds)
		if err != nil {
			return nil, fmt.Errorf("nats.creds: %w", err)
		}
		if prefix != "" {
			opts = append(opts, nats.CustomInboxPrefix(prefix))
		}
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect nats %s: %w", urls, redactErr(err, c.URL))
	}
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			last := st.lastErr()
			nc.Close()
			if last != nil {
				return nil, fmt.Errorf("connect nats %s: %w (last attempt: %v)", urls, ctx.Err(), last)
			}
			return nil, fmt.Errorf("connect nats %s: %w", urls, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	st.set(true, "", nil)
	// max_payload bounds every message: request bodies, job messages,
	// stored configs. Services size their limits from nc.MaxPayload().
	log.Info().Str("url", nc.ConnectedUrlRedacted()).Int64("max_payload", nc.MaxPayload()).Msg("nats connected")
	return nc, nil
}

// CredsInboxPrefix reads the user JWT of a credentials file and returns
// the inbox prefix its permissions allow, "" when they allow the default
// one: a user of deploy/auth may subscribe only below _INBOX.<its name>, so
// that no service reads another's replies, and its requests must use that
// prefix.
func CredsInboxPrefix(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	token, err := jwt.ParseDecoratedJWT(b)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return "", fmt.Errorf("%s: decode the user JWT: %w", path, err)
	}
	allow := uc.Permissions.Sub.Allow
	if len(allow) == 0 || slices.Contains(allow, ">") || slices.Contains(allow, "_INBOX.>") {
		return "", nil
	}
	for _, s := range allow {
		if p, ok := strings.CutSuffix(s, ".>"); ok && strings.HasPrefix(p, "_INBOX.") && !strings.ContainsAny(p, "*>") {
			return p, nil
		}
	}
	return "", nil
}

// connectHint says what a connect error usually means.
func connectHint(err error) string {
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, nats.ErrAuthorization), strings.Contains(msg, "authorization violation"):
		return "the server refused this service's credential: check nats.creds (or the user/password in nats.url)"
	case errors.Is(err, nats.ErrAuthExpired), strings.Contains(msg, "expired"):
		return "the credential has expired: issue a new one (deploy/auth)"
	case strings.Contains(msg, "x509"), strings.Contains(msg, "tls"), strings.Contains(msg, "certificate"):
		return "TLS failed: check nats.tls.ca_file (the CA that signed the server's certificate) and the URL's host name"
	case errors.Is(err, nats.ErrNoServers), strings.Contains(msg, "connection refused"), strings.Contains(msg, "no such host"):
		return "no NATS server answers at nats.url"
	}
	return ""
}

// RedactURL returns a comma-separated list of NATS URLs with every
// password and token replaced by "REDACTED", for logs and errors.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		at := strings.LastIndex(p, "@")
		if at < 0 {
			parts[i] = p
			continue
		}
		scheme, rest, ok := strings.Cut(p[:at], "://")
		if !ok {
			scheme, rest = "", p[:at]
		}
		user, _, hasPass := strings.Cut(rest, ":")
		cred := "REDACTED"
		if hasPass {
			cred = user + ":REDACTED"
		}
		if ok {
			parts[i] = scheme + "://" + cred + p[at:]
		} else {
			parts[i] = cred + p[at:]
		}
	}
	return strings.Join(parts, ",")
}

// redactErr hides the URL's credentials where err's text repeats them
// (url.Parse errors quote the URL).
func redactErr(err error, urls string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	red := msg
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if u != "" && strings.Contains(red, u) {
			red = strings.ReplaceAll(red, u, RedactURL(u))
		}
	}
	for _, u := range strings.Split(urls, ",") {
		// A userinfo quoted apart from its URL.
		if at := strings.LastIndex(u, "@"); at > 0 {
			ui := u[:at]
			if _, after, ok := strings.Cut(ui, "://"); ok {
				ui = after
			}
			if _, pass, ok := strings.Cut(ui, ":"); ok && pass != "" {
				red = strings.ReplaceAll(red, pass, "REDACTED")
			} else if ui != "" && !ok {
				red = strings.ReplaceAll(red, ui, "REDACTED")
			}
		}
	}
	if red == msg {
		return err
	}
	return errors.New(red)
}

// ConnState is what /healthz says about a NATS connection: connected, or
// why not (the last connect error), and the last permissions violation.
// Safe for concurrent use.
type ConnState struct {
	mu        sync.Mutex
	connected bool      // guarded by mu
	what      string    // guarded by mu
	err       error     // guarded by mu
	logged    time.Time // guarded by mu: when err was last logged
	violation error     // guarded by mu
	violAt    time.Time // guarded by mu
}

// NewConnState returns a state that says "not connected yet".
func NewConnState() *ConnState { return &ConnState{what: "not connected yet"} }

func (s *ConnState) set(connected bool, what string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = connected
	if what != "" {
		s.what = what
	}
	if connected {
		s.err = nil
	} else if err != nil {
		s.err = err
	}
}

// failed records a failed attempt and reports whether to log it: a new
// reason at once, the same one at most every 10 s.
func (s *ConnState) failed(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected = false
	same := s.err != nil && err != nil && s.err.Error() == err.Error()
	s.err = err
	if same && time.Since(s.logged) < 10*time.Second {
		return false
	}
	s.logged = time.Now()
	return true
}

func (s *ConnState) denied(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.violation, s.violAt = err, time.Now()
}

func (s *ConnState) lastErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// violationWindow is how long /healthz reports a permissions violation.
const violationWindow = time.Minute

// Check fails while the connection is down, with the reason; and for a
// minute after a permissions violation (a service denied a subject it
// needs is not healthy: its work fails).
func (s *ConnState) Check() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connected {
		if s.err != nil {
			hint := connectHint(s.err)
			if hint != "" {
				return fmt.Errorf("not connected: %v (%s)", s.err, hint)
			}
			return fmt.Errorf("not connected: %v", s.err)
		}
		return fmt.Errorf("not connected: %s", s.what)
	}
	if s.violation != nil && time.Since(s.violAt) < violationWindow {
		return fmt.Errorf("permissions violation %s ago: %v", time.Since(s.violAt).Round(time.Second), s.violation)
	}
	return nil
}

// Buckets are the fleet's shared buckets, declared in package
// fleetstate (this alias keeps the scheduler's reconcile package
// compiling until it moves there).
type Buckets = fleetstate.Buckets
