package cli

// These tests run every command against the real admin API (internal/api)
// over a real ledger on its own redis-server (testutil.StartRedis), served
// by httptest.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/api"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

const testToken = "s3cret-admin-token"

// now is the clock of the ledger and of the API's running talk time.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type liveEnv struct {
	c   *Client
	l   *ledger.Ledger
	rdb redis.UniversalClient
	url string
}

// recentAlerts is the AlertSource the API reads /v1/alerts from: the
// alerts given to it, newest first (the API only defines the interface).
type recentAlerts []alert.Alert

func (r recentAlerts) Recent(_ context.Context, project string, limit int) ([]alert.Alert, error) {
	var out []alert.Alert
	for _, a := range r {
		if (project == "" || a.Project == project || project == "_system" && a.Project == "") && len(out) < limit {
			out = append(out, a)
		}
	}
	return out, nil
}

func startLive(t *testing.T, alerts api.AlertSource) *liveEnv {
	t.Helper()
	r := testutil.StartRedis(t)
	rdb := r.Client(t)
	l := ledger.New(rdb, ledger.Options{Now: func() time.Time { return testNow }})
	h, err := api.New(api.Options{
		Store: l, Token: testToken, Alerts: alerts, Now: func() time.Time { return testNow },
		Defaults: ledger.Settings{Tariff: tariff.Default, ThresholdsMinutes: []float64{60, 10, 0}, OnExhausted: ledger.Allow},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c := NewClient(srv.URL, testToken, 5*time.Second)
	c.Location = time.UTC
	return &liveEnv{c: c, l: l, rdb: rdb, url: srv.URL}
}

// run runs one command and returns what it printed.
func (e *liveEnv) run(t *testing.T, cmd Command, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cmd(ctx, e.c, args, &out)
	return out.String(), err
}

func (e *liveEnv) mustRun(t *testing.T, cmd Command, args ...string) string {
	t.Helper()
	out, err := e.run(t, cmd, args...)
	if err != nil {
		t.Fatalf("%q: %v\noutput:\n%s", args, err, out)
	}
	return out
}

var cellSep = regexp.MustCompile(`\s{2,}`)

// rows splits a table into its header and rows of cells.
func rows(out string) [][]string {
	var rs [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rs = append(rs, cellSep.Split(strings.TrimSpace(line), -1))
	}
	return rs
}

// row returns the table row whose first cell is key, as header → cell.
func row(t *testing.T, out, key string) map[string]string {
	t.Helper()
	rs := rows(out)
	for _, r := range rs[1:] {
		if r[0] == key {
			if len(r) != len(rs[0]) {
				t.Fatalf("row %q has %d cells, the header %d:\n%s", key, len(r), len(rs[0]), out)
			}
			m := map[string]string{}
			for i, h := range rs[0] {
				m[h] = r[i]
			}
			return m
		}
	}
	t.Fatalf("no row %q in\n%s", key, out)
	return nil
}

func TestLiveProjectSetIsReadModifyWrite(t *testing.T) {
	e := startLive(t, nil)
	ctx := context.Background()

	out := e.mustRun(t, ProjectSet, "acme")
	if !strings.Contains(out, "created project acme") {
		t.Errorf("create: %s", out)
	}
	p, err := e.l.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if p.Tariff != tariff.Default || !slices.Equal(p.ThresholdsMinutes, []float64{60, 10, 0}) || p.OnExhausted != ledger.Allow {
		t.Fatalf("created with %+v, want the defaults", p.Settings)
	}

	out = e.mustRun(t, ProjectSet, "acme", "-min", "30", "-inc", "6", "-free", "5")
	for _, want := range []string{"updated project acme:", "minimum_seconds 60 → 30", "increment_seconds 60 → 6",
		"free_seconds 0 → 5", "30/6 free<5s (first 30 s, then per 6 s; free below 5 s"} {
		if !strings.Contains(out, want) {
			t.Errorf("set tariff: %q missing in\n%s", want, out)
		}
	}
	// Flags after the id and before it both work; only what is given changes.
	e.mustRun(t, ProjectSet, "-on-exhausted", "hangup", "acme", "-credit-limit", "120", "-thresholds", "30,5")
	e.mustRun(t, ProjectSet, "acme", "-ceil")
	p, err = e.l.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	want := ledger.Settings{
		Tariff:            tariff.Tariff{FreeSeconds: 5, MinimumSeconds: 30, IncrementSeconds: 6, CountInitiatedSeconds: true},
		ThresholdsMinutes: []float64{30, 5}, CreditLimitSeconds: 120, OnExhausted: ledger.Hangup,
	}
	if p.Tariff != want.Tariff || !slices.Equal(p.ThresholdsMinutes, want.ThresholdsMinutes) ||
		p.CreditLimitSeconds != want.CreditLimitSeconds || p.OnExhausted != want.OnExhausted {
		t.Fatalf("after three partial sets: %+v, want %+v", p.Settings, want)
	}

	out = e.mustRun(t, ProjectSet, "acme", "-min", "30")
	if !strings.Contains(out, "already had these settings: nothing changed") {
		t.Errorf("same value: %s", out)
	}
	out = e.mustRun(t, ProjectSet, "acme", "-thresholds", "none", "-o", "json")
	var pj map[string]any
	if err := json.Unmarshal([]byte(out), &pj); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if th, ok := pj["thresholds_minutes"].([]any); !ok || len(th) != 0 || pj["id"] != "acme" {
		t.Errorf("-o json after -thresholds none: %s", out)
	}

	out = e.mustRun(t, ProjectShow, "acme")
	for key, val := range map[string]string{
		"project": "acme", "balance": "0.00 min (0 s)", "thresholds": "none min", "credit limit": "2.00 min (120 s)",
		"on exhausted": "hangup", "live calls": "0",
	} {
		if got := row(t, "x  y\n"+out, key)["y"]; got != val {
			t.Errorf("show %s = %q, want %q\n%s", key, got, val, out)
		}
	}

	// The API refuses a wrong tariff; its message reaches the operator.
	_, err = e.run(t, ProjectSet, "acme", "-inc", "0")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(err.Error(), "increment_seconds must be between 1") {
		t.Errorf("-inc 0: %v", err)
	}
}

func TestLiveTopUpIsIdempotent(t *testing.T) {
	e := startLive(t, nil)
	e.mustRun(t, ProjectSet, "acme")

	out := e.mustRun(t, TopUp, "acme", "-minutes", "5", "-ref", "INV-1")
	if want := `topped up project acme by 5.00 min (300 s), reference "INV-1": balance now 5.00 min (300 s)`; strings.TrimSpace(out) != want {
		t.Errorf("first top-up:\n%s\nwant\n%s", out, want)
	}
	out = e.mustRun(t, TopUp, "acme", "-ref", "INV-1", "-minutes", "5")
	if !strings.Contains(out, `reference "INV-1" was already applied on 2026-03-01 12:00:00 for 5.00 min (300 s): nothing changed`) ||
		!strings.Contains(out, "balance of project acme is 5.00 min (300 s)") {
		t.Errorf("second top-up:\n%s", out)
	}
	out = e.mustRun(t, TopUp, "acme", "-seconds", "90", "-ref", "INV-2", "-o", "json")
	var res struct {
		BalanceSeconds int64        `json:"balance_seconds"`
		BalanceMinutes float64      `json:"balance_minutes"`
		Applied        string       `json:"applied"`
		Entry          ledger.Entry `json:"entry"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.Applied != "now" || res.BalanceSeconds != 390 || res.BalanceMinutes != 6.5 || res.Entry.Seconds != 90 ||
		res.Entry.Reference != "INV-2" {
		t.Errorf("top-up JSON: %+v", res)
	}
	out = e.mustRun(t, TopUp, "acme", "-seconds", "90", "-ref", "INV-2", "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Applied != "before" || res.BalanceSeconds != 390 {
		t.Errorf("repeated top-up JSON: %+v %v", res, err)
	}
	p, err := e.l.Get(context.Background(), "acme")
	if err != nil || p.BalanceSeconds != 390 {
		t.Fatalf("ledger balance %d (%v), want 390", p.BalanceSeconds, err)
	}

	out = e.mustRun(t, Balance, "acme")
	if r := row(t, out, "acme"); r["BALANCE_MIN"] != "6.50" || r["BALANCE_S"] != "390" || r["STATE"] != "ok" {
		t.Errorf("balance: %v", r)
	}
	out = e.mustRun(t, Balance, "acme", "-o", "json")
	var bj ledger.Project
	if err := json.Unmarshal([]byte(out), &bj); err != nil || bj.BalanceSeconds != 390 || bj.BalanceMinutes != 6.5 {
		t.Errorf("balance JSON %+v %v", bj, err)
	}

	// The API's refusals come through with its words.
	_, err = e.run(t, TopUp, "acme", "-minutes", "0.01", "-ref", "INV-3")
	if err == nil || !strings.Contains(err.Error(), "not a whole number") {
		t.Errorf("-minutes 0.01: %v", err)
	}
	_, err = e.run(t, TopUp, "acme", "-seconds", "60", "-ref", "INV-1")
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status >= 500 || !strings.Contains(err.Error(), "INV-1") {
		t.Errorf("reference reused for another amount: %v", err)
	}
	if p, _ := e.l.Get(context.Background(), "acme"); p.BalanceSeconds != 390 {
		t.Errorf("a refused top-up changed the balance to %d", p.BalanceSeconds)
	}
}

func TestLiveProjectsCallsLedgerCDRs(t *testing.T) {
	e := startLive(t, nil)
	ctx := context.Background()
	e.mustRun(t, ProjectSet, "acme")
	e.mustRun(t, ProjectSet, "beta", "-min", "30", "-inc", "6", "-on-exhausted", "hangup")
	e.mustRun(t, TopUp, "acme", "-minutes", "10", "-ref", "R1")

	// One call answered 75 s ago, two blocks debited; one ended call.
	tr := tariff.Default
	if _, err := e.l.Open(ctx, ledger.Open{Project: "acme", Node: "pbx1", Channel: "live-1",
		AnsweredAt: testNow.Add(-75 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	for k := range 2 {
		if _, err := e.l.Debit(ctx, "acme", "pbx1", "live-1", tr.Block(k)); err != nil {
			t.Fatal(err)
		}
	}
	ans := testNow.Add(-10 * time.Minute)
	if _, err := e.l.Settle(ctx, ledger.Settlement{Project: "acme", Node: "pbx1", Channel: "done-1",
		AnsweredAt: ans, EndedAt: ans.Add(125 * time.Second), TalkMS: 125_400, Billed: tr.Billed(125),
		CDR: call.CDR{TalkSeconds: 125, CauseTxt: "Normal Clearing"}}); err != nil {
		t.Fatal(err)
	}

	out := e.mustRun(t, Projects)
	acme := row(t, out, "acme")
	for k, v := range map[string]string{"BALANCE_MIN": "5.00", "BALANCE_S": "300", "TARIFF": "60/60",
		"THRESHOLDS_MIN": "60, 10, 0", "CREDIT_LIMIT_MIN": "0.00", "ON_EXHAUSTED": "allow", "LIVE_CALLS": "1"} {
		if acme[k] != v {
			t.Errorf("projects acme %s = %q, want %q\n%s", k, acme[k], v, out)
		}
	}
	if b := row(t, out, "beta"); b["TARIFF"] != "30/6" || b["ON_EXHAUSTED"] != "hangup" || b["BALANCE_S"] != "0" {
		t.Errorf("projects beta: %v", b)
	}
	var pl struct {
		Projects []ledger.Project `json:"projects"`
	}
	if err := json.Unmarshal([]byte(e.mustRun(t, Projects, "-o", "json")), &pl); err != nil || len(pl.Projects) != 2 {
		t.Fatalf("projects JSON: %+v %v", pl, err)
	}

	out = e.mustRun(t, Calls, "acme")
	c := row(t, out, "pbx1/live-1")
	for k, v := range map[string]string{"ANSWERED": "2026-03-01 11:58:45", "TALK": "1:15", "DEBITED_MIN": "2.00",
		"TARIFF": "60/60", "STATE": "live"} {
		if c[k] != v {
			t.Errorf("calls %s = %q, want %q\n%s", k, c[k], v, out)
		}
	}
	var cl struct {
		Calls []struct {
			Channel     string `json:"channel"`
			TalkSeconds int64  `json:"talk_seconds"`
			Debited     int64  `json:"debited_seconds"`
		} `json:"calls"`
	}
	if err := json.Unmarshal([]byte(e.mustRun(t, Calls, "acme", "-o", "json")), &cl); err != nil ||
		len(cl.Calls) != 1 || cl.Calls[0].TalkSeconds != 75 || cl.Calls[0].Debited != 120 {
		t.Errorf("calls JSON: %+v %v", cl, err)
	}
	if out := e.mustRun(t, Calls, "beta"); strings.TrimSpace(out) != "no live calls on project beta" {
		t.Errorf("no calls: %q", out)
	}

	out = e.mustRun(t, CDRs, "acme")
	d := row(t, out, "2026-03-01 11:52:05")
	for k, v := range map[string]string{"CALL": "pbx1/done-1", "TALK": "2:05", "BILLED_MIN": "3.00", "BILLED_S": "180",
		"CAUSE": "Normal Clearing"} {
		if d[k] != v {
			t.Errorf("cdrs %s = %q, want %q\n%s", k, d[k], v, out)
		}
	}
	var dl struct {
		CDRs []call.CDR `json:"cdrs"`
	}
	if err := json.Unmarshal([]byte(e.mustRun(t, CDRs, "acme", "-o", "json", "-n", "5")), &dl); err != nil ||
		len(dl.CDRs) != 1 || dl.CDRs[0].BilledSeconds != 180 {
		t.Errorf("cdrs JSON: %+v %v", dl, err)
	}

	out = e.mustRun(t, Ledger, "acme", "-n", "10")
	rs := rows(out)
	var kinds []string
	sum := int64(0)
	for _, r := range rs[1:] {
		kinds = append(kinds, r[1])
	}
	var el struct {
		Entries []ledger.Entry `json:"entries"`
	}
	if err := json.Unmarshal([]byte(e.mustRun(t, Ledger, "acme", "-o", "json")), &el); err != nil {
		t.Fatal(err)
	}
	for _, en := range el.Entries {
		sum += en.Seconds
	}
	slices.Sort(kinds)
	if !slices.Equal(kinds, []string{"debit", "debit", "debit", "topup"}) || len(el.Entries) != 4 || sum != 300 {
		t.Errorf("ledger kinds %v, %d JSON entries summing to %d (want the balance 300)\n%s", kinds, len(el.Entries), sum, out)
	}
	if !strings.Contains(out, "pbx1/live-1 block 1") || !strings.Contains(out, "+10.00") || !strings.Contains(out, "R1") {
		t.Errorf("ledger table:\n%s", out)
	}
	if out := e.mustRun(t, Ledger, "acme", "-n", "1"); len(rows(out)) != 2 {
		t.Errorf("-n 1 printed %d rows:\n%s", len(rows(out))-1, out)
	}
	if out := e.mustRun(t, Ledger, "beta"); strings.TrimSpace(out) != "the ledger of project beta is empty" {
		t.Errorf("empty ledger: %q", out)
	}
}

func TestLiveAlerts(t *testing.T) {
	th := 10.0
	src := recentAlerts{
		{Kind: alert.Threshold, Project: "acme", At: testNow, BalanceSeconds: 590, ThresholdMinutes: &th},
		{Kind: alert.ARILost, Node: "pbx1", At: testNow.Add(-time.Minute), Detail: "websocket closed"},
	}
	e := startLive(t, src)
	out := e.mustRun(t, Alerts)
	a := row(t, out, "2026-03-01 12:00:00")
	if a["KIND"] != "threshold" || a["PROJECT"] != "acme" || a["BALANCE_MIN"] != "9.83" || a["THRESHOLD_MIN"] != "10" {
		t.Errorf("alert row %v\n%s", a, out)
	}
	if s := row(t, out, "2026-03-01 11:59:00"); s["PROJECT"] != "_system" || s["DETAIL"] != "websocket closed" {
		t.Errorf("system alert row %v", s)
	}
	var al struct {
		Alerts []alert.Alert `json:"alerts"`
	}
	if err := json.Unmarshal([]byte(e.mustRun(t, Alerts, "-project", "acme", "-o", "json")), &al); err != nil ||
		len(al.Alerts) != 1 || al.Alerts[0].Project != "acme" {
		t.Errorf("alerts -project acme JSON: %+v %v", al, err)
	}
	if out := e.mustRun(t, Alerts, "-project", "zeta"); strings.TrimSpace(out) != "no recent alerts" {
		t.Errorf("no alerts: %q", out)
	}

	// An API process without an alert source says where to look.
	bare := startLive(t, nil)
	if _, err := bare.run(t, Alerts); err == nil || !strings.Contains(err.Error(), "501") ||
		!strings.Contains(err.Error(), "notify") {
		t.Errorf("alerts without a source: %v", err)
	}
}

func TestLiveErrorsSayWhatToDo(t *testing.T) {
	e := startLive(t, nil)

	_, err := e.run(t, ProjectShow, "ghost")
	var nf *ProjectNotFoundError
	if !errors.As(err, &nf) || err.Error() != "project ghost does not exist: create it with `minuted project set ghost`" {
		t.Errorf("unknown project: %v", err)
	}
	for _, cmd := range []Command{Balance, Calls, Ledger, CDRs} {
		if _, err := e.run(t, cmd, "ghost"); !errors.As(err, &nf) {
			t.Errorf("unknown project: %v", err)
		}
	}
	if _, err := e.run(t, TopUp, "ghost", "-seconds", "60", "-ref", "X"); !errors.As(err, &nf) {
		t.Errorf("top-up of an unknown project: %v", err)
	}

	wrong := *e.c
	wrong.Token = "not-the-token"
	if err := Projects(context.Background(), &wrong, nil, new(bytes.Buffer)); err == nil ||
		!strings.HasPrefix(err.Error(), "the admin token was refused: set MINUTED_ADMIN_TOKEN") {
		t.Errorf("wrong token: %v", err)
	}
	wrong.Token = ""
	if err := Projects(context.Background(), &wrong, nil, new(bytes.Buffer)); err == nil ||
		!strings.Contains(err.Error(), "none is set: set MINUTED_ADMIN_TOKEN") {
		t.Errorf("no token: %v", err)
	}

	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	down := NewClient(dead, testToken, time.Second)
	err = Projects(context.Background(), down, nil, new(bytes.Buffer))
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach the admin API at "+dead+" (connection refused): "+
		"is `minuted run`/`minuted api` running? set MINUTED_API_URL") {
		t.Errorf("unreachable: %v", err)
	}

	// An API root with /v1 appended (a common slip) gets a hint.
	slip := NewClient(e.url+"/v1", testToken, time.Second)
	if err := Projects(context.Background(), slip, nil, new(bytes.Buffer)); err == nil ||
		!strings.Contains(err.Error(), "no such route") {
		t.Errorf("URL with /v1: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	c := NewClient("http://127.0.0.1:1", "", time.Second) // never dialled: the command line is refused first
	for _, tc := range []struct {
		cmd  Command
		args []string
		want string
	}{
		{ProjectShow, nil, "missing argument"},
		{ProjectShow, []string{"a", "b"}, `unexpected argument "b"`},
		{ProjectShow, []string{"bad id"}, "invalid project id"},
		{Projects, []string{"-o", "yaml"}, "use -o table or -o json"},
		{Ledger, []string{"acme", "-n", "0"}, "from 1 to 1000"},
		{TopUp, []string{"acme", "-ref", "R"}, "exactly one of -minutes X or -seconds N"},
		{TopUp, []string{"acme", "-minutes", "1", "-seconds", "60", "-ref", "R"}, "exactly one of"},
		{TopUp, []string{"acme", "-minutes", "five", "-ref", "R"}, "is not a number"},
		{TopUp, []string{"acme", "-minutes", "5"}, "-ref is required"},
		{ProjectSet, []string{"acme", "-on-exhausted", "drop"}, "use allow or hangup"},
		{ProjectSet, []string{"acme", "-thresholds", "ten"}, "-thresholds"},
		{ProjectSet, []string{"acme", "-bogus"}, "flag provided but not defined"},
		{Project, []string{"delete", "acme"}, "unknown subcommand"},
		{Alerts, []string{"-project", "a b"}, "invalid project id"},
	} {
		err := tc.cmd(context.Background(), c, tc.args, new(bytes.Buffer))
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want a usage error with %q", tc.args, err, tc.want)
		}
	}
}

func TestConnectResolvesURLAndToken(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "minuted.yaml")
	if err := os.WriteFile(cfgPath, []byte("http:\n  addr: \":9191\"\n  admin_token: from-config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		name      string
		o         ConnOptions
		env       map[string]string
		url       string
		token     config.Secret
		usageFail bool
	}{
		{"defaults", ConnOptions{}, nil, DefaultURL, "", false},
		{"env", ConnOptions{}, map[string]string{"MINUTED_API_URL": "http://pbx:1", "MINUTED_ADMIN_TOKEN": "from-env"},
			"http://pbx:1", "from-env", false},
		{"config via env", ConnOptions{}, map[string]string{"MINUTED_CONFIG": cfgPath}, "http://127.0.0.1:9191",
			"from-config", false},
		{"env beats config", ConnOptions{Config: cfgPath}, map[string]string{"MINUTED_ADMIN_TOKEN": "from-env"},
			"http://127.0.0.1:9191", "from-env", false},
		{"flags beat all", ConnOptions{API: "https://x:2/", TokenFile: tokFile, Config: cfgPath},
			map[string]string{"MINUTED_API_URL": "http://pbx:1", "MINUTED_ADMIN_TOKEN": "from-env"},
			"https://x:2", "from-file", false},
		{"bad URL", ConnOptions{API: "pbx:8090"}, nil, "", "", true},
	} {
		c, err := Connect(tc.o, env(tc.env))
		var ue *UsageError
		switch {
		case tc.usageFail:
			if !errors.As(err, &ue) {
				t.Errorf("%s: %v, want a usage error", tc.name, err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case c.BaseURL != tc.url || c.Token != tc.token:
			t.Errorf("%s: %s %q, want %s %q", tc.name, c.BaseURL, string(c.Token), tc.url, string(tc.token))
		}
	}
	if _, err := Connect(ConnOptions{TokenFile: filepath.Join(dir, "missing")}, env(nil)); err == nil ||
		!strings.Contains(err.Error(), "-token-file") {
		t.Errorf("missing token file: %v", err)
	}
	if _, err := Connect(ConnOptions{Config: filepath.Join(dir, "missing.yaml")}, env(nil)); err == nil ||
		!strings.Contains(err.Error(), "MINUTED_CONFIG") {
		t.Errorf("missing config: %v", err)
	}
}

func TestLiveAudit(t *testing.T) {
	e := startLive(t, nil)
	ctx := context.Background()
	e.mustRun(t, ProjectSet, "acme")
	e.mustRun(t, TopUp, "acme", "-minutes", "10", "-ref", "R1")
	if _, err := e.l.Open(ctx, ledger.Open{Project: "acme", Node: "pbx1", Channel: "c1", AnsweredAt: testNow}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.l.Debit(ctx, "acme", "pbx1", "c1", tariff.Default.Block(0)); err != nil {
		t.Fatal(err)
	}
	out := e.mustRun(t, Audit, "acme")
	for _, want := range []string{"balance   9.00 min (540 s)", "entries   2, complete", "credited  10.00 min (600 s)", "billed    1.00 min (60 s)", "verdict   ok"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit output lacks %q:\n%s", want, out)
		}
	}
	var a ledger.Audit
	if err := json.Unmarshal([]byte(e.mustRun(t, Audit, "acme", "-o", "json")), &a); err != nil || !a.OK() || a.BalanceSeconds != 540 {
		t.Fatalf("audit JSON: %+v %v", a, err)
	}

	// A balance changed behind the ledger's back: the audit says so and fails.
	if err := e.rdb.HIncrBy(ctx, "minuted:{acme}:project", "balance", 30).Err(); err != nil {
		t.Fatal(err)
	}
	out, err := e.run(t, Audit, "acme")
	if err == nil || !strings.Contains(err.Error(), "does not add up (1 problem(s))") ||
		!strings.Contains(out, "problem   balance is 570 s but the newest ledger entry left 540 s") {
		t.Fatalf("tampered ledger: err %v, output:\n%s", err, out)
	}
	if _, err := e.run(t, Audit, "acme", "-o", "json"); err == nil {
		t.Fatal("audit -o json of a broken ledger succeeded")
	}
	if _, err := e.run(t, Audit, "ghost"); err == nil || !strings.Contains(err.Error(), "minuted project set ghost") {
		t.Fatalf("audit of an absent project: %v", err)
	}
}
