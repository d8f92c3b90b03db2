package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

var _ Store = (*ledger.Ledger)(nil)

const testToken = "tok-9f8e7d6c5b4a-minuted-admin"

type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time         { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)        { c.ns.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration)    { c.ns.Add(int64(d)) }
func newClock(t time.Time) *clock       { c := &clock{}; c.Set(t); return c }
func (e *env) url(path string) string   { return e.srv.URL + path }
func (e *env) logs() string             { return e.logBuf.String() }
func jsonBody(v any) io.Reader          { b, _ := json.Marshal(v); return bytes.NewReader(b) }
func (r result) field(k string) any     { return r.body[k] }
func (r result) str(k string) string    { s, _ := r.body[k].(string); return s }
func (r result) num(k string) float64   { f, _ := r.body[k].(float64); return f }
func (r result) errMsg() string         { return r.str("error") }
func (r result) has(sub string) bool    { return strings.Contains(r.errMsg(), sub) }
func (r result) header(k string) string { return r.hdr.Get(k) }
func (r result) String() string         { return string(r.raw) }
func (r result) list(k string) []any    { l, _ := r.body[k].([]any); return l }
func (r result) obj(k string) map[string]any {
	m, _ := r.body[k].(map[string]any)
	return m
}

type env struct {
	srv    *httptest.Server
	led    *ledger.Ledger
	redis  *testutil.Redis
	clock  *clock
	reg    *prometheus.Registry
	logBuf *testutil.LogBuffer
}

type fakeAlerts struct{ alerts []alert.Alert }

func (f *fakeAlerts) Recent(_ context.Context, project string, limit int) ([]alert.Alert, error) {
	var out []alert.Alert
	for _, a := range f.alerts {
		if (project == "" || a.Project == project) && len(out) < limit {
			out = append(out, a)
		}
	}
	return out, nil
}

func newEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	r := testutil.StartRedis(t)
	e := &env{redis: r, clock: newClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)),
		reg: prometheus.NewRegistry(), logBuf: &testutil.LogBuffer{}}
	e.led = ledger.New(r.Client(t), ledger.Options{Prefix: "t", Now: e.clock.Now})
	o := Options{
		Store: e.led, Token: testToken, Registry: e.reg, Now: e.clock.Now,
		Logger:   slog.New(slog.NewJSONHandler(e.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Defaults: ledger.Settings{Tariff: tariff.Default, ThresholdsMinutes: []float64{60, 10, 0}, OnExhausted: ledger.Allow},
		Ready:    []Check{{Name: "redis", Check: e.led.Ping}},
	}
	if mod != nil {
		mod(&o)
	}
	h, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	return e
}

type result struct {
	code int
	hdr  http.Header
	raw  []byte
	body map[string]any
}

// do sends a request with the test token (token "" sends none).
func (e *env) do(t *testing.T, method, path string, body io.Reader, token string) result {
	t.Helper()
	req, err := http.NewRequest(method, e.url(path), body)
	if err != nil {
		t.Fatalf("request %s %s: %v", method, path, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	res := result{code: resp.StatusCode, hdr: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &res.body)
	return res
}

func (e *env) call(t *testing.T, method, path, body string) result {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return e.do(t, method, path, r, testToken)
}

func expect(t *testing.T, r result, code int, msgParts ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("status %d, want %d; body %s", r.code, code, r)
	}
	for _, p := range msgParts {
		if !r.has(p) {
			t.Fatalf("error %q does not contain %q", r.errMsg(), p)
		}
	}
}

func (e *env) mustPut(t *testing.T, id, body string) result {
	t.Helper()
	r := e.call(t, "PUT", "/v1/projects/"+id, body)
	if r.code != http.StatusCreated && r.code != http.StatusOK {
		t.Fatalf("PUT %s: %d %s", id, r.code, r)
	}
	return r
}

func TestNewRefusesNoToken(t *testing.T) {
	r := testutil.StartRedis(t)
	led := ledger.New(r.Client(t), ledger.Options{Prefix: "t"})
	if _, err := New(Options{Store: led}); err == nil || !strings.Contains(err.Error(), "MINUTED_ADMIN_TOKEN") {
		t.Fatalf("New without token: err = %v, want a refusal naming the setting", err)
	}
	if _, err := New(Options{Token: "x"}); err == nil {
		t.Fatal("New without store: no error")
	}
}

func TestInsecureNeedsNoToken(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Token, o.Insecure = "", true })
	expect(t, e.do(t, "GET", "/v1/projects", nil, ""), http.StatusOK)
	if !strings.Contains(e.logs(), "WITHOUT authentication") {
		t.Fatal("no warning logged for an insecure API")
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, nil)
	e.mustPut(t, "acme", "{}")
	protected := []struct{ method, path string }{
		{"GET", "/v1/projects"}, {"GET", "/v1/projects/acme"}, {"PUT", "/v1/projects/acme"},
		{"POST", "/v1/projects/acme/topups"}, {"POST", "/v1/projects/acme/adjustments"},
		{"GET", "/v1/projects/acme/calls"}, {"GET", "/v1/projects/acme/cdrs"},
		{"GET", "/v1/projects/acme/ledger"}, {"GET", "/v1/projects/acme/audit"}, {"GET", "/v1/alerts"}, {"GET", "/metrics"},
		// Unclean paths answer 401 before saying anything about the path.
		{"GET", "/v1/projects/../x"},
	}
	for _, p := range protected {
		r := e.do(t, p.method, p.path, strings.NewReader(`{"seconds":1,"reference":"r"}`), "")
		expect(t, r, http.StatusUnauthorized, "missing bearer token")
		if got := r.header("WWW-Authenticate"); got != `Bearer realm="minuted"` {
			t.Errorf("%s %s: WWW-Authenticate %q", p.method, p.path, got)
		}
		r = e.do(t, p.method, p.path, strings.NewReader(`{"seconds":1,"reference":"r"}`), testToken+"x")
		expect(t, r, http.StatusUnauthorized, "wrong bearer token")
		if got := r.header("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
			t.Errorf("%s %s: WWW-Authenticate %q", p.method, p.path, got)
		}
	}
	// Basic auth, or the token without a scheme, is not a bearer token.
	req, _ := http.NewRequest("GET", e.url("/v1/projects"), nil)
	req.SetBasicAuth("admin", testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("basic auth: %d", resp.StatusCode)
	}
	// The scheme is case-insensitive (RFC 7235).
	req, _ = http.NewRequest("GET", e.url("/v1/projects"), nil)
	req.Header.Set("Authorization", "bearer "+testToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lower-case scheme: %d", resp.StatusCode)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		expect(t, e.do(t, "GET", p, nil, ""), http.StatusOK)
	}
	// No project was changed by the refused requests.
	if p := e.call(t, "GET", "/v1/projects/acme", ""); p.num("balance_seconds") != 0 {
		t.Fatalf("refused top-ups changed the balance: %s", p)
	}
}

