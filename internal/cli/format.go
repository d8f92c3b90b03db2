package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/minuted/minuted/internal/tariff"
)

// Minutes formats seconds as minutes with two decimals (SPEC §2).
func Minutes(seconds int64) string {
	neg := seconds < 0
	u := uint64(seconds)
	if neg {
		u = -u
	}
	// Hundredths of a minute, rounded half away from zero, without overflow.
	h := u/60*100 + (u%60*100+30)/60
	s := fmt.Sprintf("%d.%02d", h/100, h%100)
	if neg && h != 0 {
		s = "-" + s
	}
	return s
}

// MinSec formats a balance as "12.50 min (750 s)".
func MinSec(seconds int64) string {
	return fmt.Sprintf("%s min (%d s)", Minutes(seconds), seconds)
}

// Duration formats seconds of talk as h:mm:ss or m:ss.
func Duration(seconds int64) string {
	neg := ""
	if seconds < 0 {
		neg, seconds = "-", -seconds
	}
	h, m, s := seconds/3600, seconds/60%60, seconds%60
	if h > 0 {
		return fmt.Sprintf("%s%d:%02d:%02d", neg, h, m, s)
	}
	return fmt.Sprintf("%s%d:%02d", neg, m, s)
}

// TariffShort formats a tariff as a rate card does: "60/60", with
// "free<5s" and "ceil" when they apply.
func TariffShort(t tariff.Tariff) string {
	s := fmt.Sprintf("%d/%d", t.MinimumSeconds, t.IncrementSeconds)
	if t.FreeSeconds > 0 {
		s += fmt.Sprintf(" free<%ds", t.FreeSeconds)
	}
	if t.CountInitiatedSeconds {
		s += " ceil"
	}
	return s
}

// TariffLong explains a tariff in words.
func TariffLong(t tariff.Tariff) string {
	round := "talk seconds rounded down (like billsec)"
	if t.CountInitiatedSeconds {
		round = "every started second counted"
	}
	free := "no free talk"
	if t.FreeSeconds > 0 {
		free = fmt.Sprintf("free below %d s", t.FreeSeconds)
	}
	return fmt.Sprintf("%s (first %d s, then per %d s; %s; %s)", TariffShort(t), t.MinimumSeconds,
		t.IncrementSeconds, free, round)
}

// Thresholds formats thresholds in minutes: "60, 10, 0" or "none".
func Thresholds(ts []float64) string {
	if len(ts) == 0 {
		return "none"
	}
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = strconv.FormatFloat(t, 'f', -1, 64)
	}
	return strings.Join(parts, ", ")
}

// ParseThresholds reads "60,10,0" (minutes; "none" or "" for no
// thresholds). It refuses what is not a finite number.
func ParseThresholds(s string) ([]float64, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "none") {
		return []float64{}, nil
	}
	parts := strings.Split(s, ",")
	out := make([]float64, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f != f || f > 1e15 || f < -1e15 {
			return nil, fmt.Errorf("threshold %q is not a number of minutes: write them like 60,10,0 (or none)", p)
		}
		out = append(out, f)
	}
	return out, nil
}

// timeFmt formats a time in loc, or "-" for the zero time.
func timeFmt(t time.Time, loc *time.Location) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(loc).Format("2006-01-02 15:04:05")
}

// table writes aligned columns; cells are made printable.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(t.tw, "\t")
		}
		c = strings.Map(func(r rune) rune {
			if r == '\t' || r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, printable(c, 200))
		if c == "" {
			c = "-"
		}
		fmt.Fprint(t.tw, c)
	}
	fmt.Fprintln(t.tw)
}

func (t *table) flush() error { return t.tw.Flush() }

// writeJSON prints the API's answer indented, unchanged otherwise.
func writeJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		return fmt.Errorf("the admin API's answer is not JSON: %w", err)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// writeRows prints one row per item under header, or the line empty when
// there are no items.
func writeRows[T any](w io.Writer, items []T, empty string, header []string, row func(T) []string) error {
	if len(items) == 0 {
		_, err := fmt.Fprintln(w, empty)
		return err
	}
	t := newTable(w, header...)
	for _, it := range items {
		t.row(row(it)...)
	}
	return t.flush()
}
