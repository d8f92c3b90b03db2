package tariff

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBilledSpecExamples(t *testing.T) {
	t6060 := Tariff{MinimumSeconds: 60, IncrementSeconds: 60}
	t306 := Tariff{MinimumSeconds: 30, IncrementSeconds: 6}
	t11 := Tariff{MinimumSeconds: 1, IncrementSeconds: 1}
	free := Tariff{FreeSeconds: 5, MinimumSeconds: 60, IncrementSeconds: 60}
	tests := []struct {
		name string
		t    Tariff
		talk int64
		want int64
	}{
		{"60/60 zero", t6060, 0, 0},
		{"60/60 one second", t6060, 1, 60},
		{"60/60 exactly minimum", t6060, 60, 60},
		{"60/60 one past", t6060, 61, 120},
		{"60/60 125", t6060, 125, 180},
		{"30/6 31", t306, 31, 36},
		{"30/6 30", t306, 30, 30},
		{"30/6 36", t306, 36, 36},
		{"30/6 37", t306, 37, 42},
		{"1/1 61", t11, 61, 61},
		{"1/1 1", t11, 1, 1},
		{"free below F", free, 4, 0},
		{"free at F", free, 5, 60},
		{"free past M", free, 61, 120},
		{"negative talk", t6060, -3, 0},
	}
	for _, tc := range tests {
		if got := tc.t.Billed(tc.talk); got != tc.want {
			t.Errorf("%s: Billed(%d) = %d, want %d", tc.name, tc.talk, got, tc.want)
		}
	}
}

func TestTalkSeconds(t *testing.T) {
	floor := Tariff{MinimumSeconds: 1, IncrementSeconds: 1}
	ceil := floor
	ceil.CountInitiatedSeconds = true
	for _, tc := range []struct {
		ms             int64
		floor, ceiling int64
	}{
		{0, 0, 0}, {1, 0, 1}, {999, 0, 1}, {1000, 1, 1}, {1001, 1, 2}, {3503, 3, 4}, {20511, 20, 21}, {-5, 0, 0},
	} {
		if got := floor.TalkSeconds(tc.ms); got != tc.floor {
			t.Errorf("floor TalkSeconds(%d) = %d, want %d", tc.ms, got, tc.floor)
		}
		if got := ceil.TalkSeconds(tc.ms); got != tc.ceiling {
			t.Errorf("ceil TalkSeconds(%d) = %d, want %d", tc.ms, got, tc.ceiling)
		}
	}
	// A 3.503 s call on 60/60 costs one minute; on 1/1 with ceil, 4 s.
	if got := (Tariff{MinimumSeconds: 60, IncrementSeconds: 60}).BilledMS(3503); got != 60 {
		t.Errorf("BilledMS(3503) 60/60 = %d, want 60", got)
	}
	if got := ceil.BilledMS(3503); got != 4 {
		t.Errorf("BilledMS(3503) 1/1 ceil = %d, want 4", got)
	}
}

func TestValidate(t *testing.T) {
	if err := Default.Validate(); err != nil {
		t.Fatalf("default tariff invalid: %v", err)
	}
	for _, bad := range []Tariff{
		{MinimumSeconds: 60, IncrementSeconds: 0},
		{MinimumSeconds: -1, IncrementSeconds: 60},
		{FreeSeconds: -1, MinimumSeconds: 60, IncrementSeconds: 60},
		{MinimumSeconds: 1 << 40, IncrementSeconds: 60},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want error", bad)
		}
	}
}

