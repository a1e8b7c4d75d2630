package httpauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseKeysRejects(t *testing.T) {
	h := Hash("k")
	tests := []struct{ name, doc, want string }{
		{"empty", "", "empty"},
		{"no keys", "keys: []", "at least one"},
		{"unknown field", "keys: [{name: a, sha256: " + h + ", appz: [x]}]", "appz"},
		{"bad name", "keys: [{name: 'a b', sha256: " + h + "}]", "keys[0].name"},
		{"bad hash", "keys: [{name: a, sha256: abc}]", "keys[0].sha256"},
		{"dup name", "keys: [{name: a, sha256: " + h + "}, {name: a, sha256: " + Hash("j") + "}]", "keys[1].name"},
		{"dup key", "keys: [{name: a, sha256: " + h + "}, {name: b, sha256: " + h + "}]", "listed twice"},
		{"bad scope", "keys: [{name: a, sha256: " + h + ", scopes: [root]}]", `unknown scope "root"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKeys([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseKeys() = %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestNewKeyLineParses(t *testing.T) {
	key, sha, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, KeyPrefix) || len(key) < 40 || Hash(key) != sha {
		t.Fatalf("NewKey() = %q, %q", key, sha)
	}
	keys, err := ParseKeys([]byte("keys:\n" + Line("ci", sha, []string{"text", "*"}, []string{ScopeOperator}) + "\n"))
	if err != nil {
		t.Fatalf("ParseKeys(Line()) = %v", err)
	}
	if k := keys[0]; k.Name != "ci" || k.SHA256 != sha || len(k.Apps) != 2 || k.Scopes[0] != ScopeOperator {
		t.Fatalf("ParseKeys(Line()) = %+v", k)
	}
}

type fixture struct {
	a              *Authenticator
	srv            http.Handler
	textKey, opKey string
	keysFile       string
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{textKey: "jsk_text_0123456789abcdef0123456789", opKey: "jsk_op_0123456789abcdef0123456789"}
	if cfg.KeysFile == "" {
		cfg.KeysFile = writeFile(t, "keys.yaml", "keys:\n"+
			Line("text-client", Hash(f.textKey), []string{"text"}, nil)+"\n"+
			Line("ops", Hash(f.opKey), []string{"*"}, []string{ScopeOperator, ScopeAdminRead})+"\n")
	}
	f.keysFile = cfg.KeysFile
	a, err := New(cfg, Options{Public: []string{"/healthz"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	f.srv = a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := FromContext(r.Context())
		_, _ = io.WriteString(w, p.Name)
	}))
	return f
}

func (f *fixture) do(t *testing.T, set func(*http.Request)) (*httptest.ResponseRecorder, map[string]string) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/x", nil)
	if set != nil {
		set(r)
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, r)
	var body map[string]string
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	return w, body
}

func TestMiddlewareKeys(t *testing.T) {
	f := newFixture(t, Config{})
	tests := []struct {
		name   string
		set    func(*http.Request)
		status int
		who    string
	}{
		{"no credential", nil, 401, ""},
		{"bearer key", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+f.textKey) }, 200, "key:text-client"},
		{"x-api-key", func(r *http.Request) { r.Header.Set("X-API-Key", f.opKey) }, 200, "key:ops"},
		{"basic password", func(r *http.Request) { r.SetBasicAuth("anything", f.opKey) }, 200, "key:ops"},
		{"unknown key", func(r *http.Request) { r.Header.Set("Authorization", "Bearer jsk_guessed") }, 401, ""},
		{"public path", func(r *http.Request) { r.URL.Path = "/healthz" }, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, body := f.do(t, tc.set)
			if w.Code != tc.status {
				t.Fatalf("status = %d, want %d (%s)", w.Code, tc.status, w.Body)
			}
			if tc.status == 401 {
				if body["error"] != "unauthorized" || w.Header().Get("WWW-Authenticate") == "" {
					t.Fatalf("401 body = %v, headers %v: want error unauthorized and a challenge", body, w.Header())
				}
				if strings.Contains(w.Body.String(), "jsk_") {
					t.Fatalf("401 body echoes the credential: %s", w.Body)
				}
			}
			if tc.who != "" && w.Body.String() != tc.who {
				t.Fatalf("principal = %q, want %q", w.Body, tc.who)
			}
		})
	}
}

func TestRequireScope(t *testing.T) {
	f := newFixture(t, Config{})
	h := f.a.Middleware(RequireScope(ScopeAdmin, ScopeAdminRead)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})))
	for key, want := range map[string]int{f.textKey: 403, f.opKey: 200} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-API-Key", key)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want || (want == 403 && !strings.Contains(w.Body.String(), `"forbidden"`)) {
			t.Errorf("key %s: status = %d (%s), want %d", key[:8], w.Code, w.Body, want)
		}
	}
}

func TestRateLimitPerKey(t *testing.T) {
	now := time.Unix(1000, 0)
	f := newFixture(t, Config{RateLimit: 2, RateBurst: 2})
	f.a.now = func() time.Time { return now }
	get := func(key string) *httptest.ResponseRecorder {
		w, _ := f.do(t, func(r *http.Request) { r.Header.Set("X-API-Key", key) })
		return w
	}
	for i := range 2 {
		if w := get(f.textKey); w.Code != 200 {
			t.Fatalf("request %d = %d, want 200 within the burst", i, w.Code)
		}
	}
	w := get(f.textKey)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), "rate_limited") {
		t.Fatalf("third request = %d Retry-After %q %s, want 429 with Retry-After 1", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if w := get(f.opKey); w.Code != 200 {
		t.Fatalf("another key = %d, want 200: the limit is per key", w.Code)
	}
	now = now.Add(600 * time.Millisecond)
	if w := get(f.textKey); w.Code != 200 {
		t.Fatalf("after 0.6 s = %d, want 200 (a token refilled)", w.Code)
	}
}

func TestLimitURL(t *testing.T) {
	h := LimitURL(100)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	for n, want := range map[int]int{50: 200, 200: 414} {
		r := httptest.NewRequest(http.MethodGet, "/"+strings.Repeat("a", n), nil)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("a %d-byte path = %d, want %d", n, w.Code, want)
		}
	}
}

// A key added to, or removed from, the keys file takes effect without a
// restart; a broken file keeps the last good one.
func TestKeysFileReload(t *testing.T) {
	f := newFixture(t, Config{})
	newKey := "jsk_new_0123456789abcdef0123456789"
	write := func(doc string) {
		if err := os.WriteFile(f.keysFile, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		f.a.keys.mu.Lock()
		f.a.keys.checked = time.Time{} // skip the once-a-second wait
		f.a.keys.mu.Unlock()
	}
	status := func(key string) int {
		w, _ := f.do(t, func(r *http.Request) { r.Header.Set("X-API-Key", key) })
		return w.Code
	}
	write("keys:\n" + Line("new", Hash(newKey), []string{"*"}, nil) + "\n")
	if status(newKey) != 200 || status(f.textKey) != 401 {
		t.Fatalf("after the rewrite: new key %d, removed key %d; want 200, 401", status(newKey), status(f.textKey))
	}
	write("keys: [{name: broken")
	if status(newKey) != 200 {
		t.Fatalf("after a broken rewrite the last good file must stay")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		addr string
		want string
	}{
		{Config{}, ":8000", "auth: listening on :8000"},
		{Config{}, "0.0.0.0:8000", "beyond loopback"},
		{Config{}, "127.0.0.1:8000", ""},
		{Config{}, "localhost:0", ""},
		{Config{Anonymous: true}, ":8000", ""},
		{Config{Anonymous: true, KeysFile: "k"}, ":8000", "auth.anonymous"},
		{Config{KeysFile: "k", RateLimit: -1}, ":8000", "auth.rate_limit"},
		{Config{KeysFile: "k", JWTIssuer: "x"}, ":8000", "need auth.jwks_file"},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate("auth", tc.addr)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v, %s) = %v, want %q", tc.cfg, tc.addr, err, tc.want)
		}
	}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestJWT(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecx, ecy := make([]byte, 32), make([]byte, 32)
	ek.PublicKey.X.FillBytes(ecx)
	ek.PublicKey.Y.FillBytes(ecy)
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "r1", "n": b64u(rk.N.Bytes()), "e": b64u([]byte{1, 0, 1})},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64u(ecx), "y": b64u(ecy)},
	}})
	f := newFixture(t, Config{JWKSFile: writeFile(t, "jwks.json", string(jwks)), JWTIssuer: "https://idp", JWTAudience: "jetserve"})
	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "iss": "https://idp", "aud": "jetserve", "exp": now.Add(time.Hour).Unix(),
			"jetserve_apps": []string{"text"}, "scope": "openid jetserve:operator"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(m, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	pubPEMAsHMAC := rk.N.Bytes()
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"RS256", sign(jwt.SigningMethodRS256, "r1", rk, claims(nil)), true},
		{"ES256", sign(jwt.SigningMethodES256, "e1", ek, claims(nil)), true},
		{"expired", sign(jwt.SigningMethodRS256, "r1", rk, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })), false},
		{"no exp", sign(jwt.SigningMethodRS256, "r1", rk, claims(func(c jwt.MapClaims) { delete(c, "exp") })), false},
		{"wrong issuer", sign(jwt.SigningMethodRS256, "r1", rk, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil" })), false},
		{"wrong audience", sign(jwt.SigningMethodRS256, "r1", rk, claims(func(c jwt.MapClaims) { c["aud"] = "other" })), false},
		{"unknown kid", sign(jwt.SigningMethodRS256, "r9", rk, claims(nil)), false},
		{"ES256 under the RSA kid", sign(jwt.SigningMethodES256, "r1", ek, claims(nil)), false},
		{"HS256 with the public key as secret", sign(jwt.SigningMethodHS256, "r1", pubPEMAsHMAC, claims(nil)), false},
		{"alg none", sign(jwt.SigningMethodNone, "r1", jwt.UnsafeAllowNoneSignatureType, claims(nil)), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, body := f.do(t, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tc.token) })
			if tc.ok && (w.Code != 200 || w.Body.String() != "jwt:alice") {
				t.Fatalf("status = %d %s, want 200 as jwt:alice", w.Code, w.Body)
			}
			if !tc.ok && (w.Code != 401 || body["error"] != "unauthorized") {
				t.Fatalf("status = %d %s, want 401", w.Code, w.Body)
			}
		})
	}
	p, err := f.a.jwks.get().Verify(sign(jwt.SigningMethodRS256, "r1", rk, claims(nil)), "https://idp", "jetserve", now)
	if err != nil || !p.CanApp("text") || p.CanApp("other") || !p.Has(ScopeOperator) || p.Has(ScopeAdmin) {
		t.Fatalf("Verify() = %+v, %v: want apps [text] and the operator scope only", p, err)
	}
}

func TestParseJWKSRejects(t *testing.T) {
	for doc, want := range map[string]string{
		`{"keys": []}`: "no signing key",
		`{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}`:                      "unsupported key type",
		`{"keys": [{"kty": "RSA", "kid": "a", "n": "AQAB", "e": "AQAB"}]}`: "under 2048 bits",
		`{"keys": [{"kty": "EC", "crv": "P-192", "x": "AQ", "y": "AQ"}]}`:  "unsupported curve",
		`not json`: "decode JWKS",
	} {
		if _, err := ParseJWKS([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseJWKS(%s) = %v, want %q", doc, err, want)
		}
	}
}
