package ari

import (
	"fmt"
	"time"
)

// ParseTime parses an ARI time (any UTC offset) into UTC truncated to the
// millisecond. RFC 3339 is accepted too.
//
// Ingest parses two times per event (timestamp, creationtime), and
// time.Parse with a layout is slow for that: it walks the layout chunk by
// chunk. Times of exactly the shape Asterisk and RFC 3339 write are parsed
// by hand; anything else (another shape, a field out of range) goes to
// time.Parse, so results and errors are time.Parse's in every case
// (FuzzParseTime checks it).
func ParseTime(s string) (time.Time, error) {
	if t, ok := parseTimeFast(s); ok {
		return t, nil
	}
	return parseTimeReference(s)
}

// parseTimeReference is ParseTime with time.Parse alone.
func parseTimeReference(s string) (time.Time, error) {
	t, err := time.Parse("2006-01-02T15:04:05-0700", s) // fraction accepted when parsing
	if err != nil {
		t2, err2 := time.Parse(time.RFC3339Nano, s)
		if err2 != nil {
			return time.Time{}, fmt.Errorf("time %q is not like %s: %w", s, TimeLayout, err)
		}
		t = t2
	}
	return t.UTC().Truncate(time.Millisecond), nil
}

// parseTimeFast parses "2006-01-02T15:04:05", an optional '.' and fraction
// of any length, then "Z", "-0700" or "-07:00". false: not exactly that,
// or a field out of the range both layouts accept (time.Parse decides).
func parseTimeFast(s string) (time.Time, bool) {
	if len(s) < len("2006-01-02T15:04:05Z") ||
		s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
	}
	year, ok := digits(s[0:4])
	month, ok1 := digits(s[5:7])
	day, ok2 := digits(s[8:10])
	hour, ok3 := digits(s[11:13])
	minute, ok4 := digits(s[14:16])
	sec, ok5 := digits(s[17:19])
	if !(ok && ok1 && ok2 && ok3 && ok4 && ok5) ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	nsec, rest := fraction(s[19:])
	offset, ok := zoneOffset(rest)
	if !ok {
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-offset).Truncate(time.Millisecond), true
}

// fraction reads ".ddd…" (any number of digits, as time.Parse takes them;
// those past the ninth are ignored) into nanoseconds and returns the rest.
// Without one it returns 0 and s.
func fraction(s string) (int, string) {
	if len(s) < 2 || s[0] != '.' || !isDigit(s[1]) {
		return 0, s
	}
	nsec, n := 0, 1
	for ; n < len(s) && isDigit(s[n]); n++ {
		if n <= 9 {
			nsec = nsec*10 + int(s[n]-'0')
		}
	}
	for i := min(n, 10); i < 10; i++ {
		nsec *= 10
	}
	return nsec, s[n:]
}

// zoneOffset reads a whole "Z", "+hhmm" or "+hh:mm" (or with '-').
func zoneOffset(s string) (time.Duration, bool) {
	var hh, mm string
	switch {
	case s == "Z":
		return 0, true
	case len(s) == len("+0000"):
		hh, mm = s[1:3], s[3:5]
	case len(s) == len("+00:00") && s[3] == ':':
		hh, mm = s[1:3], s[4:6]
	default:
		return 0, false
	}
	h, ok := digits(hh)
	m, ok2 := digits(mm)
	if !ok || !ok2 || h > 23 || m > 59 {
		return 0, false
	}
	d := time.Duration(h)*time.Hour + time.Duration(m)*time.Minute
	switch s[0] {
	case '+':
		return d, true
	case '-':
		return -d, true
	}
	return 0, false
}

// digits parses s, decimal digits only.
func digits(s string) (int, bool) {
	n := 0
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// daysIn is the number of days in month (1-12) of year, Gregorian.
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}
