package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	rdb redis.UniversalClient
	l   *Ledger
	now atomic.Int64 // ms
}

func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	r := testutil.StartRedis(tb)
	f := &fixture{rdb: r.Client(tb)}
	f.now.Store(t0.UnixMilli())
	f.l = New(f.rdb, Options{Now: func() time.Time { return time.UnixMilli(f.now.Load()) }})
	return f
}

func settings(policy string, credit int64, ths ...float64) Settings {
	return Settings{Tariff: tariff.Default, ThresholdsMinutes: ths, CreditLimitSeconds: credit, OnExhausted: policy}
}

// project creates p with the given settings and balance.
func (f *fixture) project(tb testing.TB, p string, s Settings, balance int64) {
	tb.Helper()
	ctx := context.Background()
	if _, _, err := f.l.Put(ctx, p, s); err != nil {
		tb.Fatal(err)
	}
	if balance != 0 {
		if _, err := f.l.TopUp(ctx, p, balance, "initial", KindAdjustment); err != nil {
			tb.Fatal(err)
		}
	}
}

func (f *fixture) open(tb testing.TB, p, ch string) Call {
	tb.Helper()
	c, err := f.l.Open(context.Background(), Open{Project: p, Node: "n1", Channel: ch, AnsweredAt: t0})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func (f *fixture) debit(tb testing.TB, p, ch string, k int) DebitResult {
	tb.Helper()
	r, err := f.l.Debit(context.Background(), p, "n1", ch, tariff.Default.Block(k))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func (f *fixture) settle(tb testing.TB, p, ch string, billed int64, estimated bool) SettleResult {
	tb.Helper()
	r, err := f.l.Settle(context.Background(), Settlement{Project: p, Node: "n1", Channel: ch,
		AnsweredAt: t0, EndedAt: t0.Add(time.Duration(billed) * time.Second), Billed: billed,
		TalkMS: billed * 1000, Estimated: estimated})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// exhaust makes call n1/c of project p (hangup, given balance < 120) debit
// block 0 and be refused block 1.
func (f *fixture) exhaust(tb testing.TB, balance int64) DebitResult {
	tb.Helper()
	f.project(tb, "p", settings(Hangup, 0), balance)
	f.open(tb, "p", "c")
	f.debit(tb, "p", "c", 0)
	return f.debit(tb, "p", "c", 1)
}

func (f *fixture) balance(tb testing.TB, p string) int64 {
	tb.Helper()
	pr, err := f.l.Get(context.Background(), p)
	if err != nil {
		tb.Fatal(err)
	}
	return pr.BalanceSeconds
}

func TestPutGetListEnsure(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bad := []struct {
		id string
		s  Settings
	}{
		{"bad id", settings(Allow, 0)},
		{"_unbilled", settings(Allow, 0)},
		{"p", Settings{Tariff: tariff.Tariff{MinimumSeconds: 60}}},
		{"p", settings(Allow, -1)},
		{"p", settings("maybe", 0)},
		{"p", settings(Allow, 0, 10, -5)},
	}
	for _, b := range bad {
		if _, _, err := f.l.Put(ctx, b.id, b.s); !errors.Is(err, ErrInvalid) {
			t.Errorf("Put(%q, %+v) = %v, want ErrInvalid", b.id, b.s, err)
		}
	}
	if _, err := f.l.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get absent = %v, want ErrNotFound", err)
	}
	p, created, err := f.l.Put(ctx, "b-proj", Settings{Tariff: tariff.Tariff{MinimumSeconds: 30, IncrementSeconds: 6}, ThresholdsMinutes: []float64{0, 10, 10, 2.5}})
	if err != nil || !created {
		t.Fatalf("Put = %v, %v", created, err)
	}
	if fmt.Sprint(p.ThresholdsMinutes) != "[10 2.5 0]" || p.OnExhausted != Allow || p.BalanceSeconds != 0 || !p.CreatedAt.Equal(t0) {
		t.Fatalf("Put returned %+v", p)
	}
	if _, err := f.l.TopUp(ctx, "b-proj", 100, "r1", KindTopUp); err != nil {
		t.Fatal(err)
	}
	p2, created, err := f.l.Put(ctx, "b-proj", settings(Hangup, 30))
	if err != nil || created {
		t.Fatalf("second Put created=%v err=%v", created, err)
	}
	if p2.BalanceSeconds != 100 || p2.BalanceMinutes != 1.67 || p2.OnExhausted != Hangup || p2.CreditLimitSeconds != 30 ||
		fmt.Sprint(p2.ThresholdsMinutes) != "[60 10 0]" || p2.Tariff != tariff.Default {
		t.Fatalf("Put over existing = %+v", p2)
	}
	created, err = f.l.Ensure(ctx, "b-proj", settings(Allow, 0))
	if err != nil || created {
		t.Fatalf("Ensure existing = %v, %v", created, err)
	}
	created, err = f.l.Ensure(ctx, "a-proj", settings(Allow, 0, 5))
	if err != nil || !created {
		t.Fatalf("Ensure new = %v, %v", created, err)
	}
	got, _ := f.l.Get(ctx, "b-proj")
	if got.OnExhausted != Hangup {
		t.Fatalf("Ensure changed an existing project: %+v", got)
	}
	f.open(t, "a-proj", "c1")
	list, err := f.l.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "a-proj" || list[1].ID != "b-proj" || list[0].LiveCalls != 1 ||
		fmt.Sprint(list[0].ThresholdsMinutes) != "[5]" {
		t.Fatalf("List = %+v, %v", list, err)
	}
}

func TestOpen(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.l.Open(ctx, Open{Project: "ghost", Node: "n1", Channel: "c", AnsweredAt: t0}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open on absent project = %v", err)
	}
	f.project(t, "p", Settings{Tariff: tariff.Tariff{FreeSeconds: 5, MinimumSeconds: 30, IncrementSeconds: 6}}, 1000)
	c1 := f.open(t, "p", "c1")
	want := Call{Project: "p", Node: "n1", Channel: "c1", AnsweredAt: t0, Tariff: tariff.Tariff{FreeSeconds: 5, MinimumSeconds: 30, IncrementSeconds: 6},
		NextDue: t0.Add(5 * time.Second)}
	if c1 != want {
		t.Fatalf("Open = %+v\nwant %+v", c1, want)
	}
	if _, _, err := f.l.Put(ctx, "p", settings(Allow, 0)); err != nil {
		t.Fatal(err)
	}
	// Opening again (even with another time) returns the state unchanged,
	// with the tariff in force at answer.
	again, err := f.l.Open(ctx, Open{Project: "p", Node: "n1", Channel: "c1", AnsweredAt: t0.Add(time.Hour)})
	if err != nil || again != c1 {
		t.Fatalf("second Open = %+v, %v", again, err)
	}
	c2 := f.open(t, "p", "c2")
	if c2.Tariff != tariff.Default {
		t.Fatalf("call answered after the tariff change has %+v", c2.Tariff)
	}
	f.settle(t, "p", "c1", 30, false)
	settled, err := f.l.Open(ctx, Open{Project: "p", Node: "n1", Channel: "c1", AnsweredAt: t0})
	if err != nil || !settled.Settled || settled.Debited != 30 {
		t.Fatalf("Open of a settled call = %+v, %v", settled, err)
	}
	live, err := f.l.Live(ctx, "p")
	if err != nil || len(live) != 1 || live[0].Channel != "c2" {
		t.Fatalf("Live = %+v, %v", live, err)
	}
	// The keys list the same calls; LiveCalls reads them, skipping a key
	// whose call is gone.
	keys, err := f.l.LiveKeys(ctx, "p")
	if err != nil || len(keys) != 1 || keys[0] != c2.Key() {
		t.Fatalf("LiveKeys = %q, %v, want [%s]", keys, err, c2.Key())
	}
	got, err := f.l.LiveCalls(ctx, "p", []string{"n1/gone", keys[0]})
	if err != nil || len(got) != 1 || got[0] != live[0] {
		t.Fatalf("LiveCalls = %+v, %v, want %+v", got, err, live)
	}
}

// The script computes next due times; they must match tariff.Block.
func TestNextDueMatchesTariff(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tariffs := []tariff.Tariff{
		tariff.Default, {MinimumSeconds: 30, IncrementSeconds: 6}, {MinimumSeconds: 1, IncrementSeconds: 1},
		{FreeSeconds: 10, MinimumSeconds: 60, IncrementSeconds: 60}, {FreeSeconds: 90, MinimumSeconds: 60, IncrementSeconds: 30},
		{MinimumSeconds: 0, IncrementSeconds: 10, CountInitiatedSeconds: true}, {FreeSeconds: 3, MinimumSeconds: 30, IncrementSeconds: 6, CountInitiatedSeconds: true},
	}
	for i, tr := range tariffs {
		p := fmt.Sprintf("t%d", i)
		f.project(t, p, Settings{Tariff: tr}, 100000)
		c, err := f.l.Open(ctx, Open{Project: p, Node: "n", Channel: "c", AnsweredAt: t0})
		if err != nil {
			t.Fatal(err)
		}
		if want := t0.Add(tr.Block(0).Due); !c.NextDue.Equal(want) {
			t.Errorf("%+v: open next due %v, want %v", tr, c.NextDue, want)
		}
		for k := range 5 {
			if _, err := f.l.Debit(ctx, p, "n", "c", tr.Block(k)); err != nil {
				t.Fatal(err)
			}
			c, _ := f.l.Call(ctx, p, "n", "c")
			if want := t0.Add(tr.Block(k + 1).Due); !c.NextDue.Equal(want) || c.NextBlock != k+1 || c.Debited != tr.Block(k).Total {
				t.Errorf("%+v after block %d: %+v, want due %v", tr, k, c, want)
			}
			od, err := f.l.Overdue(ctx, p, t0.Add(tr.Block(k+1).Due), 10)
			if err != nil || len(od) != 0 {
				t.Errorf("Overdue before due = %v, %v", od, err)
			}
			od, err = f.l.Overdue(ctx, p, t0.Add(tr.Block(k+1).Due+time.Millisecond), 10)
			if err != nil || len(od) != 1 {
				t.Errorf("Overdue after due = %v, %v", od, err)
			}
		}
	}
}

func TestDebit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.project(t, "p", settings(Allow, 0, 10, 0), 700) // 11 min 40 s
	if _, err := f.l.Debit(ctx, "p", "n1", "never", tariff.Default.Block(0)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Debit of a call not opened = %v", err)
	}
	if _, err := f.l.Debit(ctx, "ghost", "n1", "c", tariff.Default.Block(0)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Debit in absent project = %v", err)
	}
	f.open(t, "p", "c")
	steps := []struct {
		name             string
		k                int
		applied          bool
		balance, debited int64
		crossed          string
		settled          bool
	}{
		{"block 0", 0, true, 640, 60, "[]", false},
		{"replay of block 0", 0, false, 640, 60, "[]", false},
		{"block 1 crosses 10 min", 1, true, 580, 120, "[{10 580 1}]", false},
		{"replay of block 1 returns the same crossing", 1, false, 580, 120, "[{10 580 1}]", false},
		{"block 4 before 2 and 3 debits up to its total", 4, true, 400, 300, "[]", false},
		{"late block 2 is a replay", 2, false, 400, 300, "[]", false},
		{"late block 3 is a replay", 3, false, 400, 300, "[]", false},
		{"block 5", 5, true, 340, 360, "[]", false},
	}
	for _, s := range steps {
		r := f.debit(t, "p", "c", s.k)
		if r.Applied != s.applied || r.Balance != s.balance || r.Debited != s.debited || fmt.Sprint(r.Crossed) != s.crossed || r.Settled != s.settled || r.Exhausted {
			t.Fatalf("%s: %+v", s.name, r)
		}
	}
	f.settle(t, "p", "c", 360, false)
	r := f.debit(t, "p", "c", 6)
	if !r.Settled || r.Applied || r.Balance != 340 {
		t.Fatalf("Debit after settle = %+v", r)
	}
	es, err := f.l.Entries(ctx, "p", 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("%s %d %d %s %d", e.Kind, e.Seconds, e.Balance, e.Call, e.Block))
	}
	want := "[debit -60 340 n1/c 5 debit -180 400 n1/c 4 debit -60 580 n1/c 1 debit -60 640 n1/c 0 adjustment 700 700  0]"
	if fmt.Sprint(got) != want {
		t.Fatalf("entries\n%v\nwant\n%v", got, want)
	}
}

