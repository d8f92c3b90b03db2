package notify

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/testutil"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)
	tg := func(n string) []byte {
		return []byte(`{"ok":false,"error_code":429,"description":"Too Many Requests: retry after ` + n + `","parameters":{"retry_after":` + n + `}}`)
	}
	for _, tc := range []struct {
		name, header string
		body         []byte
		want         time.Duration
		ok           bool
	}{
		{"seconds header", "7", nil, 7 * time.Second, true},
		{"header wins over body", " 3 ", tg("35"), 3 * time.Second, true},
		{"http date", now.Add(90 * time.Second).Format(http.TimeFormat), nil, 90 * time.Second, true},
		{"date in the past", now.Add(-time.Minute).Format(http.TimeFormat), nil, 0, true},
		{"telegram body", "", tg("35"), 35 * time.Second, true},
		{"capped", "999999999999", nil, MaxRetryAfter, true},
		{"telegram capped", "", tg("99999999"), MaxRetryAfter, true},
		{"negative header", "-5", nil, 0, false},
		{"garbage header", "soon", nil, 0, false},
		{"no hint", "", []byte(`{"ok":false}`), 0, false},
		{"not json", "", []byte(`Too Many Requests`), 0, false},
		{"negative body", "", tg("-1"), 0, false},
	} {
		got, ok := retryAfter(tc.header, tc.body, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: retryAfter(%q, %s) = %v, %v; want %v, %v", tc.name, tc.header, tc.body, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzRetryAfter(f *testing.F) {
	f.Add("120", []byte(nil))
	f.Add("", []byte(`{"parameters":{"retry_after":3}}`))
	f.Add("Wed, 21 Oct 2015 07:28:00 GMT", []byte(nil))
	now := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		d, ok := retryAfter(header, body, now)
		if d < 0 || d > MaxRetryAfter || (!ok && d != 0) {
			t.Fatalf("retryAfter(%q, %q) = %v, %v: want 0..%v", header, body, d, ok, MaxRetryAfter)
		}
	})
}

// TestTelegramRetryAfterHonoured: Telegram answers 429 with
// parameters.retry_after=1; the next attempt waits that second although the
// configured backoff is milliseconds, and the alert is delivered once.
func TestTelegramRetryAfterHonoured(t *testing.T) {
	_, js := setupJS(t)
	var (
		mu sync.Mutex
		at []time.Time
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		n := len(at)
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 1","parameters":{"retry_after":1}}`)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(srv.Close)
	cfg := Config{Retry: fastRetry, Sinks: []SinkConfig{
		{Name: "tg", Type: TypeTelegram, BaseURL: srv.URL, TokenEnv: "TG_TOKEN", ChatID: "42"}}}
	if err := cfg.Resolve(func(string) string { return "1:tok" }); err != nil {
		t.Fatal(err)
	}
	log, logs := newLogger()
	rn := start(t, js, cfg, log, nil)
	publish(t, js, testAlert("thr/acme/10/1", "acme"))
	testutil.Eventually(t, 10*time.Second, func() bool { return rn.counter("minuted_notify_delivered_total", "sink", "tg") == 1 }, "not delivered")
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 2 {
		t.Fatalf("%d requests, want 2 (429, 200)", len(at))
	}
	if gap := at[1].Sub(at[0]); gap < time.Second {
		t.Fatalf("second attempt %v after the 429, want at least the 1 s Telegram asked for (backoff alone: %v)", gap, fastRetry.Initial)
	}
	if !strings.Contains(logs.String(), "the sink asks to retry after 1s") {
		t.Fatalf("log does not say why it waited:\n%s", logs.String())
	}
}
