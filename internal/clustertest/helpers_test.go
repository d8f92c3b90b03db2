package clustertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/app"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

const (
	token   = "cluster-admin-token"
	ariPass = "ari-secret"
	ariApp  = "minuted-cluster"
)

// topo is minuted spread over several instances (each an app.App with its
// own NATS connection and Redis client, as separate processes would have)
// on a 3-node NATS cluster and a 6-node Redis Cluster.
type topo struct {
	nats *testutil.NATSCluster
	rds  *testutil.RedisCluster
	sims []*sim.Server
	led  *ledger.Ledger // the test's own view of the ledger
	js   jetstream.JetStream
	url  string // admin API
	logs []string
}

type topoOptions struct {
	ingest, bill int
	mutate       func(*config.Config)
}

func startTopo(t *testing.T, o topoOptions) *topo {
	t.Helper()
	tp := &topo{nats: testutil.StartNATSCluster(t, 3), rds: testutil.StartRedisCluster(t)}
	ctx, cancel := context.WithCancel(context.Background())
	base := config.Default()
	base.NATS.URL = tp.nats.URL()
	base.NATS.Replicas = 3
	base.Redis.URL = tp.rds.URL()
	base.ARI.Username = "minuted"
	base.ARI.Password = ariPass
	base.ARI.Application = ariApp
	base.HTTP.AdminToken = token
	base.Ingest.SnapshotInterval = time.Second
	base.Bill.OrphanAfter = 10 * time.Second
	if o.mutate != nil {
		o.mutate(&base)
	}
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var runErrs []error
	run := func(name string, roles []string, cfg config.Config, ln net.Listener) *app.App {
		t.Helper()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name+".log")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		tp.logs = append(tp.logs, path)
		log := slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})).With("instance", name)
		a, err := app.New(ctx, app.Options{Config: cfg, Roles: roles, Logger: log, Listener: ln, DrainTimeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		wg.Go(func() {
			defer f.Close()
			if err := a.Run(ctx); err != nil {
				errMu.Lock()
				runErrs = append(runErrs, fmt.Errorf("%s: %w", name, err))
				errMu.Unlock()
			}
		})
		return a
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(40 * time.Second):
			t.Error("instances did not stop within 40s")
		}
		for _, err := range runErrs {
			t.Errorf("instance failed: %v", err)
		}
		tp.checkLogs(t)
	})
	// Observers first: the test's own ledger and JetStream views.
	tp.led = ledger.New(tp.rds.Client(t), ledger.Options{})
	nc, err := nats.Connect(tp.nats.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if tp.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := run("api", []string{app.RoleAPI}, base, ln)
	tp.url = "http://" + api.HTTPAddr()
	for i := range o.bill {
		run(fmt.Sprintf("bill-%d", i+1), []string{app.RoleBill}, base, nil)
	}
	for i := range o.ingest {
		s, err := sim.Start(ctx, sim.Options{Password: ariPass, WriteTimeout: 5 * time.Second,
			AsteriskID: fmt.Sprintf("02:fc:00:00:01:%02d", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		tp.sims = append(tp.sims, s)
		cfg := base
		cfg.ARI.URL = s.URL()
		run(fmt.Sprintf("ingest-%d", i+1), []string{app.RoleIngest}, cfg, nil)
	}
	for _, s := range tp.sims {
		if err := s.WaitApp(ctx, ariApp); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return tp.get(t, "/readyz", nil) == http.StatusOK }, "readyz")
	return tp
}

// checkLogs fails the test if a secret reached a log, and on failure shows
// the warnings and errors of every instance.
func (tp *topo) checkLogs(t *testing.T) {
	for _, path := range tp.logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if strings.Contains(string(b), token) || strings.Contains(string(b), ariPass) {
			t.Errorf("%s: a secret reached the logs", path)
		}
		if !t.Failed() {
			continue
		}
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Buffer(nil, 1<<20)
		n := 0
		for sc.Scan() && n < 40 {
			if l := sc.Text(); strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
				t.Logf("%s: %s", filepath.Base(path), l)
				n++
			}
		}
	}
}

func (tp *topo) get(t *testing.T, path string, out any) int {
	t.Helper()
	return testutil.API{URL: tp.url, Token: token}.Get(t, path, out)
}

