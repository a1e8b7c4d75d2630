// Package devfleettest starts a whole dev fleet (embedded NATS and the
// five services in one process) from a test and reads back where it
// listens: the fleet is given port 0 everywhere and prints its URLs.
//
// Start owns the goroutine that runs the fleet: the test's cleanup
// cancels it and waits for it to return, failing the test if it returns
// an error or does not stop in time.
package devfleettest

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/logtest"
	"github.com/jetserve/jetserve/pkg/waitfor"
)

// Flags are the options that make a dev fleet test-friendly: its data
// under dataDir, every port chosen by the kernel and read back, no ops
// listener, quiet logs.
func Flags(dataDir string) []string {
	return []string{"--data-dir", dataDir, "--nats-port", "-1", "--nats-http-port", "0",
		"--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--ops=false", "--log-level", "warn"}
}

// Fleet is a dev fleet started by Start.
type Fleet struct {
	// Ingress and Admin are the URLs the fleet printed when it was up.
	Ingress, Admin string
	// Out and Err are what the fleet wrote to stdout and stderr so far.
	Out, Err *Buffer
}

// Timeouts bound how long Start waits for the fleet to come up and, at
// cleanup, to stop.
type Timeouts struct{ Up, Stop time.Duration }

// Start runs run in a goroutine with a context that the test's cleanup
// cancels, waits until it prints its ingress and admin URLs, and returns
// them.
func Start(tb testing.TB, within Timeouts, run func(ctx context.Context, stdout, stderr io.Writer) error) *Fleet {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{Out: &Buffer{}, Err: &Buffer{}}
	done := make(chan error, 1)
	go func() { done <- run(ctx, f.Out, f.Err) }()
	tb.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				tb.Errorf("the dev fleet returned %v after cancel, want nil", err)
			}
		case <-time.After(within.Stop):
			tb.Errorf("the dev fleet did not stop within %s of cancel", within.Stop)
		}
	})
	var m []string
	waitfor.NoError(tb, within.Up, "the URLs the dev fleet prints when it is up", func() error {
		if m = upRE.FindStringSubmatch(f.Out.String()); m == nil {
			return fmt.Errorf("stdout %q, stderr %q", f.Out.String(), f.Err.String())
		}
		return nil
	})
	f.Ingress, f.Admin = m[1], m[2]
	return f
}

var upRE = regexp.MustCompile(`HTTP ingress\s+(http://\S+)[\s\S]*admin API\s+(http://\S+)`)

// Buffer is a bytes.Buffer safe for one writer and concurrent readers.
type Buffer = logtest.Buffer
