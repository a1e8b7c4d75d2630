package devfleet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// upURLs waits for the "is up" message and returns the ingress and admin
// URLs it printed: the fleet listens on port 0 and says where.
func upURLs(t *testing.T, out *syncBuffer, errs *syncBuffer) (ingress, admin string) {
	t.Helper()
	var m []string
	waitfor.NoError(t, 90*time.Second, "the URLs printed when the dev fleet is up", func() error {
		if m = upRE.FindStringSubmatch(out.String()); m == nil {
			return fmt.Errorf("stdout %q, stderr %q", out.String(), errs.String())
		}
		return nil
	})
	return m[1], m[2]
}

var upRE = regexp.MustCompile(`HTTP ingress\s+(http://\S+)[\s\S]*admin API\s+(http://\S+)`)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunServesAUserRegistry runs the dev fleet with a registry of its own
// (not the examples), deploys a config naming it and calls it over HTTP.
func TestRunServesAUserRegistry(t *testing.T) {
	reg := serve.NewRegistry()
	if err := reg.Register("test.Hello", func(_ context.Context, init serve.Init) (serve.Handler, error) {
		var uc struct {
			Greeting string `json:"greeting"`
		}
		if err := init.DecodeUserConfig(&uc); err != nil {
			return nil, err
		}
		return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
			return &serve.Response{Status: 200, Body: []byte(uc.Greeting + ", " + string(req.Body))}, nil
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(`applications:
  - name: hello
    route_prefix: /hello
    ingress: Hello
    deployments:
      - {name: Hello, handler: test.Hello, resources: {cpu: 0.1}, user_config: {greeting: hi}}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	out, errs := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, reg, Options{Name: "hello dev", Config: cfg, Try: []string{"curl {ingress}/hello"}},
			[]string{"--data-dir", filepath.Join(dir, "data"), "--nats-port", "-1", "--nats-http-port", "0",
				"--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--ops=false", "--log-level", "warn"}, out, errs)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not stop within 30s of cancel")
		}
	}()
	ingress, _ := upURLs(t, out, errs)
	waitfor.NoError(t, 60*time.Second, "the deployment to answer 200", func() error {
		resp, err := http.Post(ingress+"/hello", "text/plain", strings.NewReader("jetserve"))
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%d %s", resp.StatusCode, b)
		}
		if string(b) != "hi, jetserve" {
			t.Fatalf("POST /hello = %q, want %q", b, "hi, jetserve")
		}
		return nil
	})
	for _, want := range []string{"hello dev is up: deployed " + cfg, "curl " + ingress + "/hello"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout = %q, want it to contain %q", out.String(), want)
		}
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	reg := serve.NewRegistry()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("applications:\n  - {name: a, route_prefix: /a, ingress: d, deployments: [{name: d}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		reg  *serve.Registry
		args []string
		want string
	}{
		{"no registry", nil, nil, "serve.Registry is required"},
		{"missing config file", reg, []string{"--config", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"invalid config", reg, []string{"--config", bad}, "applications[0].deployments[0].handler"},
		{"stray argument", reg, []string{"deploy"}, "unexpected arguments"},
		{"unknown flag", reg, []string{"--nats-prot", "1"}, "unknown flag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Run(context.Background(), tc.reg, Options{}, tc.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}
