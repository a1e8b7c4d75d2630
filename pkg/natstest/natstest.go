// Package natstest starts a real embedded nats-server with JetStream on a
// temp dir for tests, and connects clients to it. Nothing here is a mock.
package natstest

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

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

// Cluster starts an n-node JetStream cluster on random ports, each node's
// store in its own temp dir, and waits until JetStream has a meta leader;
// every node is shut down when the test ends (a node the test shut down
// itself is fine).
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	// JetStream clustering needs every node's routes configured up front,
	// so the route ports are chosen first (held open together, then freed).
	ports := make([]int, n)
	var lns []net.Listener
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a cluster port: %v", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	routes := make([]string, n)
	for i, ln := range lns {
		ln.Close()
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
	}
	nodes := make([]*server.Server, n)
	for i := range n {
		ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir(), ServerName: fmt.Sprintf("n%d", i+1),
			Cluster: natsembed.ClusterOptions{Name: "test", Port: ports[i], Routes: routes}})
		if err != nil {
			t.Fatalf("start nats node %d: %v", i+1, err)
		}
		t.Cleanup(func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		})
		nodes[i] = ns
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		ready := 0
		for _, ns := range nodes {
			if ns.JetStreamIsCurrent() && ns.NumRoutes() >= n-1 {
				ready++
			}
		}
		// The meta leader must also know every peer online, with its
		// stats: until then an R3 stream cannot be placed ("no suitable
		// peers for placement").
		online := 0
		for _, ns := range nodes {
			if ns.JetStreamIsLeader() {
				online = len(ns.JetStreamClusterPeers())
			}
		}
		if ready == n && online == n {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats cluster of %d: after 20s, %d nodes current and %d peers online at the meta leader", n, ready, online)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URLs joins the nodes' client URLs, as services take them (nats.url).
func URLs(nodes []*server.Server) string {
	urls := make([]string, len(nodes))
	for i, ns := range nodes {
		urls[i] = ns.ClientURL()
	}
	return strings.Join(urls, ",")
}

// ServerWith starts a JetStream server with o (Port -1 and a StoreDir in
// t.TempDir() when unset), shut down when the test ends. Restart a server
// on the same data and port with ServerWith(t, o) after setting o.Port to
// the first one's port and o.StoreDir to its store.
func ServerWith(t testing.TB, o natsembed.Options) *server.Server {
	t.Helper()
	if o.Port == 0 {
		o.Port = -1
	}
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	if o.ServerName == "" {
		o.ServerName = "test"
	}
	ns, err := natsembed.Start(o)
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// ReconnectingConn connects a client to url that reconnects for ever,
// every 50 ms (tests that restart the server), closed when the test ends.
func ReconnectingConn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name(t.Name()), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
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
