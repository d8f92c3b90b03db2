package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/api"
	"github.com/minuted/minuted/internal/dashboard"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

const token = "dash-test-token"

// t0 is the fixture's start; the clock moves only when a test moves it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ ns atomic.Int64 }

func newClock() *clock                   { c := &clock{}; c.ns.Store(t0.UnixNano()); return c }
func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// alertsStub is an in-memory alert source (the ALERTS stream is read by
// internal/app's source, tested there).
type alertsStub struct {
	mu    sync.Mutex
	calls int
	as    []alert.Alert
}

func (s *alertsStub) Recent(_ context.Context, project string, limit int) ([]alert.Alert, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	var out []alert.Alert
	for _, a := range s.as {
		if (a.Project == project || (project == "_system" && a.Project == "")) && len(out) < limit {
			out = append(out, a)
		}
	}
	return out, nil
}

type fixture struct {
	led    *ledger.Ledger
	clk    *clock
	dash   *dashboard.Handler
	srv    *httptest.Server
	alerts *alertsStub
}

// newFixture: a ledger on a real redis-server, the dashboard mounted in the
// real admin API, served over HTTP.
func newFixture(t testing.TB, mutate func(*dashboard.Options), redisArgs ...string) *fixture {
	t.Helper()
	r := testutil.StartRedis(t, redisArgs...)
	f := &fixture{clk: newClock(), alerts: &alertsStub{}}
	f.led = ledger.New(r.Client(t), ledger.Options{Now: f.clk.Now})
	o := dashboard.Options{Store: f.led, Alerts: f.alerts, Now: f.clk.Now,
		Checks: []api.Check{{Name: "redis", Check: f.led.Ping}}}
	if mutate != nil {
		mutate(&o)
	}
	f.dash = dashboard.New(o)
	h, err := api.New(api.Options{Store: f.led, Token: token, Dashboard: f.dash, Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) project(t testing.TB, id string, tr tariff.Tariff, thresholds []float64, topup int64) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := f.led.Put(ctx, id, ledger.Settings{Tariff: tr, ThresholdsMinutes: thresholds}); err != nil {
		t.Fatal(err)
	}
	if topup > 0 {
		if _, err := f.led.TopUp(ctx, id, topup, "initial-"+id, ledger.KindTopUp); err != nil {
			t.Fatal(err)
		}
	}
}

// burn opens a call on project and debits n blocks of a 1/1 tariff project
// (n seconds), the clock moving one second per block.
func (f *fixture) burn(t testing.TB, project, channel string, n int) {
	t.Helper()
	ctx := context.Background()
	c, err := f.led.Open(ctx, ledger.Open{Project: project, Node: "node1", Channel: channel, AnsweredAt: f.clk.Now()})
	if err != nil {
		t.Fatal(err)
	}
	for k := range n {
		if _, err := f.led.Debit(ctx, project, "node1", channel, c.Tariff.Block(k)); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) do(t testing.TB, method, path, tok string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func (f *fixture) getJSON(t testing.TB, path string, out any) {
	t.Helper()
	code, b, _ := f.do(t, "GET", path, token)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, b)
	}
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

var perSecond = tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}

// TestNoDataWithoutToken: the page and assets are public and hold no data;
// every data route and the event stream answer 401 without the right token.
func TestNoDataWithoutToken(t *testing.T) {
	f := newFixture(t, nil)
	f.project(t, "secret-project", perSecond, nil, 600)
	for _, p := range []string{"/ui/", "/ui/assets/app.js", "/ui/assets/app.css", "/ui/assets/favicon.svg"} {
		code, b, hd := f.do(t, "GET", p, "")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", p, code, b)
		}
		if strings.Contains(string(b), "secret-project") {
			t.Errorf("GET %s without token shows project data", p)
		}
		if !strings.Contains(hd.Get("Content-Security-Policy"), "script-src 'self'") {
			t.Errorf("GET %s: CSP %q", p, hd.Get("Content-Security-Policy"))
		}
	}
	data := []string{"/ui/api/overview", "/ui/api/projects/secret-project", "/ui/api/system",
		"/ui/api/events", "/ui/api/events?view=project&project=secret-project", "/ui/api/nothing"}
	for _, p := range data {
		for _, tok := range []string{"", "wrong-token"} {
			code, b, _ := f.do(t, "GET", p, tok)
			if code != http.StatusUnauthorized || strings.Contains(string(b), "secret-project") {
				t.Errorf("GET %s token %q: %d %s, want 401 without data", p, tok, code, b)
			}
		}
	}
	// Actions: the top-up route the page uses refuses too, and nothing changed.
	code, _, _ := f.do(t, "POST", "/v1/projects/secret-project/topups", "")
	if code != http.StatusUnauthorized {
		t.Errorf("top-up without token: %d", code)
	}
	if p, _ := f.led.Get(context.Background(), "secret-project"); p.BalanceSeconds != 600 {
		t.Errorf("balance %d after refused top-up", p.BalanceSeconds)
	}
	// With the token the same routes answer.
	for _, p := range data[:3] {
		if code, b, _ := f.do(t, "GET", p, token); code != http.StatusOK {
			t.Errorf("GET %s with token: %d %s", p, code, b)
		}
	}
	if code, _, _ := f.do(t, "GET", "/ui/api/nothing", token); code != http.StatusNotFound {
		t.Errorf("unknown dashboard route with token: %d, want 404", code)
	}
	if code, _, _ := f.do(t, "GET", "/ui/assets/nothing.js", ""); code != http.StatusNotFound {
		t.Errorf("unknown asset: %d, want 404", code)
	}
}

