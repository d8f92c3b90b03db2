package notify

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/testutil"
)

func webhookSink(name, url string) SinkConfig {
	return SinkConfig{Name: name, Type: TypeWebhook, URL: SecretURL(url), Secret: Secret("s3cr3t-" + name), Timeout: 2 * time.Second}
}

func TestWebhookSignatureFromSecretFile(t *testing.T) {
	_, js := setupJS(t)
	ep := newEndpoint(t, nil)
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte("file-secret-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Sinks: []SinkConfig{{Name: "hook", Type: TypeWebhook, URL: SecretURL(ep.URL + "/in?x=1"), SecretFile: file}}, Retry: fastRetry}
	if err := cfg.Resolve(func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger()
	start(t, js, cfg, log, nil)
	a := testAlert("thr/acme/10/1", "acme")
	publish(t, js, a)
	testutil.Eventually(t, 5*time.Second, func() bool { return len(ep.requests()) == 1 }, "webhook not called")
	r := ep.requests()[0]
	if got, want := r.Header.Get(SignatureHeader), Sign([]byte("file-secret-123"), r.Body); !hmac.Equal([]byte(got), []byte(want)) || !strings.HasPrefix(got, "sha256=") {
		t.Fatalf("signature %q, want %q", got, want)
	}
	if Sign([]byte("other"), r.Body) == r.Header.Get(SignatureHeader) {
		t.Fatal("signature verifies with a wrong secret")
	}
	var b WebhookBody
	if err := json.Unmarshal(r.Body, &b); err != nil {
		t.Fatal(err)
	}
	if b.ID != a.ID || b.Project != "acme" || b.BalanceSeconds != 540 || *b.ThresholdMinutes != 10 ||
		b.Title != "minuted: acme below 10 min" || !strings.Contains(b.Text, "balance 9.00 min") {
		t.Fatalf("body: %s", r.Body)
	}
	if r.Header.Get(AlertIDHeader) != a.ID || r.Header.Get("Content-Type") != "application/json" || r.Path != "/in" {
		t.Fatalf("headers/path: %v %s", r.Header, r.Path)
	}
}

func TestSlackBody(t *testing.T) {
	ep := newEndpoint(t, nil)
	s := NewSlack(ep.URL + "/services/T0/B0/XYZ")
	a := testAlert("a1", "acme")
	retry, err := s.Notify(context.Background(), a, "minuted: acme <low>", "Project acme & co: 9.00 min")
	if err != nil || retry {
		t.Fatal(retry, err)
	}
	r := ep.requests()[0]
	var m SlackMessage
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatal(err)
	}
	if m.Text != "*minuted: acme &lt;low&gt;*\nProject acme &amp; co: 9.00 min" || r.Path != "/services/T0/B0/XYZ" {
		t.Fatalf("slack: %s %s", r.Path, r.Body)
	}
	if len(m.Blocks) != 2 || m.Blocks[0].Type != "header" || m.Blocks[0].Text.Type != "plain_text" || m.Blocks[0].Text.Text != "minuted: acme <low>" ||
		m.Blocks[1].Text.Type != "mrkdwn" || m.Blocks[1].Text.Text != "Project acme &amp; co: 9.00 min" {
		t.Fatalf("blocks: %s", r.Body)
	}
}

func TestTelegramThroughDispatcher(t *testing.T) {
	_, js := setupJS(t)
	ep := newEndpoint(t, nil)
	cfg := Config{Language: "ru", Retry: fastRetry, Sinks: []SinkConfig{
		{Name: "tg", Type: TypeTelegram, BaseURL: ep.URL + "/", TokenEnv: "TG_TOKEN", ChatID: "-1001234"}}}
	if err := cfg.Resolve(func(k string) string { return map[string]string{"TG_TOKEN": "123:ABC-tok"}[k] }); err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger()
	start(t, js, cfg, log, nil)
	publish(t, js, testAlert("thr/acme/10/1", "acme"))
	testutil.Eventually(t, 5*time.Second, func() bool { return len(ep.requests()) == 1 }, "telegram not called")
	r := ep.requests()[0]
	var m TelegramMessage
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatal(err)
	}
	if r.Path != "/bot123:ABC-tok/sendMessage" || m.ChatID != "-1001234" ||
		!strings.HasPrefix(m.Text, "minuted: acme ниже 10 мин\n\nПроект acme: баланс 9,00 мин") {
		t.Fatalf("telegram %s: %s", r.Path, r.Body)
	}
}

