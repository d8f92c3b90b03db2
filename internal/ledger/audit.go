package ledger

import (
	"context"
	"fmt"

	"github.com/minuted/minuted/internal/call"
)

// Audit is the result of checking one project's ledger against its
// balance (Ledger.Audit).
type Audit struct {
	Project        string `json:"project"`
	BalanceSeconds int64  `json:"balance_seconds"`
	Entries        int    `json:"entries"`
	// Complete: every entry ever added to the ledger stream is still there,
	// so the totals below cover the project's whole history (false once it
	// was trimmed at ledger.max_len).
	Complete bool `json:"complete"`
	// CreditedSeconds is Σ top-ups + adjustments, BilledSeconds Σ debits −
	// Σ refunds (positive: charged), over the entries kept.
	CreditedSeconds int64 `json:"credited_seconds"`
	BilledSeconds   int64 `json:"billed_seconds"`
	// PerCall is what each call was charged (debits − refunds), by the
	// entry's call key "<node>/<channel>".
	PerCall map[string]int64 `json:"-"`
	// Problems lists every inconsistency found; empty when the ledger is
	// sound: each entry's balance is the one before plus its change, and
	// the newest entry's balance is the project's balance.
	Problems []string `json:"problems"`
}

// OK reports whether the audit found no problem.
func (a Audit) OK() bool { return len(a.Problems) == 0 }

// Audit reads a project's balance and every ledger entry kept, in one
// MULTI (the scripts that change both are atomic, so the two agree at that
// instant), and checks that the entries form an unbroken chain ending at
// the balance. A problem is a finding, not an error; the error is for a
// project that does not exist or Redis failing.
func (l *Ledger) Audit(ctx context.Context, project string) (Audit, error) {
	if err := call.CheckProject(project); err != nil {
		return Audit{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	pipe := l.rdb.TxPipeline()
	h := pipe.HGetAll(ctx, l.key(project, "project"))
	xs := pipe.XRange(ctx, l.key(project, "ledger"), "-", "+")
	info := pipe.XInfoStream(ctx, l.key(project, "ledger")) // fails when there is no ledger yet
	if _, err := pipe.Exec(ctx); err != nil && (h.Err() != nil || xs.Err() != nil) {
		return Audit{}, fmt.Errorf("read project %q and its ledger from redis: %w", project, err)
	}
	if len(h.Val()) == 0 {
		return Audit{}, fmt.Errorf("project %q: %w", project, ErrNotFound)
	}
	a := Audit{Project: project, BalanceSeconds: parseInt(h.Val()["balance"]),
		Entries: len(xs.Val()), PerCall: map[string]int64{}, Problems: []string{}}
	// Complete: every entry ever added is still there (none trimmed at
	// ledger.max_len or deleted).
	a.Complete = info.Err() != nil && a.Entries == 0 || info.Err() == nil && info.Val().EntriesAdded == info.Val().Length
	var prev int64
	for i, m := range xs.Val() {
		e := entryFrom(m)
		start := prev // the balance before this entry
		if i == 0 && !a.Complete {
			start = e.Balance - e.Seconds // the entries before it were trimmed
		}
		if e.Balance != start+e.Seconds {
			a.Problems = append(a.Problems, fmt.Sprintf("entry %s (%s %+d s) says balance %d s, but the entry before left %d s",
				e.ID, e.Kind, e.Seconds, e.Balance, start))
		}
		prev = e.Balance
		switch e.Kind {
		case KindTopUp, KindAdjustment:
			a.CreditedSeconds += e.Seconds
		default:
			a.BilledSeconds -= e.Seconds
			a.PerCall[e.Call] -= e.Seconds
		}
	}
	switch {
	case a.Entries == 0 && a.BalanceSeconds != 0:
		a.Problems = append(a.Problems, fmt.Sprintf("balance is %d s but the ledger has no entries", a.BalanceSeconds))
	case a.Entries > 0 && prev != a.BalanceSeconds:
		a.Problems = append(a.Problems, fmt.Sprintf("balance is %d s but the newest ledger entry left %d s", a.BalanceSeconds, prev))
	}
	return a, nil
}
