// Package ledger is minuted's Redis ledger: project balances in integer
// seconds, live and settled calls, top-ups and the ledger stream.
//
// Every balance change is one Lua script (lua/*.lua) that is idempotent and
// writes its ledger entry and decides threshold alerts in the same atomic
// step, so several bill instances can run side by side.
//
// Keys (P is Options.Prefix, p the project id; {p} is the Redis Cluster
// hash tag, so all keys of one project live in one slot):
//
//	P:projects                 set of project ids (own slot, updated apart)
//	P:{p}:project              hash: balance, created, tariff, thresholds, credit, policy
//	P:{p}:thresholds           hash: a:<T> "0" while T is disarmed, g:<T> generation
//	P:{p}:refs                 hash: top-up reference -> first result
//	P:{p}:ledger               stream of entries (XADD MAXLEN ~ LedgerMaxLen)
//	P:{p}:live                 zset of live calls "node/channel" scored by next due (ms)
//	P:{p}:call:<node>/<chan>   hash: one call; expires CallTTL after settlement
//	P:{p}:cdrs, P:{p}:recent   hash call -> CDR JSON, zset call by ended_at (ms), capped at CDRMax
package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/tariff"
)

// ErrInvalid wraps every validation error (bad id, tariff, amount...).
var ErrInvalid = errors.New("invalid")

// ErrConflict is returned when a top-up reference is reused with another
// amount or kind.
var ErrConflict = errors.New("conflict")

// DefaultThresholds is used when Settings.ThresholdsMinutes is nil.
var DefaultThresholds = []float64{60, 10, 0}

// Kinds of ledger entries.
const (
	KindDebit      = "debit"
	KindRefund     = "refund"
	KindTopUp      = "topup"
	KindAdjustment = "adjustment"
)

// Options tune a Ledger; zero values take the defaults.
type Options struct {
	Prefix       string        // key prefix, default "minuted"
	LedgerMaxLen int64         // XADD MAXLEN ~ of each project's ledger stream, default 100000
	CallTTL      time.Duration // how long settled call records are kept, default 7 days
	CDRMax       int64         // recent CDRs kept per project, default 10000
	Now          func() time.Time
}

// Ledger reads and changes balances in Redis. It is safe for concurrent use.
type Ledger struct {
	rdb redis.UniversalClient
	o   Options
}

