package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

// op is one message of a call as bill would see it (redelivered, reordered).
type op struct {
	kind     string // open, debit, settle
	block    int
	billedOf int64 // talk ms of the settlement
	est      bool
}

type simCall struct {
	project, channel string
	talk, estTalk    int64 // ms; estTalk > 0: first settled as estimated
	ops              []op
	mu               sync.Mutex
	tariff           *tariff.Tariff // snapshot, once opened/settled
	billed           int64          // what the ledger reports as final
}

func buildCalls(rng *rand.Rand, projects []string, n int) []*simCall {
	calls := make([]*simCall, n)
	for i := range calls {
		c := &simCall{project: projects[rng.IntN(len(projects))], channel: fmt.Sprintf("c%03d", i), talk: rng.Int64N(400_000)}
		if rng.IntN(5) == 0 {
			c.estTalk = c.talk + rng.Int64N(120_000) - 60_000
			if c.estTalk <= 0 {
				c.estTalk = 1
			}
		}
		opened := rng.IntN(10) != 0 // some calls are only ever settled
		if opened {
			for range 1 + rng.IntN(2) {
				c.ops = append(c.ops, op{kind: "open"})
			}
		}
		var rest []op
		if opened {
			for k := range 12 { // more blocks than some calls last: the script gets them all
				if rng.IntN(5) != 0 {
					for range 1 + rng.IntN(2) {
						rest = append(rest, op{kind: "debit", block: k})
					}
				}
			}
		}
		rng.Shuffle(len(rest), func(i, j int) { rest[i], rest[j] = rest[j], rest[i] })
		// Settlements keep their order (estimated before exact) but are spread
		// among the debits and duplicated.
		var settles []op
		if c.estTalk > 0 {
			settles = append(settles, op{kind: "settle", billedOf: c.estTalk, est: true})
		}
		settles = append(settles, op{kind: "settle", billedOf: c.talk})
		for range rng.IntN(3) {
			settles = append(settles, settles[rng.IntN(len(settles))])
		}
		pos := len(rest) / 2
		for _, s := range settles {
			pos += rng.IntN(len(rest) - pos + 1)
			rest = append(rest[:pos], append([]op{s}, rest[pos:]...)...)
			pos++
		}
		c.ops = append(c.ops, rest...)
		calls[i] = c
	}
	return calls
}

// run plays the ops of c; blocks of calls are computed from the snapshot
// tariff the ledger returned, as bill does.
func (c *simCall) step(ctx context.Context, l *Ledger, o op) error {
	switch o.kind {
	case "open":
		cl, err := l.Open(ctx, Open{Project: c.project, Node: "n1", Channel: c.channel, AnsweredAt: t0})
		if err != nil {
			return err
		}
		c.tariff = &cl.Tariff
	case "debit":
		if c.tariff == nil {
			return nil
		}
		if o.block > c.tariff.BlockAt(time.Duration(c.talk)*time.Millisecond) {
			return nil // the call ended before this block
		}
		_, err := l.Debit(ctx, c.project, "n1", c.channel, c.tariff.Block(o.block))
		return err
	case "settle":
		if c.tariff == nil { // never opened: Settle snapshots the tariff
			cl, _ := l.Call(ctx, c.project, "n1", c.channel)
			tr := tariff.Default
			if cl.Tariff.IncrementSeconds > 0 {
				tr = cl.Tariff
			}
			c.tariff = &tr
		}
		r, err := l.Settle(ctx, Settlement{Project: c.project, Node: "n1", Channel: c.channel, AnsweredAt: t0,
			EndedAt: t0.Add(time.Duration(o.billedOf) * time.Millisecond), Billed: c.tariff.BilledMS(o.billedOf),
			TalkMS: o.billedOf, Estimated: o.est})
		if err != nil {
			return err
		}
		if r.Applied {
			c.billed = r.Billed
		}
	}
	return nil
}

