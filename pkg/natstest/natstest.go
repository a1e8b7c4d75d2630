// Package natstest starts a real embedded nats-server with JetStream on a
// temp dir for tests, and connects clients to it. Nothing here is a mock.
package natstest

import (
	"testing"

	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Server starts a JetStream server on a random port with its store in
// t.TempDir(); it is shut down when the test ends.
func Server(t testing.TB) *server.Server {
	t.Helper()
	return ServerIn(t, t.TempDir())
}

// ServerIn is Server with a given store dir (to restart a server on the
// same data).
func ServerIn(t testing.TB, dir string) *server.Server {
	t.Helper()
	ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: dir, ServerName: "test"})
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// Conn connects a client to ns, closed when the test ends.
func Conn(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := natsembed.Connect(ns, t.Name())
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}
