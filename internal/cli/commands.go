package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
)

// Command is one operator command.
type Command func(ctx context.Context, c *Client, args []string, stdout io.Writer) error

// UsageError is a bad command line (exit code 2).
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error { return &UsageError{fmt.Sprintf(format, args...)} }

// DefaultRows is the default of -n.
const DefaultRows = 50

// maxRows is the API's maximum limit.
const maxRows = 1000

// cmdFlags is a command's flag set with the output flag every command has.
type cmdFlags struct {
	*flag.FlagSet
	out  *string
	syn  string // synopsis for the usage
	loc  *time.Location
	json bool
}

func newFlags(name, synopsis string) *cmdFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f := &cmdFlags{FlagSet: fs, syn: synopsis}
	f.out = fs.String("o", "table", "output: table (for people) or json (the API's JSON, for scripts)")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: minuted %s\n\n", synopsis)
		fs.PrintDefaults()
		fmt.Fprintf(w, "\n%s", ConnUsage)
	}
	return f
}

// parse parses flags given before, between and after the positional
// arguments, and checks their count (min..max).
func (f *cmdFlags) parse(args []string, minPos, maxPos int) ([]string, error) {
	var pos []string
	for {
		if err := f.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp
			}
			return nil, usagef("%v; usage: minuted %s", err, f.syn)
		}
		args = f.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	switch {
	case len(pos) < minPos:
		return nil, usagef("missing argument; usage: minuted %s", f.syn)
	case len(pos) > maxPos:
		return nil, usagef("unexpected argument %q; usage: minuted %s", pos[maxPos], f.syn)
	}
	switch *f.out {
	case "table":
	case "json":
		f.json = true
	default:
		return nil, usagef("-o %q: use -o table or -o json", *f.out)
	}
	return pos, nil
}

// projectArg checks a project id before it goes into a URL.
func projectArg(id string) (string, error) {
	if err := call.CheckProject(id); err != nil {
		return "", &UsageError{err.Error()}
	}
	return id, nil
}

func rowsFlag(f *cmdFlags) *int {
	return f.Int("n", DefaultRows, fmt.Sprintf("how many rows, newest first (1..%d)", maxRows))
}

func rowsQuery(n int) (url.Values, error) {
	if n < 1 || n > maxRows {
		return nil, usagef("-n %d: give a number of rows from 1 to %d", n, maxRows)
	}
	return url.Values{"limit": {strconv.Itoa(n)}}, nil
}

// getProjectThing parses "ID" (and -n when rows is not nil), GETs the
// project's path + suffix into out, and prints the API's JSON with -o json
// (done is then true).
func getProjectThing(ctx context.Context, c *Client, f *cmdFlags, args []string, suffix string, rows *int,
	out any, stdout io.Writer) (id string, done bool, err error) {
	pos, err := f.parse(args, 1, 1)
	if err != nil {
		return "", false, err
	}
	if id, err = projectArg(pos[0]); err != nil {
		return "", false, err
	}
	var q url.Values
	if rows != nil {
		if q, err = rowsQuery(*rows); err != nil {
			return "", false, err
		}
	}
	raw, err := c.getJSON(ctx, projectPath(id, suffix), q, id, out)
	if err != nil {
		return "", false, err
	}
	if f.json {
		return id, true, writeJSON(stdout, raw)
	}
	return id, false, nil
}

// loc is where times are shown: the Client's Location, else local time.
func (c *Client) loc() *time.Location {
	if c.Location != nil {
		return c.Location
	}
	return time.Local
}

// ---- projects ----

type projectList struct {
	Projects []ledger.Project `json:"projects"`
}

// Projects lists every project: `minuted projects [-o json]`.
func Projects(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("projects", "projects [-o table|json]")
	if _, err := f.parse(args, 0, 0); err != nil {
		return err
	}
	var l projectList
	raw, err := c.getJSON(ctx, "/v1/projects", nil, "", &l)
	if err != nil {
		return err
	}
	if f.json {
		return writeJSON(stdout, raw)
	}
	return writeRows(stdout, l.Projects, "no projects yet: create one with `minuted project set ID`",
		[]string{"PROJECT", "BALANCE_MIN", "BALANCE_S", "TARIFF", "THRESHOLDS_MIN", "CREDIT_LIMIT_MIN", "ON_EXHAUSTED",
			"LIVE_CALLS"},
		func(p ledger.Project) []string {
			return []string{p.ID, Minutes(p.BalanceSeconds), strconv.FormatInt(p.BalanceSeconds, 10),
				TariffShort(p.Tariff), Thresholds(p.ThresholdsMinutes), Minutes(p.CreditLimitSeconds), p.OnExhausted,
				strconv.Itoa(p.LiveCalls)}
		})
}