// The page never writes data as HTML: the script has no innerHTML,
// outerHTML, insertAdjacentHTML or document.write, and no inline handler.
func TestAssetsEscapeOutput(t *testing.T) {
	f := newFixture(t, nil)
	_, js, _ := f.do(t, "GET", "/ui/assets/app.js", "")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	_, page, _ := f.do(t, "GET", "/ui/", "")
	for _, bad := range []string{"onclick=", "onload=", "<script>", "http://", "https://"} {
		if strings.Contains(string(page), bad) {
			t.Errorf("index.html contains %q (inline script or remote resource)", bad)
		}
	}
}

// TestOverview: rows sorted by time to empty with the burn rate measured
// from the ledger, threshold states, live calls and totals.
func TestOverview(t *testing.T) {
	f := newFixture(t, nil)
	f.project(t, "slow", perSecond, []float64{5}, 3600) // 60 min
	f.project(t, "fast", perSecond, []float64{60, 10}, 1200)
	f.project(t, "idle", perSecond, []float64{60}, 300)
	f.project(t, "empty", perSecond, nil, 0)
	f.burn(t, "slow", "c1", 60)  // 60 s in the window
	f.burn(t, "fast", "c2", 300) // 300 s
	f.burn(t, "fast", "c3", 300)
	f.clk.Advance(time.Minute)

	var ov dashboard.Overview
	f.getJSON(t, "/ui/api/overview", &ov)
	var ids []string
	for _, r := range ov.Projects {
		ids = append(ids, r.ID)
	}
	if strings.Join(ids, ",") != "empty,fast,slow,idle" {
		t.Fatalf("order %v, want empty, fast (sooner), slow, idle (not burning)", ids)
	}
	rows := map[string]dashboard.Row{}
	for _, r := range ov.Projects {
		rows[r.ID] = r
	}
	// 600 s over the 15 min window = 40 min/h; balance 1200−600 = 600 s.
	fast := rows["fast"]
	if fast.BalanceSeconds != 600 || fast.BurnMinutesPerHour != 40 || fast.TimeToEmptySeconds == nil ||
		*fast.TimeToEmptySeconds != 15*60 || fast.LiveCalls != 2 {
		t.Errorf("fast: %+v (ttz %v)", fast, fast.TimeToEmptySeconds)
	}
	if fast.State != dashboard.StateBelow || fast.BelowMinutes == nil || *fast.BelowMinutes != 60 {
		t.Errorf("fast state %s below %v, want below 60 (10 min = 600 s is not below 10)", fast.State, fast.BelowMinutes)
	}
	if s := rows["slow"]; s.BurnMinutesPerHour != 4 || s.State != dashboard.StateOK || s.TariffText != "0/1/1" {
		t.Errorf("slow: %+v", s)
	}
	if i := rows["idle"]; i.Burning || i.TimeToEmptySeconds != nil || i.State != dashboard.StateBelow {
		t.Errorf("idle: %+v", i)
	}
	if e := rows["empty"]; e.State != dashboard.StateEmpty {
		t.Errorf("empty: %+v", e)
	}
	if ov.Totals.Projects != 4 || ov.Totals.LiveCalls != 3 || ov.Totals.BurnMinutesPerHour != 44 ||
		ov.Totals.Below != 2 || ov.Totals.Empty != 1 {
		t.Errorf("totals %+v", ov.Totals)
	}
	// Balances are read every time; burn rates only every BurnEvery.
	f.burn(t, "slow", "c4", 120)
	f.clk.Advance(time.Second)
	f.getJSON(t, "/ui/api/overview", &ov)
	for _, r := range ov.Projects {
		if r.ID == "slow" && (r.BalanceSeconds != 3600-180 || r.BurnMinutesPerHour != 4) {
			t.Errorf("slow within BurnEvery: balance %d burn %v, want 3420 and the kept 4", r.BalanceSeconds, r.BurnMinutesPerHour)
		}
	}
	f.clk.Advance(dashboard.DefaultBurnEvery)
	f.getJSON(t, "/ui/api/overview", &ov)
	for _, r := range ov.Projects {
		if r.ID == "slow" && r.BurnMinutesPerHour != 12 {
			t.Errorf("slow after BurnEvery: burn %v, want 180 s/15 min = 12", r.BurnMinutesPerHour)
		}
	}
}