// New returns a Ledger on rdb (a Client, ClusterClient or Ring).
func New(rdb redis.UniversalClient, o Options) *Ledger {
	if o.Prefix == "" {
		o.Prefix = "minuted"
	}
	if o.LedgerMaxLen <= 0 {
		o.LedgerMaxLen = 100000
	}
	if o.CallTTL <= 0 {
		o.CallTTL = 7 * 24 * time.Hour
	}
	if o.CDRMax <= 0 {
		o.CDRMax = 10000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Ledger{rdb: rdb, o: o}
}

func (l *Ledger) key(p, suffix string) string { return l.o.Prefix + ":{" + p + "}:" + suffix }
func (l *Ledger) callKey(p, node, channel string) string {
	return l.key(p, "call:"+node+"/"+channel)
}
func (l *Ledger) projectsKey() string { return l.o.Prefix + ":projects" }
func (l *Ledger) nowMS() string       { return strconv.FormatInt(l.o.Now().UnixMilli(), 10) }

// Ping checks that Redis answers.
func (l *Ledger) Ping(ctx context.Context) error {
	if err := l.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}

// ---------------------------------------------------------------- projects

// Put creates or updates project id's settings; it never touches the
// balance. ThresholdsMinutes nil means DefaultThresholds, an empty slice
// none; thresholds are stored sorted descending without duplicates. An empty
// OnExhausted means Allow.
func (l *Ledger) Put(ctx context.Context, id string, s Settings) (Project, bool, error) {
	return l.put(ctx, "put", id, s)
}

// Ensure creates project id with zero balance and the given settings if it
// does not exist; an existing project is left as it is.
func (l *Ledger) Ensure(ctx context.Context, id string, defaults Settings) (bool, error) {
	_, created, err := l.put(ctx, "ensure", id, defaults)
	return created, err
}

func (l *Ledger) put(ctx context.Context, mode, id string, s Settings) (Project, bool, error) {
	s, err := normalize(id, s)
	if err != nil {
		return Project{}, false, err
	}
	ths := make([]string, len(s.ThresholdsMinutes))
	for i, t := range s.ThresholdsMinutes {
		ths[i] = strconv.FormatFloat(t, 'f', -1, 64)
	}
	t := s.Tariff
	res, err := putScript.Run(ctx, l.rdb, []string{l.key(id, "project"), l.key(id, "live")},
		mode, l.nowMS(), t.FreeSeconds, t.MinimumSeconds, t.IncrementSeconds, b01(t.CountInitiatedSeconds),
		strings.Join(ths, " "), s.CreditLimitSeconds, s.OnExhausted).Slice()
	if err != nil {
		return Project{}, false, fmt.Errorf("save project %q in redis: %w", id, err)
	}
	// The global list is a set in its own slot: updated after the project
	// exists, idempotently, on every Put/Ensure.
	if err := l.rdb.SAdd(ctx, l.projectsKey(), id).Err(); err != nil {
		return Project{}, false, fmt.Errorf("list project %q in redis: %w", id, err)
	}
	p := projectFrom(id, pairs(res[1]), asInt(res[2]))
	return p, asInt(res[0]) == 1, nil
}

func normalize(id string, s Settings) (Settings, error) {
	var errs []error
	if err := call.CheckProject(id); err != nil {
		errs = append(errs, err)
	}
	if err := s.Tariff.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("tariff: %w", err))
	}
	if s.ThresholdsMinutes == nil {
		s.ThresholdsMinutes = DefaultThresholds
	}
	ths := make([]float64, 0, len(s.ThresholdsMinutes))
	for _, t := range s.ThresholdsMinutes {
		if t < 0 || math.IsNaN(t) || math.IsInf(t, 0) || t > 1<<30 {
			errs = append(errs, fmt.Errorf("thresholds_minutes must be finite and >= 0, got %v", t))
			continue
		}
		ths = append(ths, t)
	}
	slices.Sort(ths)
	slices.Reverse(ths)
	s.ThresholdsMinutes = slices.Compact(ths)
	if s.CreditLimitSeconds < 0 {
		errs = append(errs, fmt.Errorf("credit_limit_seconds must be >= 0, got %d", s.CreditLimitSeconds))
	}
	if s.OnExhausted == "" {
		s.OnExhausted = Allow
	}
	if s.OnExhausted != Allow && s.OnExhausted != Hangup {
		errs = append(errs, fmt.Errorf("on_exhausted must be %q or %q, got %q", Allow, Hangup, s.OnExhausted))
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("%w project %q: %w", ErrInvalid, id, err)
	}
	return s, nil
}

// Get returns project id, or an error wrapping ErrNotFound.
func (l *Ledger) Get(ctx context.Context, id string) (Project, error) {
	if err := call.CheckProject(id); err != nil {
		return Project{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	pipe := l.rdb.TxPipeline()
	h := pipe.HGetAll(ctx, l.key(id, "project"))
	n := pipe.ZCard(ctx, l.key(id, "live"))
	if _, err := pipe.Exec(ctx); err != nil {
		return Project{}, fmt.Errorf("read project %q from redis: %w", id, err)
	}
	if len(h.Val()) == 0 {
		return Project{}, fmt.Errorf("project %q: %w", id, ErrNotFound)
	}
	return projectFrom(id, h.Val(), n.Val()), nil
}

// IDs returns the ids of all projects, sorted.
func (l *Ledger) IDs(ctx context.Context) ([]string, error) {
	ids, err := l.rdb.SMembers(ctx, l.projectsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list projects in redis: %w", err)
	}
	slices.Sort(ids)
	return ids, nil
}

// List returns all projects sorted by id.
func (l *Ledger) List(ctx context.Context) ([]Project, error) {
	ids, err := l.IDs(ctx)
	if err != nil {
		return nil, err
	}
	pipe := l.rdb.Pipeline()
	hs := make([]*redis.MapStringStringCmd, len(ids))
	ns := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		hs[i] = pipe.HGetAll(ctx, l.key(id, "project"))
		ns[i] = pipe.ZCard(ctx, l.key(id, "live"))
	}
	if len(ids) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("read projects from redis: %w", err)
		}
	}
	out := make([]Project, 0, len(ids))
	for i, id := range ids {
		if len(hs[i].Val()) > 0 {
			out = append(out, projectFrom(id, hs[i].Val(), ns[i].Val()))
		}
	}
	return out, nil
}

