package alert

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/minuted/minuted/internal/call"
)

// Schema is the version of the Alert JSON body.
const Schema = call.Schema

var kindRE = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// ProjectKind reports whether alerts of kind k are about one project's
// balance (their text gives balance, burn rate and time to zero).
func ProjectKind(k string) bool { return k == Threshold || k == Exhausted || k == UnknownProject }

// Validate checks what a sink relies on. Unknown kinds are accepted (a newer
// raiser may add some); they are rendered with the generic template.
func (a *Alert) Validate() error {
	var errs []error
	if a.Schema != Schema {
		errs = append(errs, fmt.Errorf("schema %d is not supported (want %d)", a.Schema, Schema))
	}
	if a.ID == "" || len(a.ID) > 256 || !utf8.ValidString(a.ID) || strings.ContainsAny(a.ID, " \t\r\n") {
		errs = append(errs, errors.New("id must be 1-256 characters without whitespace"))
	}
	if !kindRE.MatchString(a.Kind) {
		errs = append(errs, fmt.Errorf("kind %q must match %s", a.Kind, kindRE))
	}
	if a.Project != "" {
		if err := call.CheckProject(a.Project); err != nil {
			errs = append(errs, err)
		}
	} else if ProjectKind(a.Kind) {
		errs = append(errs, fmt.Errorf("a %s alert needs a project", a.Kind))
	}
	if a.At.IsZero() {
		errs = append(errs, errors.New("at is missing"))
	}
	if t := a.ThresholdMinutes; t != nil && (math.IsNaN(*t) || math.IsInf(*t, 0)) {
		errs = append(errs, errors.New("threshold_minutes must be a finite number"))
	}
	if a.Count < 0 {
		errs = append(errs, errors.New("count must not be negative"))
	}
	if !utf8.ValidString(a.Detail) || !utf8.ValidString(a.Node) {
		errs = append(errs, errors.New("detail and node must be UTF-8"))
	}
	return errors.Join(errs...)
}

// Decode parses and validates an ALERTS message body.
func Decode(b []byte) (Alert, error) {
	var a Alert
	if err := json.Unmarshal(b, &a); err != nil {
		return Alert{}, fmt.Errorf("decode alert: %w", err)
	}
	if err := a.Validate(); err != nil {
		id := a.ID
		if len(id) > 64 {
			id = id[:64] + "…"
		}
		return Alert{}, fmt.Errorf("invalid alert %q: %w", id, err)
	}
	return a, nil
}