func TestProjectIDValidation(t *testing.T) {
	e := newEnv(t, nil)
	long := strings.Repeat("a", 65)
	for _, id := range []string{"a.b", long, "..%2Fx", "a%20b", "_unbilled", "caf%C3%A9"} {
		for _, rt := range []struct{ method, suffix, body string }{
			{"GET", "", ""}, {"PUT", "", "{}"}, {"POST", "/topups", `{"seconds":1,"reference":"r"}`},
			{"POST", "/adjustments", `{"seconds":1,"reference":"r","reason":"x"}`},
			{"GET", "/calls", ""}, {"GET", "/cdrs", ""}, {"GET", "/ledger", ""}, {"GET", "/audit", ""},
		} {
			r := e.call(t, rt.method, "/v1/projects/"+id+rt.suffix, rt.body)
			want := "1-64 characters of A-Z, a-z, 0-9, '_' or '-'"
			if id == "_unbilled" {
				want = "reserved"
			}
			expect(t, r, http.StatusBadRequest, want)
		}
	}
	// A raw ../ is refused, not redirected elsewhere by the router.
	expect(t, e.call(t, "GET", "/v1/projects/../x", ""), http.StatusBadRequest, "not canonical", "1-64 characters")
	expect(t, e.call(t, "PUT", "/v1/projects/./acme", "{}"), http.StatusBadRequest, "not canonical")
	expect(t, e.call(t, "GET", "/v1/alerts?project=a.b", ""), http.StatusNotImplemented)
	if ps := e.call(t, "GET", "/v1/projects", ""); len(ps.list("projects")) != 0 {
		t.Fatalf("invalid ids created projects: %s", ps)
	}
}