func projectFrom(id string, h map[string]string, live int64) Project {
	bal := parseInt(h["balance"])
	p := Project{
		ID:             id,
		BalanceSeconds: bal,
		BalanceMinutes: math.Round(float64(bal)/60*100) / 100,
		Settings: Settings{
			Tariff:             tariffFrom(h),
			ThresholdsMinutes:  []float64{},
			CreditLimitSeconds: parseInt(h["credit"]),
			OnExhausted:        h["policy"],
		},
		LiveCalls: int(live),
		CreatedAt: time.UnixMilli(parseInt(h["created"])).UTC(),
	}
	for f := range strings.FieldsSeq(h["thresholds"]) {
		if t, err := strconv.ParseFloat(f, 64); err == nil {
			p.ThresholdsMinutes = append(p.ThresholdsMinutes, t)
		}
	}
	return p
}

func tariffFrom(h map[string]string) tariff.Tariff {
	return tariff.Tariff{
		FreeSeconds:           parseInt(h["free"]),
		MinimumSeconds:        parseInt(h["min"]),
		IncrementSeconds:      parseInt(h["inc"]),
		CountInitiatedSeconds: h["cis"] == "1",
	}
}

// ---------------------------------------------------------------- top-ups

// TopUpResult is the outcome of TopUp.
type TopUpResult struct {
	Balance int64 // balance now
	Applied bool  // false: this reference was applied before (Entry is that first entry)
	Entry   Entry
	// Crossed lists thresholds a negative adjustment fired (the same on a
	// replay, so an alert lost in a crash is republished with the same id).
	Crossed []Crossing
}

// TopUp adds seconds to project id once per reference. kind is "topup"
// (seconds > 0) or "adjustment" (seconds != 0, may be negative). Reusing a
// reference with another amount or kind returns an error wrapping
// ErrConflict (and the first result). Thresholds the new balance is back at
// or above are re-armed.
func (l *Ledger) TopUp(ctx context.Context, id string, seconds int64, reference, kind string) (TopUpResult, error) {
	var errs []error
	if err := call.CheckProject(id); err != nil {
		errs = append(errs, err)
	}
	switch {
	case kind == KindTopUp && seconds <= 0:
		errs = append(errs, fmt.Errorf("a top-up must be > 0 seconds, got %d", seconds))
	case kind == KindAdjustment && seconds == 0:
		errs = append(errs, errors.New("an adjustment must not be 0 seconds"))
	case kind != KindTopUp && kind != KindAdjustment:
		errs = append(errs, fmt.Errorf("kind must be %q or %q, got %q", KindTopUp, KindAdjustment, kind))
	}
	if reference == "" || len(reference) > 256 {
		errs = append(errs, errors.New("reference must be 1-256 bytes"))
	}
	if err := errors.Join(errs...); err != nil {
		return TopUpResult{}, fmt.Errorf("%w top-up: %w", ErrInvalid, err)
	}
	res, err := topUpScript.Run(ctx, l.rdb,
		[]string{l.key(id, "project"), l.key(id, "thresholds"), l.key(id, "refs"), l.key(id, "ledger")},
		seconds, reference, kind, l.nowMS(), l.o.LedgerMaxLen).Slice()
	if err != nil {
		return TopUpResult{}, fmt.Errorf("top up project %q in redis: %w", id, err)
	}
	if asStr(res[0]) == "noproject" {
		return TopUpResult{}, fmt.Errorf("top up project %q: %w", id, ErrNotFound)
	}
	r := TopUpResult{Balance: asInt(res[1]), Applied: asStr(res[0]) == "ok"}
	r.Entry, r.Crossed, err = parseTopUpRecord(asStr(res[2]))
	if err != nil {
		return r, fmt.Errorf("top up project %q: %w", id, err)
	}
	r.Entry.Reference = reference
	if !r.Applied && (r.Entry.Kind != kind || r.Entry.Seconds != seconds) {
		return r, fmt.Errorf("top-up reference %q of project %q was used before for %s %d s, not %s %d s: %w",
			reference, id, r.Entry.Kind, r.Entry.Seconds, kind, seconds, ErrConflict)
	}
	return r, nil
}