// TestDebitMany: a batch debits each call as Debit would, and one bad or
// unknown call fails alone; a batch after Redis lost its scripts (restart,
// failover) still goes through.
func TestDebitMany(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.project(t, "p", settings(Allow, 0), 1000)
	f.project(t, "q", settings(Hangup, 0), 100)
	for _, ch := range []string{"a", "b"} {
		f.open(t, "p", ch)
	}
	f.open(t, "q", "c")
	blk := tariff.Default.Block
	reqs := []DebitReq{
		{Project: "p", Node: "n1", Channel: "a", Block: blk(0)},
		{Project: "p", Node: "n1", Channel: "never", Block: blk(0)},
		{Project: "p", Node: "n1", Channel: "b", Block: blk(0)},
		{Project: "p", Node: "n1", Channel: "a", Block: blk(0)},                  // the same block again: a replay
		{Project: "q", Node: "n1", Channel: "c", Block: blk(0)},                  // 60 of 100
		{Project: "q", Node: "n1", Channel: "c", Block: blk(1)},                  // 60 more than 40: exhausted
		{Project: "p", Node: "n1", Channel: "b", Block: tariff.Block{Index: -1}}, // invalid
		{Project: "ghost", Node: "n1", Channel: "a", Block: blk(0)},
	}
	if err := f.rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	res, errs := f.l.DebitMany(ctx, reqs)
	type outcome struct {
		applied, exhausted bool
		balance, debited   int64
		err                error
	}
	want := []outcome{
		{true, false, 940, 60, nil},
		{err: ErrNotFound},
		{true, false, 880, 60, nil},
		{false, false, 880, 60, nil},
		{true, false, 40, 60, nil},
		{true, true, 40, 60, nil},
		{err: ErrInvalid},
		{err: ErrNotFound},
	}
	for i, w := range want {
		r, err := res[i], errs[i]
		if w.err != nil {
			if !errors.Is(err, w.err) {
				t.Errorf("request %d (%+v): error %v, want %v", i, reqs[i], err, w.err)
			}
			continue
		}
		if err != nil || r.Applied != w.applied || r.Exhausted != w.exhausted || r.Balance != w.balance || r.Debited != w.debited {
			t.Errorf("request %d (%+v): %+v, %v; want %+v", i, reqs[i], r, err, w)
		}
	}
	if b := f.balance(t, "p"); b != 880 {
		t.Fatalf("balance of p %d, want 880", b)
	}
}