func TestPutGetList(t *testing.T) {
	e := newEnv(t, nil)
	// A new project takes the defaults for what the body leaves out.
	r := e.call(t, "PUT", "/v1/projects/acme", `{"tariff":{"minimum_seconds":30,"increment_seconds":6}}`)
	expect(t, r, http.StatusCreated)
	if r.header("Location") != "/v1/projects/acme" {
		t.Errorf("Location %q", r.header("Location"))
	}
	tr := r.obj("tariff")
	if tr["minimum_seconds"] != 30.0 || tr["increment_seconds"] != 6.0 || tr["free_seconds"] != 0.0 {
		t.Fatalf("tariff %v", tr)
	}
	if r.str("on_exhausted") != "allow" || len(r.list("thresholds_minutes")) != 3 || r.num("balance_seconds") != 0 {
		t.Fatalf("defaults not applied: %s", r)
	}
	// An update keeps what the body leaves out, inside the tariff too.
	r = e.call(t, "PUT", "/v1/projects/acme",
		`{"tariff":{"free_seconds":5},"thresholds_minutes":[5,30],"on_exhausted":"hangup","credit_limit_seconds":120}`)
	expect(t, r, http.StatusOK)
	tr = r.obj("tariff")
	if tr["minimum_seconds"] != 30.0 || tr["increment_seconds"] != 6.0 || tr["free_seconds"] != 5.0 {
		t.Fatalf("update lost tariff fields: %v", tr)
	}
	g := e.call(t, "GET", "/v1/projects/acme", "")
	expect(t, g, http.StatusOK)
	if g.str("on_exhausted") != "hangup" || g.num("credit_limit_seconds") != 120 {
		t.Fatalf("GET after PUT: %s", g)
	}
	if th := g.list("thresholds_minutes"); len(th) != 2 || th[0] != 30.0 || th[1] != 5.0 {
		t.Fatalf("thresholds %v, want [30 5]", th)
	}
	for _, k := range []string{"id", "balance_seconds", "balance_minutes", "tariff", "thresholds_minutes",
		"credit_limit_seconds", "on_exhausted", "live_calls"} {
		if _, ok := g.body[k]; !ok {
			t.Errorf("GET project lacks %q: %s", k, g)
		}
	}
	// A project read with GET can be PUT back once its read-only fields go.
	delete(g.body, "balance_seconds")
	delete(g.body, "balance_minutes")
	delete(g.body, "live_calls")
	delete(g.body, "created_at")
	expect(t, e.do(t, "PUT", "/v1/projects/acme", jsonBody(g.body), testToken), http.StatusOK)
	// No thresholds at all.
	if r := e.call(t, "PUT", "/v1/projects/acme", `{"thresholds_minutes":[]}`); len(r.list("thresholds_minutes")) != 0 {
		t.Fatalf("empty thresholds: %s", r)
	}
	e.mustPut(t, "beta", "{}")
	l := e.call(t, "GET", "/v1/projects", "")
	expect(t, l, http.StatusOK)
	ps := l.list("projects")
	if len(ps) != 2 || ps[0].(map[string]any)["id"] != "acme" || ps[1].(map[string]any)["id"] != "beta" {
		t.Fatalf("list: %s", l)
	}
	expect(t, e.call(t, "GET", "/v1/projects/nope", ""), http.StatusNotFound, `project "nope" does not exist`,
		"PUT /v1/projects/nope")
}

func TestPutEmptyBodyRefused(t *testing.T) {
	e := newEnv(t, nil)
	r := e.call(t, "PUT", "/v1/projects/acme", "")
	expect(t, r, http.StatusBadRequest, "request body is empty")
	expect(t, e.call(t, "PUT", "/v1/projects/acme", "{}"), http.StatusCreated)
}

func TestPutBadBodies(t *testing.T) {
	e := newEnv(t, nil)
	e.mustPut(t, "acme", "{}")
	cases := []struct{ body, want string }{
		{`{"tarif":{}}`, `unknown field "tarif"`},
		{`{"tariff":{"minimum":1}}`, `unknown field "minimum"`},
		{`{"tariff":{"minimum_seconds":"30"}}`, `field "tariff.minimum_seconds" must be an integer`},
		{`{"tariff":{"minimum_seconds":1.5}}`, `field "tariff.minimum_seconds" must be an integer`},
		{`{"tariff":{"count_initiated_seconds":1}}`, `"tariff.count_initiated_seconds" must be true or false`},
		{`{"tariff":{"increment_seconds":0}}`, "tariff.increment_seconds must be between 1"},
		{`{"tariff":{"free_seconds":-1}}`, "tariff.free_seconds must be between 0"},
		{`{"thresholds_minutes":10}`, `"thresholds_minutes" must be an array of numbers`},
		{`{"thresholds_minutes":[-1]}`, "thresholds_minutes: -1 is outside"},
		{`{"thresholds_minutes":[10,10]}`, "lists 10 twice"},
		{`{"credit_limit_seconds":-5}`, "credit_limit_seconds must be between 0"},
		{`{"on_exhausted":"drop"}`, `on_exhausted must be "allow" or "hangup", got "drop"`},
		{`{"balance_seconds":100}`, "use POST /v1/projects/{id}/topups"},
		{`{"balance_minutes":1}`, "balance cannot be set with PUT"},
		{`{"live_calls":3}`, "live_calls is read-only"},
		{`{"id":"other"}`, `the body's id "other" differs`},
		{`[]`, "must be a JSON object"},
		{`{"tariff":`, "ends in the middle"},
		{`{"tariff":{}} {}`, "more data after"},
		{`{,}`, "not valid JSON"},
	}
	for _, c := range cases {
		r := e.call(t, "PUT", "/v1/projects/acme", c.body)
		expect(t, r, http.StatusBadRequest, c.want)
	}
	// Nothing was changed by the refused bodies.
	g := e.call(t, "GET", "/v1/projects/acme", "")
	if g.str("on_exhausted") != "allow" || g.obj("tariff")["increment_seconds"] != 60.0 {
		t.Fatalf("refused PUTs changed the project: %s", g)
	}
}