func (tp *topo) send(t *testing.T, method, path, body string) {
	t.Helper()
	testutil.API{URL: tp.url, Token: token}.Send(t, method, path, body)
}

// tariffs of the workload, as in internal/app's end-to-end test.
var tariffs = map[string]tariff.Tariff{
	"p-6060": {MinimumSeconds: 60, IncrementSeconds: 60},
	"p-306":  {MinimumSeconds: 30, IncrementSeconds: 6},
	"p-11":   {MinimumSeconds: 1, IncrementSeconds: 1},
	"p-free": {FreeSeconds: 10, MinimumSeconds: 60, IncrementSeconds: 60},
	"p-ceil": {MinimumSeconds: 1, IncrementSeconds: 1, CountInitiatedSeconds: true},
}

const topup = 10_000_000

// projects creates the workload's projects through the API, each with its
// tariff and one top-up.
func (tp *topo) projects(t *testing.T) []string {
	t.Helper()
	var ps []string
	for p, tr := range tariffs {
		b, _ := json.Marshal(map[string]any{"tariff": tr, "thresholds_minutes": []float64{}})
		tp.send(t, http.MethodPut, "/v1/projects/"+p, string(b))
		tp.send(t, http.MethodPost, "/v1/projects/"+p+"/topups", fmt.Sprintf(`{"seconds": %d, "reference": "initial-%s"}`, topup, p))
		ps = append(ps, p)
	}
	return ps
}

// truth is what a correct biller bills: per project, the answered calls
// by node/channel, and the sum billed.
type truth struct {
	mu       sync.Mutex
	answered map[string]map[string]sim.Expected
	billed   map[string]int64
	calls    int
}

func newTruth() *truth {
	return &truth{answered: map[string]map[string]sim.Expected{}, billed: map[string]int64{}}
}

func (tr *truth) add(t *testing.T, e sim.Expected) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.calls++
	if e.Answered.IsZero() {
		return
	}
	if tr.answered[e.Project] == nil {
		tr.answered[e.Project] = map[string]sim.Expected{}
	}
	k := e.Node + "/" + e.BilledChannel
	if _, dup := tr.answered[e.Project][k]; dup {
		t.Errorf("the generator produced call %s twice", k)
	}
	tr.answered[e.Project][k] = e
	tr.billed[e.Project] += tariffs[e.Project].BilledMS(e.TalkMS)
}

func (tr *truth) total() int {
	n := 0
	for _, a := range tr.answered {
		n += len(a)
	}
	return n
}

