package auth_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/jetserve/jetserve/deploy/auth/authtest"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var passwordLine = regexp.MustCompile(`(?m)^\s*password: "([^"]+)"$`)

func routesPassword(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, auth.RoutesConf))
	if err != nil {
		t.Fatal(err)
	}
	m := passwordLine.FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no password line:\n%s", auth.RoutesConf, b)
	}
	return string(m[1])
}

// The routes' file is what nats-server reads as a cluster's credential and
// routes; its password survives re-runs and changes with --force; a route
// that is not HOST:PORT is refused naming it.
func TestRoutesConf(t *testing.T) {
	dir := t.TempDir()
	routes := []string{"nats1:6222", "nats2:6222", "[fd00::3]:6222"}
	g, err := auth.Generate(auth.Options{Dir: dir, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	if g.RoutesConf != filepath.Join(dir, auth.RoutesConf) {
		t.Errorf("Generated.RoutesConf = %q, want %q", g.RoutesConf, filepath.Join(dir, auth.RoutesConf))
	}
	if fi, err := os.Stat(g.RoutesConf); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want 0600 (it holds the password)", auth.RoutesConf, err, fi.Mode().Perm())
	}
	conf := filepath.Join(dir, "node.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:-1\ninclude ./%s\ncluster {\n  name: jetserve\n  listen: 127.0.0.1:-1\n  include ./%s\n}\n", auth.AuthConf, auth.RoutesConf)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("a node including %s does not load: %v", auth.RoutesConf, err)
	}
	pass := routesPassword(t, dir)
	if opts.Cluster.Username != auth.RouteUser || opts.Cluster.Password != pass || len(pass) < 40 {
		t.Errorf("cluster authorization %q/%q, want user %q and the file's password (≥ 40 characters)", opts.Cluster.Username, opts.Cluster.Password, auth.RouteUser)
	}
	if len(opts.Routes) != len(routes) {
		t.Fatalf("routes %v, want %d", opts.Routes, len(routes))
	}
	for i, u := range opts.Routes {
		p, _ := u.User.Password()
		if u.Scheme != "nats-route" || u.Host != routes[i] || u.User.Username() != auth.RouteUser || p != pass {
			t.Errorf("route %d = %s, want nats-route://%s:<password>@%s", i, u.Redacted(), auth.RouteUser, routes[i])
		}
	}

	// Re-run with other nodes: same password, new routes.
	if _, err := auth.Generate(auth.Options{Dir: dir, Routes: []string{"nats-0.nats-headless:6222"}}); err != nil {
		t.Fatal(err)
	}
	if got := routesPassword(t, dir); got != pass {
		t.Errorf("re-running with other routes changed the password")
	}
	// Re-run without routes: the file is kept.
	if _, err := auth.Generate(auth.Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(g.RoutesConf); err != nil || !strings.Contains(string(b), "nats-0.nats-headless:6222") {
		t.Errorf("re-running without routes lost %s: %v", auth.RoutesConf, err)
	}
	// --force: a new operator, a new password.
	if _, err := auth.Generate(auth.Options{Dir: dir, Force: true, Routes: routes}); err != nil {
		t.Fatal(err)
	}
	if got := routesPassword(t, dir); got == pass {
		t.Errorf("--force kept the routes' password")
	}

	for _, bad := range []string{"nats1", "nats1:", ":6222", "nats1:0", "nats1:70000", "nats1:x", "u:p@nats1:6222", "nats://nats1:6222"} {
		_, err := auth.Generate(auth.Options{Dir: t.TempDir(), Routes: []string{"nats2:6222", bad}})
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("Generate(Routes: %q) = %v, want an error naming it", bad, err)
		}
	}
}

// startNode runs one cluster node configured as the HA profile's: the
// generated auth.conf at the top, the generated routes.conf inside its
// cluster block.
func startNode(t *testing.T, dir, name string) *server.Server {
	t.Helper()
	conf := filepath.Join(dir, name+".conf")
	body := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:-1
jetstream { store_dir: %q }
include ./%s
cluster {
  name: jetserve
  listen: 127.0.0.1:-1
  include ./%s
}
`, name, filepath.Join(dir, name+"-js"), auth.AuthConf, auth.RoutesConf)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := authtest.StartConf(t, conf, &authtest.Log{})
	return ns
}

