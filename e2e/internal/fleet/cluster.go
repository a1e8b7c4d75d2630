package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/jobs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The accounts of every cluster node: the services connect with no
// credentials and land in the JetStream-enabled application account
// (no_auth_user); the system account's user is what `nats server report
// jetstream` needs.
const (
	SysUser     = "sys"
	SysPassword = "sys"
	// ClusterName is the NATS cluster's name.
	ClusterName = "e2e"
)

// Cluster is a JetStream cluster of nats-server processes on loopback:
// each node its own process, store dir, client, route and monitor ports,
// with a system account. Nodes can be killed (kill -9), stopped (SIGSTOP:
// the node is cut off from peers and clients alike, see NATSNode.Pause)
// and restarted on their own store.
type Cluster struct {
	tb    testing.TB
	Nodes []*NATSNode
}

// NATSNode is one nats-server of a Cluster.
type NATSNode struct {
	Name       string // server_name: n1, n2, …
	URL        string // nats://127.0.0.1:port
	MonitorURL string
	StoreDir   string
	Conf       string // the node's configuration file

	bin string
	tb  testing.TB // the cluster's: its processes live as long as the cluster

	mu     sync.Mutex
	proc   *Proc // guarded by mu; the current process (a restart replaces it)
	down   bool  // guarded by mu; killed by the test and not restarted
	paused bool  // guarded by mu; SIGSTOPped and not yet continued
}

// StartCluster starts an n-node cluster and waits until every node
// answers the monitor's /healthz?js-enabled-only=true and JetStream has a
// meta leader with every node current.
func StartCluster(tb testing.TB, bins *Binaries, n int) *Cluster {
	tb.Helper()
	bin := bins.Path(tb, NATSServer)
	dir := tb.TempDir()
	c := &Cluster{tb: tb}
	addrs := FreeAddrs(tb, 3*n) // route, client and monitor port of each node
	routes := make([]string, n)
	for i := range n {
		routes[i] = "nats-route://" + addrs[3*i]
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		client, mon := addrs[3*i+1], addrs[3*i+2]
		node := &NATSNode{
			Name: name, URL: "nats://" + client, MonitorURL: "http://" + mon,
			StoreDir: filepath.Join(dir, name, "jetstream"), Conf: filepath.Join(dir, name+".conf"), bin: bin, tb: tb,
		}
		conf := NodeConfig(name, client, mon, addrs[3*i], node.StoreDir, routes)
		if err := os.WriteFile(node.Conf, []byte(conf), 0o644); err != nil {
			tb.Fatalf("e2e: write %s: %v", node.Conf, err)
		}
		c.Nodes = append(c.Nodes, node)
	}
	for _, node := range c.Nodes {
		node.start()
	}
	c.WaitReady(StartTimeout)
	return c
}

// NodeConfig is a cluster node's nats-server configuration: JetStream in
// store, the cluster's routes, the application account every client
// without credentials uses, and the system account.
func NodeConfig(name, client, monitor, cluster, store string, routes []string) string {
	return fmt.Sprintf(`server_name: %s
listen: %s
http: %s
# A peer or client that stops answering (a node cut off from the
# network) is dropped after two unanswered pings, 4-6 s, not 4-6 minutes:
# until then the other nodes route messages to its stale interest.
ping_interval: "2s"
ping_max: 2
jetstream { store_dir: %q, max_file_store: 4G, max_memory_store: 256M }
cluster {
  name: %s
  listen: %s
  routes: [%s]
}
accounts {
  SYS { users: [{user: %s, password: %s}] }
  APP { jetstream: enabled, users: [{user: app, password: app}] }
}
system_account: SYS
no_auth_user: app
`, name, client, monitor, store, ClusterName, cluster, strings.Join(routes, ", "), SysUser, SysPassword)
}

// start starts the node's process, owned by the cluster's test (a node
// restarted in a subtest outlives the subtest).
func (n *NATSNode) start() {
	n.tb.Helper()
	p := StartProc(n.tb, "nats-"+n.Name, n.bin, []string{"-c", n.Conf}, nil)
	n.mu.Lock()
	n.proc, n.down, n.paused = p, false, false
	n.mu.Unlock()
}

// Proc is the node's current process.
func (n *NATSNode) Proc() *Proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// Up reports whether the node runs and is not paused.
func (n *NATSNode) Up() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return !n.down && !n.paused
}

// Kill kill -9s the node and waits until the process is gone.
func (n *NATSNode) Kill(tb testing.TB) {
	tb.Helper()
	p := n.Proc()
	n.mu.Lock()
	n.down = true
	n.mu.Unlock()
	if n.isPaused() {
		p.Signal(tb, syscall.SIGCONT) // a stopped process dies of SIGKILL too, but say so
	}
	p.Kill(tb)
}

func (n *NATSNode) isPaused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}

// Restart starts a killed node again on its store and ports and waits
// until its monitor answers.
func (n *NATSNode) Restart(tb testing.TB) {
	tb.Helper()
	if p := n.Proc(); !p.Exited() {
		tb.Fatalf("e2e: restart %s: it still runs (pid %d)", n.Name, p.Pid())
	}
	n.start()
	Eventually(tb, StartTimeout, n.Name+" healthy (current with the meta leader and its streams)", func() error {
		if p := n.Proc(); p.Exited() {
			tb.Fatalf("e2e: %s exited on restart: %v\n%s", n.Name, p.ExitErr(), p.Tail(30))
		}
		return n.healthz("")
	})
}

// Pause SIGSTOPs the node: a node cut off from the network, from every
// side at once. Its peers and its clients keep their TCP connections but
// get nothing back — no reset, as with a pulled cable or a dropping
// firewall — so each must find out by its own timeouts (Raft heartbeats,
// client pings). Resume continues it.
func (n *NATSNode) Pause(tb testing.TB) {
	tb.Helper()
	n.Proc().Signal(tb, syscall.SIGSTOP)
	n.mu.Lock()
	n.paused = true
	n.mu.Unlock()
}