// Project dispatches `minuted project show|set ID ...`.
func Project(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("usage: minuted project show ID | minuted project set ID [flags] (-h for the flags)")
	}
	switch args[0] {
	case "show":
		return ProjectShow(ctx, c, args[1:], stdout)
	case "set":
		return ProjectSet(ctx, c, args[1:], stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(os.Stderr, "usage: minuted project show ID | minuted project set ID [flags]")
		return flag.ErrHelp
	}
	return usagef("unknown subcommand %q: use `minuted project show ID` or `minuted project set ID`", args[0])
}

// ProjectShow prints one project: `minuted project show ID [-o json]`.
func ProjectShow(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("project show", "project show ID [-o table|json]")
	var p ledger.Project
	if _, done, err := getProjectThing(ctx, c, f, args, "", nil, &p, stdout); done || err != nil {
		return err
	}
	return writeProject(stdout, p, c.loc())
}

func writeProject(w io.Writer, p ledger.Project, loc *time.Location) error {
	t := newTable(w, "project", p.ID)
	t.row("balance", MinSec(p.BalanceSeconds))
	t.row("tariff", TariffLong(p.Tariff))
	t.row("thresholds", Thresholds(p.ThresholdsMinutes)+" min")
	t.row("credit limit", MinSec(p.CreditLimitSeconds))
	t.row("on exhausted", p.OnExhausted)
	t.row("live calls", strconv.Itoa(p.LiveCalls))
	if !p.CreatedAt.IsZero() {
		t.row("created", timeFmt(p.CreatedAt, loc))
	}
	return t.flush()
}

// ProjectSet creates a project or changes the settings given as flags,
// leaving the others as they are: `minuted project set ID [-min 60 -inc 60
// -free 0 -ceil -thresholds 60,10,0 -credit-limit 0 -on-exhausted allow|hangup]`.
// It reads the project first, sends only the changed fields and prints
// what changed.
func ProjectSet(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("project set", "project set ID [-min S] [-inc S] [-free S] [-ceil] [-thresholds 60,10,0] "+
		"[-credit-limit S] [-on-exhausted allow|hangup] [-o table|json]")
	minS := f.Int64("min", 60, "minimum_seconds: the first block billed once a call is billable")
	inc := f.Int64("inc", 60, "increment_seconds: each further started block")
	free := f.Int64("free", 0, "free_seconds: calls with less talk time are free")
	ceil := f.Bool("ceil", false, "count_initiated_seconds: count every started second (-ceil=false: round down like billsec)")
	thresholds := f.String("thresholds", "60,10,0", "alert thresholds in minutes, comma-separated (none: no alerts)")
	credit := f.Int64("credit-limit", 0, "credit_limit_seconds: how far below zero the balance may go")
	onEx := f.String("on-exhausted", "allow", "allow (calls go on) or hangup (calls are cut at the limit)")
	pos, err := f.parse(args, 1, 1)
	if err != nil {
		return err
	}
	id, err := projectArg(pos[0])
	if err != nil {
		return err
	}
	var patch ledger.SettingsPatch
	var tp ledger.TariffPatch
	var perr error
	f.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "min":
			tp.MinimumSeconds = minS
		case "inc":
			tp.IncrementSeconds = inc
		case "free":
			tp.FreeSeconds = free
		case "ceil":
			tp.CountInitiatedSeconds = ceil
		case "thresholds":
			ts, err := ParseThresholds(*thresholds)
			if err != nil {
				perr = &UsageError{"-thresholds: " + err.Error()}
			}
			patch.ThresholdsMinutes = &ts
		case "credit-limit":
			patch.CreditLimitSeconds = credit
		case "on-exhausted":
			if *onEx != ledger.Allow && *onEx != ledger.Hangup {
				perr = usagef("-on-exhausted %q: use allow or hangup", *onEx)
			}
			patch.OnExhausted = onEx
		}
	})
	if perr != nil {
		return perr
	}
	if tp != (ledger.TariffPatch{}) {
		patch.Tariff = &tp
	}

	var before ledger.Project
	_, err = c.getJSON(ctx, projectPath(id, ""), nil, id, &before)
	var nf *ProjectNotFoundError
	exists := true
	switch {
	case errors.As(err, &nf):
		exists = false
	case err != nil:
		return err
	}
	if exists && patch == (ledger.SettingsPatch{}) {
		if f.json {
			b, _ := json.Marshal(before)
			return writeJSON(stdout, b)
		}
		fmt.Fprintf(stdout, "nothing to change for project %s: give the flags to set (see -h)\n", id)
		return writeProject(stdout, before, c.loc())
	}
	var after ledger.Project
	raw, status, err := c.send(ctx, http.MethodPut, projectPath(id, ""), patch, id, &after)
	if err != nil {
		return err
	}
	if f.json {
		return writeJSON(stdout, raw)
	}
	if status == http.StatusCreated || !exists {
		fmt.Fprintf(stdout, "created project %s (settings not given take the configured defaults)\n", id)
	} else if changes := diffSettings(before.Settings, after.Settings); len(changes) == 0 {
		fmt.Fprintf(stdout, "project %s already had these settings: nothing changed\n", id)
	} else {
		fmt.Fprintf(stdout, "updated project %s: %s\n", id, strings.Join(changes, ", "))
	}
	return writeProject(stdout, after, c.loc())
}

