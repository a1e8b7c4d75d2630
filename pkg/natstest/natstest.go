// Package natstest starts a real embedded nats-server with JetStream on a
// temp dir for tests, and connects clients to it. Nothing here is a mock.
package natstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	return ServerWith(t, natsembed.Options{StoreDir: dir})
}

// Cluster starts an n-node JetStream cluster on random ports, each node's
// store in its own temp dir, and waits until JetStream has a meta leader;
// every node is shut down when the test ends (a node the test shut down
// itself is fine).
//
// JetStream clustering needs every node's route port in every node's
// configuration before any starts, and nats-server cannot be handed a
// listener, so the route ports are the one place a port is chosen before
// it is bound: they are held open together, then freed just before the
// nodes start. Should another process take one in between, the node
// cannot start and the cluster is started again on other ports.
func Cluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	return cluster(t, n, nil)
}

// cluster starts a cluster as Cluster does; relay, if set, returns the
// address (host:port) at which node i's route listener on port is to be
// reached, advertised and dialled by every node.
func cluster(t testing.TB, n int, relay func(i, port int) (string, error)) []*server.Server {
	t.Helper()
	var errs []error
	for range 3 {
		nodes, err := startCluster(t, n, relay)
		if err == nil {
			return nodes
		}
		errs = append(errs, err)
	}
	t.Fatalf("nats cluster of %d: %v", n, errors.Join(errs...))
	return nil
}

func startCluster(t testing.TB, n int, relay func(i, port int) (string, error)) ([]*server.Server, error) {
	ports := make([]int, n)
	var lns []net.Listener
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a cluster port: %w", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	routes := make([]string, n)
	advertise := make([]string, n)
	for i, ln := range lns {
		ln.Close()
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", ports[i])
		if relay != nil {
			addr, err := relay(i, ports[i])
			if err != nil {
				return nil, err
			}
			routes[i], advertise[i] = "nats-route://"+addr, addr
		}
	}
	nodes := make([]*server.Server, n)
	shutdown := func() {
		for _, ns := range nodes {
			if ns != nil {
				ns.Shutdown()
				ns.WaitForShutdown()
			}
		}
	}
	for i := range n {
		ns, err := natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir(), ServerName: fmt.Sprintf("n%d", i+1),
			Cluster: natsembed.ClusterOptions{Name: "test", Port: ports[i], Routes: routes, Advertise: advertise[i]}})
		if err != nil {
			shutdown()
			return nil, fmt.Errorf("start node %d: %w", i+1, err)
		}
		nodes[i] = ns
	}
	t.Cleanup(shutdown)
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
			return nodes, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("after 20s, %d nodes current and %d peers online at the meta leader", ready, online)
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

// JetStream is nc's JetStream context (nc from Conn, ReconnectingConn or
// any other connection of the test).
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// Restart shuts ns down and starts a server on its port and store dir
// (the store it was started with), shut down when the test ends: clients
// that reconnect for ever find it where they left it.
func Restart(t testing.TB, ns *server.Server, storeDir string) *server.Server {
	t.Helper()
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	return ServerWith(t, natsembed.Options{Port: port, StoreDir: storeDir, ServerName: ns.Name()})
}

// Fleet is a test server with the fleet's shared buckets under the
// default prefix: what every service's tests start from.
type Fleet struct {
	NS      *server.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	Names   protocol.Names
	Buckets *fleetstate.Buckets
}

// NewFleet starts a JetStream server (as Server), connects a client (as
// Conn) and opens the fleet's buckets.
func NewFleet(t testing.TB) *Fleet {
	t.Helper()
	return FleetOn(t, Server(t), nil)
}

// FleetOn is NewFleet on a server already started (ServerWith for one
// with options) over nc, or over a new connection (Conn) if nc is nil.
func FleetOn(t testing.TB, ns *server.Server, nc *nats.Conn) *Fleet {
	t.Helper()
	if nc == nil {
		nc = Conn(t, ns)
	}
	names, err := protocol.NewNames("")
	if err != nil {
		t.Fatal(err)
	}
	js := JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := fleetstate.Open(ctx, js, names)
	if err != nil {
		t.Fatalf("open the fleet's buckets: %v", err)
	}
	return &Fleet{NS: ns, NC: nc, JS: js, Names: names, Buckets: b}
}

// PutConfig stores sc, as it is, as the applied serve config (the key the
// admin API writes).
func PutConfig(t testing.TB, b *fleetstate.Buckets, sc config.ServeConfig) {
	t.Helper()
	raw, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apps.Put(context.Background(), fleetstate.ConfigKey, raw); err != nil {
		t.Fatalf("put the applied config: %v", err)
	}
}

// ApplyConfig stores sc as the admin API would: through config.Parse of
// its JSON (defaults applied, validated: an invalid one fails the test).
// It returns what it stored.
func ApplyConfig(t testing.TB, b *fleetstate.Buckets, sc config.ServeConfig) config.ServeConfig {
	t.Helper()
	raw, err := json.Marshal(sc)
	if err != nil {
		t.Fatal(err)
	}
	return PutConfigText(t, b, string(raw))
}

// PutConfigText parses a config file's text (YAML or JSON) as the admin
// API does (defaults applied, validated: an invalid one fails the test),
// stores it as the applied config and returns it.
func PutConfigText(t testing.TB, b *fleetstate.Buckets, text string) config.ServeConfig {
	t.Helper()
	sc, err := config.Parse([]byte(text))
	if err != nil {
		t.Fatalf("parse the config: %v", err)
	}
	PutConfig(t, b, sc)
	return sc
}

// PutReplica stores info as its replica's record (as its worker reports
// it), under the key its app, deployment, worker and id give; a record
// that names no worker is given the worker "w0".
func PutReplica(t testing.TB, b *fleetstate.Buckets, info protocol.ReplicaInfo) {
	t.Helper()
	if info.WorkerID == "" {
		info.WorkerID = "w0"
	}
	raw, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Replicas.Put(context.Background(), protocol.ReplicaKey(info.App, info.Deployment, info.WorkerID, info.ID), raw); err != nil {
		t.Fatalf("put replica %s: %v", info.ID, err)
	}
}