// TestBurnBoundedRead: past BurnEntries the window shrinks to what was read.
func TestBurnBoundedRead(t *testing.T) {
	f := newFixture(t, func(o *dashboard.Options) { o.BurnEntries = 50 })
	f.project(t, "busy", perSecond, nil, 100000)
	ctx := context.Background()
	for i := range 4 {
		ch := fmt.Sprint("c", i)
		c, err := f.led.Open(ctx, ledger.Open{Project: "busy", Node: "n", Channel: ch, AnsweredAt: f.clk.Now()})
		if err != nil {
			t.Fatal(err)
		}
		for k := range 40 {
			if _, err := f.led.Debit(ctx, "busy", "n", ch, c.Tariff.Block(k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// 160 debits all at the same instant; 50 read: rate = 50 s per second
	// of window (the 1 s floor) = 3000 min/h, not 50 s/15 min.
	f.clk.Advance(time.Second / 2)
	var ov dashboard.Overview
	f.getJSON(t, "/ui/api/overview", &ov)
	es, _ := f.led.Entries(ctx, "busy", 160)
	want := alert.BurnRate(es[:50], f.clk.Now(), time.Second)
	if ov.Projects[0].BurnMinutesPerHour != want || want != 3000 {
		t.Errorf("burn %v, want %v", ov.Projects[0].BurnMinutesPerHour, want)
	}
	// The project page reads up to SeriesEntries: all 160 in the window.
	var pv dashboard.ProjectView
	f.getJSON(t, "/ui/api/projects/busy", &pv)
	if all := alert.BurnRate(es, f.clk.Now(), 0); pv.Project.BurnMinutesPerHour != round2(all) {
		t.Errorf("project page burn %v, want %v", pv.Project.BurnMinutesPerHour, all)
	}
}

// TestProjectView: the series from the ledger with the current balance at
// now, thresholds, live calls with talk time, top-ups and alerts.
func TestProjectView(t *testing.T) {
	f := newFixture(t, nil)
	th := 10.0
	f.alerts.as = []alert.Alert{alert.ThresholdCrossed("p1", th, 1, 500, t0), {Kind: alert.ARILost, Node: "node1", At: t0}}
	f.project(t, "p1", perSecond, []float64{20, th}, 1500)
	f.clk.Advance(time.Hour) // the initial top-up falls before the hour
	f.burn(t, "p1", "c1", 100)
	f.clk.Advance(10 * time.Minute)
	if _, err := f.led.TopUp(context.Background(), "p1", 300, "ref-1", ledger.KindTopUp); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(75 * time.Second)

	var pv dashboard.ProjectView
	f.getJSON(t, "/ui/api/projects/p1?range=hour", &pv)
	if pv.Project.BalanceSeconds != 1700 || len(pv.Project.ThresholdsMinutes) != 2 || pv.Range != "hour" {
		t.Fatalf("project %+v range %s", pv.Project, pv.Range)
	}
	s := pv.Series
	if len(s) < 3 || s[0].BalanceSeconds != 1500 || !s[0].At.Equal(f.clk.Now().Add(-time.Hour)) {
		t.Fatalf("series starts %+v, want 1500 at now−1h", s[:min(len(s), 2)])
	}
	if last := s[len(s)-1]; last.BalanceSeconds != 1700 || !last.At.Equal(f.clk.Now()) {
		t.Errorf("series ends %+v, want the balance now", last)
	}
	for i := 1; i < len(s); i++ {
		if s[i].At.Before(s[i-1].At) {
			t.Fatalf("series not in time order at %d: %+v", i, s)
		}
	}
	if len(pv.Calls) != 1 || pv.Calls[0].TalkSeconds != 600+75 || pv.Calls[0].Debited != 100 {
		t.Errorf("calls %+v, want one with talk 675 s and 100 s debited", pv.Calls)
	}
	if len(pv.TopUps) != 2 || pv.TopUps[0].Reference != "ref-1" || pv.TopUps[0].Seconds != 300 {
		t.Errorf("top-ups %+v", pv.TopUps)
	}
	if len(pv.Alerts) != 1 || pv.Alerts[0].Kind != alert.Threshold {
		t.Errorf("alerts %+v, want only p1's", pv.Alerts)
	}
	if len(pv.Entries) != dashboard.RecentItems {
		t.Errorf("%d entries, want the newest %d", len(pv.Entries), dashboard.RecentItems)
	}
	// The day range starts when the project was created, with its first top-up.
	f.getJSON(t, "/ui/api/projects/p1?range=day", &pv)
	if pv.Series[0].BalanceSeconds != 1500 || !pv.Series[0].At.Equal(t0) || !pv.From.Equal(t0) || pv.SeriesTruncated {
		t.Errorf("day series starts %+v from %v (truncated %v), want 1500 at the creation %v", pv.Series[0], pv.From, pv.SeriesTruncated, t0)
	}
	for _, bad := range []string{"/ui/api/projects/p1?range=year", "/ui/api/projects/bad.id", "/ui/api/projects/_unbilled"} {
		if code, b, _ := f.do(t, "GET", bad, token); code != http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want 400", bad, code, b)
		}
	}
	if code, _, _ := f.do(t, "GET", "/ui/api/projects/nope", token); code != http.StatusNotFound {
		t.Errorf("unknown project: %d", code)
	}
	var sv dashboard.SystemView
	f.getJSON(t, "/ui/api/system", &sv)
	if len(sv.Checks) != 1 || !sv.Checks[0].OK || len(sv.Alerts) != 1 || sv.Alerts[0].Kind != alert.ARILost {
		t.Errorf("system %+v", sv)
	}
}

// event is one Server-Sent Event.
type event struct {
	name string
	data []byte
}

// stream opens the event stream with the token and sends its events on a channel.
func (f *fixture) stream(t *testing.T, query string) <-chan event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/ui/api/events"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("events%s: %d %s %s", query, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	ch := make(chan event, 100)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<22)
		var e event
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				e.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = []byte(line[6:])
			case line == "":
				select {
				case ch <- e:
				case <-ctx.Done():
					return
				}
				e = event{}
			}
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan event) event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("event stream ended")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return event{}
}