func TestSettle(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		blocks  int // blocks 0..blocks-1 debited before
		billed  []int64
		est     []bool
		applied []bool
		deltas  []int64
		final   int64
	}{
		{"exact, no difference", 2, []int64{120}, []bool{false}, []bool{true}, []int64{0}, 120},
		{"debit the rest", 1, []int64{180}, []bool{false}, []bool{true}, []int64{120}, 180},
		{"refund", 3, []int64{60}, []bool{false}, []bool{true}, []int64{-120}, 60},
		{"twice", 1, []int64{120, 180}, []bool{false, false}, []bool{true, false}, []int64{60, 0}, 120},
		{"estimated then exact", 2, []int64{180, 120}, []bool{true, false}, []bool{true, true}, []int64{60, -60}, 120},
		{"estimated then exact then again", 2, []int64{180, 120, 60}, []bool{true, false, false}, []bool{true, true, false}, []int64{60, -60, 0}, 120},
		{"estimated twice", 0, []int64{180, 60}, []bool{true, true}, []bool{true, false}, []int64{180, 0}, 180},
		{"exact then estimated", 0, []int64{180, 60}, []bool{false, true}, []bool{true, false}, []int64{180, 0}, 180},
		{"never opened", -1, []int64{120}, []bool{false}, []bool{true}, []int64{120}, 120},
	}
	f := newFixture(t)
	for i, c := range cases {
		p := fmt.Sprintf("s%d", i)
		f.project(t, p, settings(Allow, 0), 1000)
		if c.blocks >= 0 {
			f.open(t, p, "c")
		}
		for k := range c.blocks {
			f.debit(t, p, "c", k)
		}
		for j, b := range c.billed {
			r := f.settle(t, p, "c", b, c.est[j])
			if r.Applied != c.applied[j] || r.Delta != c.deltas[j] {
				t.Fatalf("%s: settle %d = %+v", c.name, j, r)
			}
		}
		cl, err := f.l.Call(ctx, p, "n1", "c")
		if err != nil || !cl.Settled || cl.Debited != c.final || f.balance(t, p) != 1000-c.final {
			t.Fatalf("%s: call %+v balance %d err %v", c.name, cl, f.balance(t, p), err)
		}
		live, _ := f.l.Live(ctx, p)
		cdrs, _ := f.l.CDRs(ctx, p, 10)
		if len(live) != 0 || len(cdrs) != 1 || cdrs[0].BilledSeconds != c.final || cdrs[0].Channel != "c" {
			t.Fatalf("%s: live %v cdrs %+v", c.name, live, cdrs)
		}
		if ttl := f.rdb.PTTL(ctx, f.l.callKey(p, "n1", "c")).Val(); ttl <= 0 || ttl > 7*24*time.Hour {
			t.Fatalf("%s: settled call TTL %v", c.name, ttl)
		}
		es, _ := f.l.Entries(ctx, p, 100)
		var sum int64
		for _, e := range es {
			if e.Call == "n1/c" {
				sum -= e.Seconds
			}
		}
		if sum != c.final {
			t.Fatalf("%s: entries of the call sum to %d", c.name, sum)
		}
	}
}

