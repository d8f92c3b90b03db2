package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/notify"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

// sinkServer stands in for a webhook, Slack or Telegram endpoint and keeps
// what it received.
type sinkServer struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []string
	paths  []string
	sigs   []string
}

func newSink(t *testing.T) *sinkServer {
	s := &sinkServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.bodies = append(s.bodies, string(b))
		s.paths = append(s.paths, r.URL.Path)
		s.sigs = append(s.sigs, r.Header.Get(notify.SignatureHeader))
		s.mu.Unlock()
		if strings.Contains(r.URL.Path, "sendMessage") {
			_, _ = io.WriteString(w, `{"ok":true,"result":{}}`)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// count is how many deliveries mention text.
func (s *sinkServer) count(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, b := range s.bodies {
		if strings.Contains(b, text) {
			n++
		}
	}
	return n
}

// TestThresholdAlertsOncePerSink: a debit crosses a threshold: each sink
// gets exactly one alert; a top-up re-arms it; the next crossing alerts
// again. Webhook bodies are signed with the configured secret.
func TestThresholdAlertsOncePerSink(t *testing.T) {
	hook, slack, tg := newSink(t), newSink(t), newSink(t)
	const secret = "hook-secret"
	st := startStack(t, func(c *config.Config) {
		c.Notify.Sinks = []notify.SinkConfig{
			{Name: "log", Type: notify.TypeLog, Timeout: time.Second},
			{Name: "hook", Type: notify.TypeWebhook, URL: notify.SecretURL(hook.URL + "/minuted"), Secret: secret, Timeout: time.Second},
			{Name: "slack", Type: notify.TypeSlack, URL: notify.SecretURL(slack.URL + "/services/x"), Timeout: time.Second},
			{Name: "tg", Type: notify.TypeTelegram, BaseURL: tg.URL, Token: "123:tok", ChatID: "-100", Timeout: time.Second},
		}
	})
	// 1/1 tariff, 90 s, thresholds at 1 minute.
	b, _ := json.Marshal(map[string]any{"tariff": tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}, "thresholds_minutes": []float64{1}})
	st.send(t, http.MethodPut, "/v1/projects/thr", string(b))
	st.send(t, http.MethodPost, "/v1/projects/thr/topups", `{"seconds": 90, "reference": "r1"}`)

	talk := func(d time.Duration) {
		res, err := st.sim.Generate(context.Background(), sim.GenOptions{Calls: 1, Seed: uint64(d), VirtualTime: true,
			Projects: []string{"thr"}, MinTalk: d, MaxTalk: d})
		if err != nil || len(res.Calls) != 1 {
			t.Fatalf("generate: %v", err)
		}
	}
	crossed := func(n int) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, func() bool {
			return hook.count(`"kind":"threshold"`) >= n && slack.count("thr") >= n && tg.count("thr") >= n
		}, "%d threshold alerts on every sink (hook %d, slack %d, telegram %d)", n, hook.count(`"kind":"threshold"`), slack.count("thr"), tg.count("thr"))
		time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
		if hook.count(`"kind":"threshold"`) != n || slack.count("thr") != n || tg.count("thr") != n {
			t.Fatalf("want exactly %d alerts per sink: hook %d, slack %d, telegram %d", n, hook.count(`"kind":"threshold"`), slack.count("thr"), tg.count("thr"))
		}
	}
	talk(40 * time.Second) // 90 → 50: below 60
	crossed(1)
	talk(5 * time.Second)                                                                        // 50 → 45: still below, no new alert
	st.send(t, http.MethodPost, "/v1/projects/thr/topups", `{"seconds": 60, "reference": "r2"}`) // 105: re-armed
	talk(50 * time.Second)                                                                       // 105 → 55: crosses again
	crossed(2)

	hook.mu.Lock()
	defer hook.mu.Unlock()
	for i, body := range hook.bodies {
		if want := notify.Sign([]byte(secret), []byte(body)); hook.sigs[i] != want {
			t.Errorf("webhook delivery %d: signature %q, want %q", i, hook.sigs[i], want)
		}
	}
	tg.mu.Lock()
	defer tg.mu.Unlock()
	for _, p := range tg.paths {
		if p != "/bot123:tok/sendMessage" {
			t.Errorf("telegram path %q", p)
		}
	}
	slack.mu.Lock()
	defer slack.mu.Unlock()
	for _, body := range slack.bodies {
		var m struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil || !strings.Contains(m.Text, "thr") || !strings.Contains(m.Text, "min") {
			t.Errorf("slack body %s: want JSON text naming the project and minutes", body)
		}
	}
}

// TestExhaustionCutsCalls: a project with 20 s of balance, three
// concurrent long calls on a 10/10 tariff, on_exhausted hangup: calls are
// cut at block boundaries, the balance never passes −credit limit, the
// double saw the DELETEs, the CDRs say "exhausted".
func TestExhaustionCutsCalls(t *testing.T) {
	st := startStack(t, nil)
	b, _ := json.Marshal(map[string]any{"tariff": tariff.Tariff{MinimumSeconds: 10, IncrementSeconds: 10},
		"on_exhausted": "hangup", "credit_limit_seconds": 0, "thresholds_minutes": []float64{}})
	st.send(t, http.MethodPut, "/v1/projects/ex", string(b))
	st.send(t, http.MethodPost, "/v1/projects/ex/topups", `{"seconds": 20, "reference": "r1"}`)
	var calls []*sim.LiveCall
	for range 3 {
		lc, err := st.sim.StartCall(context.Background(), sim.CallOptions{Project: "ex"})
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, lc)
	}
	ctx := context.Background()
	minBalance := int64(1 << 62)
	deadline := time.Now().Add(40 * time.Second)
	for {
		p, err := st.led.Get(ctx, "ex")
		if err == nil {
			minBalance = min(minBalance, p.BalanceSeconds)
		}
		done := 0
		for _, lc := range calls {
			select {
			case <-lc.Done():
				done++
			default:
			}
		}
		if done == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 3 calls were cut within 40s", done)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if minBalance < 0 {
		t.Errorf("balance went to %d, below -credit_limit 0", minBalance)
	}
	if h := st.sim.Hangups(); len(h) < 3 {
		t.Errorf("the double saw %d DELETEs, want 3", len(h))
	}
	cdrs := st.settled(t, "ex", 3, 20*time.Second)
	var billed int64
	for _, c := range cdrs {
		billed += c.BilledSeconds
		if c.EndReason != "exhausted" {
			t.Errorf("CDR %s: end_reason %q, want exhausted", c.Channel, c.EndReason)
		}
	}
	p, err := st.led.Get(ctx, "ex")
	if err != nil {
		t.Fatal(err)
	}
	if p.BalanceSeconds < 0 || p.BalanceSeconds != 20-billed {
		t.Errorf("final balance %d, billed %d: want 20 − billed and never below 0", p.BalanceSeconds, billed)
	}
}
