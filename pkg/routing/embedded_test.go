package routing_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// An embedded router is not ready until Run loaded the fleet's state,
// then ready; Run returns nil when its context ends.
func TestEmbeddedReadyOnceLoaded(t *testing.T) {
	f := natstest.NewFleet(t)
	reg := prometheus.NewRegistry()
	e, err := routing.NewEmbedded(routing.EmbeddedOptions{
		Options:  routing.Options{NC: f.NC, Names: f.Names, Log: zerolog.New(zerolog.NewTestWriter(t))},
		Registry: reg, Buckets: f.Buckets, ID: "test-embedded",
	})
	if err != nil {
		t.Fatalf("NewEmbedded = %v", err)
	}
	if err := e.Ready(); !errors.Is(err, routing.ErrEmbeddedNotLoaded) {
		t.Fatalf("Ready() before Run = %v, want %v", err, routing.ErrEmbeddedNotLoaded)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	waitfor.NoError(t, 10*time.Second, "embedded router loaded", e.Ready)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run after its context ended = %v, want nil", err)
	}
	e.Close()

	// Its collectors are on the registry it was given: a second one on
	// the same registry is refused.
	_, err = routing.NewEmbedded(routing.EmbeddedOptions{
		Options:  routing.Options{NC: f.NC, Names: f.Names, Log: zerolog.Nop()},
		Registry: reg, Buckets: f.Buckets, ID: "second",
	})
	if err == nil || !strings.Contains(err.Error(), "register router metrics") {
		t.Errorf("NewEmbedded(a registry that has the router's metrics) = %v, want a register router metrics error", err)
	}
}

// Credentials that cannot be read are refused before the router takes
// any traffic.
func TestEmbeddedBadCreds(t *testing.T) {
	f := natstest.NewFleet(t)
	missing := filepath.Join(t.TempDir(), "missing.creds")
	_, err := routing.NewEmbedded(routing.EmbeddedOptions{
		Options:  routing.Options{NC: f.NC, Names: f.Names, Log: zerolog.Nop()},
		Registry: prometheus.NewRegistry(), Buckets: f.Buckets, ID: "bad", Creds: missing,
	})
	if err == nil || !strings.Contains(err.Error(), "nats.creds") {
		t.Errorf("NewEmbedded(Creds: %q) = %v, want a nats.creds error", missing, err)
	}
}
