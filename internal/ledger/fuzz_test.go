package ledger

import (
	"fmt"
	"strings"
	"testing"
)

func FuzzParseCrossings(f *testing.F) {
	f.Add("10 580 1")
	f.Add("60 3599 2 2.5 149 1 0 -1 3")
	f.Add("x y z 1")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		xs := parseCrossings(s)
		if len(xs) > len(strings.Fields(s))/3 {
			t.Fatalf("%d crossings from %q", len(xs), s)
		}
		// What the script writes decodes back to itself.
		var b strings.Builder
		for _, x := range xs {
			fmt.Fprintf(&b, "%v %d %d ", x.ThresholdMinutes, x.Balance, x.Generation)
		}
		if again := parseCrossings(b.String()); fmt.Sprint(again) != fmt.Sprint(xs) {
			t.Fatalf("round trip of %q: %v != %v", s, again, xs)
		}
	})
}

func FuzzParseTopUpRecord(f *testing.F) {
	f.Add("topup 700 1700000000000-0 1700000000000 700|")
	f.Add("adjustment -200 1-1 5 500|10 500 1")
	f.Add("garbage")
	f.Fuzz(func(t *testing.T, s string) {
		e, _, err := parseTopUpRecord(s)
		if err == nil && e.ID == "" {
			t.Fatalf("accepted %q without an entry id", s)
		}
	})
}

func FuzzPairs(f *testing.F) {
	f.Add("a", "1", "b")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		m := pairs([]any{a, b, c})
		if m[a] != b && a != c {
			t.Fatalf("pairs lost %q", a)
		}
		if len(pairs("not a slice")) != 0 {
			t.Fatal("pairs of a non-slice")
		}
	})
}
