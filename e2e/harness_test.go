package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestHarnessNATS checks the harness itself on the one binary that does
// not depend on jetserve's code: a standalone nats-server with JetStream
// comes up, serves a client, and dies on SIGTERM and on SIGKILL.
func TestHarnessNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	for _, stop := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(stop, func(t *testing.T) {
			n := fleet.StartNATS(t, bins)
			nc, err := nats.Connect(n.URL)
			if err != nil {
				t.Fatalf("connect %s: %v", n.URL, err)
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := js.AccountInfo(ctx); err != nil {
				t.Fatalf("JetStream account info: %v", err)
			}
			switch stop {
			case "SIGTERM":
				// Only that it exits matters here, not its status.
				err := n.Term(t, 10*time.Second)
				t.Logf("nats-server after SIGTERM: %v", err)
			case "SIGKILL":
				n.Kill(t)
			}
			if !n.Exited() {
				t.Errorf("nats-server still running after %s", stop)
			}
			if !n.LogContains("Server is ready") {
				t.Errorf("nats-server log lacks %q:\n%s", "Server is ready", n.Tail(20))
			}
		})
	}
}