// TestEventStream: events arrive every Interval without a request; a debit
// between two shows in the next; a bad query is refused before streaming.
func TestEventStream(t *testing.T) {
	f := newFixture(t, func(o *dashboard.Options) { o.Interval = 20 * time.Millisecond })
	f.project(t, "p1", perSecond, nil, 600)
	ch := f.stream(t, "?view=project&project=p1")
	var pv dashboard.ProjectView
	e := next(t, ch)
	if e.name != "project" || json.Unmarshal(e.data, &pv) != nil || pv.Project.BalanceSeconds != 600 || pv.Series != nil {
		t.Fatalf("first event %s %s", e.name, e.data)
	}
	f.burn(t, "p1", "c1", 5)
	deadline := time.Now().Add(10 * time.Second)
	for pv.Project.BalanceSeconds != 595 || len(pv.Calls) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the stream never showed the debit: %+v", pv.Project)
		}
		f.clk.Advance(time.Second)
		if e := next(t, ch); e.name == "project" {
			_ = json.Unmarshal(e.data, &pv)
		}
	}
	ov := f.stream(t, "")
	var o dashboard.Overview
	if e := next(t, ov); e.name != "overview" || json.Unmarshal(e.data, &o) != nil || len(o.Projects) != 1 {
		t.Errorf("overview event %s %s", e.name, e.data)
	}
	if e := next(t, f.stream(t, "?view=system")); e.name != "system" {
		t.Errorf("system event %s", e.name)
	}
	for _, q := range []string{"?view=nope", "?view=project", "?view=project&project=a.b", "?project=p1", "?view=project&project=nope"} {
		code, b, _ := f.do(t, "GET", "/ui/api/events"+q, token)
		if code != http.StatusBadRequest && code != http.StatusNotFound {
			t.Errorf("events%s: %d %s, want 400/404", q, code, b)
		}
	}
}

