// Package httpauth authenticates and limits callers of jetserve's HTTP
// servers (the ingress and the admin API): API keys whose SHA-256 is listed
// in a keys file, and bearer JWTs checked against a JWKS file; scopes per
// key (applications, operator, admin); a token bucket per principal (429 +
// Retry-After); and a bound on the request target (414).
//
// Files are re-read when they change (checked at most once a second), so a
// key is added, rotated or revoked without a restart; a file that no longer
// parses is logged and the last good one kept. Everything here is safe for
// concurrent use and starts no goroutine.
package httpauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/httperr"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// Config is a server's auth options (koanf, under "auth").
type Config struct {
	// KeysFile lists the API keys (name, SHA-256, apps, scopes).
	KeysFile string `koanf:"keys_file" help:"YAML file of API keys (SHA-256 of each, name, applications, scopes); re-read on change"`
	// JWKSFile holds the public keys bearer JWTs are checked against.
	JWKSFile string `koanf:"jwks_file" help:"JWKS file of the keys that sign accepted JWTs; re-read on change"`
	// JWTIssuer and JWTAudience, when set, must match a token's iss / aud.
	JWTIssuer   string `koanf:"jwt_issuer" help:"required iss of JWTs (empty: not checked)"`
	JWTAudience string `koanf:"jwt_audience" help:"required aud of JWTs (empty: not checked)"`
	// Anonymous serves without authentication. Needed, and logged as a
	// warning, to listen on a non-loopback address with no credential.
	Anonymous bool `koanf:"anonymous" help:"serve without auth on a non-loopback address (no keys_file/jwks_file)"`
	// RateLimit is each principal's sustained requests per second (0 = no
	// limit); RateBurst its burst.
	RateLimit float64 `koanf:"rate_limit" help:"requests per second per key (0: unlimited); beyond it 429 + Retry-After"`
	RateBurst int     `koanf:"rate_burst" help:"burst of rate_limit per key"`
}

// Enabled reports whether credentials are checked.
func (c Config) Enabled() bool { return c.KeysFile != "" || c.JWKSFile != "" }

// Validate checks the options; prefix names them ("auth"), addr is the
// address the server listens on: a server reachable beyond loopback must
// check credentials unless anonymous says otherwise.
func (c Config) Validate(prefix, addr string) error {
	var errs []error
	if c.Anonymous && c.Enabled() {
		errs = append(errs, fmt.Errorf("%s.anonymous: cannot be set with %s.keys_file or %s.jwks_file", prefix, prefix, prefix))
	}
	if !c.Enabled() && !c.Anonymous && !Loopback(addr) {
		errs = append(errs, fmt.Errorf("%s: listening on %s (beyond loopback) needs %s.keys_file or %s.jwks_file "+
			"(jetserve keys new makes a key), or %s.anonymous=true to serve anyone who reaches it", prefix, addr, prefix, prefix, prefix))
	}
	if (c.JWTIssuer != "" || c.JWTAudience != "") && c.JWKSFile == "" {
		errs = append(errs, fmt.Errorf("%s.jwt_issuer, %s.jwt_audience: need %s.jwks_file", prefix, prefix, prefix))
	}
	if c.RateLimit < 0 || math.IsNaN(c.RateLimit) || math.IsInf(c.RateLimit, 0) {
		errs = append(errs, fmt.Errorf("%s.rate_limit: must be >= 0 requests per second, got %v", prefix, c.RateLimit))
	}
	if c.RateBurst < 0 {
		errs = append(errs, fmt.Errorf("%s.rate_burst: must be >= 0, got %d", prefix, c.RateBurst))
	}
	return errors.Join(errs...)
}

// Loopback reports whether addr ("host:port") binds only a loopback
// address: "127.0.0.1:8000", "[::1]:8000", "localhost:8000". ":8000" and
// "0.0.0.0:8000" bind every interface.
func Loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Principal is who a request comes from.
type Principal struct {
	// Name is "key:<name>" for an API key, "jwt:<sub>" for a token,
	// "anonymous" when auth is off. Jobs belong to it.
	Name string
	// Apps lists the applications it may call; "*" is all.
	Apps   []string
	Scopes []string
	// RateLimit overrides the server's limit (0 = the server's).
	RateLimit float64
}

// anonymous is the principal of every request when auth is off: it may do
// everything.
var anonymous = Principal{Name: "anonymous", Apps: []string{AllApps}, Scopes: knownScopes}

// Anonymous returns the principal of every request when auth is off: it
// may do everything.
func Anonymous() Principal {
	p := anonymous
	p.Scopes = slices.Clone(anonymous.Scopes)
	return p
}

