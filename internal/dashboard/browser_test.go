package dashboard_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/minuted/minuted/internal/app"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/testutil"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the browser test's screenshots to docs/screenshots")

// chromium is Debian's package path; CI installs it (.ci/run).
const chromium = "/usr/bin/chromium"

// needChromium skips the browser test where Chromium is absent, except
// under CI=true where its absence fails the test.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is missing (%v): install the Debian package chromium", chromium, err)
		}
		t.Skipf("%s is missing: apt-get install chromium to run the browser test", chromium)
	}
}

// artifactDir is where the screenshots go: $MINUTED_ARTIFACTS_DIR, or
// minuted-artifacts in the temporary directory.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("MINUTED_ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "minuted-artifacts")
	}
	dir = filepath.Join(dir, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fullStack runs minuted (every role) on a real NATS and redis-server,
// fed by the ARI double, and returns its admin URL.
func fullStack(t *testing.T) (string, *sim.Server, *ledger.Ledger) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	nats, rds := testutil.StartNATS(t), testutil.StartRedis(t)
	ari, err := sim.Start(ctx, sim.Options{Password: "ari-secret", WriteTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NATS.URL, cfg.Redis.URL = nats.URL(), rds.URL()
	cfg.ARI.URL, cfg.ARI.Username, cfg.ARI.Password, cfg.ARI.Application = ari.URL(), "minuted", "ari-secret", "minuted-ui"
	cfg.HTTP.AdminToken = token
	cfg.Ingest.SnapshotInterval = time.Second
	cfg.Ingest.SpoolDir = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(ctx, app.Options{Config: cfg, Roles: app.AllRoles, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("app.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("minuted did not stop within 30s")
		}
		_ = ari.Close()
	})
	if err := ari.WaitApp(ctx, "minuted-ui"); err != nil {
		t.Fatal(err)
	}
	base := "http://" + a.HTTPAddr()
	testutil.Eventually(t, 10*time.Second, func() bool {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "minuted ready")
	return base, ari, a.Ledger()
}

// admin calls the admin API with the token; it fails the test on >= 300.
func admin(t *testing.T, method, url, body string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
}

// browser is a headless Chromium page.
type browser struct {
	t      *testing.T
	ctx    context.Context
	mu     sync.Mutex
	errors []string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1400, 1000),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t}
	ctx, cancelC := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			b.mu.Lock()
			d := e.ExceptionDetails
			msg := fmt.Sprintf("%s at %s:%d:%d", d.Text, d.URL, d.LineNumber+1, d.ColumnNumber+1)
			if d.Exception != nil {
				msg += ": " + d.Exception.Description
			}
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	}))
	t.Cleanup(func() { cancelC(); cancelA() })
	b.ctx = ctx
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start %s: %v", chromium, err)
	}
	return b
}