// diffSettings lists the settings that differ as "name old → new".
func diffSettings(a, b ledger.Settings) []string {
	var out []string
	add := func(name, x, y string) {
		if x != y {
			out = append(out, fmt.Sprintf("%s %s → %s", name, x, y))
		}
	}
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	add("minimum_seconds", i(a.Tariff.MinimumSeconds), i(b.Tariff.MinimumSeconds))
	add("increment_seconds", i(a.Tariff.IncrementSeconds), i(b.Tariff.IncrementSeconds))
	add("free_seconds", i(a.Tariff.FreeSeconds), i(b.Tariff.FreeSeconds))
	add("count_initiated_seconds", strconv.FormatBool(a.Tariff.CountInitiatedSeconds),
		strconv.FormatBool(b.Tariff.CountInitiatedSeconds))
	add("thresholds_minutes", "["+Thresholds(a.ThresholdsMinutes)+"]", "["+Thresholds(b.ThresholdsMinutes)+"]")
	add("credit_limit_seconds", i(a.CreditLimitSeconds), i(b.CreditLimitSeconds))
	add("on_exhausted", a.OnExhausted, b.OnExhausted)
	return out
}

// ---- top-up and balance ----

type topUpRequest struct {
	Seconds   *int64       `json:"seconds,omitempty"`
	Minutes   *json.Number `json:"minutes,omitempty"`
	Reference string       `json:"reference"`
}

type topUpResponse struct {
	BalanceSeconds int64        `json:"balance_seconds"`
	BalanceMinutes float64      `json:"balance_minutes"`
	Applied        string       `json:"applied"`
	Entry          ledger.Entry `json:"entry"`
}

// TopUp adds talk time, once per reference: `minuted topup ID (-minutes X |
// -seconds N) -ref REF`. Running it again with the same reference changes
// nothing and says so.
func TopUp(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("topup", "topup ID (-minutes X | -seconds N) -ref REFERENCE [-o table|json]")
	mins := f.String("minutes", "", "minutes to add (at most 2 decimals, in steps of 0.05)")
	secs := f.Int64("seconds", 0, "seconds to add")
	ref := f.String("ref", "", "unique reference of this top-up (invoice or payment id): the same reference is never applied twice")
	pos, err := f.parse(args, 1, 1)
	if err != nil {
		return err
	}
	id, err := projectArg(pos[0])
	if err != nil {
		return err
	}
	req := topUpRequest{Reference: strings.TrimSpace(*ref)}
	given := map[string]bool{}
	f.Visit(func(fl *flag.Flag) { given[fl.Name] = true })
	switch {
	case given["minutes"] == given["seconds"]:
		return usagef("give the amount as exactly one of -minutes X or -seconds N")
	case given["minutes"]:
		m := strings.TrimSpace(*mins)
		if _, err := strconv.ParseFloat(m, 64); err != nil {
			return usagef("-minutes %q is not a number: write it like 90 or 1.5", *mins)
		}
		n := json.Number(m)
		req.Minutes = &n
	default:
		req.Seconds = secs
	}
	if req.Reference == "" {
		return usagef("-ref is required: a unique id of this top-up (an invoice or payment id); " +
			"running the command again with the same -ref is safe, it is applied once")
	}
	var res topUpResponse
	raw, _, err := c.send(ctx, http.MethodPost, projectPath(id, "/topups"), req, id, &res)
	if err != nil {
		return err
	}
	if f.json {
		return writeJSON(stdout, raw)
	}
	if res.Applied == "now" {
		_, err = fmt.Fprintf(stdout, "topped up project %s by %s, reference %q: balance now %s\n",
			id, MinSec(res.Entry.Seconds), req.Reference, MinSec(res.BalanceSeconds))
		return err
	}
	when := ""
	if !res.Entry.At.IsZero() {
		when = " on " + timeFmt(res.Entry.At, c.loc())
	}
	_, err = fmt.Fprintf(stdout, "reference %q was already applied%s for %s: nothing changed; balance of project %s is %s\n",
		req.Reference, when, MinSec(res.Entry.Seconds), id, MinSec(res.BalanceSeconds))
	return err
}