func TestTopUps(t *testing.T) {
	e := newEnv(t, nil)
	body := `{"seconds":3600,"reference":"inv-1"}`
	expect(t, e.call(t, "POST", "/v1/projects/acme/topups", body), http.StatusNotFound, "PUT /v1/projects/acme")
	e.mustPut(t, "acme", "{}")

	r := e.call(t, "POST", "/v1/projects/acme/topups", body)
	expect(t, r, http.StatusCreated)
	if r.str("applied") != "now" || r.num("balance_seconds") != 3600 || r.num("balance_minutes") != 60 {
		t.Fatalf("first top-up: %s", r)
	}
	entry := r.obj("entry")
	if entry["kind"] != "topup" || entry["seconds"] != 3600.0 || entry["reference"] != "inv-1" {
		t.Fatalf("entry %v", entry)
	}
	// The same reference again: nothing changes, 200 "before", same entry.
	r2 := e.call(t, "POST", "/v1/projects/acme/topups", body)
	expect(t, r2, http.StatusOK)
	if r2.str("applied") != "before" || r2.num("balance_seconds") != 3600 || r2.obj("entry")["id"] != entry["id"] {
		t.Fatalf("replayed top-up: %s", r2)
	}
	// The same reference with another amount is a conflict.
	expect(t, e.call(t, "POST", "/v1/projects/acme/topups", `{"seconds":60,"reference":"inv-1"}`),
		http.StatusConflict, "inv-1", "new reference")
	// Minutes convert to seconds exactly.
	for i, c := range []struct {
		minutes string
		seconds float64
	}{{"1.5", 90}, {"0.05", 3}, {"2", 120}, {"10.25", 615}, {"0.10", 6}} {
		r := e.call(t, "POST", "/v1/projects/acme/topups", fmt.Sprintf(`{"minutes":%s,"reference":"m-%d"}`, c.minutes, i))
		expect(t, r, http.StatusCreated)
		if got := r.obj("entry")["seconds"]; got != c.seconds {
			t.Errorf("minutes %s gave %v seconds, want %v", c.minutes, got, c.seconds)
		}
	}
	g := e.call(t, "GET", "/v1/projects/acme", "")
	if want := 3600.0 + 90 + 3 + 120 + 615 + 6; g.num("balance_seconds") != want {
		t.Fatalf("balance %v, want %v", g.num("balance_seconds"), want)
	}
	bad := []struct{ body, want string }{
		{`{"minutes":0.01,"reference":"x"}`, "0.6 seconds, not a whole number"},
		{`{"minutes":1.234,"reference":"x"}`, "more than 2 decimals"},
		{`{"minutes":1e3,"reference":"x"}`, "plain decimal"},
		{`{"minutes":"abc","reference":"x"}`, `field "minutes" must be a number`},
		{`{"minutes":"1.5","reference":"x"}`, `field "minutes" must be a number`},
		{`{"minutes":[1],"reference":"x"}`, `field "minutes" must be a number`},
		{`{"seconds":10,"minutes":1,"reference":"x"}`, "not both"},
		{`{"reference":"x"}`, "amount is missing"},
		{`{"seconds":10}`, `"reference" is required`},
		{`{"seconds":10,"reference":""}`, `"reference" is required`},
		{`{"seconds":0,"reference":"x"}`, "use POST /v1/projects/{id}/adjustments"},
		{`{"seconds":-5,"reference":"x"}`, "must be above 0"},
		{`{"minutes":-1,"reference":"x"}`, "must be above 0"},
		{`{"seconds":1.5,"reference":"x"}`, `field "seconds" must be an integer`},
		{`{"seconds":99999999999,"reference":"x"}`, "beyond the limit"},
		{`{"seconds":1,"reference":"a\u0000b"}`, "control characters"},
		{`{"seconds":1,"reference":"` + strings.Repeat("r", 257) + `"}`, "at most 256"},
		{`{"seconds":1,"reference":"x","reason":"r"}`, `unknown field "reason"`},
	}
	for _, c := range bad {
		expect(t, e.call(t, "POST", "/v1/projects/acme/topups", c.body), http.StatusBadRequest, c.want)
	}
	if g2 := e.call(t, "GET", "/v1/projects/acme", ""); g2.num("balance_seconds") != g.num("balance_seconds") {
		t.Fatalf("refused top-ups changed the balance: %s", g2)
	}
}