func TestRetriesThenDeliversOnce(t *testing.T) {
	_, js := setupJS(t)
	ep := newEndpoint(t, func(n int, _ request) int {
		if n <= 2 {
			return 500
		}
		return 200
	})
	log, _ := newLogger()
	rn := start(t, js, Config{Sinks: []SinkConfig{webhookSink("flaky", ep.URL)}, Retry: fastRetry}, log, nil)
	publish(t, js, testAlert("thr/acme/10/1", "acme"))
	testutil.Eventually(t, 5*time.Second, func() bool { return rn.counter("minuted_notify_delivered_total", "sink", "flaky") == 1 }, "not delivered")
	// Nothing more arrives: the delivered alert is acked.
	time.Sleep(300 * time.Millisecond)
	if n := len(ep.requests()); n != 3 {
		t.Fatalf("%d requests, want 3 (500, 500, 200)", n)
	}
	if got := ep.byAlert(t)["thr/acme/10/1"]; got != 3 {
		t.Fatalf("attempts for the alert = %d", got)
	}
	if a := rn.counter("minuted_notify_attempts_total", "sink", "flaky"); a != 3 {
		t.Fatalf("attempts metric %v", a)
	}
}

func Test4xxGivesUpAndMovesOn(t *testing.T) {
	_, js := setupJS(t)
	ep := newEndpoint(t, always(http.StatusBadRequest))
	log, logs := newLogger()
	rn := start(t, js, Config{Sinks: []SinkConfig{webhookSink("bad", ep.URL)}, Retry: fastRetry}, log, nil)
	publish(t, js, testAlert("a1", "acme"))
	publish(t, js, testAlert("a2", "acme"))
	testutil.Eventually(t, 5*time.Second, func() bool {
		return rn.counter("minuted_notify_failed_total", "sink", "bad", "reason", ReasonRejected) == 2
	}, "4xx not given up")
	time.Sleep(300 * time.Millisecond)
	if got := ep.byAlert(t); got["a1"] != 1 || got["a2"] != 1 || len(got) != 2 {
		t.Fatalf("requests per alert %v, want one each", got)
	}
	if rn.counter("minuted_notify_delivered_total", "sink", "bad") != 0 || !strings.Contains(logs.String(), "sink rejected the alert; giving up") {
		t.Fatal("give-up not logged or delivered counted")
	}
}

func TestDeadAndSlowSinksDoNotDelayOthers(t *testing.T) {
	_, js := setupJS(t)
	hang := make(chan struct{})
	slow := newEndpoint(t, func(int, request) int { <-hang; return 200 })
	t.Cleanup(func() { close(hang) }) // before slow.Close (cleanups run LIFO)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + l.Addr().String()
	l.Close() // connection refused from now on
	good := newEndpoint(t, nil)
	slowSink := webhookSink("slow", slow.URL)
	slowSink.Timeout = 10 * time.Second
	log, _ := newLogger()
	cfg := Config{Retry: RetryConfig{Initial: 50 * time.Millisecond, Max: time.Second, MaxElapsed: time.Minute},
		Sinks: []SinkConfig{slowSink, webhookSink("dead", deadURL), webhookSink("good", good.URL)}}
	rn := start(t, js, cfg, log, nil)
	const n = 5
	published := time.Now()
	for i := 0; i < n; i++ {
		publish(t, js, testAlert(fmt.Sprintf("a%d", i), "acme"))
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return len(good.requests()) == n }, "good sink got %d of %d", len(good.requests()), n)
	last := good.requests()[n-1].At.Sub(published)
	t.Logf("good sink received %d alerts %v after publishing, while slow hangs and dead refuses", n, last)
	if last > 2*time.Second {
		t.Fatalf("good sink delayed: %v", last)
	}
	if got := good.byAlert(t); len(got) != n {
		t.Fatalf("good sink: %v", got)
	}
	testutil.Eventually(t, 3*time.Second, func() bool { return rn.counter("minuted_notify_attempts_total", "sink", "dead") >= 3 }, "dead sink not retried")
	if n := len(slow.requests()); n != 1 || rn.counter("minuted_notify_delivered_total", "sink", "slow") != 0 {
		t.Fatalf("slow sink: %d requests, want 1 in flight", n)
	}
}

