package scheduler_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/httpauth"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/services/scheduler"
)

// The admin API findings: without the admin credential nobody
// replaces or deletes applications (an ingress key included), a read-only
// key reads, and GET /api/serve/config never returns a plain-text secret.
func TestAdminAuth(t *testing.T) {
	const (
		adminKey   = "jsk_admin_0123456789abcdefghijklmnop"
		readerKey  = "jsk_reader_0123456789abcdefghijklmno"
		ingressKey = "jsk_ingress_0123456789abcdefghijklmn"
	)
	keys := "keys:\n" +
		httpauth.Line("ops", httpauth.Hash(adminKey), nil, []string{httpauth.ScopeAdmin}) + "\n" +
		httpauth.Line("grafana", httpauth.Hash(readerKey), nil, []string{httpauth.ScopeAdminRead}) + "\n" +
		httpauth.Line("ci", httpauth.Hash(ingressKey), []string{"*"}, []string{httpauth.ScopeOperator}) + "\n"
	file := filepath.Join(t.TempDir(), "admin-keys.yaml")
	if err := os.WriteFile(file, []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := natstest.Server(t)
	inst := startWith(t, ns, "s1", func(c *scheduler.Config) { c.Auth.KeysFile = file })
	do := func(key, method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, inst.url+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cfg := `applications:
- name: llm
  route_prefix: /llm
  ingress: Chat
  deployments:
  - name: Chat
    handler: h
    user_config: {model: m, api_key: sk-live-abc123, hf_token: "${secret:hf}"}
`
	for _, tc := range []struct {
		key, method, path string
		want              int
	}{
		{"", "PUT", "/api/serve/applications", 401},
		{"", "DELETE", "/api/serve/applications", 401},
		{"", "GET", "/api/serve/config", 401},
		{"", "GET", "/dashboard/", 401},
		{ingressKey, "PUT", "/api/serve/applications", 403},
		{ingressKey, "DELETE", "/api/serve/applications/llm", 403},
		{ingressKey, "GET", "/api/serve/applications", 403},
		{readerKey, "PUT", "/api/serve/applications", 403},
		{readerKey, "DELETE", "/api/serve/applications", 403},
	} {
		if code, body := do(tc.key, tc.method, tc.path, cfg); code != tc.want {
			t.Errorf("%s %s with key %.10q = %d %s, want %d", tc.method, tc.path, tc.key, code, body, tc.want)
		}
	}
	code, body := do(adminKey, "PUT", "/api/serve/applications", cfg)
	if code != 200 || !strings.Contains(body, "user_config.api_key: looks like a secret") {
		t.Fatalf("admin PUT = %d %s, want 200 with a warning naming user_config.api_key", code, body)
	}
	for _, key := range []string{adminKey, readerKey} {
		code, body := do(key, "GET", "/api/serve/config", "")
		if code != 200 || strings.Contains(body, "sk-live-abc123") || !strings.Contains(body, `[REDACTED]`) || !strings.Contains(body, "${secret:hf}") {
			t.Fatalf("GET /api/serve/config = %d %s, want 200 with api_key masked and the reference kept", code, body)
		}
		if code, _ := do(key, "GET", "/api/serve/applications", ""); code != 200 {
			t.Fatalf("GET status with %.10q = %d, want 200", key, code)
		}
	}
}
