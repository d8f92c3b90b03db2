package cli

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/tariff"
)

func TestMinutes(t *testing.T) {
	for _, tc := range []struct {
		s    int64
		want string
	}{
		{0, "0.00"}, {1, "0.02"}, {30, "0.50"}, {59, "0.98"}, {60, "1.00"}, {90, "1.50"}, {750, "12.50"},
		{-1, "-0.02"}, {-90, "-1.50"}, {3600, "60.00"}, {100, "1.67"}, {-100, "-1.67"},
		{math.MaxInt64, "153722867280912930.12"}, {math.MinInt64, "-153722867280912930.13"},
	} {
		if got := Minutes(tc.s); got != tc.want {
			t.Errorf("Minutes(%d) = %q, want %q", tc.s, got, tc.want)
		}
	}
}

// Minutes agrees with the API's rounding (math.Round of s/60 to 2 decimals)
// wherever a float64 is exact enough.
func TestMinutesMatchesFloatRounding(t *testing.T) {
	for s := int64(-100000); s <= 100000; s += 7 {
		want := strconv.FormatFloat(math.Round(float64(s)/60*100)/100, 'f', 2, 64)
		if want == "-0.00" {
			want = "0.00"
		}
		if got := Minutes(s); got != want {
			t.Fatalf("Minutes(%d) = %q, float rounding gives %q", s, got, want)
		}
	}
}

func TestDurationAndTariff(t *testing.T) {
	for s, want := range map[int64]string{0: "0:00", 5: "0:05", 75: "1:15", 3600: "1:00:00", 3725: "1:02:05", -5: "-0:05"} {
		if got := Duration(s); got != want {
			t.Errorf("Duration(%d) = %q, want %q", s, got, want)
		}
	}
	tr := tariff.Tariff{FreeSeconds: 5, MinimumSeconds: 30, IncrementSeconds: 6, CountInitiatedSeconds: true}
	if got := TariffShort(tr); got != "30/6 free<5s ceil" {
		t.Errorf("TariffShort = %q", got)
	}
	if got := TariffShort(tariff.Default); got != "60/60" {
		t.Errorf("TariffShort(default) = %q", got)
	}
	if got := TariffLong(tr); !strings.Contains(got, "first 30 s, then per 6 s; free below 5 s; every started second counted") {
		t.Errorf("TariffLong = %q", got)
	}
}

func TestParseThresholds(t *testing.T) {
	for in, want := range map[string][]float64{
		"60,10,0": {60, 10, 0}, " 5 , 2.5 ": {5, 2.5}, "": {}, "none": {}, "NONE": {}, "-10": {-10},
	} {
		got, err := ParseThresholds(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseThresholds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"60,,0", "ten", "NaN", "1e300", "60;10"} {
		if _, err := ParseThresholds(in); err == nil {
			t.Errorf("ParseThresholds(%q) accepted", in)
		}
	}
	if got := Thresholds([]float64{60, 2.5, 0}); got != "60, 2.5, 0" {
		t.Errorf("Thresholds = %q", got)
	}
}

func TestDecodeError(t *testing.T) {
	for in, want := range map[string]string{
		`{"error":"bad thing"}`:         "bad thing",
		`{"error":""}`:                  `{"error":""}`,
		``:                              "(empty answer)",
		`<html>502 Bad Gateway</html>`:  "<html>502 Bad Gateway</html>",
		"{\"error\":\"a\\u001b[31mb\"}": "a?[31mb",
	} {
		if got := DecodeError([]byte(in)); got != want {
			t.Errorf("DecodeError(%q) = %q, want %q", in, got, want)
		}
	}
	long := strings.Repeat("x", 500)
	if got := DecodeError([]byte(long)); len([]rune(got)) != 201 || !strings.HasSuffix(got, "…") {
		t.Errorf("a long body is not cut: %d runes", len([]rune(got)))
	}
}

func TestSplitConnFlags(t *testing.T) {
	o, rest, err := SplitConnFlags([]string{"acme", "-api", "http://x:1", "-minutes", "5", "--token-file=/t",
		"-config=c.yaml", "--timeout", "3s", "-ref", "R", "--", "-api"})
	if err != nil {
		t.Fatal(err)
	}
	want := ConnOptions{API: "http://x:1", TokenFile: "/t", Config: "c.yaml", Timeout: 3 * time.Second}
	if o != want {
		t.Errorf("options = %+v, want %+v", o, want)
	}
	if !slices.Equal(rest, []string{"acme", "-minutes", "5", "-ref", "R", "--", "-api"}) {
		t.Errorf("rest = %q", rest)
	}
	var ue *UsageError
	for _, bad := range [][]string{{"-api"}, {"-timeout", "soon"}, {"-timeout=-1s"}} {
		if _, _, err := SplitConnFlags(bad); !errors.As(err, &ue) {
			t.Errorf("SplitConnFlags(%q) = %v, want a usage error", bad, err)
		}
	}
}

func TestAddrURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8090": "http://127.0.0.1:8090", ":8090": "http://127.0.0.1:8090",
		"0.0.0.0:9": "http://127.0.0.1:9", "[::]:9": "http://127.0.0.1:9", "[::1]:9": "http://[::1]:9",
		"pbx.local:80": "http://pbx.local:80", "nonsense": "",
	} {
		if got := AddrURL(in); got != want {
			t.Errorf("AddrURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzDecodeError(f *testing.F) {
	for _, s := range []string{`{"error":"x"}`, ``, `{"error":null}`, `[1]`, "\xff\xfe", `{"error":"\u0007"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got := DecodeError(b)
		if got == "" {
			t.Fatal("empty message")
		}
		for _, r := range got {
			if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f {
				t.Fatalf("control character %U in %q", r, got)
			}
		}
	})
}

func FuzzParseThresholds(f *testing.F) {
	for _, s := range []string{"60,10,0", "", "none", "1e9", "-0", "0x10", "Inf"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseThresholds(s)
		if err != nil {
			return
		}
		for _, v := range ts {
			if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 1e15 {
				t.Fatalf("ParseThresholds(%q) gave %v", s, v)
			}
		}
		// What Thresholds prints parses back to the same values.
		if len(ts) > 0 {
			back, err := ParseThresholds(Thresholds(ts))
			if err != nil || !slices.Equal(back, ts) {
				t.Fatalf("round trip of %v: %v, %v", ts, back, err)
			}
		}
	})
}

func FuzzSplitConnFlags(f *testing.F) {
	f.Add("acme -api http://x -n 5 --timeout=2s")
	f.Add("-config")
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		_, rest, err := SplitConnFlags(args)
		if err != nil {
			return
		}
		if len(rest) > len(args) {
			t.Fatalf("rest %q longer than args %q", rest, args)
		}
	})
}