func TestPropertyBalancesAddUp(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	r := testutil.StartRedis(t)
	rdb := r.Client(t)
	ctx := context.Background()
	l := New(rdb, Options{})
	projects := []string{"alpha", "beta", "gamma-1"}
	tariffs := []tariff.Tariff{tariff.Default, {MinimumSeconds: 30, IncrementSeconds: 6}, {FreeSeconds: 5, MinimumSeconds: 1, IncrementSeconds: 1},
		{MinimumSeconds: 60, IncrementSeconds: 30, CountInitiatedSeconds: true}}
	topups := map[string]int64{}
	for _, p := range projects {
		if _, _, err := l.Put(ctx, p, Settings{Tariff: tariffs[0], ThresholdsMinutes: []float64{100, 30, 0}}); err != nil {
			t.Fatal(err)
		}
	}
	calls := buildCalls(rng, projects, 120)
	const workers = 6
	var wg sync.WaitGroup
	errs := make(chan error, workers+1)
	for w := range workers {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)))
		var mine []*simCall
		for i := w; i < len(calls); i += workers {
			mine = append(mine, calls[i])
		}
		wg.Go(func() {
			next := make([]int, len(mine))
			for left := len(mine); left > 0; {
				i := wrng.IntN(len(mine))
				if next[i] == len(mine[i].ops) {
					continue
				}
				if err := mine[i].step(ctx, l, mine[i].ops[next[i]]); err != nil {
					errs <- err
					return
				}
				if next[i]++; next[i] == len(mine[i].ops) {
					left--
				}
			}
		})
	}
	// Meanwhile operators top up (with retries of the same reference) and
	// change tariffs, which only calls answered later see.
	wg.Go(func() {
		trng := rand.New(rand.NewPCG(seed, 99))
		for i := range 60 {
			p := projects[trng.IntN(len(projects))]
			secs := trng.Int64N(3000) + 1
			for range 1 + trng.IntN(2) {
				res, err := l.TopUp(ctx, p, secs, fmt.Sprint("ref-", i), KindTopUp)
				if err != nil {
					errs <- err
					return
				}
				if res.Applied {
					topups[p] += secs
				}
			}
			if _, _, err := l.Put(ctx, p, Settings{Tariff: tariffs[trng.IntN(len(tariffs))], ThresholdsMinutes: []float64{100, 30, 0}}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	billed := map[string]int64{}
	perCall := map[string]int64{}
	for _, c := range calls {
		billed[c.project] += c.billed
		want := c.tariff.BilledMS(c.talk) // the exact settlement always wins
		if c.billed != want {
			t.Errorf("call %s (talk %d ms, est %d, %+v) billed %d, want %d", c.channel, c.talk, c.estTalk, *c.tariff, c.billed, want)
		}
		cl, err := l.Call(ctx, c.project, "n1", c.channel)
		if err != nil || !cl.Settled || cl.Debited != c.billed {
			t.Errorf("call %s: %+v, %v; want settled with %d", c.channel, cl, err, c.billed)
		}
		perCall[c.project+" n1/"+c.channel] = 0
	}
	for _, p := range projects {
		pr, err := l.Get(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if pr.BalanceSeconds != topups[p]-billed[p] || pr.LiveCalls != 0 {
			t.Errorf("project %s: balance %d, want top-ups %d - billed %d; live %d", p, pr.BalanceSeconds, topups[p], billed[p], pr.LiveCalls)
		}
		// The stream, oldest first, is a chain of balances ending at the balance.
		a, err := l.Audit(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if !a.OK() || !a.Complete || a.CreditedSeconds != topups[p] || a.BilledSeconds != billed[p] {
			t.Errorf("project %s: audit %+v; want complete, no problems, credited %d, billed %d", p, a, topups[p], billed[p])
		}
		for k, v := range a.PerCall {
			perCall[p+" "+k] = v
		}
	}
	for _, c := range calls {
		if got := perCall[c.project+" n1/"+c.channel]; got != c.billed {
			t.Errorf("call %s: ledger entries sum to %d, billed %d", c.channel, got, c.billed)
		}
	}
	checkKeys(t, rdb, l, projects)
}

var tagRE = regexp.MustCompile(`^minuted:\{([^}]*)\}:(project|thresholds|refs|ledger|live|cdrs|recent|call:.+/.+)$`)

// checkKeys scans every key the ledger wrote: each carries {project}.
func checkKeys(t *testing.T, rdb redis.UniversalClient, l *Ledger, projects []string) {
	t.Helper()
	ctx := context.Background()
	known := map[string]bool{}
	for _, p := range projects {
		known[p] = true
	}
	seen := map[string]bool{}
	it := rdb.Scan(ctx, 0, "*", 100).Iterator()
	for it.Next(ctx) {
		k := it.Val()
		if k == l.projectsKey() {
			continue
		}
		m := tagRE.FindStringSubmatch(k)
		if m == nil || !known[m[1]] {
			t.Errorf("key %q does not carry the hash tag of a project", k)
			continue
		}
		seen[m[2][:min(len(m[2]), 4)]] = true
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seen) < 7 {
		t.Errorf("only key kinds %v were written; the scan proves little", seen)
	}
}
