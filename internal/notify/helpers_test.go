package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/testutil"
)

func newLogger() (*slog.Logger, *testutil.LogBuffer) {
	buf := &testutil.LogBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// setupJS starts JetStream and creates the ALERTS stream directly (the
// stream package is another engineer's).
func setupJS(t *testing.T) (*testutil.NATS, jetstream.JetStream) {
	t.Helper()
	n := testutil.StartNATS(t)
	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: call.AlertsStream, Subjects: []string{call.AlertsSubject}, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	return n, js
}

func testAlert(id, project string) alert.Alert {
	thr := 10.0
	return alert.Alert{Schema: alert.Schema, ID: id, Kind: alert.Threshold, Project: project,
		At: time.Now().UTC(), BalanceSeconds: 540, ThresholdMinutes: &thr}
}

func publish(t *testing.T, js jetstream.JetStream, a alert.Alert) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := Publish(ctx, js, a); err != nil {
		t.Fatal(err)
	}
}

// fastRetry keeps backoff short in tests.
var fastRetry = RetryConfig{Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond, MaxElapsed: 10 * time.Second}

type running struct {
	d    *Dispatcher
	reg  *prometheus.Registry
	stop func()
}

// start runs a Dispatcher until stop (or the test's end).
func start(t *testing.T, js jetstream.JetStream, cfg Config, log *slog.Logger, enr Enricher) *running {
	t.Helper()
	return startOpts(t, js, Options{Config: cfg, Logger: log, Enricher: enr, AckWait: 3 * time.Second})
}

func startOpts(t *testing.T, js jetstream.JetStream, o Options) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Registerer = reg
	d, err := New(o, js)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &running{d: d, reg: reg, stop: stop}
}

// counter reads a metric of this dispatcher.
func (r *running) counter(name string, labels ...string) float64 {
	mfs, _ := r.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			want := map[string]string{}
			for i := 0; i+1 < len(labels); i += 2 {
				want[labels[i]] = labels[i+1]
			}
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return -1
}

// endpoint is a local HTTP server standing in for a webhook, Slack or
// Telegram. respond picks the status of the n-th request (from 1).
type endpoint struct {
	*httptest.Server
	mu      sync.Mutex
	reqs    []request
	respond func(n int, r request) int
}

type request struct {
	Path   string
	Header http.Header
	Body   []byte
	At     time.Time
}

func newEndpoint(t *testing.T, respond func(n int, r request) int) *endpoint {
	t.Helper()
	e := &endpoint{respond: respond}
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		req := request{Path: r.URL.Path, Header: r.Header.Clone(), Body: b, At: time.Now()}
		e.mu.Lock()
		e.reqs = append(e.reqs, req)
		n := len(e.reqs)
		e.mu.Unlock()
		code := http.StatusOK
		if e.respond != nil {
			code = e.respond(n, req)
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"ok":%v}`, code == 200)
	}))
	t.Cleanup(e.Close)
	return e
}

func (e *endpoint) requests() []request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]request(nil), e.reqs...)
}

// byAlert counts the requests per alert id (webhook bodies).
func (e *endpoint) byAlert(t *testing.T) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, r := range e.requests() {
		var b WebhookBody
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatalf("webhook body: %v: %s", err, r.Body)
		}
		m[b.ID]++
	}
	return m
}

func always(code int) func(int, request) int { return func(int, request) int { return code } }