// TestSharedReads: concurrent viewers within half an Interval share one
// read; the alert source (a stream scan) is read once per alertsTTL.
func TestSharedReads(t *testing.T) {
	f := newFixture(t, nil)
	f.project(t, "p1", perSecond, nil, 600)
	for range 5 {
		var pv dashboard.ProjectView
		f.getJSON(t, "/ui/api/projects/p1", &pv)
	}
	f.alerts.mu.Lock()
	n := f.alerts.calls
	f.alerts.mu.Unlock()
	if n != 1 {
		t.Errorf("alert source read %d times for 5 views at one instant, want 1", n)
	}
	a, err := f.dash.Overview(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.burn(t, "p1", "c1", 5)
	b, _ := f.dash.Overview(context.Background())
	if b.Projects[0].BalanceSeconds != a.Projects[0].BalanceSeconds {
		t.Errorf("a second read at the same instant was not shared")
	}
	f.clk.Advance(time.Second)
	c, _ := f.dash.Overview(context.Background())
	if c.Projects[0].BalanceSeconds != 595 {
		t.Errorf("balance %d a second later, want 595", c.Projects[0].BalanceSeconds)
	}
}

// TestStreamOutlivesServerTimeouts: the admin server's read and write
// timeouts do not end an event stream.
func TestStreamOutlivesServerTimeouts(t *testing.T) {
	f := newFixture(t, func(o *dashboard.Options) { o.Interval = 50 * time.Millisecond })
	f.project(t, "p1", perSecond, nil, 600)
	srv := httptest.NewUnstartedServer(f.srv.Config.Handler)
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	f.srv = srv
	ch := f.stream(t, "?view=overview")
	deadline := time.Now().Add(time.Second) // over three times both timeouts
	n := 0
	for time.Now().Before(deadline) {
		if e := next(t, ch); e.name != "overview" {
			t.Fatalf("event %s %s", e.name, e.data)
		}
		n++
	}
	if n < 10 {
		t.Errorf("%d events in 1s at a 50ms interval", n)
	}
}
