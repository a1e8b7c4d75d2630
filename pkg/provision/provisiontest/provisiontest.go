// Package provisiontest runs a provision.Provisioner in a test, in place
// of the scheduler that creates the JetStream state the services bind to.
package provisiontest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/jetserve/jetserve/pkg/provision"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Start runs a Provisioner (Run and Lead) until t ends. The async methods
// of the config and declarations stored before it are created when it
// returns; later ones soon after they are stored.
func Start(t testing.TB, nc *nats.Conn, js jetstream.JetStream, names jobs.Names, b *fleetstate.Buckets) {
	t.Helper()
	p := provision.New(nc, js, names, b, 1, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = p.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	waitfor.True(t, 30*time.Second, "the async methods created", func() bool { return p.Ready() == nil && p.EnsureAll(ctx) })
	wg.Go(func() { p.Lead(ctx) })
}