func TestAdjustments(t *testing.T) {
	var crossed atomic.Int64
	e := newEnv(t, func(o *Options) {
		o.OnCrossed = func(_ context.Context, project string, cs []ledger.Crossing) {
			if project == "acme" {
				crossed.Add(int64(len(cs)))
			}
		}
	})
	e.mustPut(t, "acme", `{"thresholds_minutes":[10]}`)
	expect(t, e.call(t, "POST", "/v1/projects/acme/topups", `{"seconds":700,"reference":"t1"}`), http.StatusCreated)
	r := e.call(t, "POST", "/v1/projects/acme/adjustments", `{"seconds":-120,"reference":"adj-1","reason":"double billed"}`)
	expect(t, r, http.StatusCreated)
	if r.num("balance_seconds") != 580 || r.obj("entry")["kind"] != "adjustment" || r.obj("entry")["seconds"] != -120.0 {
		t.Fatalf("adjustment: %s", r)
	}
	if cs := r.list("crossed"); len(cs) != 1 || cs[0].(map[string]any)["threshold_minutes"] != 10.0 {
		t.Fatalf("crossed %v, want threshold 10", r.field("crossed"))
	}
	if crossed.Load() != 1 {
		t.Fatalf("OnCrossed told of %d crossings, want 1", crossed.Load())
	}
	if !strings.Contains(e.logs(), "double billed") {
		t.Fatal("the adjustment's reason is not in the audit log")
	}
	r = e.call(t, "POST", "/v1/projects/acme/adjustments", `{"seconds":-120,"reference":"adj-1","reason":"double billed"}`)
	expect(t, r, http.StatusOK)
	if r.str("applied") != "before" || r.num("balance_seconds") != 580 {
		t.Fatalf("replayed adjustment: %s", r)
	}
	// A top-up reference cannot be reused as an adjustment.
	expect(t, e.call(t, "POST", "/v1/projects/acme/adjustments", `{"seconds":700,"reference":"t1","reason":"x"}`),
		http.StatusConflict)
	expect(t, e.call(t, "POST", "/v1/projects/acme/adjustments", `{"minutes":-0.5,"reference":"adj-2","reason":"x"}`),
		http.StatusCreated)
	for _, c := range []struct{ body, want string }{
		{`{"seconds":-1,"reference":"a"}`, `"reason" is required`},
		{`{"seconds":-1,"reference":"a","reason":"  "}`, `"reason" is required`},
		{`{"seconds":0,"reference":"a","reason":"r"}`, "must not be 0"},
		{`{"seconds":-1,"reason":"r"}`, `"reference" is required`},
	} {
		expect(t, e.call(t, "POST", "/v1/projects/acme/adjustments", c.body), http.StatusBadRequest, c.want)
	}
	expect(t, e.call(t, "POST", "/v1/projects/ghost/adjustments", `{"seconds":-1,"reference":"a","reason":"r"}`),
		http.StatusNotFound)
	if g := e.call(t, "GET", "/v1/projects/acme", ""); g.num("balance_seconds") != 550 {
		t.Fatalf("balance %v, want 550", g.num("balance_seconds"))
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, nil)
	e.mustPut(t, "acme", "{}")
	big := `{"reference":"` + strings.Repeat("x", MaxBodyBytes) + `","seconds":1}`
	expect(t, e.call(t, "POST", "/v1/projects/acme/topups", big), http.StatusRequestEntityTooLarge, "over 65536 bytes")
	bigPut := `{"thresholds_minutes":[` + strings.Repeat("1,", MaxBodyBytes/2) + `1]}`
	expect(t, e.call(t, "PUT", "/v1/projects/acme", bigPut), http.StatusRequestEntityTooLarge)
	// Just under the limit is read (and then refused for its content).
	under := `{"seconds":1,"reference":"` + strings.Repeat("y", MaxBodyBytes-40) + `"}`
	expect(t, e.call(t, "POST", "/v1/projects/acme/topups", under), http.StatusBadRequest, "at most 256")
}