// ---------------------------------------------------------------- calls

// Open identifies a call being answered.
type Open struct {
	Project, Node, Channel string
	AnsweredAt             time.Time
}

func checkCall(project, node, channel string) error {
	var errs []error
	if err := call.CheckProject(project); err != nil {
		errs = append(errs, err)
	}
	if node == "" {
		errs = append(errs, errors.New("missing node"))
	}
	if channel == "" {
		errs = append(errs, errors.New("missing channel"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w call %s/%s: %w", ErrInvalid, node, channel, err)
	}
	return nil
}

// Open creates the call record with the project's current tariff (which
// then applies to the whole call) and adds it to the live set scored by the
// due time of block 0. If the call exists (live or settled) its state is
// returned unchanged. ErrNotFound if the project does not exist.
func (l *Ledger) Open(ctx context.Context, o Open) (Call, error) {
	if err := checkCall(o.Project, o.Node, o.Channel); err != nil {
		return Call{}, err
	}
	res, err := openScript.Run(ctx, l.rdb,
		[]string{l.key(o.Project, "project"), l.callKey(o.Project, o.Node, o.Channel), l.key(o.Project, "live")},
		o.Node, o.Channel, o.AnsweredAt.UnixMilli(), o.Node+"/"+o.Channel).Slice()
	if err != nil {
		return Call{}, fmt.Errorf("open call %s/%s of project %q in redis: %w", o.Node, o.Channel, o.Project, err)
	}
	if asStr(res[0]) == "noproject" {
		return Call{}, fmt.Errorf("open call %s/%s: project %q: %w", o.Node, o.Channel, o.Project, ErrNotFound)
	}
	return callFrom(o.Project, pairs(res[1])), nil
}

// Crossing is a threshold fired by a balance change.
type Crossing struct {
	ThresholdMinutes float64
	Balance          int64 // balance right after the change that crossed it
	Generation       int64 // 1 the first time this threshold fires, +1 each time after
}

// DebitResult is the outcome of Debit.
type DebitResult struct {
	Applied   bool  // this call changed the ledger (false: replay or settled)
	Balance   int64 // balance of the project now
	Debited   int64 // total debited from this call now
	Exhausted bool  // the call is exhausted: hang it up, this block was not debited
	Settled   bool  // the call is settled: nothing done
	// OverLimit is set when, under on_exhausted=allow, this debit left the
	// balance below −credit_limit_seconds.
	OverLimit bool
	Crossed   []Crossing
}

// Debit brings call node/channel of project to b.Total seconds debited, in
// one script with its ledger entry and threshold decisions.
//
// Rule: blocks are identified by b.Index. If b.Index < the call's NextBlock
// the block was already covered: a replay, Applied=false, with the same
// Crossed as the first time. Otherwise the call is debited b.Total − Debited
// (which also covers any block skipped before it) and NextBlock becomes
// b.Index+1; a skipped block arriving later is then a replay. b must come
// from the call's own tariff (Call.Tariff.Block), which Open returns.
//
// The live-set score becomes the due time of block b.Index+1, computed in
// the script from the call's answer time and tariff snapshot exactly as
// tariff.Block does (time at which whole-second talk reaches b.Total+1).
//
// Exhaustion (SPEC §8): under on_exhausted=hangup, if the balance minus the
// amount would go below −credit_limit_seconds, nothing is debited, the call
// is marked exhausted and Exhausted=true (Applied=true only when this call
// marked it). The block stays due: a retry that the balance now covers
// (after a top-up) debits it and clears the mark. Settle never bills a call
// still marked exhausted more than it was debited. Under allow the debit
// happens and OverLimit tells it went past the limit.
// A settled call returns Settled=true and changes nothing. ErrNotFound if the
// project or the call does not exist (Open first).
func (l *Ledger) Debit(ctx context.Context, project, node, channel string, b tariff.Block) (DebitResult, error) {
	res, errs := l.DebitMany(ctx, []DebitReq{{Project: project, Node: node, Channel: channel, Block: b}})
	return res[0], errs[0]
}

// DebitReq is one block of one live call to debit (see Debit).
type DebitReq struct {
	Project, Node, Channel string
	Block                  tariff.Block
}

// DebitMany is Debit for many calls in one round trip to Redis (a
// pipeline: each call's script is still atomic on its own, and a block
// debited twice is still a replay). res[i] and errs[i] are Debit's for
// reqs[i]. With tens of thousands of live calls, blocks fall due every
// millisecond: one write and one read for a batch of them instead of one
// each is most of what a tick costs.
func (l *Ledger) DebitMany(ctx context.Context, reqs []DebitReq) (res []DebitResult, errs []error) {
	res, errs = make([]DebitResult, len(reqs)), make([]error, len(reqs))
	type prepared struct {
		keys []string
		args []any
		cmd  *redis.Cmd
	}
	ps := make([]prepared, len(reqs))
	pipe := l.rdb.Pipeline()
	for i, r := range reqs {
		p := &ps[i]
		if p.keys, p.args, errs[i] = l.debitArgs(r); errs[i] == nil {
			p.cmd = debitScript.EvalSha(ctx, pipe, p.keys, p.args...)
		}
	}
	if pipe.Len() > 0 {
		_, _ = pipe.Exec(ctx) // each command holds its own error
	}
	for i, p := range ps {
		if p.cmd == nil {
			continue
		}
		if redis.HasErrorPrefix(p.cmd.Err(), "NOSCRIPT") {
			// Redis lost its scripts (restart, failover): Run loads it.
			p.cmd = debitScript.Run(ctx, l.rdb, p.keys, p.args...)
		}
		v, err := p.cmd.Slice()
		res[i], errs[i] = debitResult(reqs[i], v, err)
	}
	return res, errs
}

// debitArgs checks r and builds the debit script's keys and arguments.
func (l *Ledger) debitArgs(r DebitReq) (keys []string, args []any, err error) {
	if err := checkCall(r.Project, r.Node, r.Channel); err != nil {
		return nil, nil, err
	}
	if r.Block.Index < 0 || r.Block.Total < 0 {
		return nil, nil, fmt.Errorf("%w block %d (total %d) of call %s/%s", ErrInvalid, r.Block.Index, r.Block.Total, r.Node, r.Channel)
	}
	keys = []string{l.key(r.Project, "project"), l.key(r.Project, "thresholds"), l.callKey(r.Project, r.Node, r.Channel),
		l.key(r.Project, "live"), l.key(r.Project, "ledger")}
	return keys, []any{r.Block.Index, r.Block.Total, l.nowMS(), l.o.LedgerMaxLen, r.Node + "/" + r.Channel}, nil
}

// debitResult reads the debit script's reply (or err) to r.
func debitResult(r DebitReq, res []any, err error) (DebitResult, error) {
	project, b, ck := r.Project, r.Block, r.Node+"/"+r.Channel
	if err != nil {
		return DebitResult{}, fmt.Errorf("debit block %d of call %s of project %q in redis: %w", b.Index, ck, project, err)
	}
	var status string
	if len(res) > 0 {
		status = asStr(res[0])
	}
	switch status {
	case "noproject":
		return DebitResult{}, fmt.Errorf("debit call %s: project %q: %w", ck, project, ErrNotFound)
	case "nocall":
		return DebitResult{}, fmt.Errorf("debit call %s of project %q (not opened): %w", ck, project, ErrNotFound)
	}
	if len(res) < 8 {
		return DebitResult{}, fmt.Errorf("debit block %d of call %s of project %q: redis replied %d values, want 8", b.Index, ck, project, len(res))
	}
	return DebitResult{
		Applied:   asInt(res[1]) == 1,
		Balance:   asInt(res[2]),
		Debited:   asInt(res[3]),
		Exhausted: asInt(res[4]) == 1,
		Settled:   asInt(res[5]) == 1,
		Crossed:   parseCrossings(asStr(res[6])),
		OverLimit: asInt(res[7]) == 1,
	}, nil
}

// Settlement is the end of a call.
type Settlement struct {
	Project, Node, Channel string
	AnsweredAt, EndedAt    time.Time
	Billed                 int64 // billed(talk) by the call's tariff
	TalkMS                 int64
	Estimated              bool
	// CDR is stored as the call's record; empty identity fields are filled
	// from the Settlement, BilledSeconds is set to what was billed.
	CDR call.CDR
}

// SettleResult is the outcome of Settle.
type SettleResult struct {
	Applied bool
	Delta   int64 // + debited, − refunded by this settlement
	Billed  int64 // the call's total now
	Balance int64
	Crossed []Crossing
}

// Settle sets the call's total to exactly s.Billed, debiting or refunding
// the difference with one ledger entry (none when it is 0), removes the
// call from the live set, stores its CDR and marks it settled (the record
// expires after CallTTL).
//
// A second Settle returns Applied=false (and the first one's Crossed),
// except that a call settled with Estimated=true is corrected once by a
// Settle with Estimated=false. A call still marked exhausted (hangup
// policy: its last block was refused) is never billed more than it had been
// debited: Billed reports the cap. A call never opened is created with the
// project's current tariff.
func (l *Ledger) Settle(ctx context.Context, s Settlement) (SettleResult, error) {
	if err := checkCall(s.Project, s.Node, s.Channel); err != nil {
		return SettleResult{}, err
	}
	if s.Billed < 0 {
		return SettleResult{}, fmt.Errorf("%w settlement of call %s/%s: billed %d < 0", ErrInvalid, s.Node, s.Channel, s.Billed)
	}
	ck := s.Node + "/" + s.Channel
	cdr := s.CDR
	if cdr.Schema == 0 {
		cdr.Schema = call.Schema
	}
	cdr.Node, cdr.Channel, cdr.Project = s.Node, s.Channel, s.Project
	if cdr.AnsweredAt.IsZero() {
		cdr.AnsweredAt = s.AnsweredAt
	}
	if cdr.EndedAt.IsZero() {
		cdr.EndedAt = s.EndedAt
	}
	if cdr.TalkMS == 0 {
		cdr.TalkMS = s.TalkMS
	}
	cdr.BilledSeconds, cdr.Estimated = s.Billed, s.Estimated
	js, err := json.Marshal(cdr)
	if err != nil {
		return SettleResult{}, fmt.Errorf("encode CDR of call %s: %w", ck, err)
	}
	p := s.Project
	res, err := settleScript.Run(ctx, l.rdb,
		[]string{l.key(p, "project"), l.key(p, "thresholds"), l.callKey(p, s.Node, s.Channel), l.key(p, "live"),
			l.key(p, "ledger"), l.key(p, "cdrs"), l.key(p, "recent")},
		ck, s.Node, s.Channel, s.AnsweredAt.UnixMilli(), s.Billed, b01(s.Estimated), l.nowMS(), l.o.LedgerMaxLen,
		l.o.CallTTL.Milliseconds(), js, s.EndedAt.UnixMilli(), l.o.CDRMax).Slice()
	if err != nil {
		return SettleResult{}, fmt.Errorf("settle call %s of project %q in redis: %w", ck, p, err)
	}
	if asStr(res[0]) == "noproject" {
		return SettleResult{}, fmt.Errorf("settle call %s: project %q: %w", ck, p, ErrNotFound)
	}
	return SettleResult{
		Applied: asInt(res[1]) == 1,
		Balance: asInt(res[2]),
		Delta:   asInt(res[3]),
		Billed:  asInt(res[4]),
		Crossed: parseCrossings(asStr(res[5])),
	}, nil
}

// parseTopUpRecord decodes what topup.lua stores per reference:
// "kind seconds entry-id at-ms balance|crossings".
func parseTopUpRecord(s string) (Entry, []Crossing, error) {
	rec, cross, _ := strings.Cut(s, "|")
	f := strings.Fields(rec)
	if len(f) != 5 {
		return Entry{}, nil, fmt.Errorf("malformed top-up record %q in redis", rec)
	}
	e := Entry{ID: f[2], At: time.UnixMilli(parseInt(f[3])).UTC(), Kind: f[0],
		Seconds: parseInt(f[1]), Balance: parseInt(f[4])}
	return e, parseCrossings(cross), nil
}