// Balance prints a project's balance: `minuted balance ID [-o json]`
// (the JSON is the project's, as GET /v1/projects/{id} gives it).
func Balance(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("balance", "balance ID [-o table|json]")
	var p ledger.Project
	if _, done, err := getProjectThing(ctx, c, f, args, "", nil, &p, stdout); done || err != nil {
		return err
	}
	t := newTable(stdout, "PROJECT", "BALANCE_MIN", "BALANCE_S", "LIVE_CALLS", "STATE")
	t.row(p.ID, Minutes(p.BalanceSeconds), strconv.FormatInt(p.BalanceSeconds, 10), strconv.Itoa(p.LiveCalls),
		balanceState(p))
	return t.flush()
}

// Audit checks a project's ledger against its balance: `minuted audit ID
// [-o json]`. It prints the findings and fails (exit 1) when the ledger has
// problems, so it can run from cron or a monitoring check.
func Audit(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("audit", "audit ID [-o table|json]")
	var a ledger.Audit
	id, done, err := getProjectThing(ctx, c, f, args, "/audit", nil, &a, stdout)
	if err != nil {
		return err
	}
	if !done {
		t := newTable(stdout, "project", id)
		t.row("balance", MinSec(a.BalanceSeconds))
		history := "complete (none trimmed)"
		if !a.Complete {
			history = "trimmed at ledger.max_len: totals cover the entries kept"
		}
		t.row("entries", fmt.Sprintf("%d, %s", a.Entries, history))
		t.row("credited", MinSec(a.CreditedSeconds)+" (top-ups and adjustments)")
		t.row("billed", MinSec(a.BilledSeconds)+" (debits − refunds)")
		verdict := "ok: every entry follows from the one before and the newest is the balance"
		if !a.OK() {
			verdict = fmt.Sprintf("%d problem(s)", len(a.Problems))
		}
		t.row("verdict", verdict)
		for _, p := range a.Problems {
			t.row("problem", p)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if !a.OK() {
		return fmt.Errorf("the ledger of project %s does not add up (%d problem(s)): do not top up or adjust "+
			"until it is understood; the entries are in `minuted ledger %s`", id, len(a.Problems), id)
	}
	return nil
}

// balanceState says where the balance stands against the credit limit.
func balanceState(p ledger.Project) string {
	switch {
	case p.BalanceSeconds > 0:
		return "ok"
	case p.BalanceSeconds > -p.CreditLimitSeconds:
		return fmt.Sprintf("on credit (limit %s min)", Minutes(p.CreditLimitSeconds))
	case p.OnExhausted == ledger.Hangup:
		return "exhausted: calls are refused/cut; top up"
	}
	return "exhausted: calls go on (on_exhausted allow); top up"
}

// ---- calls, ledger, CDRs ----

type liveCall struct {
	ledger.Call
	TalkSeconds int64 `json:"talk_seconds"`
}

type callList struct {
	Calls []liveCall `json:"calls"`
}

// Calls lists a project's live calls with their running talk time:
// `minuted calls ID [-o json]`.
func Calls(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("calls", "calls ID [-o table|json]")
	var l callList
	id, done, err := getProjectThing(ctx, c, f, args, "/calls", nil, &l, stdout)
	if done || err != nil {
		return err
	}
	return writeRows(stdout, l.Calls, "no live calls on project "+id,
		[]string{"CALL", "ANSWERED", "TALK", "DEBITED_MIN", "TARIFF", "NEXT_DEBIT", "STATE"},
		func(k liveCall) []string {
			state := "live"
			if k.Exhausted {
				state = "exhausted: hung up at the limit"
			}
			return []string{k.Key(), timeFmt(k.AnsweredAt, c.loc()), Duration(k.TalkSeconds), Minutes(k.Debited),
				TariffShort(k.Tariff), timeFmt(k.NextDue, c.loc()), state}
		})
}

type entryList struct {
	Entries []ledger.Entry `json:"entries"`
}

// Ledger prints a project's latest ledger entries: `minuted ledger ID [-n 50] [-o json]`.
func Ledger(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("ledger", "ledger ID [-n 50] [-o table|json]")
	n := rowsFlag(f)
	var l entryList
	id, done, err := getProjectThing(ctx, c, f, args, "/ledger", n, &l, stdout)
	if done || err != nil {
		return err
	}
	return writeRows(stdout, l.Entries, "the ledger of project "+id+" is empty",
		[]string{"AT", "KIND", "CHANGE_MIN", "CHANGE_S", "BALANCE_MIN", "CALL/REFERENCE"},
		func(e ledger.Entry) []string {
			what := e.Reference
			if e.Call != "" {
				what = e.Call
				if e.Kind == "debit" {
					what += fmt.Sprintf(" block %d", e.Block)
				}
			}
			return []string{timeFmt(e.At, c.loc()), e.Kind, signed(e.Seconds), strconv.FormatInt(e.Seconds, 10),
				Minutes(e.Balance), what}
		})
}

func signed(seconds int64) string {
	if seconds > 0 {
		return "+" + Minutes(seconds)
	}
	return Minutes(seconds)
}

type cdrList struct {
	CDRs []call.CDR `json:"cdrs"`
}

// CDRs prints a project's latest call records: `minuted cdrs ID [-n 50] [-o json]`.
func CDRs(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("cdrs", "cdrs ID [-n 50] [-o table|json]")
	n := rowsFlag(f)
	var l cdrList
	id, done, err := getProjectThing(ctx, c, f, args, "/cdrs", n, &l, stdout)
	if done || err != nil {
		return err
	}
	return writeRows(stdout, l.CDRs, "no call records for project "+id+" yet",
		[]string{"ENDED", "CALL", "TALK", "BILLED_MIN", "BILLED_S", "CAUSE", "NOTE"},
		func(r call.CDR) []string {
			cause := r.CauseTxt
			if cause == "" && r.Cause != 0 {
				cause = strconv.Itoa(r.Cause)
			}
			note := r.EndReason
			if r.Estimated {
				note = strings.TrimSpace("estimated " + note)
			}
			return []string{timeFmt(r.EndedAt, c.loc()), r.Node + "/" + r.Channel, Duration(r.TalkSeconds),
				Minutes(r.BilledSeconds), strconv.FormatInt(r.BilledSeconds, 10), cause, note}
		})
}

// ---- alerts ----

type alertList struct {
	Alerts []alert.Alert `json:"alerts"`
}

// Alerts prints the latest alerts: `minuted alerts [-project ID] [-n 50] [-o json]`.
func Alerts(ctx context.Context, c *Client, args []string, stdout io.Writer) error {
	f := newFlags("alerts", "alerts [-project ID|_system] [-n 50] [-o table|json]")
	n := rowsFlag(f)
	project := f.String("project", "", "only this project's alerts (_system: the system's)")
	if _, err := f.parse(args, 0, 0); err != nil {
		return err
	}
	q, err := rowsQuery(*n)
	if err != nil {
		return err
	}
	if *project != "" {
		if *project != "_system" {
			if _, err := projectArg(*project); err != nil {
				return err
			}
		}
		q.Set("project", *project)
	}
	var l alertList
	raw, err := c.getJSON(ctx, "/v1/alerts", q, "", &l)
	if err != nil {
		return err
	}
	if f.json {
		return writeJSON(stdout, raw)
	}
	return writeRows(stdout, l.Alerts, "no recent alerts",
		[]string{"AT", "KIND", "PROJECT", "BALANCE_MIN", "THRESHOLD_MIN", "DETAIL"},
		func(a alert.Alert) []string {
			th, bal, proj := "-", "-", a.Project
			if a.ThresholdMinutes != nil {
				th = Thresholds([]float64{*a.ThresholdMinutes})
			}
			if proj != "" {
				bal = Minutes(a.BalanceSeconds)
			} else {
				proj = "_system"
			}
			detail := a.Detail
			if a.Count > 0 {
				detail = strings.TrimSpace(fmt.Sprintf("%s (×%d)", detail, a.Count))
			}
			return []string{timeFmt(a.At, c.loc()), a.Kind, proj, bal, th, detail}
		})
}