func TestBlockSchedule(t *testing.T) {
	tr := Tariff{MinimumSeconds: 60, IncrementSeconds: 60}
	want := []Block{
		{Index: 0, Due: time.Second, Amount: 60, Total: 60},
		{Index: 1, Due: 61 * time.Second, Amount: 60, Total: 120},
		{Index: 2, Due: 121 * time.Second, Amount: 60, Total: 180},
	}
	for _, w := range want {
		if got := tr.Block(w.Index); got != w {
			t.Errorf("Block(%d) = %+v, want %+v", w.Index, got, w)
		}
	}
	ceil := Tariff{MinimumSeconds: 30, IncrementSeconds: 6, CountInitiatedSeconds: true, FreeSeconds: 10}
	if got := ceil.Block(0); got.Due != 9*time.Second+time.Millisecond || got.Amount != 30 {
		t.Errorf("ceil Block(0) = %+v, want due 9.001s amount 30", got)
	}
	if got := ceil.Block(1); got.Due != 30*time.Second+time.Millisecond || got.Total != 36 {
		t.Errorf("ceil Block(1) = %+v, want due 30.001s total 36", got)
	}
}

func randomTariff(r *rand.Rand) Tariff {
	return Tariff{
		FreeSeconds:           r.Int64N(3) * r.Int64N(90),
		MinimumSeconds:        r.Int64N(121),
		IncrementSeconds:      1 + r.Int64N(60),
		CountInitiatedSeconds: r.IntN(2) == 0,
	}
}

// TestBlocksSumToBilled is the property behind real-time debit: for any
// tariff and talk time, the blocks due before the hangup add up exactly to
// Billed(talk) — every second is billed exactly once.
func TestBlocksSumToBilled(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		tr := randomTariff(r)
		ms := r.Int64N(400_000)
		talk := time.Duration(ms) * time.Millisecond
		var sum int64
		last := -1
		for k := 0; ; k++ {
			b := tr.Block(k)
			if b.Due > talk {
				break
			}
			if b.Total != sum+b.Amount {
				t.Fatalf("%+v block %d: total %d != running sum %d + amount %d", tr, k, b.Total, sum, b.Amount)
			}
			sum += b.Amount
			last = k
		}
		if want := tr.BilledMS(ms); sum != want {
			t.Fatalf("%+v talk %dms: blocks sum %d, Billed %d", tr, ms, sum, want)
		}
		if got := tr.BlockAt(talk); got != last {
			t.Fatalf("%+v talk %dms: BlockAt %d, want %d", tr, ms, got, last)
		}
	}
}

// TestBilledMonotonic: a longer call never costs less, and never less than
// its talk time once billable.
func TestBilledMonotonic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 2000; i++ {
		tr := randomTariff(r)
		prev := int64(0)
		for s := int64(0); s < 300; s++ {
			b := tr.Billed(s)
			if b < prev {
				t.Fatalf("%+v: Billed(%d)=%d < Billed(%d)=%d", tr, s, b, s-1, prev)
			}
			if b != 0 && b < s {
				t.Fatalf("%+v: Billed(%d)=%d below talk", tr, s, b)
			}
			prev = b
		}
	}
}

func FuzzBilled(f *testing.F) {
	f.Add(int64(0), int64(60), int64(60), false, int64(125000))
	f.Add(int64(5), int64(30), int64(6), true, int64(31001))
	f.Fuzz(func(t *testing.T, free, minimum, inc int64, ceil bool, ms int64) {
		tr := Tariff{FreeSeconds: free, MinimumSeconds: minimum, IncrementSeconds: inc, CountInitiatedSeconds: ceil}
		if tr.Validate() != nil || ms < 0 || ms > 1<<40 {
			return
		}
		b := tr.BilledMS(ms)
		s := tr.TalkSeconds(ms)
		if b < 0 || (b > 0 && b < s) {
			t.Fatalf("%+v ms=%d: billed %d for talk %d", tr, ms, b, s)
		}
		if i := tr.BlockAt(time.Duration(ms) * time.Millisecond); i >= 0 && tr.Block(i).Total != b {
			t.Fatalf("%+v ms=%d: block %d total %d != billed %d", tr, ms, i, tr.Block(i).Total, b)
		}
	})
}

func BenchmarkBilledMS(b *testing.B) {
	tr := Tariff{MinimumSeconds: 30, IncrementSeconds: 6}
	var sink int64
	for i := 0; b.Loop(); i++ {
		sink += tr.BilledMS(int64(i % 600_000))
	}
	_ = sink
}
