package testutil

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// NATSCluster is a cluster of nats-server processes (the real binary on
// the machine), each with JetStream on its own store, on free loopback
// ports. Nodes can be killed (SIGKILL) and restarted on the same ports and
// stores.
type NATSCluster struct {
	Bin   string
	Nodes []*NATSNode
	mu    sync.Mutex
}

// NATSNode is one nats-server of a NATSCluster.
type NATSNode struct {
	Name        string
	Port        int // client port
	ClusterPort int
	HTTPPort    int // monitoring (/jsz, /healthz)
	Dir         string
	conf        string
	cmd         *exec.Cmd
}

// lookBin finds a server binary, skipping the test when it is missing and
// CI is unset (failing under CI).
func lookBin(tb testing.TB, names ...string) string {
	tb.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
		if _, err := os.Stat(n); err == nil {
			return n
		}
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s not installed (apt-get install -y nats-server redis-server redis-tools)", names[0])
	}
	tb.Skipf("%s not installed", names[0])
	return ""
}

// StartNATSCluster starts n nats-server processes with JetStream, routed
// to each other, and waits until JetStream has a meta leader that every
// node agrees on. They are killed when the test ends.
func StartNATSCluster(tb testing.TB, n int) *NATSCluster {
	tb.Helper()
	c := &NATSCluster{Bin: lookBin(tb, "nats-server", "/usr/sbin/nats-server")}
	for i := range n {
		c.Nodes = append(c.Nodes, &NATSNode{
			Name: fmt.Sprintf("n%d", i+1), Port: FreePort(tb), ClusterPort: FreePort(tb), HTTPPort: FreePort(tb),
			Dir: tb.TempDir(),
		})
	}
	routes := make([]string, n)
	for i, nd := range c.Nodes {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", nd.ClusterPort)
	}
	for _, nd := range c.Nodes {
		nd.conf = filepath.Join(nd.Dir, "nats.conf")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
log_file: %q
jetstream { store_dir: %q }
cluster {
  name: minuted-test
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, nd.Name, nd.Port, nd.HTTPPort, filepath.Join(nd.Dir, "nats.log"), filepath.Join(nd.Dir, "js"), nd.ClusterPort, strings.Join(routes, ", "))
		if err := os.WriteFile(nd.conf, []byte(conf), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() {
		for i := range c.Nodes {
			c.Kill(i)
		}
	})
	for i := range c.Nodes {
		c.start(tb, i)
	}
	c.WaitReady(tb, 30*time.Second)
	return c
}

func (c *NATSCluster) start(tb testing.TB, i int) {
	tb.Helper()
	nd := c.Nodes[i]
	cmd := exec.Command(c.Bin, "-c", nd.conf)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start nats-server %s: %v", nd.Name, err)
	}
	c.mu.Lock()
	nd.cmd = cmd
	c.mu.Unlock()
}

// URL is the comma-separated client URLs of every node, as nats.go and
// minuted's nats.url take them.
func (c *NATSCluster) URL() string {
	urls := make([]string, len(c.Nodes))
	for i, nd := range c.Nodes {
		urls[i] = nd.URL()
	}
	return strings.Join(urls, ",")
}

// URL is the client URL of the node.
func (nd *NATSNode) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", nd.Port) }

// Kill sends SIGKILL to node i (a crash: no lame-duck, no leader hand-off).
func (c *NATSCluster) Kill(i int) {
	c.mu.Lock()
	cmd := c.Nodes[i].cmd
	c.Nodes[i].cmd = nil
	c.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}

// Restart starts a killed node again on its ports and store and waits
// until it has rejoined (healthy, with the cluster's meta leader).
func (c *NATSCluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	c.start(tb, i)
	c.WaitReady(tb, 60*time.Second)
}

// Running reports whether node i is up (not killed).
func (c *NATSCluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Nodes[i].cmd != nil
}

type jsz struct {
	Meta *struct {
		Leader      string `json:"leader"`
		ClusterSize int    `json:"cluster_size"`
	} `json:"meta_cluster"`
}