// Resume SIGCONTs a paused node: it rejoins the network.
func (n *NATSNode) Resume(tb testing.TB) {
	tb.Helper()
	n.Proc().Signal(tb, syscall.SIGCONT)
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
}

// healthz asks the monitor's /healthz with query (e.g.
// "js-enabled-only=true"); nil when it answers 200.
func (n *NATSNode) healthz(query string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	u := n.MonitorURL + "/healthz"
	if query != "" {
		u += "?" + query
	}
	r, err := Do(ctx, http.MethodGet, u, nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	if r.Status != http.StatusOK {
		return fmt.Errorf("%s /healthz: %v", n.Name, r)
	}
	return nil
}

// URLs is every node's client URL, comma-separated (nats.url).
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL
	}
	return strings.Join(urls, ",")
}

// Node returns the node named name (server_name), nil if none.
func (c *Cluster) Node(name string) *NATSNode {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// WaitReady waits until every node that is up answers /healthz (which,
// for a JetStream cluster member, means it is current with the meta
// leader and its streams), bounded by timeout.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.tb.Helper()
	Eventually(c.tb, timeout, "every NATS node healthy", func() error {
		for _, n := range c.Nodes {
			if !n.Up() {
				continue
			}
			if p := n.Proc(); p.Exited() {
				c.tb.Fatalf("e2e: %s exited: %v\n%s", n.Name, p.ExitErr(), p.Tail(30))
			}
			if err := n.healthz(""); err != nil {
				return err
			}
		}
		return nil
	})
}

// Connect opens a client connection to the cluster (every node's URL,
// reconnecting for ever), closed when the test ends.
func (c *Cluster) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(c.URLs(), nats.Name("e2e "+tb.Name()), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond), nats.PingInterval(time.Second), nats.MaxPingsOutstanding(2))
	if err != nil {
		tb.Fatalf("e2e: connect %s: %v", c.URLs(), err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// StreamLeader returns the server name of the node leading stream (a KV
// bucket's stream is "KV_<bucket>") and the names of every node holding
// it, the leader first.
func StreamLeader(ctx context.Context, js jetstream.JetStream, stream string) (leader string, replicas []string, err error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return "", nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return "", nil, fmt.Errorf("stream %s: no cluster info", stream)
	}
	if info.Cluster.Leader != "" {
		replicas = append(replicas, info.Cluster.Leader)
	}
	for _, p := range info.Cluster.Replicas { // the followers
		replicas = append(replicas, p.Name)
	}
	if info.Cluster.Leader == "" {
		return "", replicas, errors.New("stream " + stream + ": no leader")
	}
	return info.Cluster.Leader, replicas, nil
}

// WaitNewLeader polls stream's cluster info until a leader other than old
// answers, and returns it and when it was first seen.
func WaitNewLeader(tb testing.TB, js jetstream.JetStream, stream, old string, timeout time.Duration) (string, time.Time) {
	tb.Helper()
	var leader string
	Eventually(tb, timeout, "stream "+stream+" has a leader other than "+old, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		l, _, err := StreamLeader(ctx, js, stream)
		if err != nil {
			return err
		}
		if l == old {
			return fmt.Errorf("still led by %s", l)
		}
		leader = l
		return nil
	})
	return leader, time.Now()
}

// Leaderless lists every stream of the account, and the job streams'
// durable consumers (jobs.Consumer), that have no leader, or whose leader
// is gone: the Raft groups still electing after that node left. The meta
// layer answers the list. (Ephemeral consumers — KV watchers, ordered
// consumers — are R1 and recreated by their clients elsewhere; listing
// them waits on the dead node.) Every request is bounded by a second, and
// one that is not answered counts as leaderless.
func Leaderless(js jetstream.JetStream, gone string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	lister := js.ListStreams(ctx)
	var infos []*jetstream.StreamInfo
	for info := range lister.Info() {
		infos = append(infos, info)
	}
	err := lister.Err()
	cancel()
	if err != nil {
		return []string{"meta: " + err.Error()}
	}
	var out []string
	for _, info := range infos {
		if info.Cluster == nil || info.Cluster.Leader == "" || info.Cluster.Leader == gone {
			out = append(out, "stream "+info.Config.Name)
			continue
		}
		if info.Config.Retention != jetstream.WorkQueuePolicy {
			continue // job streams are the work queues
		}
		if err := consumerLed(js, info.Config.Name, jobs.Consumer, gone); err != nil {
			out = append(out, err.Error())
		}
	}
	return out
}

func consumerLed(js jetstream.JetStream, stream, name, gone string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, stream, name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("consumer %s/%s: %w", stream, name, err)
	}
	ci := c.CachedInfo()
	if ci.Cluster == nil || ci.Cluster.Leader == "" || ci.Cluster.Leader == gone {
		return fmt.Errorf("consumer %s/%s", stream, name)
	}
	return nil
}

// WaitLeaders polls Leaderless until every Raft group has a leader other
// than gone, and returns when that was first seen (the end of the
// cluster's leader elections after gone left) and the groups that were
// the last to elect.
func WaitLeaders(tb testing.TB, js jetstream.JetStream, gone string, timeout time.Duration) (time.Time, []string) {
	tb.Helper()
	var last []string
	Eventually(tb, timeout, "every stream and consumer led by a node other than "+gone, func() error {
		if l := Leaderless(js, gone); len(l) > 0 {
			last = l
			return fmt.Errorf("no leader yet: %s", strings.Join(l, ", "))
		}
		return nil
	})
	return time.Now(), last
}