// CanApp reports whether p may call application app.
func (p Principal) CanApp(app string) bool {
	return slices.Contains(p.Apps, AllApps) || slices.Contains(p.Apps, app)
}

// Has reports whether p holds scope s.
func (p Principal) Has(s string) bool { return slices.Contains(p.Scopes, s) }

type ctxKey struct{}

// FromContext returns the principal the middleware authenticated.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// Authenticator checks credentials and rates. Build it with New.
type Authenticator struct {
	cfg    Config
	log    zerolog.Logger
	keys   *reloader[map[string]Principal] // nil: no keys file
	jwks   *reloader[*JWKS]                // nil: no JWKS
	now    func() time.Time
	public []string
	realm  string

	mu       sync.Mutex
	limiters map[string]*limiter // guarded by mu
}

type limiter struct {
	l    *rate.Limiter
	rate float64
	used time.Time
}

// Options tune an Authenticator.
type Options struct {
	// Public paths are served without credentials (health checks).
	Public []string
	// Realm names the server in WWW-Authenticate challenges.
	Realm string
	// Now is the clock (tests); nil = time.Now.
	Now func() time.Time
}

// New loads the files cfg names (an error names the file and what is
// wrong in it) and returns the authenticator.
func New(cfg Config, o Options, log zerolog.Logger) (*Authenticator, error) {
	a := &Authenticator{cfg: cfg, log: log, now: o.Now, public: o.Public, realm: o.Realm, limiters: map[string]*limiter{}}
	if a.now == nil {
		a.now = time.Now
	}
	if a.realm == "" {
		a.realm = "jetserve"
	}
	if cfg.KeysFile != "" {
		r, err := newReloader(cfg.KeysFile, "auth.keys_file", func(b []byte) (map[string]Principal, error) {
			entries, err := ParseKeys(b)
			if err != nil {
				return nil, err
			}
			m := make(map[string]Principal, len(entries))
			for _, e := range entries {
				m[e.SHA256] = Principal{Name: "key:" + e.Name, Apps: e.Apps, Scopes: e.Scopes, RateLimit: e.RateLimit}
			}
			return m, nil
		}, log)
		if err != nil {
			return nil, err
		}
		a.keys = r
	}
	if cfg.JWKSFile != "" {
		r, err := newReloader(cfg.JWKSFile, "auth.jwks_file", ParseJWKS, log)
		if err != nil {
			return nil, err
		}
		a.jwks = r
	}
	if !cfg.Enabled() {
		log.Warn().Msg("HTTP authentication is off: anyone who reaches this server may use all of it")
	}
	return a, nil
}

// Enabled reports whether credentials are checked.
func (a *Authenticator) Enabled() bool { return a.cfg.Enabled() }

// errNoCredential: the request carries none.
var errNoCredential = errors.New("no credential: send Authorization: Bearer <key or token> or X-API-Key: <key>")

// Authenticate returns the request's principal: anonymous when auth is
// off, else the key's or token's. The error says what is wrong without
// echoing the credential.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	if !a.cfg.Enabled() {
		return anonymous, nil
	}
	cred, bearer := credential(r)
	if cred == "" {
		return Principal{}, errNoCredential
	}
	if a.jwks != nil && bearer && strings.Count(cred, ".") == 2 && !strings.HasPrefix(cred, KeyPrefix) {
		p, err := a.jwks.get().Verify(cred, a.cfg.JWTIssuer, a.cfg.JWTAudience, a.now())
		if err != nil {
			return Principal{}, fmt.Errorf("bearer token refused: %w", err)
		}
		return p, nil
	}
	if a.keys != nil {
		// A lookup by the key's SHA-256: what a timing difference
		// could reveal is a prefix of a hash, which helps no one find
		// a key.
		if p, ok := a.keys.get()[Hash(cred)]; ok {
			return p, nil
		}
	}
	return Principal{}, errors.New("unknown API key")
}

// credential extracts the presented secret: Authorization Bearer, the
// password of Authorization Basic (browsers on the dashboard), or
// X-API-Key. bearer is true for the first.
func credential(r *http.Request) (cred string, bearer bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		switch strings.ToLower(scheme) {
		case "bearer":
			return strings.TrimSpace(rest), true
		case "basic":
			if _, pw, ok := r.BasicAuth(); ok {
				return pw, false
			}
		}
		return "", false
	}
	return strings.TrimSpace(r.Header.Get("X-API-Key")), false
}