func TestOncePerSinkDespiteDuplicatesAndRestart(t *testing.T) {
	_, js := setupJS(t)
	ep1, ep2 := newEndpoint(t, nil), newEndpoint(t, nil)
	log, logs := newLogger()
	cfg := Config{Sinks: []SinkConfig{webhookSink("one", ep1.URL), webhookSink("two", ep2.URL), {Name: "log", Type: TypeLog}}, Retry: fastRetry}
	rn := start(t, js, cfg, log, nil)
	a := testAlert("thr/acme/10/7", "acme")
	publish(t, js, a)
	publish(t, js, a) // same Msg-Id: dropped by the stream
	info, err := js.Stream(context.Background(), "ALERTS")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := info.Info(context.Background()); st.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages after a duplicate publish", st.State.Msgs)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return ep1.byAlert(t)[a.ID] == 1 && ep2.byAlert(t)[a.ID] == 1 }, "first delivery")
	// Re-published outside the duplicate window (another Msg-Id): the
	// per-sink recent set skips it.
	b, _ := json.Marshal(a)
	if _, err := js.Publish(context.Background(), "minuted.alerts.acme", b); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		return strings.Count(logs.String(), "skipping the duplicate") == 3
	}, "duplicate not seen by every sink")
	rn.stop()

	// A new Dispatcher (restart) resumes after what was acked.
	rn2 := start(t, js, cfg, log, nil)
	publish(t, js, testAlert("thr/acme/0/7", "acme"))
	testutil.Eventually(t, 5*time.Second, func() bool {
		return ep1.byAlert(t)["thr/acme/0/7"] == 1 && ep2.byAlert(t)["thr/acme/0/7"] == 1 &&
			rn2.counter("minuted_notify_delivered_total", "sink", "log") == 1
	}, "delivery after restart")
	time.Sleep(300 * time.Millisecond)
	for i, ep := range []*endpoint{ep1, ep2} {
		if got := ep.byAlert(t); got[a.ID] != 1 || got["thr/acme/0/7"] != 1 || len(got) != 2 {
			t.Fatalf("sink %d: %v, want each alert once", i+1, got)
		}
	}
	if n := countLines(logs.String(), `"msg":"alert"`, `"sink":"log"`, `"alert_id":"thr/acme/10/7"`); n != 1 {
		t.Fatalf("log sink wrote the first alert %d times", n)
	}
}