func TestCDRsNewestFirstAndCapped(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.l = New(f.rdb, Options{CDRMax: 3})
	f.project(t, "p", settings(Allow, 0), 0)
	for i := range 5 {
		f.settle(t, "p", fmt.Sprintf("c%d", i), int64(60*(i+1)), false)
	}
	cdrs, err := f.l.CDRs(ctx, "p", 10)
	if err != nil || len(cdrs) != 3 || cdrs[0].Channel != "c4" || cdrs[2].Channel != "c2" || cdrs[0].BilledSeconds != 300 {
		t.Fatalf("CDRs = %+v, %v", cdrs, err)
	}
	if n := f.rdb.HLen(ctx, f.l.key("p", "cdrs")).Val(); n != 3 {
		t.Fatalf("cdr hash holds %d", n)
	}
}

func TestExhaustion(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name      string
		policy    string
		credit    int64
		balance   int64
		blocks    int   // blocks tried
		exhausted bool  // last block exhausted
		debited   int64 // call total after
		over      bool
		billed    int64 // settle with billed(talk) = blocks*60 -> result
	}{
		{"hangup: enough", Hangup, 0, 120, 2, false, 120, false, 120},
		{"hangup: second block would go below 0", Hangup, 0, 100, 2, true, 60, false, 60},
		{"hangup: credit limit covers it", Hangup, 30, 90, 2, false, 120, false, 120},
		{"hangup: credit limit too small", Hangup, 29, 90, 2, true, 60, false, 60},
		{"hangup: first block", Hangup, 0, 59, 1, true, 0, false, 0},
		{"allow: debits anyway", Allow, 0, 100, 2, false, 120, true, 120},
		{"allow: within credit", Allow, 30, 90, 2, false, 120, false, 120},
	}
	f := newFixture(t)
	for i, c := range cases {
		p := fmt.Sprintf("x%d", i)
		f.project(t, p, settings(c.policy, c.credit), c.balance)
		f.open(t, p, "c")
		var r DebitResult
		for k := range c.blocks {
			r = f.debit(t, p, "c", k)
		}
		if r.Exhausted != c.exhausted || r.Debited != c.debited || r.OverLimit != c.over || r.Balance != c.balance-c.debited {
			t.Fatalf("%s: %+v", c.name, r)
		}
		if c.exhausted {
			if !r.Applied {
				t.Fatalf("%s: first exhaustion not applied: %+v", c.name, r)
			}
			// Retrying the refused block changes nothing while the balance
			// still cannot cover it.
			again := f.debit(t, p, "c", c.blocks-1)
			if !again.Exhausted || again.Applied || again.Debited != c.debited || again.Balance != r.Balance {
				t.Fatalf("%s: retry after exhaustion %+v", c.name, again)
			}
			if cl, _ := f.l.Call(ctx, p, "n1", "c"); !cl.Exhausted {
				t.Fatalf("%s: call not marked exhausted", c.name)
			}
		}
		s := f.settle(t, p, "c", int64(c.blocks)*60, false)
		if s.Billed != c.billed {
			t.Fatalf("%s: settle %+v, want billed %d", c.name, s, c.billed)
		}
	}
}

