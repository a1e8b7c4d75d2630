// Package fleet runs jetserve the way production does, for end-to-end
// tests: every service and nats-server is its own OS process, built once
// from the repository, configured through JETSERVE_* environment variables,
// with its output captured to a file.
//
// Everything a test starts is stopped (SIGKILL) in the test's Cleanup, and
// when the test failed the tail of each process's log is printed. Waiting is
// always polling a real condition (an HTTP answer, the fleet status) against
// a deadline; nothing here sleeps to let time pass.
//
// The helpers take testing.TB and are safe to call from the test goroutine;
// Traffic is the only type that runs goroutines, which it owns and stops.
package fleet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Binary names.
const (
	NATSServer = "nats-server"
	Ingress    = "jetserve-ingress"
	Router     = "jetserve-router"
	Worker     = "jetserve-worker"
	Scheduler  = "jetserve-scheduler"
	Autoscaler = "jetserve-autoscaler"
	CLI        = "jetserve"
	// QuickstartWorker is examples/quickstart's worker, built from its own
	// module with GOWORK=off, as a user's repository builds it.
	QuickstartWorker = "quickstart-worker"
	// EchoServer is a no-op HTTP server for the process runtime
	// (examples/diag/echoserver): the benchmark's child process.
	EchoServer = "echoserver"
)

// Target is one binary to build: `go build -o <out>/<Name> <Pkg>` run in
// Dir (relative to the repository root), outside the workspace when
// Standalone (GOWORK=off: the module's own go.mod and go.sum only).
type Target struct {
	Name       string
	Dir        string
	Pkg        string
	Standalone bool
}

// Targets are every binary the end-to-end tests run.
var Targets = []Target{
	{NATSServer, "e2e", "github.com/nats-io/nats-server/v2", false},
	{Ingress, "services/ingress", "./cmd/jetserve-ingress", false},
	{Router, "services/router", "./cmd/jetserve-router", false},
	{Worker, "examples", "./cmd/jetserve-worker", false},
	{Scheduler, "services/scheduler", "./cmd/jetserve-scheduler", false},
	{Autoscaler, "services/autoscaler", "./cmd/jetserve-autoscaler", false},
	{CLI, "cmd/jetserve", ".", false},
	{QuickstartWorker, "examples/quickstart", "./cmd/worker", true},
	{EchoServer, "examples", "./diag/echoserver", false},
}

// Binaries are the built programs. A binary that failed to build makes
// every test that asks for it fail with the compiler's output.
type Binaries struct {
	dir  string
	errs map[string]error // read-only after Build
}

// BuildOptions tune Build.
type BuildOptions struct {
	// Race builds the jetserve binaries with -race (not nats-server).
	Race bool
	// Log receives one line per binary built.
	Log func(format string, args ...any)
}

// Build builds every target from the repository at root into dir, one
// `go build` per binary (so one broken service does not hide the others).
func Build(ctx context.Context, root, dir string, opt BuildOptions) *Binaries {
	b := &Binaries{dir: dir, errs: map[string]error{}}
	for _, t := range Targets {
		start := time.Now()
		args := []string{"build", "-o", filepath.Join(dir, t.Name)}
		if opt.Race && t.Name != NATSServer {
			args = append(args, "-race")
		}
		args = append(args, t.Pkg)
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = filepath.Join(root, t.Dir)
		if t.Standalone {
			cmd.Env = append(os.Environ(), "GOWORK=off")
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.errs[t.Name] = fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), t.Dir, err, out)
		}
		if opt.Log != nil {
			status := "ok"
			if err != nil {
				status = "FAILED"
			}
			opt.Log("e2e: build %-20s %s in %v", t.Name, status, time.Since(start).Round(time.Millisecond))
		}
	}
	return b
}

// Err returns why name failed to build, nil if it was built.
func (b *Binaries) Err(name string) error { return b.errs[name] }

// Path returns the path of the built binary name; the test fails if it
// could not be built.
func (b *Binaries) Path(tb testing.TB, name string) string {
	tb.Helper()
	if b == nil {
		tb.Fatalf("e2e: binaries were not built (TestMain did not run Build)")
	}
	if err := b.errs[name]; err != nil {
		tb.Fatalf("e2e: %s did not build:\n%v", name, err)
	}
	p := filepath.Join(b.dir, name)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("e2e: %s: %v", name, err)
	}
	return p
}

// Root finds the repository root: the nearest parent of dir holding go.work.
func Root(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.work above %s", dir)
		}
		d = parent
	}
}
