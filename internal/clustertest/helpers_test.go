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

// topo is minuted spread over several instances on a 3-node NATS cluster
// and a 6-node Redis Cluster: real `minuted` processes (procs), or app.App
// instances in the test process, each with its own NATS connection and
// Redis client as separate processes would have (the fast smoke test).
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
	// procs runs every instance as a `minuted ingest|bill|api` process
	// built from ./cmd/minuted; otherwise they run in the test process.
	procs bool
	// orphanAfter is bill.orphan_after (default 10s).
	orphanAfter time.Duration
}

func startTopo(t *testing.T, o topoOptions) *topo {
	t.Helper()
	if o.orphanAfter == 0 {
		o.orphanAfter = 10 * time.Second
	}
	tp := &topo{nats: testutil.StartNATSCluster(t, 3), rds: testutil.StartRedisCluster(t)}
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
	// The Asterisk doubles; they close after the instances stopped.
	ctx := context.Background()
	for i := range o.ingest {
		s, err := sim.Start(ctx, sim.Options{Password: ariPass, WriteTimeout: 5 * time.Second, AsteriskID: nodeID(i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		tp.sims = append(tp.sims, s)
	}
	if o.procs {
		tp.startProcs(t, o)
	} else {
		tp.startInProcess(t, o)
	}
	for i, s := range tp.sims {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.WaitApp(wctx, appName(i, o.procs))
		cancel()
		if err != nil {
			t.Fatalf("ingest-%d did not connect to its ARI double: %v", i+1, err)
		}
	}
	testutil.Eventually(t, 20*time.Second, func() bool { return tp.get(t, "/readyz", nil) == http.StatusOK }, "readyz")
	return tp
}

// nodeID is the entity id of the i-th Asterisk double.
func nodeID(i int) string { return fmt.Sprintf("02:fc:00:00:01:%02d", i+1) }

// appName is the ARI application of the i-th ingest: one name per
// Asterisk for processes (as configured per host), a shared one in process.
func appName(i int, procs bool) string {
	if procs {
		return fmt.Sprintf("%s-%d", ariApp, i+1)
	}
	return ariApp
}

// procYAML is the processes' shared configuration file; the engines'
// addresses, secrets and per-instance settings come from the environment.
const procYAML = `nats:
  replicas: 3
ari:
  username: minuted
  application: ` + ariApp + `
ingest:
  snapshot_interval: 1s
bill:
  orphan_after: %s
`

// startProcs runs one `minuted api`, o.bill `minuted bill` and one
// `minuted ingest` per ARI double as processes of the binary built from
// ./cmd/minuted, configured like a deployment: a YAML file plus
// environment variables. The test's cleanup stops them (SIGTERM, graceful
// drain) before the engines go away, and fails if one exited on its own
// or did not stop cleanly.
func (tp *topo) startProcs(t *testing.T, o topoOptions) {
	t.Helper()
	bin := testutil.BuildMinuted(t)
	cfg := filepath.Join(t.TempDir(), "minuted.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, procYAML, o.orphanAfter), 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"MINUTED_NATS_URL=" + tp.nats.URL(), "MINUTED_REDIS_URL=" + tp.rds.URL(), "MINUTED_ADMIN_TOKEN=" + token,
		"MINUTED_SPOOL_DIR=" + filepath.Join(t.TempDir(), "spool")}
	start := func(name, role string, env ...string) *testutil.Proc {
		p := testutil.StartProc(t, name, bin, []string{role, "-config", cfg}, append(env, common...))
		tp.logs = append(tp.logs, p.LogPath)
		return p
	}
	// Runs after every process's own cleanup (StartProc) stopped it, in
	// reverse order: ingest first, then bill, then the API.
	t.Cleanup(func() { tp.checkLogs(t) })
	running := func(p *testutil.Proc) { p.WaitLog(t, `"msg":"minuted running"`, 45*time.Second) }
	// The API first, alone: on a fresh cluster it creates the R3 streams.
	// Several processes creating them at once hang in CreateOrUpdateStream
	// until their 30 s start-up deadline (all but one; see the report of
	// this change), so the others start once the streams exist.
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	running(start("api", "api", "MINUTED_HTTP_ADDR="+addr))
	tp.url = "http://" + addr
	var bills []*testutil.Proc
	for i := range o.bill {
		bills = append(bills, start(fmt.Sprintf("bill-%d", i+1), "bill"))
	}
	for i, s := range tp.sims {
		start(fmt.Sprintf("ingest-%d", i+1), "ingest", "ARI_URL="+s.URL(), "ARI_USERNAME=minuted", "ARI_PASSWORD="+ariPass,
			"ARI_APPLICATION="+appName(i, true), "MINUTED_NODE="+s.AsteriskID())
	}
	for _, p := range bills {
		running(p)
	}
}

// startInProcess runs the instances as app.App values in the test process.
func (tp *topo) startInProcess(t *testing.T, o topoOptions) {
	t.Helper()
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
	base.Ingest.SpoolDir = t.TempDir()
	base.Bill.OrphanAfter = o.orphanAfter
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := run("api", []string{app.RoleAPI}, base, ln)
	tp.url = "http://" + api.HTTPAddr()
	for i := range o.bill {
		run(fmt.Sprintf("bill-%d", i+1), []string{app.RoleBill}, base, nil)
	}
	for i, s := range tp.sims {
		cfg := base
		cfg.ARI.URL = s.URL()
		run(fmt.Sprintf("ingest-%d", i+1), []string{app.RoleIngest}, cfg, nil)
	}
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
		au, err := tp.led.Audit(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if !au.OK() || !au.Complete || au.BalanceSeconds != topup-tr.billed[p] || au.BilledSeconds != tr.billed[p] {
			t.Errorf("project %s: ledger audit %+v; want sound and complete, balance = top-ups %d − billed %d = %d",
				p, au, topup, tr.billed[p], topup-tr.billed[p])
		}
		t.Logf("project %s: %d exact CDRs, balance %d s = top-ups %d − billed %d", p, len(seen), au.BalanceSeconds, topup, tr.billed[p])
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