func TestCallsCDRsLedger(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	e.mustPut(t, "acme", `{"tariff":{"minimum_seconds":1,"increment_seconds":1}}`)
	expect(t, e.call(t, "POST", "/v1/projects/acme/topups", `{"seconds":600,"reference":"t1"}`), http.StatusCreated)
	answered := e.clock.Now()
	if _, err := e.led.Open(ctx, ledger.Open{Project: "acme", Node: "pbx1", Channel: "c1", AnsweredAt: answered}); err != nil {
		t.Fatal(err)
	}
	e.clock.Add(42*time.Second + 500*time.Millisecond)
	r := e.call(t, "GET", "/v1/projects/acme/calls", "")
	expect(t, r, http.StatusOK)
	calls := r.list("calls")
	if len(calls) != 1 {
		t.Fatalf("calls: %s", r)
	}
	c := calls[0].(map[string]any)
	if c["talk_seconds"] != 42.0 || c["channel"] != "c1" || c["node"] != "pbx1" {
		t.Fatalf("live call %v, want talk_seconds 42 on pbx1/c1", c)
	}
	if g := e.call(t, "GET", "/v1/projects/acme", ""); g.num("live_calls") != 1 {
		t.Fatalf("live_calls %v", g.num("live_calls"))
	}
	ended := answered.Add(42500 * time.Millisecond)
	if _, err := e.led.Settle(ctx, ledger.Settlement{Project: "acme", Node: "pbx1", Channel: "c1",
		AnsweredAt: answered, EndedAt: ended, Billed: 42, TalkMS: 42500}); err != nil {
		t.Fatal(err)
	}
	if r := e.call(t, "GET", "/v1/projects/acme/calls", ""); len(r.list("calls")) != 0 {
		t.Fatalf("settled call still live: %s", r)
	}
	cd := e.call(t, "GET", "/v1/projects/acme/cdrs", "")
	expect(t, cd, http.StatusOK)
	if l := cd.list("cdrs"); len(l) != 1 || l[0].(map[string]any)["billed_seconds"] != 42.0 {
		t.Fatalf("cdrs: %s", cd)
	}
	lg := e.call(t, "GET", "/v1/projects/acme/ledger", "")
	expect(t, lg, http.StatusOK)
	entries := lg.list("entries")
	var sum float64
	for _, en := range entries {
		sum += en.(map[string]any)["seconds"].(float64)
	}
	if sum != 600-42 || entries[len(entries)-1].(map[string]any)["kind"] != "topup" {
		t.Fatalf("ledger sums to %v, want %v (oldest a topup): %s", sum, 600-42, lg)
	}
	if one := e.call(t, "GET", "/v1/projects/acme/ledger?limit=1", ""); len(one.list("entries")) != 1 {
		t.Fatalf("limit=1: %s", one)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=abc", "limit=-1", "limit=1.5"} {
		for _, p := range []string{"/v1/projects/acme/ledger?", "/v1/projects/acme/cdrs?"} {
			expect(t, e.call(t, "GET", p+q, ""), http.StatusBadRequest, "must be an integer from 1 to 1000")
		}
	}
	au := e.call(t, "GET", "/v1/projects/acme/audit", "")
	expect(t, au, http.StatusOK)
	var a ledger.Audit
	if err := json.Unmarshal(au.raw, &a); err != nil {
		t.Fatal(err)
	}
	if !a.OK() || !a.Complete || a.BalanceSeconds != 600-42 || a.CreditedSeconds != 600 || a.BilledSeconds != 42 || a.Entries != len(entries) {
		t.Fatalf("audit: %s", au)
	}
	for _, p := range []string{"/calls", "/cdrs", "/ledger", "/audit"} {
		expect(t, e.call(t, "GET", "/v1/projects/ghost"+p, ""), http.StatusNotFound, "PUT /v1/projects/ghost")
	}
}

