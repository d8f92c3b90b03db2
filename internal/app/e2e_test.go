package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

const token = "e2e-admin-token"

// stack is minuted (all roles) over a real NATS, a real redis-server and
// the ARI double.
type stack struct {
	sim  *sim.Server
	nats *testutil.NATS
	rds  *testutil.Redis
	app  *App
	led  *ledger.Ledger
	js   jetstream.JetStream
	url  string
	logs *testutil.LogBuffer
	cfg  config.Config
	stop func() error
}

func startStack(t *testing.T, mutate func(*config.Config)) *stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		if t.Failed() {
			cancel()
		}
	}()
	st := &stack{nats: testutil.StartNATS(t), rds: testutil.StartRedis(t), logs: &testutil.LogBuffer{}}
	var err error
	st.sim, err = sim.Start(ctx, sim.Options{Password: "ari-secret", WriteTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.NATS.URL = st.nats.URL()
	cfg.Redis.URL = st.rds.URL()
	cfg.ARI.URL = st.sim.URL()
	cfg.ARI.Username = "minuted"
	cfg.ARI.Password = "ari-secret"
	cfg.ARI.Application = "minuted-e2e"
	cfg.HTTP.AdminToken = token
	cfg.Ingest.SnapshotInterval = time.Second
	cfg.Ingest.SpoolDir = t.TempDir()
	cfg.Bill.OrphanAfter = 3 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st.cfg = cfg
	t.Cleanup(func() {
		st.stopApp(t)
		_ = st.sim.Close()
		cancel()
		if logs := st.logs.String(); strings.Contains(logs, token) || strings.Contains(logs, "ari-secret") {
			t.Error("a secret reached the logs")
		}
	})
	st.startApp(t)
	return st
}

// startApp starts minuted (all roles) and waits until it is ready.
func (st *stack) startApp(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(st.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st.app, err = New(ctx, Options{Config: st.cfg, Roles: AllRoles, Logger: log, Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	st.led, st.js, st.url = st.app.Ledger(), st.app.JetStream(), "http://"+st.app.HTTPAddr()
	done := make(chan error, 1)
	go func() { done <- st.app.Run(ctx) }()
	st.stop = func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("app did not stop within 30s")
		}
	}
	if err := st.sim.WaitApp(ctx, st.cfg.ARI.Application); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return st.get(t, "/readyz", nil) == http.StatusOK }, "readyz")
}

// stopApp stops minuted as SIGTERM does (the context ends) and waits.
func (st *stack) stopApp(t *testing.T) {
	t.Helper()
	if st.stop == nil {
		return
	}
	if err := st.stop(); err != nil {
		t.Errorf("app.Run: %v", err)
	}
	st.stop = nil
}

// get calls the admin API and decodes the JSON answer into out.
func (st *stack) get(t *testing.T, path string, out any) int {
	t.Helper()
	return testutil.API{URL: st.url, Token: token}.Get(t, path, out)
}

func (st *stack) send(t *testing.T, method, path, body string) int {
	t.Helper()
	return testutil.API{URL: st.url, Token: token}.Send(t, method, path, body)
}

func (st *stack) project(t *testing.T, id string, tr tariff.Tariff, topup int64) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"tariff": tr, "thresholds_minutes": []float64{}})
	st.send(t, http.MethodPut, "/v1/projects/"+id, string(b))
	st.send(t, http.MethodPost, "/v1/projects/"+id+"/topups", fmt.Sprintf(`{"seconds": %d, "reference": "initial-%s"}`, topup, id))
}

// settled waits until project has n CDRs and no live call.
func (st *stack) settled(t *testing.T, project string, n int, timeout time.Duration) []call.CDR {
	t.Helper()
	ctx := context.Background()
	var cdrs []call.CDR
	testutil.Eventually(t, timeout, func() bool {
		var err error
		cdrs, err = st.led.CDRs(ctx, project, 100000)
		if err != nil {
			return false
		}
		live, err := st.led.Live(ctx, project)
		return err == nil && len(cdrs) >= n && len(live) == 0
	}, "project %s: want %d CDRs and no live call, have %d", project, n, len(cdrs))
	return cdrs
}

