package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/minuted/minuted/internal/ledger"
)

// Bounds of the request bodies.
const (
	// MaxAmountSeconds bounds one top-up or adjustment (about 317 years).
	MaxAmountSeconds = 10_000_000_000
	// MaxCreditLimitSeconds bounds credit_limit_seconds (about 34 years).
	MaxCreditLimitSeconds = 1 << 30
	MaxThresholds         = 16
	// MaxThresholdMinutes bounds each threshold (0..MaxThresholdMinutes).
	MaxThresholdMinutes = 10_000_000
	MaxReferenceLen     = 256
	MaxReasonLen        = 512
)

// inputError is a problem with the request the client can fix (400).
type inputError struct{ msg string }

func (e *inputError) Error() string { return e.msg }

func badInput(format string, args ...any) error { return &inputError{fmt.Sprintf(format, args...)} }

// decodeStrict decodes exactly one JSON object into dst, refusing unknown
// fields and trailing data. Its errors are *inputError, or the
// *http.MaxBytesError of a body over the limit; allowed lists the fields
// for the messages.
func decodeStrict(r io.Reader, dst any, allowed string) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return explainJSON(err, allowed)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badInput("the body has more data after its JSON object: send one object with %s", allowed)
	}
	return nil
}

func explainJSON(err error, allowed string) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		ute *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.Is(err, io.EOF):
		return badInput("the request body is empty: send a JSON object with %s", allowed)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badInput("the body ends in the middle of its JSON object: send a complete object with %s", allowed)
	case errors.As(err, &se):
		return badInput("the body is not valid JSON (at byte %d: %v): send a JSON object with %s", se.Offset, se, allowed)
	case errors.As(err, &ute):
		if ute.Field == "" {
			return badInput("the body must be a JSON object with %s, not a JSON %s", allowed, ute.Value)
		}
		return badInput("field %q must be %s, not a JSON %s", jsonPath(ute.Field), kindOf(ute.Type.String()), ute.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badInput("unknown field %s in the body: the allowed fields are %s", name, allowed)
	}
	var ie *inputError
	if errors.As(err, &ie) {
		return ie
	}
	return badInput("the body cannot be read as JSON (%v): send a JSON object with %s", err, allowed)
}

// jsonPath drops from an UnmarshalTypeError's field path the names of
// embedded Go structs (encoding/json lists them; the body's fields are all
// lower case).
func jsonPath(field string) string {
	parts := strings.Split(field, ".")
	kept := parts[:0]
	for _, p := range parts {
		if p != "" && unicode.IsUpper(rune(p[0])) {
			continue
		}
		kept = append(kept, p)
	}
	return strings.Join(kept, ".")
}

func kindOf(goType string) string {
	goType = strings.TrimPrefix(goType, "*")
	switch {
	case strings.HasPrefix(goType, "int"):
		return "an integer"
	case strings.HasPrefix(goType, "float"), goType == "json.Number":
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case goType == "[]float64":
		return "an array of numbers"
	}
	return "a JSON object"
}

// ---- project settings (PUT /v1/projects/{id}) ----

const settingsFields = "tariff {free_seconds, minimum_seconds, increment_seconds, count_initiated_seconds}, " +
	"thresholds_minutes, credit_limit_seconds, on_exhausted"

// settingsPatch is the body of PUT: a field left out (or null) keeps its
// current value, or takes the default for a new project. The read-only
// fields of a project are accepted only so that their presence gets a
// precise message (id is accepted when it equals the path's id).
type settingsPatch struct {
	ledger.SettingsPatch

	ID             *string         `json:"id"`
	BalanceSeconds json.RawMessage `json:"balance_seconds"`
	BalanceMinutes json.RawMessage `json:"balance_minutes"`
	LiveCalls      json.RawMessage `json:"live_calls"`
	CreatedAt      json.RawMessage `json:"created_at"`
}