// run runs actions with a deadline.
func (b *browser) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// eval evaluates a script (awaiting a promise) and decodes its value.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", js, err)
	}
	return v
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent`, sel))
}

// waitJS polls a boolean expression until it holds.
func (b *browser) waitJS(timeout time.Duration, js, what string) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for !eval[bool](b, js) {
		if time.Now().After(deadline) {
			b.t.Fatalf("browser: timed out after %v waiting for %s (%s)", timeout, what, js)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *browser) screenshot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	dirs := []string{artifactDir(b.t)}
	if *updateScreenshots {
		dirs = append(dirs, filepath.Join("..", "..", "docs", "screenshots"))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.t.Logf("screenshot %s.png in %v", name, dirs)
}

func (b *browser) jsErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.errors...)
}

// TestBrowser drives the dashboard in headless Chromium against minuted
// fed by the ARI double: no data and no action without the token; sign in;
// the projects table; a project's balance falling while a call is up,
// without reload; a top-up and its ledger entry; the system view; sign out.
func TestBrowser(t *testing.T) {
	needChromium(t)
	base, ari, led := fullStack(t)
	for id, body := range map[string]string{
		"acme-call-centre": `{"tariff": {"minimum_seconds": 1, "increment_seconds": 1}, "thresholds_minutes": [15, 5]}`,
		"globex":           `{"tariff": {"minimum_seconds": 60, "increment_seconds": 60}, "thresholds_minutes": [60, 10]}`,
		"initech":          `{"tariff": {"free_seconds": 5, "minimum_seconds": 30, "increment_seconds": 6}}`,
	} {
		admin(t, "PUT", base+"/v1/projects/"+id, body)
	}
	// A reference is free text: the page must show it as text, not markup.
	admin(t, "POST", base+"/v1/projects/acme-call-centre/topups", `{"minutes": 20, "reference": "<img src=x onerror=window.__xss=1>"}`)
	admin(t, "POST", base+"/v1/projects/globex/topups", `{"minutes": 600, "reference": "po-8841"}`)
	admin(t, "POST", base+"/v1/projects/initech/topups", `{"minutes": 3, "reference": "trial"}`)

	b := newBrowser(t)
	// ---- without the token: the login form, no data, no action ----
	b.run("open /ui/", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	if !eval[bool](b, `document.getElementById('view-projects').hidden && document.getElementById('nav').hidden`) {
		t.Error("views shown before signing in")
	}
	if rows := b.text("#projects tbody"); rows != "" {
		t.Errorf("projects table has data before signing in: %q", rows)
	}
	statuses := eval[string](b, `Promise.all([
		fetch('/ui/api/overview').then(r => r.status),
		fetch('/ui/api/events?view=overview').then(r => r.status),
		fetch('/v1/projects').then(r => r.status),
		fetch('/v1/projects/globex/topups', {method: 'POST', headers: {'Content-Type': 'application/json'},
			body: JSON.stringify({minutes: 1, reference: 'no-token'})}).then(r => r.status),
	]).then(a => a.join(','))`)
	if statuses != "401,401,401,401" {
		t.Errorf("requests from the page without the token answered %s, want 401 each", statuses)
	}
	b.run("wrong token", chromedp.SendKeys(chromedp.CSS("#token"), "not-the-token"), chromedp.Click(chromedp.CSS("#login-submit")))
	b.waitJS(10*time.Second, `document.getElementById('login-error').textContent.includes('Wrong token')`, "the wrong-token message")
	if rows := b.text("#projects tbody"); rows != "" {
		t.Errorf("data shown after a wrong token: %q", rows)
	}
	b.screenshot("login")

	// ---- sign in: the projects table, soonest empty first ----
	b.run("sign in", chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Click(chromedp.CSS("#login-submit")))
	b.waitJS(10*time.Second, `document.querySelectorAll('#projects tbody tr').length === 3`, "three project rows")
	if stored := eval[string](b, `String(sessionStorage.getItem('minuted.token'))`); stored != token {
		t.Errorf("sessionStorage holds %q, want the token", stored)
	}
	lc, err := ari.StartCall(context.Background(), sim.CallOptions{Project: "acme-call-centre"})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Hangup(16)
	// The live call shows up in the table by itself (no reload).
	eval[int](b, `window.__noReload = 1`)
	b.waitJS(15*time.Second, `[...document.querySelectorAll('#projects tbody tr')].some(tr =>
		tr.dataset.id === 'acme-call-centre' && tr.cells[4].textContent === '1')`, "the live call in the table")
	b.waitJS(30*time.Second, `document.querySelector('#projects tbody tr').dataset.id === 'acme-call-centre' &&
		document.querySelector('#projects tbody tr').cells[3].textContent !== '—'`, "the burning project first, with a time to empty")
	b.screenshot("projects")

	// ---- the project: its balance falls while the call is up ----
	b.run("open the project", chromedp.Click(chromedp.CSS(`#projects tbody tr[data-id="acme-call-centre"] a`)),
		chromedp.WaitVisible(chromedp.CSS("#view-project")))
	b.waitJS(10*time.Second, `document.getElementById('p-live').textContent === '1' &&
		document.querySelectorAll('#p-calls tbody tr').length === 1`, "the live call on the project page")
	first, err := strconv.Atoi(b.text("#p-balance-seconds"))
	if err != nil {
		t.Fatalf("balance on the page: %v", err)
	}
	talk0 := b.text("#p-calls tbody tr td:nth-child(3)")
	b.waitJS(15*time.Second, fmt.Sprintf(`Number(document.getElementById('p-balance-seconds').textContent) <= %d`, first-3),
		"the balance on the page to fall by 3 s")
	if talk := b.text("#p-calls tbody tr td:nth-child(3)"); talk == talk0 {
		t.Errorf("talk time did not run: %q then %q", talk0, talk)
	}
	if !eval[bool](b, `window.__noReload === 1`) {
		t.Error("the page was reloaded")
	}
	pathPoints := eval[string](b, `document.querySelector('#chart path.line').getAttribute('data-points') + ' ' + document.querySelectorAll('#chart line.thr').length`)
	if pts, thr, _ := strings.Cut(pathPoints, " "); pts == "" || pts == "0" || thr != "2" {
		t.Errorf("chart: %s points, %s threshold lines (want some, and 2)", pts, thr)
	}
	if eval[bool](b, `document.querySelector('#p-topups img') !== null || window.__xss === 1 ||
		!document.getElementById('p-topups').textContent.includes('<img src=x')`) {
		t.Error("a top-up reference was rendered as HTML, not shown as text")
	}
	b.screenshot("project")

	// ---- a top-up: review, confirm, the ledger entry it made ----
	b.run("fill the top-up", chromedp.SetValue(chromedp.CSS("#topup-minutes"), "5"),
		chromedp.SetValue(chromedp.CSS("#topup-reference"), "browser-topup-1"),
		chromedp.Click(chromedp.CSS("#topup-review")), chromedp.WaitVisible(chromedp.CSS("#topup-confirm")))
	if c := b.text("#topup-confirm-text"); !strings.Contains(c, "5 min") || !strings.Contains(c, "browser-topup-1") {
		t.Errorf("confirmation says %q", c)
	}
	entries, err := led.Entries(context.Background(), "acme-call-centre", 100000)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Reference == "browser-topup-1" {
			t.Fatal("the top-up was applied before it was confirmed")
		}
	}
	b.run("confirm the top-up", chromedp.Click(chromedp.CSS("#topup-ok")), chromedp.WaitVisible(chromedp.CSS("#topup-result")))
	shown := b.text("#topup-entry")
	entries, _ = led.Entries(context.Background(), "acme-call-centre", 100000)
	var made *ledger.Entry
	for i, e := range entries {
		if e.Reference == "browser-topup-1" {
			made = &entries[i]
		}
	}
	if made == nil || made.Seconds != 300 || made.Kind != ledger.KindTopUp {
		t.Fatalf("ledger entry of the top-up: %+v", made)
	}
	for _, want := range []string{made.ID, "browser-topup-1", "300", strconv.FormatInt(made.Balance, 10)} {
		if !strings.Contains(shown, want) {
			t.Errorf("the page's entry %q lacks %q", shown, want)
		}
	}
	b.waitJS(10*time.Second, `document.getElementById('p-topups').textContent.includes('browser-topup-1')`, "the top-up in the list")
	b.screenshot("topup")

	// ---- the system view ----
	b.run("system view", chromedp.Click(chromedp.CSS("#nav-system")), chromedp.WaitVisible(chromedp.CSS("#view-system")))
	b.waitJS(15*time.Second, `document.querySelectorAll('#s-checks tbody tr').length === 3 &&
		document.getElementById('s-nodes').textContent.includes('connected') && document.getElementById('s-dlq').textContent === '0' &&
		document.getElementById('s-lag').textContent !== '?'`, "readiness, the node's ARI state, dead letters and lag")
	if c := b.text("#s-checks"); strings.Contains(c, "failing") {
		t.Errorf("a readiness check fails: %s", c)
	}
	b.screenshot("system")

	// ---- sign out: no data left ----
	b.run("sign out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	if stored := eval[string](b, `String(sessionStorage.getItem('minuted.token'))`); stored != "null" {
		t.Errorf("token still stored after signing out: %q", stored)
	}
	if rows := b.text("#projects tbody"); rows != "" {
		t.Errorf("data left after signing out: %q", rows)
	}
	if errs := b.jsErrors(); len(errs) > 0 {
		t.Errorf("JavaScript exceptions: %v", errs)
	}
}
