package natstest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// KillableCluster starts a cluster as Cluster does, but with every route
// connection running through a relay in the test, so that Kill can lose a
// node the way kill -9 of a nats-server process does.
//
// An in-process Shutdown is a graceful exit: the node hands its Raft
// leaderships over and says goodbye on its routes, which tells the peers
// (and, through them, clients) more than a dead process ever does — a KV
// watch whose consumer lived on the node may be told at once, or not
// (TestKilledLeadersWatchIsRestarted). Kill cuts every route to and from
// the node first, with no goodbye, then shuts it down talking to no one.
func KillableCluster(t testing.TB, n int) *Killable {
	t.Helper()
	k := &Killable{}
	k.Nodes = cluster(t, n, func(i, port int) (string, error) {
		r, err := startRouteRelay(t, fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return "", err
		}
		k.relays = append(k.relays[:min(i, len(k.relays))], r)
		return r.ln.Addr().String(), nil
	})
	return k
}

// Killable is a cluster started by KillableCluster.
type Killable struct {
	Nodes  []*server.Server
	relays []*routeRelay // relays[i] leads to Nodes[i]'s route listener
}

// Kill loses ns as kill -9 would: every route connection to or from it is
// closed at once and refused from then on (its peers see the connections
// drop, nothing else), then it is shut down with no route left to tell.
// Its clients see their connection close, as they would.
func (k *Killable) Kill(t testing.TB, ns *server.Server) {
	t.Helper()
	k.Partition(t, ns)
	ns.Shutdown()
	ns.WaitForShutdown()
}

// Partition cuts ns off from its peers as a network partition would:
// every route connection to or from it is closed at once and refused from
// then on, with no goodbye, while ns keeps running and serving its own
// clients. Until its Raft groups notice they lost their quorum (10-20 s),
// ns still takes itself for the leader of each group it led, and answers
// its clients as that leader from its state at the cut.
func (k *Killable) Partition(t testing.TB, ns *server.Server) {
	t.Helper()
	id := []byte(ns.ID())
	found := false
	for i, r := range k.relays {
		if k.Nodes[i] == ns {
			found = true
			r.cut(nil)
		} else {
			r.cut(id)
		}
	}
	if !found {
		t.Fatalf("Partition: %s is not a node of the cluster", ns.Name())
	}
}

// routeRelay forwards the route connections made to its listener to one
// node's route listener. A connection is the dialling node's: its first
// bytes are the route CONNECT, which names the dialler's server ID.
type routeRelay struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[*relayedConn]bool // guarded by mu
	all    bool                  // guarded by mu: every connection is cut
	cutIDs [][]byte              // guarded by mu: connections dialled by these servers are cut
}

type relayedConn struct {
	in, out net.Conn
	head    []byte // guarded by routeRelay.mu: the dialler's first bytes
}

// headLen is how much of a dialler's first bytes is kept: its CONNECT
// line fits.
const headLen = 4096

func startRouteRelay(t testing.TB, target string) (*routeRelay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("route relay: %w", err)
	}
	r := &routeRelay{ln: ln, target: target, conns: map[*relayedConn]bool{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r, nil
}

func (r *routeRelay) accept() {
	defer r.wg.Done()
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return // closed
		}
		out, err := net.Dial("tcp", r.target)
		if err != nil {
			in.Close() // the node is not up (yet, or any more): it dials again
			continue
		}
		c := &relayedConn{in: in, out: out}
		r.mu.Lock()
		if r.all {
			r.mu.Unlock()
			in.Close()
			out.Close()
			continue
		}
		r.conns[c] = true
		r.mu.Unlock()
		r.wg.Add(2)
		go r.pipe(c, out, in, true) // the dialler's bytes: its CONNECT names it
		go r.pipe(c, in, out, false)
	}
}

// pipe copies src to dst until either ends, then closes both. fromDialler
// keeps the first bytes and cuts the connection once they name a cut
// server.
func (r *routeRelay) pipe(c *relayedConn, dst, src net.Conn, fromDialler bool) {
	defer r.wg.Done()
	defer func() {
		c.in.Close()
		c.out.Close()
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}()
	if !fromDialler {
		_, _ = io.Copy(dst, src)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			if len(c.head) < headLen {
				c.head = append(c.head, buf[:min(n, headLen-len(c.head))]...)
			}
			cut := r.isCut(c)
			r.mu.Unlock()
			if cut {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// isCut reports whether c must be closed; r.mu is held.
func (r *routeRelay) isCut(c *relayedConn) bool {
	if r.all {
		return true
	}
	for _, id := range r.cutIDs {
		if bytes.Contains(c.head, id) {
			return true
		}
	}
	return false
}

// cut closes, and refuses from now on, every connection (id nil) or those
// dialled by the server id.
func (r *routeRelay) cut(id []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if id == nil {
		r.all = true
	} else {
		r.cutIDs = append(r.cutIDs, id)
	}
	for c := range r.conns {
		if r.isCut(c) {
			c.in.Close()
			c.out.Close()
		}
	}
}

func (r *routeRelay) close() {
	r.ln.Close()
	r.cut(nil)
	r.wg.Wait()
}