// checkLedger: balance = top-ups − Σ billed, and the ledger's entries add
// up to the balance.
func (st *stack) checkLedger(t *testing.T, project string, topup, billed int64) {
	t.Helper()
	a, err := st.led.Audit(context.Background(), project)
	if err != nil {
		t.Fatal(err)
	}
	if !a.OK() || !a.Complete || a.BalanceSeconds != topup-billed || a.CreditedSeconds != topup || a.BilledSeconds != billed {
		t.Errorf("project %s: ledger audit %+v; want sound and complete, balance = top-ups %d − billed %d = %d",
			project, a, topup, billed, topup-billed)
	}
}

// TestTracesEndToEnd replays the recorded traces through the whole
// pipeline: each trace's calls are billed as the trace README says.
func TestTracesEndToEnd(t *testing.T) {
	st := startStack(t, nil)
	dir := "../../testdata/ari-traces"
	t6060 := tariff.Tariff{MinimumSeconds: 60, IncrementSeconds: 60}
	t11 := tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}
	// proj-a on 1/1 so every millisecond of the README's talk times counts.
	st.project(t, "proj-a", t11, 100000)
	st.project(t, "proj-b", t6060, 100000)
	// Talk times (ms) of the billed call of each trace, from the trace README.
	traces := []struct {
		file    string
		project string
		talk    []int64
	}{
		{"answered_short", "proj-a", []int64{3503}},
		{"answered_stasis", "proj-a", []int64{3504}},
		{"answered_short_cli_originate", "proj-a", []int64{3504}},
		{"two_leg_dial", "proj-a", []int64{20511}},
		{"unanswered", "proj-a", nil},
		{"busy", "proj-a", nil},
		{"congestion", "proj-a", nil},
		{"two_leg_noanswer", "proj-a", nil},
		{"two_leg_busy", "proj-a", nil},
		{"answered_short_acct_on_both_halves", "proj-b", []int64{3505}},
	}
	var wantA, wantB int64
	nA, nB := 0, 0
	for _, tr := range traces {
		if _, err := st.sim.ReplayFile(context.Background(), filepath.Join(dir, tr.file+".jsonl"), sim.ReplayOptions{}); err != nil {
			t.Fatalf("replay %s: %v", tr.file, err)
		}
		for _, ms := range tr.talk {
			if tr.project == "proj-a" {
				wantA += t11.BilledMS(ms)
				nA++
			} else {
				wantB += t6060.BilledMS(ms)
				nB++
			}
		}
	}
	cdrsA := st.settled(t, "proj-a", nA, 30*time.Second)
	cdrsB := st.settled(t, "proj-b", nB, 30*time.Second)
	if len(cdrsA) != nA || len(cdrsB) != nB {
		t.Fatalf("CDRs: proj-a %d (want %d), proj-b %d (want %d)", len(cdrsA), nA, len(cdrsB), nB)
	}
	for _, c := range cdrsA {
		if c.Channel == "1795789857.19" && c.TalkMS != 20511 {
			t.Errorf("two_leg_dial: billed talk %d ms, want 20511", c.TalkMS)
		}
	}
	st.checkLedger(t, "proj-a", 100000, wantA)
	st.checkLedger(t, "proj-b", 100000, wantB)
	if wantA != 3+3+3+20 || wantB != 60 {
		t.Fatalf("expectations drifted: %d %d", wantA, wantB)
	}

	// /metrics after the replay: names and values an operator relies on.
	req, _ := http.NewRequest(http.MethodGet, st.url+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := string(body)
	for _, want := range []string{
		"minuted_ari_connected 1",
		fmt.Sprintf(`minuted_project_balance_seconds{project="proj-a"} %d`, 100000-wantA),
		fmt.Sprintf(`minuted_project_balance_seconds{project="proj-b"} %d`, 100000-wantB),
		"minuted_publish_backlog 0",
		fmt.Sprintf("minuted_bill_settled_total %d", nA+nB),
	} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Every exact settlement's hangup → settled lag is in the histogram.
	settled, estimated := metricValue(t, m, "minuted_bill_settled_total"), metricValue(t, m, "minuted_bill_estimated_total")
	if n := metricValue(t, m, "minuted_bill_settle_lag_seconds_count"); n != settled-estimated || n == 0 {
		t.Errorf("minuted_bill_settle_lag_seconds_count %v, want settled %v - estimated %v", n, settled, estimated)
	}
	if inf := metricValue(t, m, `minuted_bill_settle_lag_seconds_bucket{le="+Inf"}`); inf != settled-estimated {
		t.Errorf(`settle lag le="+Inf" bucket %v, want %v`, inf, settled-estimated)
	}
	// Every metric the Grafana dashboard plots exists.
	dash, err := os.ReadFile("../../deploy/grafana/minuted.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`minuted_[a-z_]+`).FindAllString(string(dash), -1) {
		if !strings.Contains(m, "\n"+name) && !strings.Contains(m, "# TYPE "+name+" ") {
			t.Errorf("deploy/grafana/minuted.json plots %s, which /metrics does not export", name)
		}
	}
	for _, name := range []string{"minuted_ari_events_received_total", "minuted_nats_published_total", "minuted_bill_debits_total", "minuted_consumer_pending_messages"} {
		if !strings.Contains(m, name+" ") {
			t.Errorf("/metrics lacks %s", name)
		}
	}
}