// Middleware authenticates every request but the public paths: 401
// (unauthorized, with a WWW-Authenticate challenge) without a valid
// credential; then applies the principal's rate limit: 429 (rate_limited)
// with Retry-After. The principal is in the request's context
// (FromContext).
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(a.public, r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		p, err := a.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q, Basic realm=%q`, a.realm, a.realm))
			a.log.Info().Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Str("reason", err.Error()).Msg("request refused: unauthenticated")
			httperr.Write(w, protocol.ErrUnauthorized, err.Error(), "")
			return
		}
		if wait, ok := a.allow(p); !ok {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			httperr.Write(w, protocol.ErrRateLimited,
				fmt.Sprintf("rate limit of %s exceeded (%g requests/s); retry after %ds", p.Name, a.rateOf(p), max(secs, 1)), "")
			return
		}
		next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
	})
}

func (a *Authenticator) rateOf(p Principal) float64 {
	if p.RateLimit > 0 {
		return p.RateLimit
	}
	return a.cfg.RateLimit
}

// maxLimiters bounds the limiter table (JWT subjects are unbounded): past
// it, limiters idle for a minute are dropped.
const maxLimiters = 10000

// allow takes a token from p's bucket; when none is left it says how long
// until one is.
func (a *Authenticator) allow(p Principal) (time.Duration, bool) {
	r := a.rateOf(p)
	if r <= 0 {
		return 0, true
	}
	burst := a.cfg.RateBurst
	if burst <= 0 {
		burst = max(1, int(math.Ceil(r)))
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.limiters[p.Name]
	if l == nil || l.rate != r {
		if len(a.limiters) >= maxLimiters {
			for k, v := range a.limiters {
				if now.Sub(v.used) > time.Minute {
					delete(a.limiters, k)
				}
			}
		}
		l = &limiter{l: rate.NewLimiter(rate.Limit(r), burst), rate: r}
		a.limiters[p.Name] = l
	}
	l.used = now
	res := l.l.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return d, false
	}
	return 0, true
}

// RequireScope answers 403 (forbidden) to principals without one of the
// scopes.
func RequireScope(scopes ...string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, _ := FromContext(r.Context())
			if !slices.ContainsFunc(scopes, p.Has) {
				httperr.Write(w, protocol.ErrForbidden,
					fmt.Sprintf("%s lacks the scope this needs (%s)", p.Name, strings.Join(scopes, " or ")), "")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// LimitURL answers 414 (uri_too_long) to a request whose target (path and
// query as sent) is longer than maxBytes; 0 = no limit. Targets longer
// than the server's header limit never get here: the server answers 431.
func LimitURL(maxBytes int) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if maxBytes <= 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if len(r.RequestURI) > maxBytes {
				httperr.Write(w, protocol.ErrURITooLong,
					fmt.Sprintf("request target of %d bytes exceeds max_url_bytes %d", len(r.RequestURI), maxBytes), "")
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// reloader holds what a file parses to, re-read when its size or
// modification time changes (checked at most once a second).
type reloader[T any] struct {
	path, option string
	parse        func([]byte) (T, error)
	log          zerolog.Logger

	mu      sync.Mutex
	val     T         // guarded by mu
	mod     time.Time // guarded by mu
	size    int64     // guarded by mu
	checked time.Time // guarded by mu
}

func newReloader[T any](path, option string, parse func([]byte) (T, error), log zerolog.Logger) (*reloader[T], error) {
	r := &reloader[T]{path: path, option: option, parse: parse, log: log}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", option, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", option, err)
	}
	v, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", option, path, err)
	}
	r.val, r.mod, r.size, r.checked = v, fi.ModTime(), fi.Size(), time.Now()
	return r, nil
}

func (r *reloader[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < time.Second {
		return r.val
	}
	r.checked = time.Now()
	fi, err := os.Stat(r.path)
	if err != nil {
		r.log.Error().Err(err).Str("option", r.option).Msg("cannot read the file; keeping the last good one")
		return r.val
	}
	if fi.ModTime().Equal(r.mod) && fi.Size() == r.size {
		return r.val
	}
	b, err := os.ReadFile(r.path)
	if err == nil {
		var v T
		if v, err = r.parse(b); err == nil {
			r.val, r.mod, r.size = v, fi.ModTime(), fi.Size()
			r.log.Info().Str("option", r.option).Str("file", r.path).Msg("reloaded")
			return r.val
		}
	}
	r.mod, r.size = fi.ModTime(), fi.Size() // do not log the same bad file every second
	r.log.Error().Err(err).Str("option", r.option).Str("file", r.path).Msg("file changed but does not load; keeping the last good one")
	return r.val
}
