package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"testing"

	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
)

func mustInputError(t *testing.T, err error) {
	t.Helper()
	var ie *inputError
	if !errors.As(err, &ie) || ie.msg == "" {
		t.Fatalf("error %v (%T) is not a client error with a message", err, err)
	}
}

var fuzzBase = ledger.Settings{Tariff: tariff.Default, ThresholdsMinutes: []float64{60, 10, 0}, OnExhausted: ledger.Allow}

func FuzzDecodeSettings(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"tariff":{"free_seconds":5,"minimum_seconds":30,"increment_seconds":6,"count_initiated_seconds":true}}`,
		`{"thresholds_minutes":[60,10,0.5],"credit_limit_seconds":300,"on_exhausted":"hangup"}`,
		`{"thresholds_minutes":[]}`, `{"thresholds_minutes":null,"tariff":null}`, `{"id":"acme"}`,
		`{"balance_seconds":1}`, `{"tariff":{"increment_seconds":0}}`, `{"on_exhausted":"x"}`, `[`, `{"a":1}`,
		`{"thresholds_minutes":[1e308,-0]}`, `{} {}`, ``, `{"tariff":{"minimum_seconds":1.5}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodeSettings(bytes.NewReader(data), "acme")
		if err != nil {
			mustInputError(t, err)
			return
		}
		s, err := p.apply(fuzzBase)
		if err != nil {
			mustInputError(t, err)
			return
		}
		if err := s.Tariff.Validate(); err != nil {
			t.Fatalf("accepted an invalid tariff: %v", err)
		}
		if s.OnExhausted != ledger.Allow && s.OnExhausted != ledger.Hangup {
			t.Fatalf("accepted on_exhausted %q", s.OnExhausted)
		}
		if s.CreditLimitSeconds < 0 || s.CreditLimitSeconds > MaxCreditLimitSeconds {
			t.Fatalf("accepted credit limit %d", s.CreditLimitSeconds)
		}
		for i, th := range s.ThresholdsMinutes {
			if th < 0 || th > MaxThresholdMinutes || (i > 0 && th >= s.ThresholdsMinutes[i-1]) {
				t.Fatalf("thresholds %v not distinct, in range and descending", s.ThresholdsMinutes)
			}
		}
		// The settings written back as a body decode to the same settings,
		// whatever the base.
		body, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		p2, err := decodeSettings(bytes.NewReader(body), "acme")
		if err != nil {
			t.Fatalf("re-decoding %s: %v", body, err)
		}
		s2, err := p2.apply(ledger.Settings{Tariff: tariff.Tariff{IncrementSeconds: 7}, OnExhausted: ledger.Hangup})
		if err != nil {
			t.Fatalf("re-applying %s: %v", body, err)
		}
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip changed the settings: %+v -> %+v", s, s2)
		}
		// The base is not modified through shared slices.
		if !slices.Equal(fuzzBase.ThresholdsMinutes, []float64{60, 10, 0}) {
			t.Fatalf("apply modified its base: %v", fuzzBase.ThresholdsMinutes)
		}
	})
}

func fuzzAmount(f *testing.F, decode func(*bytes.Reader) (amount, error), check func(*testing.T, amount)) {
	for _, s := range []string{
		`{"seconds":60,"reference":"inv-1"}`, `{"minutes":1.5,"reference":"r"}`, `{"minutes":0.01,"reference":"r"}`,
		`{"minutes":-2.25,"reference":"r","reason":"x"}`, `{"seconds":-1,"reference":"r","reason":"fix"}`,
		`{"seconds":1,"minutes":1,"reference":"r"}`, `{"minutes":1e2,"reference":"r"}`, `{"minutes":"1","reference":"r"}`,
		`{"seconds":9223372036854775807,"reference":"r"}`, `{"reference":"r"}`, `{}`, `null`, `{"minutes":null,"seconds":5,"reference":"é"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := decode(bytes.NewReader(data))
		if err != nil {
			mustInputError(t, err)
			return
		}
		if a.Seconds == 0 || a.Seconds > MaxAmountSeconds || a.Seconds < -MaxAmountSeconds {
			t.Fatalf("accepted amount %d", a.Seconds)
		}
		if a.Reference == "" || len(a.Reference) > MaxReferenceLen || checkText("reference", a.Reference, MaxReferenceLen) != nil {
			t.Fatalf("accepted reference %q", a.Reference)
		}
		check(t, a)
		body, _ := json.Marshal(map[string]any{"seconds": a.Seconds, "reference": a.Reference})
		if a.Reason != "" {
			body, _ = json.Marshal(map[string]any{"seconds": a.Seconds, "reference": a.Reference, "reason": a.Reason})
		}
		a2, err := decode(bytes.NewReader(body))
		if err != nil || a2 != a {
			t.Fatalf("round trip of %+v: %+v, %v", a, a2, err)
		}
	})
}

func FuzzDecodeTopUp(f *testing.F) {
	fuzzAmount(f, func(r *bytes.Reader) (amount, error) { return decodeTopUp(r) }, func(t *testing.T, a amount) {
		if a.Seconds <= 0 || a.Reason != "" {
			t.Fatalf("accepted top-up %+v", a)
		}
	})
}

func FuzzDecodeAdjustment(f *testing.F) {
	fuzzAmount(f, func(r *bytes.Reader) (amount, error) { return decodeAdjustment(r) }, func(t *testing.T, a amount) {
		if a.Reason == "" || checkText("reason", a.Reason, MaxReasonLen) != nil {
			t.Fatalf("accepted adjustment without a valid reason: %+v", a)
		}
	})
}

func FuzzMinutesToSeconds(f *testing.F) {
	for _, s := range []string{"1", "1.5", "0.05", "0.01", "-3.25", "10.123", "1e3", "007", "-0", "999999999999.95", `"1"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		secs, err := minutesToSeconds(s)
		if err != nil {
			mustInputError(t, err)
			return
		}
		r, ok := new(big.Rat).SetString(s)
		if !ok {
			t.Fatalf("accepted %q, which is not a number", s)
		}
		if want := new(big.Rat).Mul(r, big.NewRat(60, 1)); want.Cmp(big.NewRat(secs, 1)) != 0 {
			t.Fatalf("minutes %s -> %d seconds, want %s", s, secs, want.RatString())
		}
	})
}
