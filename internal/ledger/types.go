package ledger

import (
	"errors"
	"slices"
	"time"

	"github.com/minuted/minuted/internal/tariff"
)

// ErrNotFound is returned for a project (or call) that does not exist.
var ErrNotFound = errors.New("not found")

// Exhaustion policies (SPEC §8).
const (
	Allow  = "allow"
	Hangup = "hangup"
)

// Settings are the fields of a project an operator sets.
type Settings struct {
	Tariff             tariff.Tariff `json:"tariff"`
	ThresholdsMinutes  []float64     `json:"thresholds_minutes"`
	CreditLimitSeconds int64         `json:"credit_limit_seconds"`
	OnExhausted        string        `json:"on_exhausted"`
}

// TariffPatch and SettingsPatch change some fields of a project's
// Settings: a nil field keeps its current value (the body of PUT
// /v1/projects/{id}, sent by `minuted project set`).
type TariffPatch struct {
	FreeSeconds           *int64 `json:"free_seconds,omitempty"`
	MinimumSeconds        *int64 `json:"minimum_seconds,omitempty"`
	IncrementSeconds      *int64 `json:"increment_seconds,omitempty"`
	CountInitiatedSeconds *bool  `json:"count_initiated_seconds,omitempty"`
}

// SettingsPatch: see TariffPatch.
type SettingsPatch struct {
	Tariff             *TariffPatch `json:"tariff,omitempty"`
	ThresholdsMinutes  *[]float64   `json:"thresholds_minutes,omitempty"`
	CreditLimitSeconds *int64       `json:"credit_limit_seconds,omitempty"`
	OnExhausted        *string      `json:"on_exhausted,omitempty"`
}

// Apply returns base with the patch's fields set (not validated; an empty
// on_exhausted becomes Allow). base is not changed.
func (p SettingsPatch) Apply(base Settings) Settings {
	s := base
	s.ThresholdsMinutes = slices.Clone(base.ThresholdsMinutes)
	if t := p.Tariff; t != nil {
		setIf(&s.Tariff.FreeSeconds, t.FreeSeconds)
		setIf(&s.Tariff.MinimumSeconds, t.MinimumSeconds)
		setIf(&s.Tariff.IncrementSeconds, t.IncrementSeconds)
		setIf(&s.Tariff.CountInitiatedSeconds, t.CountInitiatedSeconds)
	}
	if p.ThresholdsMinutes != nil {
		s.ThresholdsMinutes = slices.Clone(*p.ThresholdsMinutes)
	}
	setIf(&s.CreditLimitSeconds, p.CreditLimitSeconds)
	setIf(&s.OnExhausted, p.OnExhausted)
	if s.OnExhausted == "" {
		s.OnExhausted = Allow
	}
	return s
}

func setIf[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// Project is a project as the API shows it (SPEC §9).
type Project struct {
	ID             string  `json:"id"`
	BalanceSeconds int64   `json:"balance_seconds"`
	BalanceMinutes float64 `json:"balance_minutes"`
	Settings
	LiveCalls int       `json:"live_calls"`
	CreatedAt time.Time `json:"created_at"`
}

// Call is the ledger's state of one call (live or settled).
type Call struct {
	Project    string        `json:"project"`
	Node       string        `json:"node"`
	Channel    string        `json:"channel"`
	AnsweredAt time.Time     `json:"answered_at"`
	Tariff     tariff.Tariff `json:"tariff"`
	// Debited is Σ debits − Σ refunds of this call so far.
	Debited int64 `json:"debited_seconds"`
	// NextBlock is the index of the next block not yet debited.
	NextBlock int       `json:"next_block"`
	NextDue   time.Time `json:"next_due"`
	Settled   bool      `json:"settled"`
	Estimated bool      `json:"estimated,omitempty"`
	Exhausted bool      `json:"exhausted,omitempty"`
}

// Key is node/channel.
func (c Call) Key() string { return c.Node + "/" + c.Channel }

// Entry is one line of a project's ledger.
type Entry struct {
	ID        string    `json:"id"`
	At        time.Time `json:"at"`
	Kind      string    `json:"kind"`    // debit, refund, topup, adjustment
	Seconds   int64     `json:"seconds"` // signed change of the balance
	Balance   int64     `json:"balance_seconds"`
	Call      string    `json:"call,omitempty"`
	Block     int       `json:"block,omitempty"`
	Reference string    `json:"reference,omitempty"`
}