func TestNoSecretInLogsOrErrors(t *testing.T) {
	_, js := setupJS(t)
	const secret, token = "whsec-DO-NOT-LOG-42", "987654:TOKEN-DO-NOT-LOG"
	rejecting := newEndpoint(t, func(_ int, r request) int { return 401 })
	failing := newEndpoint(t, always(502))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + l.Addr().String()
	l.Close()
	cfg := Config{Retry: RetryConfig{Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond, MaxElapsed: 100 * time.Millisecond},
		Sinks: []SinkConfig{
			{Name: "hook", Type: TypeWebhook, URL: SecretURL(failing.URL + "/hook?key=" + secret), Secret: secret},
			{Name: "tg-reject", Type: TypeTelegram, BaseURL: rejecting.URL, Token: token, ChatID: "1"},
			{Name: "tg-dead", Type: TypeTelegram, BaseURL: dead, Token: token, ChatID: "1"},
			{Name: "tg-fail", Type: TypeTelegram, BaseURL: failing.URL, Token: token, ChatID: "1"},
		}}
	log, logs := newLogger()
	log.Info("config", "notify", cfg, "sink", cfg.Sinks[1])
	rn := start(t, js, cfg, log, nil)
	publish(t, js, testAlert("a1", "acme"))
	testutil.Eventually(t, 5*time.Second, func() bool {
		return rn.counter("minuted_notify_failed_total", "sink", "tg-reject", "reason", ReasonRejected) == 1 &&
			rn.counter("minuted_notify_failed_total", "sink", "tg-dead", "reason", ReasonGaveUp) == 1 &&
			rn.counter("minuted_notify_failed_total", "sink", "tg-fail", "reason", ReasonGaveUp) == 1 &&
			rn.counter("minuted_notify_failed_total", "sink", "hook", "reason", ReasonGaveUp) == 1
	}, "sinks did not fail as expected; logs:\n%s", logs.String())
	rn.stop()
	// Direct errors too.
	var errs []error
	for _, n := range []Notifier{NewTelegram(dead, token, "1"), NewTelegram(failing.URL, token, "1"),
		NewWebhook(dead+"/x?key="+secret, secret), NewTelegram("http://bad host", token, "1")} {
		_, err := n.Notify(context.Background(), testAlert("a1", "acme"), "t", "x")
		if err == nil {
			t.Fatal("expected an error")
		}
		errs = append(errs, err)
	}
	out := logs.String() + fmt.Sprint(errs) + fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg)
	for _, s := range []string{secret, token, "TOKEN-DO-NOT-LOG"} {
		if strings.Contains(out, s) {
			t.Fatalf("%q leaked:\n%s", s, out)
		}
	}
	if !strings.Contains(logs.String(), "/bot<secret>/sendMessage") || !strings.Contains(logs.String(), "401") {
		t.Fatalf("errors lost their useful part:\n%s", logs.String())
	}
	var ne net.Error
	if !errors.As(errs[0], &ne) && !strings.Contains(errs[0].Error(), "connection refused") {
		t.Fatalf("network error lost: %v", errs[0])
	}
}

// ledgerLines is a fixed ledger for the Enricher (the real one needs Redis
// and is tested in package ledger; this one only returns entries).
type ledgerLines []ledger.Entry

func (l ledgerLines) Entries(_ context.Context, project string, limit int) ([]ledger.Entry, error) {
	if project != "acme" {
		return nil, ledger.ErrNotFound
	}
	return l[:min(limit, len(l))], nil
}

func TestEnricherGivesBurnRate(t *testing.T) {
	_, js := setupJS(t)
	ep := newEndpoint(t, nil)
	a := testAlert("thr/acme/10/9", "acme")
	a.BalanceSeconds = 599
	var lines ledgerLines
	for i := 0; i < 15; i++ { // 45 s every minute: 45 min/h
		lines = append(lines, ledger.Entry{Kind: "debit", Seconds: -45, At: a.At.Add(-time.Duration(i) * time.Minute)})
	}
	lines = append(lines, ledger.Entry{Kind: "debit", Seconds: -6000, At: a.At.Add(time.Minute)}) // after the alert: ignored
	log, _ := newLogger()
	start(t, js, Config{Sinks: []SinkConfig{webhookSink("hook", ep.URL)}, Retry: fastRetry}, log, lines)
	publish(t, js, a)
	b := alert.Alert{Schema: alert.Schema, ID: "sys/1", Kind: alert.ARILost, Node: "pbx1", At: time.Now()}
	publish(t, js, b)
	testutil.Eventually(t, 5*time.Second, func() bool { return len(ep.requests()) == 2 }, "not delivered")
	var got WebhookBody
	_ = json.Unmarshal(ep.requests()[0].Body, &got)
	want := "Project acme: balance 9.98 min, below the threshold of 10 min. Burn rate 45.00 min/h; time to zero at this rate: about 13 min."
	if got.Text != want {
		t.Fatalf("text %q\nwant %q", got.Text, want)
	}
	_ = json.Unmarshal(ep.requests()[1].Body, &got)
	if got.Text != "Asterisk ARI connection lost on node pbx1: calls there are not seen until it is back." {
		t.Fatalf("system text %q", got.Text)
	}
}