// A 3-node cluster configured by the generated files forms its routes with
// the route credential (explicit routes from routes.conf, and the
// gossiped ones between the nodes that did not list each other), every
// node knows the accounts (an R3 stream through any node, the system
// account's server ping answered by all three), and a peer without the
// credential is refused at the cluster port.
func TestClusterRoutesNeedTheirCredential(t *testing.T) {
	dir := t.TempDir()
	// Node 1 starts first so that the others' routes can name its port; its
	// own routes.conf names an address nothing listens on (its attempts are
	// refused in the background) — the nodes find each other through it.
	g, err := auth.Generate(auth.Options{Dir: dir, Routes: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	n1 := startNode(t, dir, "n1")
	seed := n1.ClusterAddr().String()
	if _, err := auth.Generate(auth.Options{Dir: dir, Routes: []string{seed}}); err != nil {
		t.Fatal(err)
	}
	nodes := []*server.Server{n1, startNode(t, dir, "n2"), startNode(t, dir, "n3")}

	deadline := time.Now().Add(30 * time.Second)
	for _, ns := range nodes {
		for {
			rz, err := ns.Routez(nil)
			if err == nil && peers(rz) == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s has routes to %d peers, want 2 (routes %+v, err %v)", ns.Name(), peers(rz), rz, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// Every node knows the JETSERVE account: the operator's user connects
	// to each, and an R3 stream is created through node 3 once JetStream
	// has its meta leader.
	var js jetstream.JetStream
	for _, ns := range nodes {
		nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentials(g.Creds[auth.Operator]), nats.Timeout(5*time.Second))
		if err != nil {
			t.Fatalf("operator on %s: %v", ns.Name(), err)
		}
		t.Cleanup(nc.Close)
		js, _ = jetstream.New(nc)
	}
	var si *jetstream.StreamInfo
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "R3", Subjects: []string{"r3.>"}, Replicas: 3})
		if err == nil {
			si, err = s.Info(ctx)
		}
		cancel()
		if err == nil && si.Cluster != nil && si.Cluster.Leader != "" && len(si.Cluster.Replicas) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("an R3 stream through n3: %v (info %+v)", err, si)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every node knows the system account: nats server report's ping.
	sys, err := nats.Connect(nodes[1].ClientURL(), nats.UserCredentials(g.Creds["sys"]), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	inbox := nats.NewInbox()
	sub, err := sys.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.PublishRequest("$SYS.REQ.SERVER.PING", inbox, nil); err != nil {
		t.Fatal(err)
	}
	answered := map[string]bool{}
	for len(answered) < 3 {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil {
			t.Fatalf("server ping with the sys user: %d of 3 nodes answered (%v): %v", len(answered), answered, err)
		}
		var r struct {
			Server struct{ Name string } `json:"server"`
		}
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		answered[r.Server.Name] = true
	}

	// A peer without the credential, or with a wrong password, is refused.
	for _, who := range []struct{ name, creds string }{
		{"no credential", ""},
		{"a wrong password", `"user":"route","pass":"guess",`},
	} {
		if got := rogueRoute(t, n1.ClusterAddr().String(), who.creds); !strings.Contains(got, "Authorization Violation") {
			t.Errorf("a route with %s: the node answered %q, want -ERR 'Authorization Violation'", who.name, got)
		}
	}
}

// peers counts the distinct servers a node has routes to.
func peers(rz *server.Routez) int {
	if rz == nil {
		return 0
	}
	ids := map[string]bool{}
	for _, r := range rz.Routes {
		ids[r.RemoteID] = true
	}
	return len(ids)
}

// rogueRoute connects to a cluster port as a peer would, sending creds
// (JSON fields, possibly empty) in its CONNECT, and returns the node's
// answer to it and a PING.
func rogueRoute(t *testing.T, addr, creds string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	info, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, `"auth_required":true`) {
		t.Errorf("the cluster port's INFO does not require auth: %s", info)
	}
	fmt.Fprintf(c, "CONNECT {%s\"verbose\":false,\"pedantic\":false,\"name\":\"rogue\",\"cluster\":\"jetserve\"}\r\nPING\r\n", creds)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return "closed: " + err.Error()
		}
		if strings.HasPrefix(line, "-ERR") || strings.HasPrefix(line, "PONG") {
			return strings.TrimSpace(line)
		}
	}
}
