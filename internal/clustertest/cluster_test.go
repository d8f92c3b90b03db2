//go:build cluster

package clustertest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/sim"
)

// TestClusterEndToEnd is internal/app's TestSyntheticWorkloadEndToEnd on
// the cluster topology: ≥1,000 synthetic calls spread over three Asterisk
// doubles, each with its own `minuted ingest` process, billed by two
// `minuted bill` processes, projects set up through a `minuted api`
// process: one exact CDR per answered call, every balance exact. It
// reports the throughput of the whole path (ARI event → CDR settled).
func TestClusterEndToEnd(t *testing.T) {
	tp := startTopo(t, topoOptions{ingest: 3, bill: 2, procs: true})
	projects := tp.projects(t)
	perNode := 334
	if n := os.Getenv("MINUTED_CLUSTER_CALLS"); n != "" {
		v, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("MINUTED_CLUSTER_CALLS=%q: %v", n, err)
		}
		perNode = v / len(tp.sims)
	}
	tr := newTruth()
	began := time.Now()
	tp.generate(t, tr, projects, perNode, 42)
	generated := time.Since(began)
	tp.verify(t, tr, 3*time.Minute)
	settled := time.Since(began)
	events := int64(0)
	for _, s := range tp.sims {
		events += s.Stats().Emitted
	}
	t.Logf("throughput: %d calls (%d answered, %d ARI events) from 3 nodes: generated in %v, all settled and verified after %v: %.0f calls/s, %.0f events/s end to end",
		tr.calls, tr.total(), events, generated.Round(time.Millisecond), settled.Round(time.Millisecond),
		float64(tr.calls)/settled.Seconds(), float64(events)/settled.Seconds())
}

// TestClusterFailures runs a steady workload plus real-time calls that
// stay up throughout, and meanwhile: kills -9 the NATS node leading the
// CALLS stream and restarts it, kills -9 the Redis master of the busiest
// project (its replica takes over) and restarts it, and fails another
// master over by hand (CLUSTER FAILOVER). Afterwards every call is billed
// exactly once: one exact CDR per answered call, balances exact, no
// estimated CDR.
func TestClusterFailures(t *testing.T) {
	// The production orphan_after: a call is closed as estimated only when
	// its node has not listed it for 35 s (a NATS leader election stalls
	// the consumer for seconds; see docs/deployment.md).
	tp := startTopo(t, topoOptions{ingest: 3, bill: 2, procs: true, orphanAfter: config.Default().Bill.OrphanAfter})
	projects := tp.projects(t)
	ctx := context.Background()
	tr := newTruth()

	// Real-time calls on a 1/1 tariff: ticked every second across every fault.
	var lives []*sim.LiveCall
	for _, s := range tp.sims {
		for range 2 {
			lc, err := s.StartCall(ctx, sim.CallOptions{Project: "p-11"})
			if err != nil {
				t.Fatal(err)
			}
			lives = append(lives, lc)
		}
	}

	// Steady synthetic load in rounds until stopped.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	rounds := 0
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			rounds++
			tp.generate(t, tr, projects, 30, uint64(1000*rounds))
			time.Sleep(100 * time.Millisecond)
		}
	})
	var faults []string
	fault := func(format string, args ...any) {
		f := fmt.Sprintf(format, args...)
		faults = append(faults, f)
		t.Logf("fault %d at %s: %s", len(faults), time.Now().Format("15:04:05.000"), f)
	}
	time.Sleep(2 * time.Second)

	// 1. NATS: kill the CALLS stream leader, let the load run on two nodes, restart it.
	leader := tp.streamLeader(t, call.CallsStream)
	fault("kill -9 nats-server %s (CALLS stream leader)", tp.nats.Nodes[leader].Name)
	tp.nats.Kill(leader)
	time.Sleep(4 * time.Second)
	if nl := tp.streamLeader(t, call.CallsStream); nl == leader {
		t.Errorf("CALLS still led by the killed node %s", tp.nats.Nodes[leader].Name)
	}
	tp.nats.Restart(t, leader)
	fault("restarted nats-server %s; rejoined and current", tp.nats.Nodes[leader].Name)
	time.Sleep(2 * time.Second)

	// 2. Redis: kill -9 the master of p-11 (the real-time calls' project).
	key := "minuted:{p-11}:project"
	master, replica := tp.rds.MasterOf(t, key)
	p50, worst := tp.replicationDelay(t, master, "minuted:{p-11}:replication-probe", time.Second)
	fault("kill -9 redis master %s (slot of %s; write-to-replica delay under load before the kill: median %v, max %v)",
		tp.rds.Nodes[master].Addr(), key, p50.Round(time.Microsecond), worst.Round(time.Microsecond))
	killed := time.Now()
	tp.rds.Kill(master)
	tp.rds.WaitPromoted(t, replica, 30*time.Second)
	fault("replica %s promoted %v after the kill", tp.rds.Nodes[replica].Addr(), time.Since(killed).Round(100*time.Millisecond))
	time.Sleep(2 * time.Second)
	tp.rds.Restart(t, master)
	fault("old master %s restarted, rejoined as replica", tp.rds.Nodes[master].Addr())

	// 3. Redis: a manual failover of another project's master.
	for _, p := range projects {
		m, r := tp.rds.MasterOf(t, "minuted:{"+p+"}:project")
		if m != replica {
			began := time.Now()
			tp.rds.Failover(t, r)
			fault("CLUSTER FAILOVER of %s's master %s to %s took %v", p, tp.rds.Nodes[m].Addr(), tp.rds.Nodes[r].Addr(), time.Since(began).Round(100*time.Millisecond))
			break
		}
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	for _, lc := range lives {
		tr.add(t, lc.Hangup(16))
	}
	cs := tp.verify(t, tr, 3*time.Minute)
	t.Logf("under %d faults: %d calls (%d answered, %d of them real-time calls up throughout) in %d rounds, every one billed once, balances exact; %d estimated CDRs (%d after the exact one)",
		len(faults), tr.calls, tr.total(), len(lives), rounds, cs.estimated, cs.estimatedAfterExact)
}

// streamLeader is the index of the NATS node leading stream.
func (tp *topo) streamLeader(t *testing.T, stream string) int {
	t.Helper()
	var name string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := tp.js.Stream(ctx, stream)
		if err == nil {
			info, err := s.Info(ctx)
			if err == nil && info.Cluster != nil && info.Cluster.Leader != "" {
				name = info.Cluster.Leader
			}
		}
		cancel()
		for i, n := range tp.nats.Nodes {
			if n.Name == name && tp.nats.Running(i) {
				return i
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("stream %s has no leader among the running nodes (last %q)", stream, name)
	return -1
}

// replicationDelay measures, for d under the running load, how long a
// write to master i takes to reach its replica: SET then WAIT 1 on one
// connection, the round trip a kill -9 of the master can lose. It returns
// the median and the largest delay.
func (tp *topo) replicationDelay(t *testing.T, i int, key string, d time.Duration) (p50, worst time.Duration) {
	t.Helper()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: tp.rds.Nodes[i].Addr(), PoolSize: 1})
	defer c.Close()
	var ds []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		began := time.Now()
		var n *redis.IntCmd
		_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, began.UnixNano(), time.Minute)
			n = redis.NewIntCmd(ctx, "WAIT", 1, 1000)
			_ = p.Process(ctx, n)
			return nil
		})
		if err != nil || n.Val() != 1 {
			t.Fatalf("SET+WAIT 1 on %s: %v (acks %d)", tp.rds.Nodes[i].Addr(), err, n.Val())
		}
		ds = append(ds, time.Since(began))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)-1]
}