func TestAlerts(t *testing.T) {
	th := 10.0
	src := &fakeAlerts{alerts: []alert.Alert{
		{ID: "a1", Kind: alert.Threshold, Project: "acme", ThresholdMinutes: &th, BalanceSeconds: 500},
		{ID: "a2", Kind: alert.ARILost, Project: "_system"},
		{ID: "a3", Kind: alert.Exhausted, Project: "acme"},
	}}
	e := newEnv(t, func(o *Options) { o.Alerts = src })
	r := e.call(t, "GET", "/v1/alerts", "")
	expect(t, r, http.StatusOK)
	if len(r.list("alerts")) != 3 {
		t.Fatalf("alerts: %s", r)
	}
	r = e.call(t, "GET", "/v1/alerts?project=acme&limit=1", "")
	expect(t, r, http.StatusOK)
	if l := r.list("alerts"); len(l) != 1 || l[0].(map[string]any)["id"] != "a1" {
		t.Fatalf("filtered alerts: %s", r)
	}
	if r := e.call(t, "GET", "/v1/alerts?project=_system", ""); len(r.list("alerts")) != 1 {
		t.Fatalf("system alerts: %s", r)
	}
	expect(t, e.call(t, "GET", "/v1/alerts?project=a.b", ""), http.StatusBadRequest, "1-64 characters")
	expect(t, e.call(t, "GET", "/v1/alerts?limit=0", ""), http.StatusBadRequest, "limit")

	none := newEnv(t, nil)
	expect(t, none.call(t, "GET", "/v1/alerts", ""), http.StatusNotImplemented, "not available")
}

func TestReadyz(t *testing.T) {
	var natsDown atomic.Bool
	e := newEnv(t, func(o *Options) {
		o.Ready = append(o.Ready,
			Check{Name: "nats", Check: func(context.Context) error {
				if natsDown.Load() {
					return errors.New("dial nats://10.0.0.9:4222: connection refused")
				}
				return nil
			}},
			Check{Name: "ari", Check: func(context.Context) error { return nil }})
	})
	r := e.do(t, "GET", "/readyz", nil, "")
	expect(t, r, http.StatusOK)
	if r.obj("checks")["redis"] != "ok" || r.obj("checks")["nats"] != "ok" {
		t.Fatalf("readyz: %s", r)
	}
	natsDown.Store(true)
	r = e.do(t, "GET", "/readyz", nil, "")
	expect(t, r, http.StatusServiceUnavailable, "nats")
	if f := r.list("failing"); len(f) != 1 || f[0] != "nats" {
		t.Fatalf("failing %v", r.field("failing"))
	}
	if strings.Contains(string(r.raw), "10.0.0.9") {
		t.Fatal("readyz shows the cause to a caller without the token")
	}
	r = e.do(t, "GET", "/readyz", nil, testToken)
	if got := r.obj("checks")["nats"]; !strings.Contains(got.(string), "connection refused") {
		t.Fatalf("with the token the cause is shown: %v", got)
	}
	natsDown.Store(false)
	// Redis really down.
	e.redis.Stop()
	r = e.do(t, "GET", "/readyz", nil, "")
	expect(t, r, http.StatusServiceUnavailable)
	if f := r.list("failing"); len(f) != 1 || f[0] != "redis" {
		t.Fatalf("failing %v", r.field("failing"))
	}
	// And the ledger routes say so with a 500 an operator can act on.
	expect(t, e.call(t, "GET", "/v1/projects", ""), http.StatusInternalServerError, "Redis is reachable")
	expect(t, e.do(t, "GET", "/healthz", nil, ""), http.StatusOK)
}

