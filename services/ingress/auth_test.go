package ingress

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/provision/provisiontest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/wire"
	"github.com/nats-io/nats.go"
)

// Keys of the auth fleet: alice and bob may call ml and echo, text only
// echo; ops has the operator scope on every application.
const (
	aliceKey = "jsk_alice_0123456789abcdefghijklmnop"
	bobKey   = "jsk_bob_0123456789abcdefghijklmnopqr"
	echoKey  = "jsk_echo_0123456789abcdefghijklmnop"
	opsKey   = "jsk_ops_0123456789abcdefghijklmnopqr"
)

type authFleet struct {
	base string
}

// startAuthFleet runs an ingress with auth on (a keys file, a rate limit
// only the key "limited" reaches) in front of the apps echo (a fake
// router that answers with the headers the deployment got) and ml (async
// method fit).
func startAuthFleet(t *testing.T, mod func(*Config)) *authFleet {
	t.Helper()
	tf := natstest.NewFleet(t)
	ns, nc, names, b := tf.NS, tf.NC, tf.Names, tf.Buckets
	natstest.PutConfigText(t, b, `applications:
- {name: echo, route_prefix: /echo, ingress: E, deployments: [{name: E, handler: h}]}
- name: ml
  route_prefix: /ml
  ingress: Front
  deployments:
  - {name: Front, handler: front}
  - name: Trainer
    handler: trainer
    async_methods: [{name: fit, idempotency_key: job}]
`)
	// The scheduler creates the job streams; the ingress binds to them.
	provisiontest.Start(t, nc, tf.JS, jobs.Names{Names: names}, b)
	_, err := nc.QueueSubscribe(names.RouteSubject("echo", "E"), protocol.RouterQueue, func(m *nats.Msg) {
		req := wire.DecodeRequest(m)
		out, _ := json.Marshal(map[string]string{"principal": req.Header.Get(protocol.HeaderPrincipal),
			"authorization": req.Header.Get("Authorization"), "x_api_key": req.Header.Get("X-Api-Key")})
		r := wire.EncodeResponse(&serve.Response{Status: 200, Body: out})
		r.Subject = m.Reply
		_ = nc.PublishMsg(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	keys := "keys:\n" +
		httpauth.Line("alice", httpauth.Hash(aliceKey), []string{"ml", "echo"}, nil) + "\n" +
		httpauth.Line("bob", httpauth.Hash(bobKey), []string{"ml", "echo"}, nil) + "\n" +
		httpauth.Line("echo-only", httpauth.Hash(echoKey), []string{"echo"}, nil) + "\n" +
		httpauth.Line("ops", httpauth.Hash(opsKey), []string{"*"}, []string{httpauth.ScopeOperator}) + "\n"
	keysFile := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keysFile, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Router = RouterService
	cfg.Auth.KeysFile = keysFile
	if mod != nil {
		mod(&cfg)
	}
	return &authFleet{base: runIngress(t, ns, cfg)}
}

func (f *authFleet) do(t *testing.T, key, method, path, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.base+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return send(t, req)
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal([]byte(body), &e)
	return e.Error
}

func TestIngressAuth(t *testing.T) {
	f := startAuthFleet(t, nil)
	t.Run("no credential: 401 with a challenge; health stays open", func(t *testing.T) {
		code, h, body := f.do(t, "", "POST", "/echo", "x")
		if code != 401 || errorCode(t, body) != "unauthorized" || h.Get("WWW-Authenticate") == "" {
			t.Fatalf("POST /echo without a key = %d %s %v, want 401 unauthorized with WWW-Authenticate", code, body, h)
		}
		if code, _, _ := f.do(t, "", "GET", "/-/healthz", ""); code != 200 {
			t.Fatalf("GET /-/healthz without a key = %d, want 200", code)
		}
		if code, _, _ := f.do(t, "", "GET", "/-/routes", ""); code != 401 {
			t.Fatalf("GET /-/routes without a key = %d, want 401", code)
		}
	})
	t.Run("a wrong key: 401, and the key is not echoed", func(t *testing.T) {
		code, _, body := f.do(t, "jsk_wrong_guess", "POST", "/echo", "x")
		if code != 401 || strings.Contains(body, "jsk_wrong_guess") {
			t.Fatalf("POST /echo with a wrong key = %d %s, want 401 without the key", code, body)
		}
	})
	t.Run("a key out of its applications: 403", func(t *testing.T) {
		code, _, body := f.do(t, echoKey, "POST", "/ml/anything", "x")
		if code != 403 || errorCode(t, body) != "forbidden" {
			t.Fatalf("POST /ml with the echo key = %d %s, want 403 forbidden", code, body)
		}
		code, _, body = f.do(t, echoKey, "POST", "/ml/fit?job=x1", "")
		if code != 403 {
			t.Fatalf("job submit to ml with the echo key = %d %s, want 403", code, body)
		}
	})
	t.Run("the deployment gets the principal, never the credential or a forged principal", func(t *testing.T) {
		code, _, body := f.do(t, echoKey, "POST", "/echo", "x", "X-Jetserve-Principal", "key:ops", "X-API-Key", echoKey)
		var got map[string]string
		_ = json.Unmarshal([]byte(body), &got)
		if code != 200 || got["principal"] != "key:echo-only" || got["authorization"] != "" || got["x_api_key"] != "" {
			t.Fatalf("POST /echo = %d %s, want the principal key:echo-only and no credential", code, body)
		}
	})
}

// Row by row, the job-API findings: another caller's jobs are
// neither readable, listable, cancellable nor overwritable by a submit of
// the same id; an operator key sees them all.
func TestJobOwnership(t *testing.T) {
	f := startAuthFleet(t, nil)
	if code, _, body := f.do(t, aliceKey, "POST", "/ml/fit?job=secret1&token=hunter2", ""); code != 202 {
		t.Fatalf("alice submits = %d %s, want 202", code, body)
	}
	for _, op := range []string{"status", "result"} {
		code, _, body := f.do(t, bobKey, "GET", "/ml/fit/"+op+"?request_id=secret1", "")
		if code != 404 || strings.Contains(body, "hunter2") {
			t.Errorf("bob GET %s of alice's job = %d %s, want 404 revealing nothing", op, code, body)
		}
	}
	if code, _, body := f.do(t, bobKey, "POST", "/ml/fit/cancel?request_id=secret1", ""); code != 404 {
		t.Errorf("bob cancels alice's job = %d %s, want 404", code, body)
	}
	code, _, body := f.do(t, bobKey, "POST", "/ml/fit?job=secret1&token=mine", "")
	if code != 409 || errorCode(t, body) != string(protocol.ErrRequestIDInUse) || strings.Contains(body, "hunter2") {
		t.Errorf("bob submits alice's id = %d %s, want 409 request_id_in_use revealing nothing", code, body)
	}
	code, _, body = f.do(t, bobKey, "GET", "/ml/fit/list", "")
	if code != 200 || strings.Contains(body, "secret1") {
		t.Errorf("bob lists = %d %s, want 200 without alice's job", code, body)
	}
	code, _, body = f.do(t, aliceKey, "GET", "/ml/fit/status?request_id=secret1", "")
	rec := decode[jobs.Record](t, body)
	if code != 200 || rec.Owner != "key:alice" || rec.Status != jobs.Queued {
		t.Fatalf("alice GET status = %d %s, want 200 QUEUED owned by key:alice", code, body)
	}
	code, _, body = f.do(t, aliceKey, "GET", "/ml/fit/list", "")
	if code != 200 || !strings.Contains(body, "secret1") {
		t.Errorf("alice lists = %d %s, want her job", code, body)
	}
	code, _, body = f.do(t, opsKey, "GET", "/ml/fit/list", "")
	if code != 200 || !strings.Contains(body, "secret1") {
		t.Errorf("the operator lists = %d %s, want every job", code, body)
	}
	if code, _, body := f.do(t, opsKey, "POST", "/ml/fit/cancel?request_id=secret1", ""); code != 200 {
		t.Errorf("the operator cancels alice's job = %d %s, want 200", code, body)
	}
	code, _, body = f.do(t, aliceKey, "GET", "/ml/fit/status?request_id=secret1", "")
	if rec := decode[jobs.Record](t, body); code != 200 || rec.Status != jobs.Cancelled {
		t.Errorf("alice's job after the operator's cancel = %d %s, want CANCELLED (bob's submit replaced nothing)", code, body)
	}
}

// The input findings: a 1 MiB URL, a long URL, big headers, and a
// key over its rate.
func TestIngressLimits(t *testing.T) {
	f := startAuthFleet(t, func(c *Config) {
		c.MaxURLBytes, c.MaxHeaderBytes = 2048, 8192
		c.Auth.RateLimit, c.Auth.RateBurst = 1, 3
	})
	t.Run("a 1 MiB URL is refused (431: it is larger than the whole header limit)", func(t *testing.T) {
		code, _, _ := f.do(t, aliceKey, "GET", "/echo/"+strings.Repeat("a", 1<<20), "")
		if code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("GET of a 1 MiB URL = %d, want 431", code)
		}
	})
	t.Run("a URL over max_url_bytes is 414", func(t *testing.T) {
		code, _, body := f.do(t, aliceKey, "GET", "/echo/"+strings.Repeat("a", 4000), "")
		if code != http.StatusRequestURITooLong || errorCode(t, body) != "uri_too_long" {
			t.Fatalf("GET of a 4 KB URL = %d %s, want 414 uri_too_long", code, body)
		}
	})
	t.Run("headers over max_header_bytes are 431", func(t *testing.T) {
		code, _, _ := f.do(t, aliceKey, "GET", "/echo", "", "X-Big", strings.Repeat("b", 16<<10))
		if code != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("GET with 16 KiB of headers = %d, want 431", code)
		}
	})
	t.Run("a key over its rate gets 429 with Retry-After; another key does not", func(t *testing.T) {
		var last int
		var h http.Header
		for range 10 {
			if last, h, _ = f.do(t, bobKey, "POST", "/echo", "x"); last == http.StatusTooManyRequests {
				break
			}
		}
		if last != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
			t.Fatalf("10 quick requests of one key: last = %d, Retry-After %q; want 429 with Retry-After", last, h.Get("Retry-After"))
		}
		if code, _, _ := f.do(t, echoKey, "POST", "/echo", "x"); code != 200 {
			t.Fatalf("another key = %d, want 200", code)
		}
	})
}

// Beyond loopback without a credential the ingress refuses to start,
// naming the options.
func TestIngressRefusesOpenPublicAddress(t *testing.T) {
	cfg := DefaultConfig()
	cfg.HTTPAddr = ":8000"
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "auth.keys_file") || !strings.Contains(err.Error(), "auth.anonymous") {
		t.Fatalf("Validate(:8000, no auth) = %v, want an error naming auth.keys_file and auth.anonymous", err)
	}
	cfg.Auth.Anonymous = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate(:8000, anonymous) = %v", err)
	}
	if _, _, err := net.SplitHostPort(cfg.HTTPAddr); err != nil {
		t.Fatal(err)
	}
}
