package ledger

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

// The two benchmarks run on identical servers so their ratio is the cost of
// a ledger debit (one script: 5 keys, ledger entry, thresholds, live set)
// over the cheapest possible EVALSHA. Sub-benchmarks: AOF fsync always (as
// the tests run) and everysec (a common production setting).
var benchFsync = []string{"always", "everysec"}

func benchServer(b *testing.B, fsync string) *redis.Client {
	r := testutil.StartRedis(b, "--appendfsync", fsync)
	return redis.NewClient(&redis.Options{Addr: r.Addr(), PoolSize: 64})
}

func BenchmarkDebit(b *testing.B) {
	for _, fs := range benchFsync {
		b.Run("fsync="+fs, func(b *testing.B) {
			rdb := benchServer(b, fs)
			defer rdb.Close()
			ctx := context.Background()
			l := New(rdb, Options{})
			if _, _, err := l.Put(ctx, "bench", Settings{Tariff: tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}}); err != nil {
				b.Fatal(err)
			}
			if _, err := l.TopUp(ctx, "bench", 1<<40, "bench", KindTopUp); err != nil {
				b.Fatal(err)
			}
			var ids atomic.Int64
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ch := fmt.Sprint("c", ids.Add(1))
				c, err := l.Open(ctx, Open{Project: "bench", Node: "n", Channel: ch, AnsweredAt: t0})
				if err != nil {
					b.Error(err)
					return
				}
				for k := 0; pb.Next(); k++ {
					if r, err := l.Debit(ctx, "bench", "n", ch, c.Tariff.Block(k)); err != nil || !r.Applied {
						b.Errorf("debit: %+v %v", r, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}

func BenchmarkRawEvalsha(b *testing.B) {
	incr := redis.NewScript(`return redis.call('INCRBY', KEYS[1], ARGV[1])`)
	for _, fs := range benchFsync {
		b.Run("fsync="+fs, func(b *testing.B) {
			rdb := benchServer(b, fs)
			defer rdb.Close()
			ctx := context.Background()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := incr.Run(ctx, rdb, []string{"minuted:{bench}:n"}, 1).Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
}