func TestUnknownRouteAndMethod(t *testing.T) {
	e := newEnv(t, nil)
	expect(t, e.call(t, "GET", "/v1/nothing", ""), http.StatusNotFound, "api/openapi.yaml")
	r := e.call(t, "DELETE", "/v1/projects/acme", "")
	expect(t, r, http.StatusMethodNotAllowed, "use GET or PUT")
	if r.header("Allow") != "GET, PUT" {
		t.Fatalf("Allow %q", r.header("Allow"))
	}
	if r.header("Content-Type") != "application/json" {
		t.Fatalf("Content-Type %q", r.header("Content-Type"))
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t, nil)
	e.mustPut(t, "acme", "{}")
	e.call(t, "GET", "/v1/projects/nope", "")
	e.do(t, "GET", "/v1/projects", nil, "")
	expect(t, e.do(t, "GET", "/metrics", nil, ""), http.StatusUnauthorized)
	r := e.do(t, "GET", "/metrics", nil, testToken)
	if r.code != http.StatusOK {
		t.Fatalf("metrics: %d", r.code)
	}
	for _, want := range []string{
		`minuted_api_requests_total{code="201",route="PUT /v1/projects/{id}"} 1`,
		`minuted_api_requests_total{code="404",route="GET /v1/projects/{id}"} 1`,
		`minuted_api_requests_total{code="401",route="GET /v1/projects"} 1`,
		`minuted_api_requests_total{code="401",route="GET /metrics"} 1`,
		`minuted_api_request_duration_seconds_count{route="PUT /v1/projects/{id}"} 1`,
	} {
		if !strings.Contains(string(r.raw), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	pub := newEnv(t, func(o *Options) { o.PublicMetrics = true })
	if r := pub.do(t, "GET", "/metrics", nil, ""); r.code != http.StatusOK {
		t.Fatalf("public metrics: %d", r.code)
	}
	// Two APIs on one registry share the metrics instead of failing.
	if _, err := New(Options{Store: e.led, Token: "x", Registry: e.reg}); err != nil {
		t.Fatalf("second API on the same registry: %v", err)
	}
}

// TestTokenNeverLogged drives every kind of request, with the right token,
// a wrong one and none, at debug level, and searches the logs.
func TestTokenNeverLogged(t *testing.T) {
	wrong := "wrong-" + testToken
	e := newEnv(t, func(o *Options) {
		o.Ready = append(o.Ready, Check{Name: "nats", Check: func(context.Context) error { return errors.New("down") }})
	})
	for _, tok := range []string{testToken, wrong, ""} {
		e.do(t, "PUT", "/v1/projects/acme", strings.NewReader(`{}`), tok)
		e.do(t, "PUT", "/v1/projects/acme", strings.NewReader(`{"x":1}`), tok)
		e.do(t, "POST", "/v1/projects/acme/topups", strings.NewReader(`{"seconds":5,"reference":"r1"}`), tok)
		e.do(t, "POST", "/v1/projects/acme/adjustments", strings.NewReader(`{"seconds":-5,"reference":"r2","reason":"x"}`), tok)
		e.do(t, "GET", "/v1/projects/a.b", nil, tok)
		e.do(t, "GET", "/v1/projects/../x", nil, tok)
		e.do(t, "GET", "/readyz", nil, tok)
		e.do(t, "GET", "/metrics", nil, tok)
	}
	e.redis.Stop()
	e.do(t, "GET", "/v1/projects", nil, testToken)
	logs := e.logs()
	if !strings.Contains(logs, `"code":401`) || !strings.Contains(logs, `"code":201`) || !strings.Contains(logs, `"code":500`) {
		t.Fatalf("the access log did not record the requests:\n%s", logs)
	}
	for _, secret := range []string{testToken, wrong, "9f8e7d6c5b4a"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("the logs contain the token %q:\n%s", secret, logs)
		}
	}
}

// TestOpenAPICoversRoutes: every route registered is documented in
// api/openapi.yaml, and every documented operation is a route.
func TestOpenAPICoversRoutes(t *testing.T) {
	raw, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := parseOpenAPI(raw)
	if err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	s, err := newServer(Options{Store: (*ledger.Ledger)(nil), Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	for _, rt := range s.routes {
		key := strings.ToLower(rt.method) + " " + rt.path
		registered[key] = true
		op, ok := doc[key]
		if !ok {
			t.Errorf("route %s %s is not in api/openapi.yaml", rt.method, rt.path)
			continue
		}
		if op.public != rt.public {
			t.Errorf("%s %s: openapi says public=%v, the route public=%v", rt.method, rt.path, op.public, rt.public)
		}
		if strings.Contains(rt.path, "{id}") && !op.hasID {
			t.Errorf("%s %s: openapi lacks the id parameter", rt.method, rt.path)
		}
	}
	for key := range doc {
		if !registered[key] {
			t.Errorf("api/openapi.yaml documents %s, which is not a route", key)
		}
	}
	if len(registered) < 12 {
		t.Fatalf("only %d routes", len(registered))
	}
}

func TestServeGraceful(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeListener(ctx, ln, mux, nil) }()
	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	<-started
	cancel()
	// Shutdown waits for the in-flight request.
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v with a request in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if b := <-got; b != "done" {
		t.Fatalf("in-flight request got %q", b)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after shutdown: %v", err)
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/slow"); err == nil {
		t.Fatal("server still accepts after shutdown")
	}
	if err := Serve(context.Background(), "256.0.0.1:1", mux, nil); err == nil ||
		!strings.Contains(err.Error(), "MINUTED_HTTP_ADDR") {
		t.Fatalf("Serve on a bad address: %v", err)
	}
}