func TestTopUp(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.l.TopUp(ctx, "ghost", 60, "r", KindTopUp); !errors.Is(err, ErrNotFound) {
		t.Fatalf("TopUp of absent project = %v", err)
	}
	f.project(t, "p", settings(Allow, 0, 10, 1), 0)
	for _, b := range []struct {
		s    int64
		ref  string
		kind string
	}{{0, "r", KindTopUp}, {-5, "r", KindTopUp}, {0, "r", KindAdjustment}, {5, "", KindTopUp}, {5, "r", "gift"}} {
		if _, err := f.l.TopUp(ctx, "p", b.s, b.ref, b.kind); !errors.Is(err, ErrInvalid) {
			t.Errorf("TopUp(%v) = %v, want ErrInvalid", b, err)
		}
	}
	r1, err := f.l.TopUp(ctx, "p", 700, "inv-1", KindTopUp)
	if err != nil || !r1.Applied || r1.Balance != 700 || r1.Entry.Seconds != 700 || r1.Entry.Kind != KindTopUp || r1.Entry.ID == "" {
		t.Fatalf("TopUp = %+v, %v", r1, err)
	}
	f.now.Add(1000)
	r2, err := f.l.TopUp(ctx, "p", 700, "inv-1", KindTopUp)
	if err != nil || r2.Applied || r2.Balance != 700 || r2.Entry != r1.Entry {
		t.Fatalf("replayed TopUp = %+v, %v", r2, err)
	}
	if _, err := f.l.TopUp(ctx, "p", 800, "inv-1", KindTopUp); !errors.Is(err, ErrConflict) {
		t.Fatalf("reused reference = %v", err)
	}
	// A negative adjustment crosses 10 min; its replay returns the same crossing.
	a1, err := f.l.TopUp(ctx, "p", -200, "fix-1", KindAdjustment)
	if err != nil || fmt.Sprint(a1.Crossed) != "[{10 500 1}]" {
		t.Fatalf("adjustment = %+v, %v", a1, err)
	}
	a2, _ := f.l.TopUp(ctx, "p", -200, "fix-1", KindAdjustment)
	if a2.Applied || fmt.Sprint(a2.Crossed) != "[{10 500 1}]" || a2.Balance != 500 {
		t.Fatalf("replayed adjustment = %+v", a2)
	}
	// Debits below 10 min do not fire it again until it is re-armed.
	f.open(t, "p", "c")
	for k := range 8 { // 500 -> 20: 1 min fires at block 7
		if r := f.debit(t, "p", "c", k); (k == 7) != (len(r.Crossed) == 1) {
			t.Fatalf("block %d: %+v", k, r)
		}
	}
	// Balance 20: topping up to 599 (< 600) does not re-arm 10 min...
	f.settle(t, "p", "c", 480, false)
	if _, err := f.l.TopUp(ctx, "p", 579, "inv-2", KindTopUp); err != nil {
		t.Fatal(err)
	}
	f.open(t, "p", "d")
	if r := f.debit(t, "p", "d", 0); len(r.Crossed) != 0 || r.Balance != 539 {
		t.Fatalf("disarmed threshold fired: %+v", r)
	}
	f.settle(t, "p", "d", 60, false)
	// ...reaching exactly 600 does, and the next crossing has generation 2.
	if _, err := f.l.TopUp(ctx, "p", 61, "inv-3", KindTopUp); err != nil {
		t.Fatal(err)
	}
	f.open(t, "p", "e")
	if r := f.debit(t, "p", "e", 0); fmt.Sprint(r.Crossed) != "[{10 540 2}]" {
		t.Fatalf("re-armed threshold: %+v", r)
	}
}

