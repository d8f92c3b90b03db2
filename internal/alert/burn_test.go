package alert

import (
	"math"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/ledger"
)

func TestBurnRate(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(ago time.Duration) time.Time { return now.Add(-ago) }
	cases := []struct {
		name    string
		entries []ledger.Entry
		window  time.Duration
		want    float64
	}{
		{"empty", nil, 0, 0},
		{"15 debits of a minute in 15 min = 60 min/h", minuteDebits(now, 15, time.Minute), 0, 60},
		{"refund subtracts", append(minuteDebits(now, 15, time.Minute),
			ledger.Entry{Kind: "refund", Seconds: 450, At: at(time.Second)}), 0, 30},
		{"topup and adjustment ignored", append(minuteDebits(now, 3, time.Minute),
			ledger.Entry{Kind: "topup", Seconds: 6000, At: at(time.Minute)},
			ledger.Entry{Kind: "adjustment", Seconds: -6000, At: at(time.Minute)}), 0, 12},
		{"outside window ignored", []ledger.Entry{
			{Kind: "debit", Seconds: -60, At: at(15 * time.Minute)}, // boundary: excluded
			{Kind: "debit", Seconds: -60, At: at(20 * time.Minute)},
			{Kind: "debit", Seconds: -60, At: now.Add(time.Minute)}, // after now
			{Kind: "debit", Seconds: -120, At: now},                 // boundary: included
		}, 0, 8},
		{"custom window 1h", minuteDebits(now, 30, time.Minute), time.Hour, 30},
		{"refunds exceeding debits clamp to 0", []ledger.Entry{
			{Kind: "refund", Seconds: 120, At: at(time.Minute)},
			{Kind: "debit", Seconds: -60, At: at(time.Minute)},
		}, 0, 0},
		{"order does not matter", reverse(minuteDebits(now, 15, time.Minute)), 0, 60},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := BurnRate(c.entries, now, c.window); math.Abs(got-c.want) > 1e-9 {
				t.Fatalf("BurnRate = %v, want %v", got, c.want)
			}
		})
	}
}

// minuteDebits returns n debits of 60 s, one every step, the last at now.
func minuteDebits(now time.Time, n int, step time.Duration) []ledger.Entry {
	var es []ledger.Entry
	for i := 0; i < n; i++ {
		es = append(es, ledger.Entry{Kind: "debit", Seconds: -60, At: now.Add(-time.Duration(i) * step)})
	}
	return es
}

func reverse(es []ledger.Entry) []ledger.Entry {
	out := make([]ledger.Entry, len(es))
	for i, e := range es {
		out[len(es)-1-i] = e
	}
	return out
}

func TestTimeToZero(t *testing.T) {
	cases := []struct {
		balance int64
		rate    float64
		want    time.Duration
		ok      bool
	}{
		{600, 60, 10 * time.Minute, true},
		{12000, 60, 200 * time.Minute, true},
		{600, 0, 0, false},
		{600, -5, 0, false},
		{600, math.NaN(), 0, false},
		{0, 60, 0, true},
		{-300, 60, 0, true},
		{-300, 0, 0, false},
		{math.MaxInt64, 1e-300, time.Duration(math.MaxInt64), true},
	}
	for _, c := range cases {
		got, ok := TimeToZero(c.balance, c.rate)
		if got != c.want || ok != c.ok {
			t.Errorf("TimeToZero(%d, %v) = %v, %v; want %v, %v", c.balance, c.rate, got, ok, c.want, c.ok)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	cases := []struct {
		d      time.Duration
		en, ru string
	}{
		{10 * time.Second, "less than a minute", "меньше минуты"},
		{45 * time.Minute, "about 45 min", "около 45 мин"},
		{200*time.Minute + 20*time.Second, "about 3 h 20 min", "около 3 ч 20 мин"},
		{2 * time.Hour, "about 2 h", "около 2 ч"},
		{59*time.Minute + 50*time.Second, "about 1 h", "около 1 ч"},
		{52*time.Hour + 10*time.Minute, "about 2 d 4 h", "около 2 дн 4 ч"},
		{400 * 24 * time.Hour, "more than a year", "больше года"},
	}
	for _, c := range cases {
		if got := HumanDuration(c.d, "en"); got != c.en {
			t.Errorf("en %v = %q, want %q", c.d, got, c.en)
		}
		if got := HumanDuration(c.d, "ru"); got != c.ru {
			t.Errorf("ru %v = %q, want %q", c.d, got, c.ru)
		}
	}
}

func TestMeasure(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	a := Alert{At: now, BalanceSeconds: 12000}
	c := Measure(a, minuteDebits(now, 15, time.Minute), 0)
	if !c.Known || !c.Burning || c.BurnMinutesPerHour != 60 || c.TimeToZero != 200*time.Minute {
		t.Fatalf("Measure = %+v", c)
	}
	// Entries after the alert do not count: the figures are those of its time.
	c = Measure(Alert{At: now.Add(-time.Hour), BalanceSeconds: 12000}, minuteDebits(now, 15, time.Minute), 0)
	if c.Burning || c.BurnMinutesPerHour != 0 {
		t.Fatalf("Measure before the debits = %+v", c)
	}
}
