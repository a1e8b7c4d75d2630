// Package natsembed starts a NATS server with JetStream inside the calling
// process: the embedded default of `jetserve dev` and of every test. The
// server never installs signal handlers (NoSigs), so the host program keeps
// control of shutdown.
package natsembed

import (
	"fmt"
	"net/url"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configures the embedded server.
type Options struct {
	// Host and Port to listen on; Port -1 picks a free port, 0 uses 4222.
	Host string
	Port int
	// HTTPPort serves NATS monitoring (/varz, /jsz, /healthz); 0 = off.
	HTTPPort int
	// StoreDir is where JetStream keeps its file store; required.
	StoreDir string
	// MaxPayload caps one message; default 8 MiB (NATS's hard maximum),
	// so that request bodies up to the ingress limit fit.
	MaxPayload int32
	// ServerName defaults to "jetserve-dev"; it must be unique in a cluster.
	ServerName string
	// Cluster, when its Name is set, makes the server a node of a
	// JetStream cluster.
	Cluster ClusterOptions
}

// ClusterOptions make a server one node of a cluster.
type ClusterOptions struct {
	// Name of the cluster; "" runs a single server.
	Name string
	// Port of the cluster (route) listener.
	Port int
	// Routes are the nodes' route URLs (nats-route://host:port), this
	// node's own included or not; JetStream clustering requires them.
	Routes []string
	// Advertise is the host:port the other nodes are told to reach this
	// node's route listener at (gossip); "" = the listener itself.
	Advertise string
}

// DefaultMaxPayload is the embedded server's max_payload.
const DefaultMaxPayload = 8 << 20

// Start runs a server and waits until it accepts connections.
func Start(o Options) (*server.Server, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("embedded nats: store dir is required")
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = DefaultMaxPayload
	}
	if o.ServerName == "" {
		o.ServerName = "jetserve-dev"
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       o.Host,
		Port:       o.Port,
		HTTPHost:   o.Host,
		HTTPPort:   o.HTTPPort,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		MaxPayload: o.MaxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	if o.HTTPPort == 0 {
		opts.HTTPPort = 0
		opts.HTTPHost = ""
	}
	if o.Cluster.Name != "" {
		opts.Cluster = server.ClusterOpts{Name: o.Cluster.Name, Host: o.Host, Port: o.Cluster.Port, Advertise: o.Cluster.Advertise}
		for _, r := range o.Cluster.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("embedded nats: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 10s")
	}
	return ns, nil
}

// Connect opens a client connection to ns over TCP loopback (faster than
// an in-process pipe for bulk traffic on few cores).
func Connect(ns *server.Server, name string) (*nats.Conn, error) {
	nc, err := nats.Connect(ns.ClientURL(), nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("connect embedded nats: %w", err)
	}
	return nc, nil
}
