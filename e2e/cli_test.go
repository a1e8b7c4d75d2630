package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/jetserve/jetserve/pkg/protocol"
)

// TestCLI drives the fleet with the jetserve CLI: deploy, status (table
// and JSON), call and delete.
func TestCLI(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	cli := bins.Path(t, fleet.CLI)
	f.RequireHandlers(handlerEcho)
	admin := f.AdminURL()
	run := func(t *testing.T, args ...string) string {
		t.Helper()
		out, errOut, err := fleet.RunCmd(t, 30*time.Second, cli, args...)
		if err != nil {
			t.Fatalf("jetserve %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}

	file := filepath.Join(t.TempDir(), "serve.json")
	d := deployment{app: "cli", handler: handlerEcho, replicas: 1}
	if err := os.WriteFile(file, serveConfig(t, d.application()), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("deploy", func(t *testing.T) {
		out := run(t, "deploy", file, "--admin", admin)
		if !strings.Contains(out, "cli") {
			t.Errorf("jetserve deploy = %q, want it to name app cli", out)
		}
		f.WaitApp(deployTimeout, "cli", 1, nil)
	})
	t.Run("status table", func(t *testing.T) {
		out := run(t, "status", "--admin", admin)
		for _, want := range []string{"cli", "/cli", string(protocol.AppRunning), "1/1"} {
			if !strings.Contains(out, want) {
				t.Errorf("jetserve status =\n%s\nwant it to contain %q", out, want)
			}
		}
	})
	t.Run("status json", func(t *testing.T) {
		out := run(t, "status", "-o", "json", "--admin", admin)
		var st protocol.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("jetserve status -o json = %q: %v", out, err)
		}
		if a, ok := st.Applications["cli"]; !ok || a.Status != protocol.AppRunning {
			t.Errorf("jetserve status -o json: app cli = %+v (present %v), want RUNNING", a, ok)
		}
	})
	t.Run("call", func(t *testing.T) {
		out := run(t, "call", "/cli/", string(echoBody), "--url", f.URL())
		if !strings.Contains(out, "hello jetserve") {
			t.Errorf("jetserve call /cli/ %s = %q, want the echoed body", echoBody, out)
		}
	})
	t.Run("call unknown route fails", func(t *testing.T) {
		out, errOut, err := fleet.RunCmd(t, 30*time.Second, cli, "call", "/no-such-app-e2e/", "{}", "--url", f.URL())
		if err == nil {
			t.Errorf("jetserve call /no-such-app-e2e/ succeeded (stdout %q), want a non-zero exit", out)
		}
		if !strings.Contains(out+errOut, "404") && !strings.Contains(out+errOut, string(protocol.ErrNotFound)) {
			t.Errorf("jetserve call /no-such-app-e2e/: output %q %q, want it to say 404/not_found", out, errOut)
		}
	})
	t.Run("deploy --if-absent and --merge keep a fleet's applications", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.json")
		o := deployment{app: "cli-other", handler: handlerEcho, replicas: 1}
		if err := os.WriteFile(other, serveConfig(t, o.application()), 0o600); err != nil {
			t.Fatal(err)
		}
		out := run(t, "deploy", file, "--if-absent", "--admin", admin)
		if !strings.Contains(out, "kept: cli exists") {
			t.Errorf("jetserve deploy --if-absent of app cli that exists = %q, want it kept", out)
		}
		out = run(t, "deploy", other, "--merge", "--admin", admin)
		if !strings.Contains(out, "cli-other") || !strings.Contains(out, "cli,") {
			t.Errorf("jetserve deploy --merge = %q, want cli-other added beside cli", out)
		}
		f.WaitApp(deployTimeout, "cli-other", 1, nil)
		f.WaitApp(deployTimeout, "cli", 1, nil)
		run(t, "delete", "cli-other", "--admin", admin)
		f.WaitAppGone(deployTimeout, "cli-other")
	})
	t.Run("delete", func(t *testing.T) {
		run(t, "delete", "cli", "--admin", admin)
		f.WaitAppGone(deployTimeout, "cli")
	})
	t.Run("delete unknown app fails", func(t *testing.T) {
		if out, _, err := fleet.RunCmd(t, 30*time.Second, cli, "delete", "no-such-app-e2e", "--admin", admin); err == nil {
			t.Errorf("jetserve delete no-such-app-e2e succeeded (%q), want a non-zero exit (404)", out)
		}
	})
}
