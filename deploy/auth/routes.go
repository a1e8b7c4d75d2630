package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"
)

// RoutesConf is what a cluster's nodes include inside their cluster {}
// block when Options.Routes is set: the route user and password every
// node requires of a peer, and the routes to every node carrying them.
const RoutesConf = "nats/routes.conf"

// RouteUser is the user name of the cluster routes.
const RouteUser = "route"

// Why the routes need their own credential: a route is trusted with every
// account's traffic — a process that connects to a node's cluster port as
// a peer receives whatever its subscriptions ask for, past every account
// and user permission. The cluster port is reachable from wherever the
// services run, and the workers run deployments' code (the process
// runtime's child processes), so an open cluster port would hand a
// compromised model server the whole fleet's traffic.

// checkRoutes validates Options.Routes: each is HOST:PORT.
func checkRoutes(routes []string) error {
	for _, r := range routes {
		host, port, err := net.SplitHostPort(r)
		if err != nil || host == "" || strings.ContainsAny(host, "/@ ") {
			return fmt.Errorf("route %q: want HOST:PORT (a cluster node's route address, e.g. nats1:6222)", r)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("route %q: port %q is not 1..65535", r, port)
		}
	}
	return nil
}

// routePassword derives the routes' password from the operator's seed, so
// that re-running the generator (say with another node list) keeps it and
// --force (a new operator) changes it, with no other secret to keep.
func routePassword(okp nkeys.KeyPair) (string, error) {
	seed, err := okp.Seed()
	if err != nil {
		return "", fmt.Errorf("operator seed: %w", err)
	}
	mac := hmac.New(sha256.New, seed)
	mac.Write([]byte("jetserve nats cluster routes"))
	// base64url: nothing to escape in a URL's user info or a quoted string.
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

// writeRoutes writes RoutesConf for the nodes at routes (HOST:PORT).
func writeRoutes(dir string, okp nkeys.KeyPair, routes []string) (string, error) {
	pass, err := routePassword(okp)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# jetserve NATS cluster routes (deploy/auth). Include it inside the
# cluster {} block of every node: a node accepts a peer's route only with
# this user and password, and connects to the routes below with them.
# Generated; do not edit: re-run the generator with --routes (the password
# stays; --force changes it).
authorization {
  user: %s
  password: %q
}
routes: [
`, RouteUser, pass)
	for _, r := range routes {
		u := url.URL{Scheme: "nats-route", User: url.UserPassword(RouteUser, pass), Host: r}
		fmt.Fprintf(&b, "  %q\n", u.String())
	}
	b.WriteString("]\n")
	path := filepath.Join(dir, RoutesConf)
	// 0600: it holds the password (nats-server runs as root in the images).
	return path, write(path, []byte(b.String()), 0o600, true)
}
