// Package tariff is the billing maths of SPEC §4 and §5: what a call of a
// given talk time costs, and when each block of a live call falls due.
// It does no I/O.
package tariff

import (
	"errors"
	"fmt"
	"time"
)

// Tariff is a project's rate card in the telephony notation M/I.
type Tariff struct {
	FreeSeconds           int64 `json:"free_seconds" yaml:"free_seconds"`
	MinimumSeconds        int64 `json:"minimum_seconds" yaml:"minimum_seconds"`
	IncrementSeconds      int64 `json:"increment_seconds" yaml:"increment_seconds"`
	CountInitiatedSeconds bool  `json:"count_initiated_seconds" yaml:"count_initiated_seconds"`
}

// Default is the tariff of SPEC §4: 60/60, nothing free, whole seconds.
var Default = Tariff{MinimumSeconds: 60, IncrementSeconds: 60}

// maxSeconds bounds every field so the maths never overflows (about 31 years).
const maxSeconds = 1 << 30

// Validate reports a tariff that cannot be billed, naming the field.
func (t Tariff) Validate() error {
	var errs []error
	if t.FreeSeconds < 0 || t.FreeSeconds > maxSeconds {
		errs = append(errs, fmt.Errorf("free_seconds must be between 0 and %d, got %d", maxSeconds, t.FreeSeconds))
	}
	if t.MinimumSeconds < 0 || t.MinimumSeconds > maxSeconds {
		errs = append(errs, fmt.Errorf("minimum_seconds must be between 0 and %d, got %d", maxSeconds, t.MinimumSeconds))
	}
	if t.IncrementSeconds < 1 || t.IncrementSeconds > maxSeconds {
		errs = append(errs, fmt.Errorf("increment_seconds must be between 1 and %d, got %d", maxSeconds, t.IncrementSeconds))
	}
	return errors.Join(errs...)
}

// TalkSeconds converts a talk time in milliseconds into whole seconds:
// floor like Asterisk's billsec, or ceil with count_initiated_seconds.
func (t Tariff) TalkSeconds(ms int64) int64 {
	if ms <= 0 {
		return 0
	}
	if t.CountInitiatedSeconds {
		return (ms + 999) / 1000
	}
	return ms / 1000
}

// Billed is the price in seconds of a call of talk whole seconds:
// 0 if talk = 0 or talk < F; M if talk ≤ M; else M + ⌈(talk−M)/I⌉·I.
func (t Tariff) Billed(talk int64) int64 {
	if talk <= 0 || talk < t.FreeSeconds {
		return 0
	}
	if talk <= t.MinimumSeconds {
		return t.MinimumSeconds
	}
	inc := max(t.IncrementSeconds, 1)
	return t.MinimumSeconds + (talk-t.MinimumSeconds+inc-1)/inc*inc
}

// BilledMS is Billed of a talk time in milliseconds.
func (t Tariff) BilledMS(ms int64) int64 { return t.Billed(t.TalkSeconds(ms)) }

// Block is one step of the real-time debit of a live call: once the call has
// been up for Due, Total seconds in all must have been debited.
type Block struct {
	Index  int
	Due    time.Duration // talk time at which this block falls due
	Amount int64         // seconds debited by this block
	Total  int64         // seconds debited by blocks 0..Index
}

// Block returns block k (k ≥ 0) of a live call. Block 0 falls due when the
// call becomes billable (talk reaches max(F, 1) whole seconds) and debits
// billed() at that point, normally M; block k ≥ 1 falls due the moment the
// talk time passes the total of the blocks before it and debits I.
// After the last block due before the hangup, Σ Amount = Billed(talk).
func (t Tariff) Block(k int) Block {
	s0 := max(t.FreeSeconds, 1)
	total0 := t.Billed(s0)
	if k <= 0 {
		return Block{Index: 0, Due: t.dueAt(s0), Amount: total0, Total: total0}
	}
	inc := max(t.IncrementSeconds, 1)
	prev := total0 + int64(k-1)*inc
	// billed(s) stays at prev for s ≤ prev (prev ≥ M) and jumps by I at prev+1.
	return Block{Index: k, Due: t.dueAt(prev + 1), Amount: inc, Total: prev + inc}
}

// BlockAt returns the index of the last block due at talk time d, or -1 if
// none is due yet.
func (t Tariff) BlockAt(d time.Duration) int {
	b0 := t.Block(0)
	if d < b0.Due {
		return -1
	}
	s := t.TalkSeconds(d.Milliseconds())
	billed := t.Billed(s)
	inc := max(t.IncrementSeconds, 1)
	return int((billed - b0.Total) / inc)
}

// dueAt is the talk time at which the whole-second talk count reaches s.
func (t Tariff) dueAt(s int64) time.Duration {
	if t.CountInitiatedSeconds {
		return time.Duration(s-1)*time.Second + time.Millisecond
	}
	return time.Duration(s) * time.Second
}
