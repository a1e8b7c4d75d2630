package worker_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/services/worker"
)

// A user_config value "${secret:NAME}" reaches the deployment as the
// content of NAME in the worker's secrets_dir (the assignment, and so KV,
// hold only the reference); a missing secret makes the replica FAILED
// naming it, never a value.
func TestSecretReferencesResolvedOnTheWorker(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "greeting"), []byte("s3cr3t-hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, func(c *worker.Config) { c.SecretsDir = dir })
	s := spec("sec1", "echo-dep", "echo", 2, `{"greeting": "${secret:greeting}"}`)
	missing := spec("sec2", "echo-dep", "echo", 2, `{"greeting": "${secret:nope}"}`)
	f.assign(s, missing)
	f.waitState(s, protocol.ReplicaRunning)
	if resp := f.mustCall("sec1", "x"); string(resp.Body) != "s3cr3t-hello:x" {
		t.Fatalf("the deployment answered %q, want the resolved greeting", resp.Body)
	}
	info := f.waitState(missing, protocol.ReplicaFailed)
	if !strings.Contains(info.Message, `"nope"`) {
		t.Fatalf("FAILED message = %q, want it to name the missing secret", info.Message)
	}
}