// Many goroutines on many bill instances debit one project at once: each
// threshold fires exactly once per downward crossing.
func TestThresholdsFireOnceUnderConcurrency(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.project(t, "p", settings(Allow, 0, 60, 10, 0), 3600+600)
	const workers, calls, blocks = 8, 5, 3 // 8*5*3*60 = 7200 s debited
	var mu sync.Mutex
	fired := map[float64][]Crossing{}
	run := func(round int) {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				// Each worker has its own client, like a separate bill instance.
				l := New(redis.NewClient(&redis.Options{Addr: f.rdb.(*redis.Client).Options().Addr}), Options{})
				for c := range calls {
					ch := fmt.Sprintf("r%d-w%d-c%d", round, w, c)
					if _, err := l.Open(ctx, Open{Project: "p", Node: "n", Channel: ch, AnsweredAt: t0}); err != nil {
						t.Error(err)
						return
					}
					for k := range blocks {
						for range 2 { // and every block twice
							r, err := l.Debit(ctx, "p", "n", ch, tariff.Default.Block(k))
							if err != nil {
								t.Error(err)
								return
							}
							if r.Applied {
								mu.Lock()
								for _, x := range r.Crossed {
									fired[x.ThresholdMinutes] = append(fired[x.ThresholdMinutes], x)
								}
								mu.Unlock()
							}
						}
					}
				}
			})
		}
		wg.Wait()
	}
	run(1)
	if b := f.balance(t, "p"); b != 4200-7200 {
		t.Fatalf("balance %d", b)
	}
	for _, th := range []float64{60, 10, 0} {
		if got := fired[th]; len(got) != 1 || got[0].Generation != 1 || got[0].Balance >= int64(th*60) {
			t.Fatalf("threshold %v fired %+v", th, got)
		}
	}
	if _, err := f.l.TopUp(ctx, "p", 7200, "again", KindTopUp); err != nil {
		t.Fatal(err)
	}
	run(2)
	for _, th := range []float64{60, 10, 0} {
		if got := fired[th]; len(got) != 2 || got[1].Generation != 2 {
			t.Fatalf("threshold %v after re-arm fired %+v", th, got)
		}
	}
}

