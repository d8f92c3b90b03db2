package alert

import (
	"math"
	"time"

	"github.com/minuted/minuted/internal/ledger"
)

// DefaultWindow is the span the burn rate is measured over (SPEC §7).
const DefaultWindow = 15 * time.Minute

// Ledger entry kinds that measure consumption.
const (
	entryDebit  = "debit"
	entryRefund = "refund"
)

// BurnRate is the consumption of a project in minutes per hour over the
// window ending at now: Σ debits − Σ refunds of entries with
// now−window < At <= now, scaled to an hour. Top-ups and adjustments are
// not consumption. The order of entries does not matter. A window <= 0
// means DefaultWindow. The result is never negative (refunds exceeding
// debits in the window mean nothing was burnt).
func BurnRate(entries []ledger.Entry, now time.Time, window time.Duration) float64 {
	if window <= 0 {
		window = DefaultWindow
	}
	from := now.Add(-window)
	var spent int64 // seconds
	for _, e := range entries {
		if (e.Kind != entryDebit && e.Kind != entryRefund) || !e.At.After(from) || e.At.After(now) {
			continue
		}
		spent -= e.Seconds // debits are negative changes of the balance
	}
	if spent <= 0 {
		return 0
	}
	return float64(spent) / 60 / window.Hours()
}

// TimeToZero is how long balanceSeconds lasts at minutesPerHour. ok is false
// when the project is not burning (rate <= 0 or not a number): it never
// reaches zero. A balance already at or below zero gives (0, true).
func TimeToZero(balanceSeconds int64, minutesPerHour float64) (time.Duration, bool) {
	if !(minutesPerHour > 0) || math.IsInf(minutesPerHour, 0) {
		return 0, false
	}
	if balanceSeconds <= 0 {
		return 0, true
	}
	hours := float64(balanceSeconds) / 60 / minutesPerHour
	if hours > float64(math.MaxInt64)/float64(time.Hour) {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(hours * float64(time.Hour)), true
}

// Context is what Render needs beyond the alert: the ledger's view at the
// time of the alert. Known is false when the burn rate could not be
// measured (no ledger access); the text then says so.
type Context struct {
	Known              bool
	BurnMinutesPerHour float64
	TimeToZero         time.Duration // meaningful when Burning
	Burning            bool          // BurnMinutesPerHour > 0
}

// Measure builds the Context of a from ledger entries: the burn rate over
// window ending at the alert's time, and the time its balance lasts at it.
func Measure(a Alert, entries []ledger.Entry, window time.Duration) Context {
	rate := BurnRate(entries, a.At, window)
	ttz, burning := TimeToZero(a.BalanceSeconds, rate)
	return Context{Known: true, BurnMinutesPerHour: rate, TimeToZero: ttz, Burning: burning}
}
