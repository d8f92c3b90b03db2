package bill

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestLagHistogram(t *testing.T) {
	var h lagHistogram
	for _, d := range []time.Duration{
		-time.Second,            // clocks disagree: counted as 0
		time.Millisecond,        // on a bound: in it (≤)
		1500 * time.Microsecond, // ≤ 2.5 ms
		3 * time.Second,         // ≤ 5 s
		2 * time.Minute,         // beyond every bound: +Inf only
	} {
		h.observe(d)
	}
	got := h.snapshot()
	//               1ms 2.5 5  10 25 50 .1 .25 .5 1  2.5 5  10 30 60
	want := []uint64{2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4}
	if got.Count != 5 || !slices.Equal(got.Buckets, want) {
		t.Fatalf("count %d buckets %v; want 5 %v", got.Count, got.Buckets, want)
	}
	if wantSum := (0.001 + 0.0015 + 3 + 120); math.Abs(got.SumSeconds-wantSum) > 1e-9 {
		t.Fatalf("sum %v s, want %v", got.SumSeconds, wantSum)
	}
	if len(got.Buckets) != len(LagBuckets) {
		t.Fatalf("%d buckets for %d bounds", len(got.Buckets), len(LagBuckets))
	}
}
