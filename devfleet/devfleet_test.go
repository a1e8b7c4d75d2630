package devfleet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/jetserve/jetserve/devfleet/devfleettest"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
	fleet := devfleettest.Start(t, devfleettest.Timeouts{Up: 90 * time.Second, Stop: 30 * time.Second},
		func(ctx context.Context, stdout, stderr io.Writer) error {
			return Run(ctx, reg, Options{Name: "hello dev", Config: cfg, Try: []string{"curl {ingress}/hello"}},
				devfleettest.Flags(filepath.Join(dir, "data")), stdout, stderr)
		})
	ingress := fleet.Ingress
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
	for _, want := range []string{"hello dev is up: deployed " + cfg, "curl " + ingress + "/hello",
		"export JETSERVE_URL=" + ingress + " JETSERVE_ADMIN=" + fleet.Admin + " JETSERVE_NATS_URL=nats://"} {
		if !strings.Contains(fleet.Out.String(), want) {
			t.Errorf("stdout = %q, want it to contain %q", fleet.Out.String(), want)
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

// The dev fleet has no auth and says it listens on loopback only: so do
// the services' ops servers (/metrics, /healthz), whatever --http-addr says.
func TestDevOpsListenOnLoopback(t *testing.T) {
	cfgs, err := serviceConfigs(flags{httpAddr: "127.0.0.1:8000", adminAddr: "127.0.0.1:8265", opsEnabled: true,
		logFormat: "console", logLevel: "info"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"ingress": cfgs.ingress.OpsAddr, "router": cfgs.router.OpsAddr,
		"worker": cfgs.worker.OpsAddr, "scheduler": cfgs.scheduler.OpsAddr, "autoscaler": cfgs.autoscaler.OpsAddr} {
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("%s ops_addr = %q, want 127.0.0.1:<port>", name, addr)
		}
	}
}

// A second dev fleet on the same --data-dir (other ports, so nothing else
// stops it) is refused before its NATS server opens the first one's store.
func TestRunRefusesADataDirInUse(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lockDataDir = %v", err)
	}
	err = Run(context.Background(), serve.NewRegistry(), Options{}, devfleettest.Flags(dir), io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "in use by another dev fleet") {
		t.Fatalf("Run(a data dir in use) = %v, want an error saying so", err)
	}
	unlock()
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lockDataDir after unlock = %v, want nil", err)
	}
	again()
}