func TestUndecodableAndStaleAreDropped(t *testing.T) {
	_, js := setupJS(t)
	ep := newEndpoint(t, nil)
	log, _ := newLogger()
	rn := start(t, js, Config{Sinks: []SinkConfig{webhookSink("hook", ep.URL)}, Retry: fastRetry}, log, nil)
	if _, err := js.Publish(context.Background(), "minuted.alerts.acme", []byte(`{"schema":1,"id":"x"`)); err != nil {
		t.Fatal(err)
	}
	old := testAlert("old", "acme")
	old.At = time.Now().Add(-48 * time.Hour)
	publish(t, js, old)
	publish(t, js, testAlert("fresh", "acme"))
	testutil.Eventually(t, 5*time.Second, func() bool { return len(ep.requests()) == 1 }, "fresh alert not delivered")
	if got := ep.byAlert(t); got["fresh"] != 1 || len(got) != 1 {
		t.Fatalf("delivered %v", got)
	}
	if rn.counter("minuted_notify_failed_total", "sink", "hook", "reason", ReasonUndecodable) != 1 ||
		rn.counter("minuted_notify_failed_total", "sink", "hook", "reason", ReasonStale) != 1 {
		t.Fatal("undecodable/stale not counted")
	}
}

// countLines counts the log lines holding every one of subs.
func countLines(logs string, subs ...string) int {
	n := 0
next:
	for _, line := range strings.Split(logs, "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		n++
	}
	return n
}

// Two notify processes share a sink's durable consumer (HA). A delivery
// longer than the ack wait is kept alive with InProgress, so the other
// process does not get the message redelivered and send it again.
func TestLongDeliveryKeptAliveNotRedelivered(t *testing.T) {
	_, js := setupJS(t)
	ep := newEndpoint(t, func(int, request) int { time.Sleep(3 * time.Second); return 200 })
	log, logs := newLogger()
	sc := webhookSink("slowok", ep.URL)
	sc.Timeout = 5 * time.Second
	o := Options{Config: Config{Sinks: []SinkConfig{sc}, Retry: fastRetry}, Logger: log, AckWait: 2 * time.Second}
	rn1, rn2 := startOpts(t, js, o), startOpts(t, js, o)
	publish(t, js, testAlert("a1", "acme"))
	delivered := func() float64 {
		return rn1.counter("minuted_notify_delivered_total", "sink", "slowok") + rn2.counter("minuted_notify_delivered_total", "sink", "slowok")
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return delivered() >= 1 }, "not delivered")
	time.Sleep(2500 * time.Millisecond) // longer than the ack wait: a redelivery would show now
	if n := len(ep.requests()); n != 1 || delivered() != 1 {
		t.Fatalf("%d requests; a 3 s delivery with a 2 s ack wait was redelivered:\n%s", n, logs.String())
	}
}

func TestSurvivesNATSRestart(t *testing.T) {
	n, js := setupJS(t)
	ep := newEndpoint(t, nil)
	log, _ := newLogger()
	start(t, js, Config{Sinks: []SinkConfig{webhookSink("hook", ep.URL)}, Retry: fastRetry}, log, nil)
	publish(t, js, testAlert("before", "acme"))
	testutil.Eventually(t, 5*time.Second, func() bool { return len(ep.requests()) == 1 }, "first alert")
	n.Restart(t, 200*time.Millisecond)
	testutil.Eventually(t, 15*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return Publish(ctx, js, testAlert("after", "acme")) == nil
	}, "publish after restart")
	testutil.Eventually(t, 15*time.Second, func() bool { return ep.byAlert(t)["after"] == 1 }, "alert after NATS restart not delivered")
	if got := ep.byAlert(t); got["before"] != 1 {
		t.Fatalf("%v", got)
	}
}
