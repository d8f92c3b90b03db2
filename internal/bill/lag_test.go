package bill

import (
	"maps"
	"math"
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
	want := map[float64]uint64{.001: 2, .0025: 3, .005: 3, .01: 3, .025: 3, .05: 3, .1: 3, .25: 3, .5: 3, 1: 3, 2.5: 3, 5: 4, 10: 4, 30: 4, 60: 4}
	if got.Count != 5 || !maps.Equal(got.Buckets, want) {
		t.Fatalf("count %d buckets %v; want 5 %v", got.Count, got.Buckets, want)
	}
	if wantSum := (0.001 + 0.0015 + 3 + 120); math.Abs(got.SumSeconds-wantSum) > 1e-9 {
		t.Fatalf("sum %v s, want %v", got.SumSeconds, wantSum)
	}
}
