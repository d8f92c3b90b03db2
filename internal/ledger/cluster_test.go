package ledger

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

// startCluster runs a one-node Redis Cluster owning every slot: it rejects
// any script whose keys are not in one slot, as a real cluster does.
func startCluster(t *testing.T) *redis.ClusterClient {
	t.Helper()
	r := testutil.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	ctx := context.Background()
	c := r.Client(t)
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		info, _ := c.ClusterInfo(ctx).Result()
		return strings.Contains(info, "cluster_state:ok")
	}, "cluster not ok")
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{r.Addr()}})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestRedisCluster(t *testing.T) {
	cc := startCluster(t)
	ctx := context.Background()
	// The server does enforce slots for scripts: touching two projects'
	// keys in one script fails.
	bad := redis.NewScript(`redis.call('GET', KEYS[1]); return redis.call('GET', 'minuted:{other}:project')`)
	if err := bad.Run(ctx, cc, []string{"minuted:{p}:project"}).Err(); err == nil {
		t.Fatal("cross-slot script accepted: this test would prove nothing")
	}
	if err := redis.NewScript(`return 1`).Run(ctx, cc, []string{"minuted:{a}:x", "minuted:{b}:x"}).Err(); err == nil {
		t.Fatal("cross-slot KEYS accepted")
	}

	l := New(cc, Options{})
	projects := []string{"p1", "p2", "p3"}
	for i, p := range projects {
		if _, _, err := l.Put(ctx, p, Settings{Tariff: tariff.Default, ThresholdsMinutes: []float64{1}}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Ensure(ctx, p, Settings{Tariff: tariff.Default}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.TopUp(ctx, p, 100, "r", KindTopUp); err != nil {
			t.Fatal(err)
		}
		for c := range 3 {
			ch := fmt.Sprint("c", c)
			if _, err := l.Open(ctx, Open{Project: p, Node: "n", Channel: ch, AnsweredAt: t0}); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Debit(ctx, p, "n", ch, tariff.Default.Block(0)); err != nil {
				t.Fatal(err)
			}
			if c < 2 {
				if _, err := l.Settle(ctx, Settlement{Project: p, Node: "n", Channel: ch, AnsweredAt: t0, EndedAt: t0.Add(time.Minute), Billed: int64(60 * (c + i))}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	list, err := l.List(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("List = %v, %v", list, err)
	}
	for i, p := range list {
		if want := int64(100 - 120*i - 120); p.BalanceSeconds != want || p.LiveCalls != 1 {
			t.Errorf("%s: %+v, want balance %d", p.ID, p, want)
		}
		live, err := l.Live(ctx, p.ID)
		if err != nil || len(live) != 1 {
			t.Errorf("Live(%s) = %v, %v", p.ID, live, err)
		}
		cdrs, err := l.CDRs(ctx, p.ID, 10)
		if err != nil || len(cdrs) != 2 {
			t.Errorf("CDRs(%s) = %v, %v", p.ID, cdrs, err)
		}
		es, err := l.Entries(ctx, p.ID, 10)
		if err != nil || len(es) < 4 {
			t.Errorf("Entries(%s) = %v, %v", p.ID, es, err)
		}
	}
	if err := l.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// The cluster client's node holds every key; it must carry {project}.
	var node *redis.Client
	_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { node = c; return nil })
	checkKeys(t, node, l, projects)
}