// decodeSettings reads the body of PUT /v1/projects/{id}.
func decodeSettings(r io.Reader, id string) (settingsPatch, error) {
	var p settingsPatch
	if err := decodeStrict(r, &p, settingsFields); err != nil {
		return p, err
	}
	switch {
	case p.BalanceSeconds != nil || p.BalanceMinutes != nil:
		return p, badInput("the balance cannot be set with PUT: remove balance_seconds/balance_minutes and " +
			"use POST /v1/projects/{id}/topups (or /adjustments for a correction)")
	case p.LiveCalls != nil:
		return p, badInput("live_calls is read-only: remove it from the body")
	case p.CreatedAt != nil:
		return p, badInput("created_at is read-only: remove it from the body")
	case p.ID != nil && *p.ID != id:
		return p, badInput("the body's id %q differs from the path's %q: remove id from the body "+
			"(a project's id is the one in the path)", *p.ID, id)
	}
	return p, nil
}

// apply returns base with the fields of the patch set, validated.
func (p settingsPatch) apply(base ledger.Settings) (ledger.Settings, error) {
	s := p.SettingsPatch.Apply(base)
	return s, validateSettings(&s)
}

// validateSettings checks s, naming each wrong field, and sorts the
// thresholds from the highest down (nil thresholds are left nil: the
// ledger's defaults).
func validateSettings(s *ledger.Settings) error {
	var msgs []string
	if err := s.Tariff.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			msgs = append(msgs, "tariff."+line)
		}
	}
	if len(s.ThresholdsMinutes) > MaxThresholds {
		msgs = append(msgs, fmt.Sprintf("thresholds_minutes has %d values, at most %d are allowed",
			len(s.ThresholdsMinutes), MaxThresholds))
	}
	for _, t := range s.ThresholdsMinutes {
		if math.IsNaN(t) || t < 0 || t > MaxThresholdMinutes {
			msgs = append(msgs, fmt.Sprintf("thresholds_minutes: %v is outside 0..%d minutes", t,
				MaxThresholdMinutes))
		}
	}
	slices.SortFunc(s.ThresholdsMinutes, func(a, b float64) int { return -compareFloat(a, b) })
	for i := 1; i < len(s.ThresholdsMinutes); i++ {
		if s.ThresholdsMinutes[i] == s.ThresholdsMinutes[i-1] {
			msgs = append(msgs, fmt.Sprintf("thresholds_minutes lists %v twice: give each threshold once",
				s.ThresholdsMinutes[i]))
		}
	}
	if s.CreditLimitSeconds < 0 || s.CreditLimitSeconds > MaxCreditLimitSeconds {
		msgs = append(msgs, fmt.Sprintf("credit_limit_seconds must be between 0 and %d (how far below zero "+
			"the balance may go), got %d", MaxCreditLimitSeconds, s.CreditLimitSeconds))
	}
	if s.OnExhausted != ledger.Allow && s.OnExhausted != ledger.Hangup {
		msgs = append(msgs, fmt.Sprintf("on_exhausted must be %q or %q, got %q", ledger.Allow, ledger.Hangup,
			s.OnExhausted))
	}
	if len(msgs) > 0 {
		return &inputError{strings.Join(msgs, "; ")}
	}
	return nil
}

func compareFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ---- top-ups and adjustments ----

const (
	topUpFields      = `exactly one of "seconds" (integer) or "minutes" (at most 2 decimals), and "reference"`
	adjustmentFields = `exactly one of "seconds" or "minutes" (signed), "reference" and "reason"`
)

type topUpBody struct {
	Seconds   *int64          `json:"seconds"`
	Minutes   json.RawMessage `json:"minutes"` // checked by minutesToSeconds
	Reference *string         `json:"reference"`
}

type adjustmentBody struct {
	topUpBody
	Reason *string `json:"reason"`
}

// amount is a decoded top-up or adjustment.
type amount struct {
	Seconds   int64
	Reference string
	Reason    string
}

// decodeTopUp reads the body of POST /v1/projects/{id}/topups: a positive
// amount and a reference.
func decodeTopUp(r io.Reader) (amount, error) {
	var b topUpBody
	if err := decodeStrict(r, &b, topUpFields); err != nil {
		return amount{}, err
	}
	a, err := b.amount(topUpFields)
	if err != nil {
		return a, err
	}
	if a.Seconds <= 0 {
		return a, badInput("a top-up must add time: seconds/minutes must be above 0, got %d seconds "+
			"(use POST /v1/projects/{id}/adjustments to take time away)", a.Seconds)
	}
	return a, nil
}

