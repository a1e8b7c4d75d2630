package natstest

import (
	"net"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// CountedConn connects to ns like Conn, on a connection that counts its
// writes to the socket (what batching of messages saves: each write is a
// syscall, and on loopback also the server's wake-up). Read the count
// with writes.Load().
func CountedConn(t testing.TB, ns *server.Server) (nc *nats.Conn, writes *atomic.Int64) {
	t.Helper()
	d := &countingDialer{}
	nc, err := nats.Connect(ns.ClientURL(), nats.Name(t.Name()), nats.SetCustomDialer(d))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, &d.writes
}

type countingDialer struct{ writes atomic.Int64 }

func (d *countingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return countingConn{c, &d.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}