// TestSyntheticWorkloadEndToEnd: ≥1,000 synthetic calls shaped like the
// recorded ones, over projects with different tariffs: every project's
// balance = top-ups − Σ billed(talk), exactly; one CDR per answered call.
func TestSyntheticWorkloadEndToEnd(t *testing.T) {
	st := startStack(t, nil)
	tariffs := map[string]tariff.Tariff{
		"p-6060": {MinimumSeconds: 60, IncrementSeconds: 60},
		"p-306":  {MinimumSeconds: 30, IncrementSeconds: 6},
		"p-11":   {MinimumSeconds: 1, IncrementSeconds: 1},
		"p-free": {FreeSeconds: 10, MinimumSeconds: 60, IncrementSeconds: 60},
		"p-ceil": {MinimumSeconds: 1, IncrementSeconds: 1, CountInitiatedSeconds: true},
	}
	const topup = 10_000_000
	var projects []string
	for p, tr := range tariffs {
		st.project(t, p, tr, topup)
		projects = append(projects, p)
	}
	calls := 1000
	if n := os.Getenv("MINUTED_E2E_CALLS"); n != "" {
		fmt.Sscan(n, &calls)
	}
	res, err := st.sim.Generate(context.Background(), sim.GenOptions{
		Calls: calls, Concurrency: 200, Seed: 42, VirtualTime: true,
		Shapes:   map[sim.Shape]float64{sim.ShapeAnswered: 6, sim.ShapeTwoLeg: 2, sim.ShapeUnanswered: 1, sim.ShapeBusy: 1, sim.ShapeCongestion: 1},
		Projects: projects, MinTalk: 0, MaxTalk: 400 * time.Second, AttributeBy: sim.AttributeMixed,
		Location: time.FixedZone("MSK", 3*3600),
	})
	if err != nil {
		t.Fatal(err)
	}
	billed := map[string]int64{}
	answered := map[string]map[string]sim.Expected{}
	for _, e := range res.Calls {
		if answered[e.Project] == nil {
			answered[e.Project] = map[string]sim.Expected{}
		}
		if !e.Answered.IsZero() {
			billed[e.Project] += tariffs[e.Project].BilledMS(e.TalkMS)
			answered[e.Project][e.BilledChannel] = e
		}
	}
	for _, p := range projects {
		cdrs := st.settled(t, p, len(answered[p]), 90*time.Second)
		seen := map[string]bool{}
		for _, c := range cdrs {
			want, ok := answered[p][c.Channel]
			switch {
			case !ok:
				t.Errorf("%s: CDR for unexpected channel %s", p, c.Channel)
			case seen[c.Channel]:
				t.Errorf("%s: two CDRs for %s", p, c.Channel)
			case c.TalkMS != want.TalkMS || c.BilledSeconds != tariffs[p].BilledMS(want.TalkMS) || c.Estimated:
				t.Errorf("%s %s: CDR talk %d billed %d estimated %v, want talk %d billed %d", p, c.Channel, c.TalkMS, c.BilledSeconds, c.Estimated, want.TalkMS, tariffs[p].BilledMS(want.TalkMS))
			}
			seen[c.Channel] = true
		}
		if len(seen) != len(answered[p]) {
			t.Errorf("%s: %d CDRs, want %d", p, len(seen), len(answered[p]))
		}
		st.checkLedger(t, p, topup, billed[p])
	}
	// One CDR per call on the CDR stream too (deduplicated by Msg-Id).
	s, err := st.js.Stream(context.Background(), call.CDRStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, a := range answered {
		total += len(a)
	}
	if int(info.State.Msgs) != total {
		t.Errorf("CDR stream holds %d messages, want %d (one per answered call)", info.State.Msgs, total)
	}
	t.Logf("%d calls (%d answered), %d events", len(res.Calls), total, res.Events)
}

// TestRealTimeBalanceFalls: a live call on a 1/1 tariff makes its project's
// balance fall through the API while it is up; the end is exact.
func TestRealTimeBalanceFalls(t *testing.T) {
	st := startStack(t, nil)
	st.project(t, "live", tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}, 1000)
	lc, err := st.sim.StartCall(context.Background(), sim.CallOptions{Project: "live"})
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Balance   int64 `json:"balance_seconds"`
		LiveCalls int   `json:"live_calls"`
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		st.get(t, "/v1/projects/live", &p)
		return p.LiveCalls == 1 && p.Balance <= 1000-3
	}, "balance did not fall while the call was up (balance %d, live %d)", p.Balance, p.LiveCalls)
	during := p.Balance
	exp := lc.Hangup(16)
	st.settled(t, "live", 1, 15*time.Second)
	st.get(t, "/v1/projects/live", &p)
	want := 1000 - exp.TalkMS/1000
	if p.Balance != want || p.LiveCalls != 0 {
		t.Errorf("after hangup: balance %d live %d, want %d (talk %d ms), balance during the call was %d", p.Balance, p.LiveCalls, want, exp.TalkMS, during)
	}
	st.checkLedger(t, "live", 1000, exp.TalkMS/1000)
}

