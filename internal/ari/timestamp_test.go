package ari

import (
	"regexp"
	"testing"
	"time"
)

// timeEdgeCases are times near every edge of the hand parser: each must
// come out as time.Parse has it, value or error.
var timeEdgeCases = []string{
	"2026-11-27T10:00:00.123+0000", "2026-11-27T10:00:00.123Z", "2026-11-27T10:00:00.123+01:00",
	"2026-11-27T10:00:00Z", "2026-11-27T10:00:00+0000", "2026-11-27T10:00:00-05:30",
	"2028-02-29T23:59:59.999+0000", "2026-02-29T00:00:00.000+0000", "2026-02-30T00:00:00.000+0000",
	"2000-02-29T12:00:00.000+0000", "1900-02-29T12:00:00.000+0000", "2026-04-31T00:00:00.000+0000",
	"2026-12-31T23:59:59.9995-1400", "2026-01-01T00:00:00.000+1400", "2026-01-01T00:00:00.000-1400",
	"2026-01-01T00:00:00.000+14:00", "2026-01-01T00:00:00.000-0000", "2026-01-01T00:00:00.000-00:00",
	"2026-11-27T24:00:00.000+0000", "2026-11-27T23:60:00.000+0000", "2026-11-27T23:59:60.000+0000",
	"2026-11-27T10:00:00.1+0000", "2026-11-27T10:00:00.123456789+0000", "2026-11-27T10:00:00.1234567891234+0000",
	"2026-11-27T10:00:00.999999999999Z", "2026-11-27T10:00:00.+0000", "2026-11-27T10:00:00,123+0000",
	"2026-11-27T10:00:00.123+2400", "2026-11-27T10:00:00.123+0060", "2026-11-27T10:00:00.123+2460",
	"2026-11-27T10:00:00.123+24:00", "2026-11-27T10:00:00.123+2500", "2026-11-27T10:00:00.123 0000",
	"2026-11-27T10:00:00.123+000", "2026-11-27T10:00:00.123+00000", "2026-11-27T10:00:00.123z",
	"2026-11-27t10:00:00.123Z", "2026-11-27 10:00:00.123+0000", "2026-11-27T1:00:00.123+0000",
	"2026-13-01T00:00:00.000+0000", "2026-00-01T00:00:00.000+0000", "2026-11-00T00:00:00.000+0000",
	"0000-01-01T00:00:00.000+0100", "9999-12-31T23:59:59.999-2359", "0001-01-01T00:00:00.000+0000",
	"+026-11-27T10:00:00.123+0000", "2026-11-27T10:00:00.123+0a00", "2026-11-27T10:00:00.123+01:0a",
	"2026-11-27T10:00:00.123", "2026-11-27T10:00:00", "", "2026-11-27T10:00:00.123+0000x",
}

// traceTimes returns the distinct timestamps and creationtimes of the
// recorded traces.
func traceTimes(tb testing.TB) []string {
	re := regexp.MustCompile(`"(?:timestamp|creationtime)":"([^"]*)"`)
	seen := map[string]bool{}
	var out []string
	for _, l := range traceLines(tb) {
		for _, m := range re.FindAllSubmatch(l, -1) {
			if s := string(m[1]); !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		tb.Fatal("no times in the traces")
	}
	return out
}

// checkSameAsReference fails unless ParseTime gives what time.Parse does.
func checkSameAsReference(t *testing.T, s string) {
	t.Helper()
	got, err := ParseTime(s)
	want, werr := parseTimeReference(s)
	switch {
	case (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error():
		t.Fatalf("ParseTime(%q) error %v, reference %v", s, err, werr)
	case got != want || got.Location() != want.Location():
		t.Fatalf("ParseTime(%q) = %v (%v), reference %v (%v)", s, got, got.Location(), want, want.Location())
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range timeEdgeCases {
		f.Add(s)
	}
	for _, s := range traceTimes(f) {
		f.Add(s)
	}
	f.Fuzz(checkSameAsReference)
}

func TestParseTimeTraces(t *testing.T) {
	for _, s := range traceTimes(t) {
		if _, ok := parseTimeFast(s); !ok {
			t.Errorf("%q is not parsed by hand", s)
		}
		checkSameAsReference(t, s)
	}
}

func TestParseTimeTable(t *testing.T) {
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	cases := []struct {
		in   string
		want time.Time // zero: an error
		fast bool      // parsed by hand, not by time.Parse
	}{
		{"2026-11-27T14:30:39.021+0000", utc("2026-11-27T14:30:39.021Z"), true},
		{"2026-11-27T14:30:39.021+0130", utc("2026-11-27T13:00:39.021Z"), true},
		{"2026-11-27T14:30:39.021-0000", utc("2026-11-27T14:30:39.021Z"), true},
		{"2026-11-27T14:30:39.0219999+0000", utc("2026-11-27T14:30:39.021Z"), true},
		{"2026-11-27T14:30:39.1234567891+0000", utc("2026-11-27T14:30:39.123Z"), true},
		{"2026-11-27T14:30:39.5Z", utc("2026-11-27T14:30:39.5Z"), true},
		{"2026-11-27T14:30:39+01:00", utc("2026-11-27T13:30:39Z"), true},
		{"2026-12-31T23:59:59.999-1400", utc("2027-01-01T13:59:59.999Z"), true},
		{"2028-02-29T10:00:00.000+0000", utc("2028-02-29T10:00:00Z"), true},
		{"2026-11-27T14:30:39,021+0000", utc("2026-11-27T14:30:39.021Z"), false},
		{"2026-11-27T14:30:39.021+2400", utc("2026-11-26T14:30:39.021Z"), false},
		{"2026-02-29T10:00:00.000+0000", time.Time{}, false},
		{"2026-02-30T10:00:00.000+0000", time.Time{}, false},
		{"2026-11-27T24:00:00.000+0000", time.Time{}, false},
		{"2026-11-27T14:30:39.021+0000 ", time.Time{}, false},
		{"2026-11-27T14:30:39.021", time.Time{}, false},
		{"yesterday", time.Time{}, false},
	}
	for _, c := range cases {
		got, err := ParseTime(c.in)
		if c.want.IsZero() {
			if err == nil {
				t.Errorf("ParseTime(%q) = %v, want an error", c.in, got)
			}
		} else if err != nil || got != c.want {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if _, ok := parseTimeFast(c.in); ok != c.fast {
			t.Errorf("parseTimeFast(%q) ok = %v, want %v", c.in, ok, c.fast)
		}
		checkSameAsReference(t, c.in)
	}
}

func BenchmarkParseTime(b *testing.B) {
	for _, bc := range []struct {
		name  string
		parse func(string) (time.Time, error)
	}{{"fast", ParseTime}, {"reference", parseTimeReference}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := bc.parse("2026-11-27T14:30:39.021+0000"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