func TestScriptFlushMidRun(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.project(t, "p", settings(Allow, 0), 10000)
	for i := range 10 {
		ch := fmt.Sprintf("c%d", i)
		f.open(t, "p", ch)
		if err := f.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		f.debit(t, "p", ch, 0)
		if err := f.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		f.debit(t, "p", ch, 1)
		f.rdb.ScriptFlush(ctx)
		f.settle(t, "p", ch, 150, false) // the ledger takes amounts: 150 refunds 30
		f.rdb.ScriptFlush(ctx)
		if _, err := f.l.TopUp(ctx, "p", 1, fmt.Sprint("r", i), KindTopUp); err != nil {
			t.Fatal(err)
		}
	}
	if b := f.balance(t, "p"); b != 10000-10*150+10 {
		t.Fatalf("balance %d", b)
	}
	if n := f.rdb.ScriptExists(ctx, topUpScript.Hash()).Val(); !n[0] {
		t.Fatal("top-up script not reloaded after flush")
	}
}

func TestCDRStoredAsGiven(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.exhaust(t, 60)
	cdr := call.CDR{AttributedBy: call.ByVariable, CauseTxt: `"billed_seconds":999`, Cause: 16, EndReason: "exhausted", TalkSeconds: 65}
	r, err := f.l.Settle(ctx, Settlement{Project: "p", Node: "n1", Channel: "c", AnsweredAt: t0, EndedAt: t0.Add(65 * time.Second),
		Billed: 120, TalkMS: 65000, CDR: cdr})
	if err != nil || r.Billed != 60 || r.Delta != 0 {
		t.Fatalf("Settle = %+v, %v", r, err)
	}
	got, err := f.l.CDRs(ctx, "p", 1)
	if err != nil || len(got) != 1 {
		t.Fatal(got, err)
	}
	want := cdr
	want.Schema, want.Node, want.Channel, want.Project = call.Schema, "n1", "c", "p"
	want.AnsweredAt, want.EndedAt, want.TalkMS, want.BilledSeconds = t0, t0.Add(65*time.Second), 65000, 60
	if got[0] != want {
		t.Fatalf("CDR\n%+v\nwant\n%+v", got[0], want)
	}
}

