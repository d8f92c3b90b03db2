package bill

import (
	"encoding/json"
	"fmt"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
)

// AuthSubjectPrefix: ingest asks whether a call of a project may go on with
// a NATS request on AuthSubject(project); bill answers in queue group
// AuthQueue (SPEC §8).
const (
	AuthSubjectPrefix = "minuted.auth."
	AuthWildcard      = AuthSubjectPrefix + "*"
	AuthQueue         = "bill"
)

// AuthSubject is the request subject of a project's authorisation.
func AuthSubject(project string) string { return AuthSubjectPrefix + project }

// AuthRequest asks whether a channel entering Stasis may continue.
type AuthRequest struct {
	Schema  int    `json:"schema"`
	Node    string `json:"node"`
	Channel string `json:"channel"`
	Project string `json:"project"`
}

// AuthResponse answers an AuthRequest. Seconds is the longest talk time the
// project's balance (plus credit limit) pays for alone, -1 when the project
// never cuts calls (on_exhausted: allow). Concurrent calls share the
// balance, so it is an upper bound.
type AuthResponse struct {
	Schema  int    `json:"schema"`
	Allow   bool   `json:"allow"`
	Seconds int64  `json:"seconds"`
	Reason  string `json:"reason,omitempty"`
	Balance int64  `json:"balance_seconds"`
}

// Reasons of a refusal.
const (
	ReasonExhausted = "exhausted"
	ReasonUnknown   = "unknown_project"
	ReasonInvalid   = "invalid_request"
	ReasonError     = "ledger_unavailable"
)

// DecodeAuthRequest parses and validates an authorisation request.
func DecodeAuthRequest(b []byte) (*AuthRequest, error) {
	var r AuthRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode auth request: %w", err)
	}
	if r.Schema != call.Schema {
		return nil, fmt.Errorf("auth request: schema %d, want %d", r.Schema, call.Schema)
	}
	if err := call.CheckProject(r.Project); err != nil {
		return nil, fmt.Errorf("auth request: %w", err)
	}
	return &r, nil
}

// authorise decides an AuthRequest from the project's state.
func authorise(p ledger.Project) AuthResponse {
	r := AuthResponse{Schema: call.Schema, Balance: p.BalanceSeconds}
	if p.OnExhausted != ledger.Hangup {
		r.Allow, r.Seconds = true, -1
		return r
	}
	avail := p.BalanceSeconds + p.CreditLimitSeconds
	r.Seconds = coveredSeconds(p.Tariff, avail)
	r.Allow = r.Seconds > 0
	if !r.Allow {
		r.Reason = ReasonExhausted
	}
	return r
}

// coveredSeconds is the longest whole-second talk time s with
// billed(s) <= avail.
func coveredSeconds(t tariff.Tariff, avail int64) int64 {
	avail = max(avail, 0)
	// billed is monotonic and billed(s) >= s for s >= max(F, 1), so
	// s = max(avail, F, M) + 1 is never covered.
	lo, hi := int64(0), max(avail, t.FreeSeconds, t.MinimumSeconds)+1
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if t.Billed(mid) <= avail {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}