// TestGracefulRestart: minuted stopped as by SIGTERM while calls are up,
// then started again: the calls keep being billed and end exact, and the
// events published before the stop are all there.
func TestGracefulRestart(t *testing.T) {
	st := startStack(t, nil)
	st.project(t, "gr", tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}, 1000)
	var calls []*sim.LiveCall
	for range 3 {
		lc, err := st.sim.StartCall(context.Background(), sim.CallOptions{Project: "gr"})
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, lc)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		live, err := st.led.Live(context.Background(), "gr")
		return err == nil && len(live) == 3
	}, "3 live calls")
	st.stopApp(t)
	drained := strings.Contains(st.logs.String(), "shutdown: every event published")
	if !drained {
		t.Error("shutdown did not report its publish buffer flushed")
	}
	time.Sleep(1500 * time.Millisecond) // the calls go on while minuted is down
	st.startApp(t)
	var billed int64
	for _, lc := range calls {
		exp := lc.Hangup(16)
		billed += exp.TalkMS / 1000
	}
	cdrs := st.settled(t, "gr", 3, 20*time.Second)
	for _, c := range cdrs {
		if c.Estimated {
			t.Errorf("call %s estimated though its hangup was seen", c.Channel)
		}
	}
	st.checkLedger(t, "gr", 1000, billed)
}

// metricValue is the value of the sample named (with its labels) name in
// the Prometheus text exposition m.
func metricValue(t *testing.T, m, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(m, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics lacks %s", name)
	return 0
}