// MetaLeader is the JetStream meta leader node i reports ("" if none or
// the node does not answer).
func (c *NATSCluster) MetaLeader(i int) string {
	var j jsz
	if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/jsz", c.Nodes[i].HTTPPort), &j); err != nil || j.Meta == nil {
		return ""
	}
	return j.Meta.Leader
}

// WaitReady waits until every running node answers /healthz with 200
// (JetStream current) and all agree on one meta leader.
func (c *NATSCluster) WaitReady(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	why := new(reason)
	Eventually(tb, timeout, func() bool {
		leader := ""
		for i, nd := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", nd.HTTPPort))
			if err != nil {
				*why = reason(fmt.Sprintf("%s: %v", nd.Name, err))
				return false
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				*why = reason(fmt.Sprintf("%s: /healthz %d", nd.Name, resp.StatusCode))
				return false
			}
			l := c.MetaLeader(i)
			if l == "" || (leader != "" && l != leader) {
				*why = reason(fmt.Sprintf("%s: meta leader %q (others %q)", nd.Name, l, leader))
				return false
			}
			leader = l
		}
		return true
	}, "NATS cluster not ready: %s", why)
}

// reason is the last cause a poll gave, printed when it times out.
type reason string

func (r *reason) String() string { return string(*r) }

func getJSON(url string, out any) error {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// RedisCluster is a Redis Cluster of redis-server processes (3 masters,
// 3 replicas) on free loopback ports, formed with redis-cli --cluster
// create. Every node runs with AOF (appendfsync always) and a short
// cluster-node-timeout so that failover takes a few seconds.
type RedisCluster struct {
	Nodes       []*Redis
	NodeTimeout time.Duration
}

// StartRedisCluster starts and forms a cluster of 3 masters with one
// replica each, waits until every node says cluster_state:ok and every
// replica is in sync; the nodes are killed when the test ends. extra
// arguments go to every redis-server.
func StartRedisCluster(tb testing.TB, extra ...string) *RedisCluster {
	tb.Helper()
	lookBin(tb, "redis-server")
	cli := lookBin(tb, "redis-cli")
	rc := &RedisCluster{NodeTimeout: time.Second}
	args := append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", fmt.Sprint(rc.NodeTimeout.Milliseconds())}, extra...)
	for range 6 {
		r := &Redis{Port: FreePort(tb), Dir: tb.TempDir(), Args: args}
		rc.Nodes = append(rc.Nodes, r)
		tb.Cleanup(r.Stop)
		r.Start(tb)
	}
	create := []string{"--cluster", "create"}
	for _, r := range rc.Nodes {
		create = append(create, r.Addr())
	}
	create = append(create, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(cli, create...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	rc.WaitOK(tb, 30*time.Second)
	return rc
}

// Addrs are host:port of every node.
func (rc *RedisCluster) Addrs() []string {
	out := make([]string, len(rc.Nodes))
	for i, r := range rc.Nodes {
		out[i] = r.Addr()
	}
	return out
}

// URL is the go-redis cluster URL redis://h1:p1?addr=h2:p2&... listing
// every node as a seed (minuted's redis.url).
func (rc *RedisCluster) URL() string {
	a := rc.Addrs()
	return "redis://" + a[0] + "?addr=" + strings.Join(a[1:], "&addr=")
}

// Client returns a cluster client closed at test end.
func (rc *RedisCluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// ClusterNode is one line of CLUSTER NODES.
type ClusterNode struct {
	ID, Addr, MasterID string
	Master, Failed     bool
}

// Topology returns CLUSTER NODES as node i sees it.
func (rc *RedisCluster) Topology(ctx context.Context, i int) ([]ClusterNode, error) {
	c := redis.NewClient(&redis.Options{Addr: rc.Nodes[i].Addr(), MaxRetries: -1})
	defer c.Close()
	s, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []ClusterNode
	for line := range strings.SplitSeq(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		flags := f[2]
		n := ClusterNode{ID: f[0], Addr: strings.SplitN(f[1], "@", 2)[0], MasterID: f[3],
			Master: strings.Contains(flags, "master"), Failed: strings.Contains(flags, "fail")}
		out = append(out, n)
	}
	return out, nil
}

// index returns the node index of addr (-1 if unknown).
func (rc *RedisCluster) index(addr string) int {
	for i, r := range rc.Nodes {
		if r.Addr() == addr {
			return i
		}
	}
	return -1
}

// Role is ROLE of node i: "master", "slave" or "" if it does not answer.
func (rc *RedisCluster) Role(ctx context.Context, i int) string {
	c := redis.NewClient(&redis.Options{Addr: rc.Nodes[i].Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	v, err := c.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return ""
	}
	s, _ := v[0].(string)
	return s
}

// MasterOf returns the index of the node that serves key's slot now, and
// the index of its replica.
func (rc *RedisCluster) MasterOf(tb testing.TB, key string) (master, replica int) {
	tb.Helper()
	ctx := context.Background()
	slot := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	defer slot.Close()
	cl, err := slot.MasterForKey(ctx, key)
	if err != nil {
		tb.Fatalf("master for %q: %v", key, err)
	}
	master = rc.index(cl.Options().Addr)
	replica = -1
	for i := range rc.Nodes {
		if i == master || rc.Role(ctx, i) != "slave" {
			continue
		}
		top, err := rc.Topology(ctx, i)
		if err != nil {
			continue
		}
		var masterID, myMaster string
		for _, n := range top {
			if n.Addr == rc.Nodes[master].Addr() {
				masterID = n.ID
			}
			if n.Addr == rc.Nodes[i].Addr() {
				myMaster = n.MasterID
			}
		}
		if masterID != "" && masterID == myMaster {
			replica = i
		}
	}
	if master < 0 || replica < 0 {
		tb.Fatalf("key %q: master %d replica %d not found", key, master, replica)
	}
	return master, replica
}

// Kill sends SIGKILL to node i.
func (rc *RedisCluster) Kill(i int) { rc.Nodes[i].Stop() }

// Restart starts node i again on its port and dir (a killed master
// rejoins as a replica of the node that took over) and waits for the
// cluster to be ok and in sync.
func (rc *RedisCluster) Restart(tb testing.TB, i int) {
	tb.Helper()
	rc.Nodes[i].Start(tb)
	rc.WaitOK(tb, 30*time.Second)
}

// WaitPromoted waits until node i is a master and every live node says
// cluster_state:ok (after its master was killed, or CLUSTER FAILOVER).
func (rc *RedisCluster) WaitPromoted(tb testing.TB, i int, timeout time.Duration) {
	tb.Helper()
	Eventually(tb, timeout, func() bool { return rc.Role(context.Background(), i) == "master" },
		"redis node %s not promoted", rc.Nodes[i].Addr())
	rc.WaitOK(tb, timeout)
}

// Failover runs CLUSTER FAILOVER on replica i (a manual failover: its
// master stops accepting writes, the replica catches up, then takes over,
// so no acknowledged write is lost) and waits until it is master.
func (rc *RedisCluster) Failover(tb testing.TB, i int) {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: rc.Nodes[i].Addr()})
	defer c.Close()
	if err := c.Do(context.Background(), "CLUSTER", "FAILOVER").Err(); err != nil {
		tb.Fatalf("CLUSTER FAILOVER on %s: %v", rc.Nodes[i].Addr(), err)
	}
	rc.WaitPromoted(tb, i, 30*time.Second)
}

// WaitOK waits until every running node reports cluster_state:ok with all
// slots served, and every running replica has its master link up.
func (rc *RedisCluster) WaitOK(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	ctx := context.Background()
	why := new(reason)
	Eventually(tb, timeout, func() bool {
		for _, r := range rc.Nodes {
			if r.cmd == nil {
				continue
			}
			c := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1})
			info, err := c.ClusterInfo(ctx).Result()
			repl, err2 := c.Info(ctx, "replication").Result()
			c.Close()
			switch {
			case err != nil || err2 != nil:
				*why = reason(fmt.Sprintf("%s: %v %v", r.Addr(), err, err2))
				return false
			case !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384"):
				*why = reason(r.Addr() + ": " + strings.ReplaceAll(info, "\r\n", " "))
				return false
			case strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up"):
				*why = reason(r.Addr() + ": replica link down")
				return false
			}
		}
		return true
	}, "redis cluster not ok: %s", why)
}