// generate plays calls synthetic calls on every ARI double at once
// (virtual time, shapes and tariffs of the single-box end-to-end test).
func (tp *topo) generate(t *testing.T, tr *truth, projects []string, calls int, seed uint64) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(tp.sims))
	for i, s := range tp.sims {
		wg.Go(func() {
			res, err := s.Generate(context.Background(), sim.GenOptions{
				Calls: calls, Concurrency: 100, Seed: seed + uint64(i), VirtualTime: true,
				Shapes:   map[sim.Shape]float64{sim.ShapeAnswered: 6, sim.ShapeTwoLeg: 2, sim.ShapeUnanswered: 1, sim.ShapeBusy: 1, sim.ShapeCongestion: 1},
				Projects: projects, MinTalk: 0, MaxTalk: 400 * time.Second, AttributeBy: sim.AttributeMixed,
				Location: time.FixedZone("MSK", 3*3600),
			})
			if err != nil {
				errs <- err
				return
			}
			for _, e := range res.Calls {
				tr.add(t, e)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err) // may run outside the test goroutine: no Fatal
	}
}

// verify waits until every project has settled what tr says, then checks
// one exact CDR per answered call, balance = top-ups − Σ billed, ledger
// entries summing to the balance, and one CDR message per call in the CDR
// stream.
func (tp *topo) verify(t *testing.T, tr *truth, timeout time.Duration) cdrStats {
	t.Helper()
	ctx := context.Background()
	for p := range tariffs {
		want := tr.answered[p]
		var cdrs []call.CDR
		testutil.Eventually(t, timeout, func() bool {
			var err error
			cdrs, err = tp.led.CDRs(ctx, p, 1_000_000)
			if err != nil {
				return false
			}
			live, err := tp.led.Live(ctx, p)
			return err == nil && len(cdrs) >= len(want) && len(live) == 0
		}, "project %s: want %d CDRs and no live call, have %d", p, len(want), len(cdrs))
		seen := map[string]bool{}
		for _, c := range cdrs {
			k := c.Node + "/" + c.Channel
			w, ok := want[k]
			switch {
			case !ok:
				t.Errorf("%s: CDR for unexpected call %s", p, k)
			case seen[k]:
				t.Errorf("%s: two CDRs for %s", p, k)
			case c.TalkMS != w.TalkMS || c.BilledSeconds != tariffs[p].BilledMS(w.TalkMS) || c.Estimated:
				t.Errorf("%s %s: CDR talk %d billed %d estimated %v, want talk %d billed %d", p, k, c.TalkMS, c.BilledSeconds, c.Estimated, w.TalkMS, tariffs[p].BilledMS(w.TalkMS))
			}
			seen[k] = true
		}
		if len(seen) != len(want) {
			t.Errorf("%s: %d CDRs, want %d", p, len(seen), len(want))
		}
		pr, err := tp.led.Get(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if pr.BalanceSeconds != topup-tr.billed[p] {
			t.Errorf("project %s: balance %d, want top-ups %d − billed %d = %d", p, pr.BalanceSeconds, topup, tr.billed[p], topup-tr.billed[p])
		}
		entries, err := tp.led.Entries(ctx, p, 10_000_000)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, e := range entries {
			sum += e.Seconds
		}
		if sum != pr.BalanceSeconds {
			t.Errorf("project %s: ledger entries sum to %d, balance is %d", p, sum, pr.BalanceSeconds)
		}
	}
	cs := tp.checkCDRStream(t, tr)
	if cs.estimated > 0 {
		t.Logf("CDR stream: %d estimated (orphan) records besides the exact ones, %d of them published after the exact record of the same call", cs.estimated, cs.estimatedAfterExact)
	}
	info := cs.info
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Errorf("CDR stream: replicas %d, cluster %+v; want R3 with a leader and two replicas", info.Config.Replicas, info.Cluster)
	}
	return cs
}

// cdrStats is what the CDR stream holds besides one exact record per call.
type cdrStats struct {
	info                           *jetstream.StreamInfo
	estimated, estimatedAfterExact int
}

// checkCDRStream reads the whole CDR stream: every answered call has
// exactly one exact (not estimated) record, with its true talk time and
// billed seconds, and nothing else is there but estimated records of
// orphan closes (by design each is followed or preceded by the exact
// record that corrects it; they are counted).
func (tp *topo) checkCDRStream(t *testing.T, tr *truth) cdrStats {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := tp.js.Stream(ctx, call.CDRStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := cdrStats{info: info}
	c, err := tp.js.OrderedConsumer(ctx, call.CDRStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	exact := map[string]int{}
	for range info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("read CDR stream: %v", err)
		}
		var cdr call.CDR
		if err := json.Unmarshal(m.Data(), &cdr); err != nil {
			t.Fatalf("CDR stream: %v", err)
		}
		k := cdr.Node + "/" + cdr.Channel
		w, ok := tr.answered[cdr.Project][k]
		switch {
		case !ok:
			t.Errorf("CDR stream: record of unexpected call %s %s", cdr.Project, k)
		case cdr.Estimated:
			st.estimated++
			if exact[cdr.Project+" "+k] > 0 {
				st.estimatedAfterExact++
			}
		case cdr.TalkMS != w.TalkMS || cdr.BilledSeconds != tariffs[cdr.Project].BilledMS(w.TalkMS):
			t.Errorf("CDR stream %s %s: talk %d billed %d, want talk %d billed %d", cdr.Project, k, cdr.TalkMS, cdr.BilledSeconds, w.TalkMS, tariffs[cdr.Project].BilledMS(w.TalkMS))
		}
		if ok && !cdr.Estimated {
			exact[cdr.Project+" "+k]++
		}
	}
	for p, calls := range tr.answered {
		for k := range calls {
			if n := exact[p+" "+k]; n != 1 {
				t.Errorf("CDR stream: %d exact records of %s %s, want 1", n, p, k)
			}
		}
	}
	return st
}