// decodeAdjustment reads the body of POST /v1/projects/{id}/adjustments: a
// signed, non-zero amount, a reference and a reason.
func decodeAdjustment(r io.Reader) (amount, error) {
	var b adjustmentBody
	if err := decodeStrict(r, &b, adjustmentFields); err != nil {
		return amount{}, err
	}
	a, err := b.amount(adjustmentFields)
	if err != nil {
		return a, err
	}
	if a.Seconds == 0 {
		return a, badInput("an adjustment must change the balance: seconds/minutes must not be 0")
	}
	if b.Reason == nil || strings.TrimSpace(*b.Reason) == "" {
		return a, badInput(`field "reason" is required: say why the balance is corrected`)
	}
	if err := checkText("reason", *b.Reason, MaxReasonLen); err != nil {
		return a, err
	}
	a.Reason = *b.Reason
	return a, nil
}

func (b topUpBody) amount(fields string) (amount, error) {
	var a amount
	if string(b.Minutes) == "null" {
		b.Minutes = nil
	}
	switch {
	case b.Seconds != nil && b.Minutes != nil:
		return a, badInput(`give either "seconds" or "minutes", not both`)
	case b.Seconds != nil:
		a.Seconds = *b.Seconds
	case b.Minutes != nil:
		s, err := minutesToSeconds(string(b.Minutes))
		if err != nil {
			return a, err
		}
		a.Seconds = s
	default:
		return a, badInput("the amount is missing: send %s", fields)
	}
	if a.Seconds > MaxAmountSeconds || a.Seconds < -MaxAmountSeconds {
		return a, badInput("the amount %d seconds is beyond the limit of %d seconds per operation",
			a.Seconds, MaxAmountSeconds)
	}
	if b.Reference == nil || *b.Reference == "" {
		return a, badInput(`field "reference" is required: a unique id of this operation (an invoice or ` +
			`payment id); sending the same reference again does not apply it twice`)
	}
	if err := checkText("reference", *b.Reference, MaxReferenceLen); err != nil {
		return a, err
	}
	a.Reference = *b.Reference
	return a, nil
}

// checkText refuses control characters, invalid UTF-8 and long values.
func checkText(field, v string, maxLen int) error {
	if len(v) > maxLen {
		return badInput("field %q is %d bytes long, at most %d are allowed", field, len(v), maxLen)
	}
	if !utf8.ValidString(v) || strings.IndexFunc(v, unicode.IsControl) >= 0 {
		return badInput("field %q must be printable UTF-8 text without control characters", field)
	}
	return nil
}

var minutesRE = regexp.MustCompile(`^(-?)(0|[1-9][0-9]{0,11})(?:\.([0-9]{1,2}))?$`)

// minutesToSeconds converts a decimal number of minutes with at most two
// decimals into seconds; it refuses amounts that are not whole seconds
// (minutes go in steps of 0.05 = 3 s) rather than round money.
func minutesToSeconds(num string) (int64, error) {
	if num == "" || !strings.ContainsRune("-0123456789", rune(num[0])) || !json.Valid([]byte(num)) {
		return 0, badInput(`field "minutes" must be a number, not %s`, num)
	}
	m := minutesRE.FindStringSubmatch(num)
	if m == nil {
		if _, err := strconv.ParseFloat(num, 64); err == nil && !strings.ContainsAny(num, "eE") {
			return 0, badInput("minutes %s has more than 2 decimals: round it to 2 decimals or use seconds", num)
		}
		return 0, badInput("minutes %s must be written as a plain decimal with at most 2 decimals, like 90 or 1.5", num)
	}
	whole, _ := strconv.ParseInt(m[2], 10, 64)
	frac := m[3]
	for len(frac) < 2 {
		frac += "0"
	}
	f, _ := strconv.ParseInt(frac, 10, 64)
	hundredths := whole*100 + f
	if hundredths%5 != 0 {
		lo := hundredths / 5 * 5
		return 0, badInput("minutes %s is %d.%d seconds, not a whole number: use seconds, or minutes in steps "+
			"of 0.05 (3 seconds) such as %s or %s", num, hundredths*60/100, hundredths*60%100/10,
			fmtHundredths(m[1], lo), fmtHundredths(m[1], lo+5))
	}
	s := hundredths * 60 / 100
	if m[1] == "-" {
		s = -s
	}
	return s, nil
}

func fmtHundredths(sign string, h int64) string {
	return fmt.Sprintf("%s%d.%02d", sign, h/100, h%100)
}