func TestExhaustedCallResumesAfterTopUp(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if r := f.exhaust(t, 100); !r.Exhausted || !r.Applied || r.Balance != 40 {
		t.Fatalf("block 1 = %+v", r)
	}
	if _, err := f.l.TopUp(ctx, "p", 100, "more", KindTopUp); err != nil {
		t.Fatal(err)
	}
	if r := f.debit(t, "p", "c", 1); r.Exhausted || !r.Applied || r.Balance != 80 || r.Debited != 120 {
		t.Fatalf("block 1 after top-up = %+v", r)
	}
	if cl, _ := f.l.Call(ctx, "p", "n1", "c"); cl.Exhausted || cl.NextBlock != 2 {
		t.Fatalf("call after resuming: %+v", cl)
	}
	// No longer exhausted: the settlement bills the whole talk.
	if s := f.settle(t, "p", "c", 180, false); s.Billed != 180 || s.Delta != 60 || s.Balance != 20 {
		t.Fatalf("settle = %+v", s)
	}
}

func TestAudit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.l.Audit(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Audit of an absent project = %v", err)
	}
	if _, err := f.l.Audit(ctx, "bad id"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Audit of a bad id = %v", err)
	}
	f.project(t, "p", settings(Allow, 0), 700)
	f.open(t, "p", "c")
	f.debit(t, "p", "c", 0)
	f.debit(t, "p", "c", 1)
	f.settle(t, "p", "c", 120, false) // 61 s on 60/60: the two blocks debited
	f.open(t, "p", "d")
	f.debit(t, "p", "d", 0)
	f.settle(t, "p", "d", 0, false) // refunded: 0 billed
	a, err := f.l.Audit(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	want := Audit{Project: "p", BalanceSeconds: 580, Entries: 5, Complete: true, CreditedSeconds: 700, BilledSeconds: 120,
		PerCall: map[string]int64{"n1/c": 120, "n1/d": 0}, Problems: []string{}}
	if fmt.Sprint(a) != fmt.Sprint(want) || !a.OK() {
		t.Fatalf("audit\n%+v\nwant\n%+v", a, want)
	}

	// A balance changed behind the ledger's back is found.
	if err := f.rdb.HIncrBy(ctx, "minuted:{p}:project", "balance", -7).Err(); err != nil {
		t.Fatal(err)
	}
	a, err = f.l.Audit(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if a.OK() || len(a.Problems) != 1 || a.Problems[0] != "balance is 573 s but the newest ledger entry left 580 s" {
		t.Fatalf("tampered balance: problems %q", a.Problems)
	}

	// A broken chain (an entry lost from the middle) is found, and a
	// trimmed ledger is not complete.
	es, err := f.l.Entries(ctx, "p", 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.rdb.XDel(ctx, "minuted:{p}:ledger", es[2].ID, es[len(es)-1].ID).Err(); err != nil {
		t.Fatal(err)
	}
	a, err = f.l.Audit(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	if a.Complete || a.Entries != 3 || len(a.Problems) != 2 || !strings.Contains(a.Problems[0], "but the entry before left") {
		t.Fatalf("broken chain: %+v", a)
	}
}
