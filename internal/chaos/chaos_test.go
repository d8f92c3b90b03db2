package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

const (
	ariPassword   = "chaos-ari-secret"
	adminToken    = "chaos-admin-token"
	snapInterval  = time.Second
	volNode       = "02:fc:00:00:00:0a" // virtual-time Asterisk: every call must be exact
	rtNode        = "02:fc:00:00:00:0b" // real-time Asterisk: ARI faults, estimates allowed in gaps
	volBatch      = 500
	rtRatePerSec  = 8
	drainDeadline = 150 * time.Second
)

// knobs are the suite's environment settings.
type knobs struct {
	calls    int
	seed     uint64
	duration time.Duration
	report   string
	keepLogs string
	// all enables every fault kind (the default). MINUTED_CHAOS_FAULTS=basic
	// leaves out kill -9 of ingest and NATS restarts, to tell their effects
	// from the other faults'.
	all bool
}

func loadKnobs(t *testing.T) knobs {
	k := knobs{calls: 10000, seed: 1, duration: 25 * time.Second, report: os.Getenv("MINUTED_CHAOS_REPORT"),
		keepLogs: os.Getenv("MINUTED_CHAOS_LOGS"), all: true}
	switch v := os.Getenv("MINUTED_CHAOS_FAULTS"); v {
	case "", "all":
	case "basic":
		k.all = false
	default:
		t.Fatalf("MINUTED_CHAOS_FAULTS=%q: want all (the default) or basic", v)
	}
	if v := os.Getenv("MINUTED_CHAOS_CALLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("MINUTED_CHAOS_CALLS=%q: want a positive number of calls", v)
		}
		k.calls = n
	}
	if v := os.Getenv("MINUTED_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("MINUTED_CHAOS_SEED=%q: want an unsigned integer", v)
		}
		k.seed = n
	}
	if v := os.Getenv("MINUTED_CHAOS_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 5*time.Second {
			t.Fatalf("MINUTED_CHAOS_DURATION=%q: want a duration of at least 5s", v)
		}
		k.duration = d
	}
	return k
}

// counts is a concurrent counter by name.
type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) add(k string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[k] += n
}

func (c *counts) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// window is a time range during which ingest could not see an Asterisk.
type window struct{ from, to time.Time }

// gapMonitor records when nobody listened to the real-time Asterisk (events
// emitted then are lost, as with a real one).
type gapMonitor struct {
	mu   sync.Mutex
	gaps []window
}

func (g *gapMonitor) run(ctx context.Context, s *sim.Server) {
	var open time.Time
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			if !open.IsZero() {
				g.mu.Lock()
				g.gaps = append(g.gaps, window{open, time.Now()})
				g.mu.Unlock()
			}
			return
		case <-tick.C:
		}
		now := time.Now()
		n := s.Clients()
		switch {
		case n == 0 && open.IsZero():
			open = now.Add(-5 * time.Millisecond)
		case n > 0 && !open.IsZero():
			g.mu.Lock()
			g.gaps = append(g.gaps, window{open, now})
			g.mu.Unlock()
			open = time.Time{}
		}
	}
}

func (g *gapMonitor) add(w window) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gaps = append(g.gaps, w)
}

func (g *gapMonitor) list() []window {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]window(nil), g.gaps...)
}

// captured is a CALLS message seen on the wire, for duplicates.
type captured struct {
	subject string
	data    []byte
}

// harness is the running system and what the test knows about it.
type harness struct {
	t   *testing.T
	k   knobs
	dir string

	natsPort int
	nats     *proc
	rds      *testutil.Redis
	rdb      *redis.Client
	led      *ledger.Ledger
	vol, rt  *sim.Server
	bills    []*proc
	ingVol   *proc
	ingRT    *proc
	procs    []*proc
	logs     map[string]string
	nc       *nats.Conn
	js       jetstream.JetStream

	tariffs  map[string]tariff.Tariff
	projects []string
	expected map[string]int64 // expected billed seconds per project, for sizing top-ups

	faults counts
	gaps   gapMonitor
	// natsDown are the NATS restarts: while NATS is away no ingest can
	// report, so a call that ends then is known alive only until before.
	natsDown gapMonitor

	mu       sync.Mutex
	truth    map[string]sim.Expected // node/channel -> truth
	topups   map[string]int64        // applied top-up seconds per project
	topupRef []topupRec
	garbage  map[string]bool
	ring     []captured
	ringNext int
}

type topupRec struct {
	project, ref string
	seconds      int64
}

// bgTB turns a Fatal in a fault goroutine into an error and ends only that
// goroutine.
type bgTB struct{ testing.TB }

func (b bgTB) Fatalf(format string, args ...any) {
	b.TB.Helper()
	b.TB.Errorf(format, args...)
	runtime.Goexit()
}

func (b bgTB) Fatal(args ...any) {
	b.TB.Helper()
	b.TB.Error(args...)
	runtime.Goexit()
}

var tariffKinds = []struct {
	name string
	t    tariff.Tariff
}{
	{"6060", tariff.Tariff{MinimumSeconds: 60, IncrementSeconds: 60}},
	{"306", tariff.Tariff{MinimumSeconds: 30, IncrementSeconds: 6}},
	{"11", tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}},
	{"free10", tariff.Tariff{FreeSeconds: 10, MinimumSeconds: 60, IncrementSeconds: 60}},
	{"ceil11", tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1, CountInitiatedSeconds: true}},
	{"free5-306", tariff.Tariff{FreeSeconds: 5, MinimumSeconds: 30, IncrementSeconds: 6}},
	{"ceil66", tariff.Tariff{MinimumSeconds: 6, IncrementSeconds: 6, CountInitiatedSeconds: true}},
}

func startHarness(t *testing.T, k knobs) *harness {
	t.Helper()
	if bins.err != nil {
		t.Fatalf("cannot build the binaries the suite runs: %v", bins.err)
	}
	h := &harness{t: t, k: k, dir: t.TempDir(), logs: map[string]string{}, truth: map[string]sim.Expected{},
		topups: map[string]int64{}, garbage: map[string]bool{}, ring: make([]captured, 0, 8192),
		tariffs: map[string]tariff.Tariff{}, expected: map[string]int64{}}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errs := make(chan error, 16)

	// NATS: a real nats-server process with JetStream on disk.
	h.natsPort = testutil.FreePort(t)
	natsDir := filepath.Join(h.dir, "nats")
	h.nats = h.newProc("nats-server", bins.nats, natsArgs(h.natsPort, natsDir), nil)
	h.startProc(ctx, h.nats, errs)
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if err := waitPort(wctx, h.natsURL()[len("nats://"):]); err != nil {
		t.Fatal(err)
	}
	// Redis: private redis-server, AOF with appendfsync always.
	h.rds = testutil.StartRedis(t)
	h.rdb = h.rds.Client(t)
	h.led = ledger.New(h.rdb, ledger.Options{})

	// The two Asterisks.
	var err error
	for _, s := range []struct {
		dst  **sim.Server
		node string
	}{{&h.vol, volNode}, {&h.rt, rtNode}} {
		*s.dst, err = sim.Start(ctx, sim.Options{Password: ariPassword, AsteriskID: s.node, WriteTimeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		srv := *s.dst
		t.Cleanup(func() { _ = srv.Close() })
	}

	h.setupProjects(ctx)

	cfg := filepath.Join(h.dir, "minuted.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	// Ingest's spool outlives its kill -9s: the restarted process publishes
	// what the killed one had not got into NATS.
	common := []string{"MINUTED_NATS_URL=" + h.natsURL(), "MINUTED_REDIS_URL=" + h.rds.URL(), "ARI_PASSWORD=" + ariPassword,
		"MINUTED_SPOOL_DIR=" + filepath.Join(h.dir, "spool")}
	for i := range 2 {
		b := h.newProc(fmt.Sprintf("bill-%d", i+1), bins.minuted, []string{"bill", "-config", cfg}, common)
		h.bills = append(h.bills, b)
		h.startProc(ctx, b, errs)
	}
	h.ingVol = h.newProc("ingest-vol", bins.minuted, []string{"ingest", "-config", cfg},
		append([]string{"ARI_URL=" + h.vol.URL(), "MINUTED_NODE=" + volNode}, common...))
	h.ingRT = h.newProc("ingest-rt", bins.minuted, []string{"ingest", "-config", cfg},
		append([]string{"ARI_URL=" + h.rt.URL(), "MINUTED_NODE=" + rtNode}, common...))
	h.startProc(ctx, h.ingVol, errs)
	h.startProc(ctx, h.ingRT, errs)
	t.Cleanup(func() {
		for _, p := range h.procs {
			p.stop()
		}
		select {
		case err := <-errs:
			t.Errorf("process supervisor: %v", err)
		default:
		}
		if t.Failed() {
			for _, p := range h.procs {
				t.Logf("---- last lines of %s ----\n%s", p.name, tail(h.logs[p.name], 3000))
			}
		}
		if dir := h.k.keepLogs; dir != "" {
			h.keepLogs(dir)
		}
	})
	for _, s := range []*sim.Server{h.vol, h.rt} {
		if err := s.WaitApp(wctx, "minuted-chaos"); err != nil {
			t.Fatalf("ingest did not connect to the ARI double: %v", err)
		}
	}

	h.nc, err = nats.Connect(h.natsURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Name("chaos-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.nc.Close)
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	// Wait until bill has created its consumer, then watch CALLS for copies.
	testutil.Eventually(t, 20*time.Second, func() bool {
		_, err := h.js.Consumer(ctx, "CALLS", "bill")
		return err == nil
	}, "bill's consumer on CALLS")
	if _, err := h.nc.Subscribe("minuted.calls.>", h.capture); err != nil {
		t.Fatal(err)
	}
	return h
}

const configYAML = `ari:
  username: minuted
  application: minuted-chaos
  reconnect_min: 50ms
  reconnect_max: 500ms
ingest:
  snapshot_interval: 1s
bill:
  orphan_after: 3s
  ack_wait: 5s
  tick_slack: 1s
http:
  admin_token: ` + adminToken + `
`

func (h *harness) natsURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", h.natsPort) }

func (h *harness) newProc(name, bin string, args, env []string) *proc {
	h.t.Helper()
	path := filepath.Join(h.dir, name+".log")
	p, err := newProc(name, bin, path, args, env)
	if err != nil {
		h.t.Fatal(err)
	}
	h.logs[name] = path
	h.procs = append(h.procs, p)
	return p
}

func (h *harness) startProc(ctx context.Context, p *proc, errs chan<- error) {
	h.t.Helper()
	if err := p.start(); err != nil {
		h.t.Fatal(err)
	}
	go p.supervise(ctx, errs)
}

// setupProjects creates the projects with mixed tariffs, thresholds sized
// so that they are crossed during the run, and initial top-ups.
func (h *harness) setupProjects(ctx context.Context) {
	h.t.Helper()
	rng := rand.New(rand.NewPCG(h.k.seed, 1))
	n := max(7, min(40, h.k.calls/500))
	for i := range n {
		tk := tariffKinds[i%len(tariffKinds)]
		id := fmt.Sprintf("p%02d-%s", i, tk.name)
		h.projects = append(h.projects, id)
		h.tariffs[id] = tk.t
		// ≈ 0.7 answered × ~200 s of talk per virtual-time call.
		exp := int64(float64(h.k.calls)/float64(n)*0.7*200) + 600
		h.expected[id] = exp
		hi := float64(exp/60) * 0.4
		lo := float64(exp/60) * 0.1
		if _, _, err := h.led.Put(ctx, id, ledger.Settings{Tariff: tk.t, ThresholdsMinutes: []float64{float64(int(hi)), float64(int(lo)), 0}, OnExhausted: ledger.Allow}); err != nil {
			h.t.Fatalf("create project %s: %v", id, err)
		}
		first := int64(float64(exp) * (0.5 + 0.4*rng.Float64()))
		h.topUp(ctx, id, first, "initial-"+id)
	}
}

// topUp applies a top-up, retrying with the same reference until Redis
// answers (it is idempotent by reference).
func (h *harness) topUp(ctx context.Context, project string, seconds int64, ref string) bool {
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := h.led.TopUp(ctx, project, seconds, ref, ledger.KindTopUp)
		if err == nil {
			h.mu.Lock()
			if res.Applied {
				h.topups[project] += seconds
				h.topupRef = append(h.topupRef, topupRec{project, ref, seconds})
			}
			h.mu.Unlock()
			return res.Applied
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			h.t.Errorf("top-up %s of %s never went through: %v", ref, project, err)
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) record(calls []sim.Expected) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range calls {
		if e.BilledChannel == "" {
			continue
		}
		h.truth[e.Node+"/"+e.BilledChannel] = e
	}
}

func (h *harness) capture(m *nats.Msg) {
	if m.Header.Get("Chaos") != "" {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	c := captured{subject: m.Subject, data: append([]byte(nil), m.Data...)}
	if len(h.ring) < cap(h.ring) {
		h.ring = append(h.ring, c)
		return
	}
	h.ring[h.ringNext] = c
	h.ringNext = (h.ringNext + 1) % len(h.ring)
}

// TestChaos is the suite: workload and faults for MINUTED_CHAOS_DURATION,
// then drain and check every invariant.
func TestChaos(t *testing.T) {
	k := loadKnobs(t)
	if !k.all {
		t.Logf("MINUTED_CHAOS_FAULTS=basic: kill -9 of ingest and NATS restarts left out")
	}
	t.Logf("chaos seed %d (MINUTED_CHAOS_SEED=%d reproduces the workload and the fault schedule), %d virtual-time calls, faults for %v",
		k.seed, k.seed, k.calls, k.duration)
	h := startHarness(t, k)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gapCtx, stopGaps := context.WithCancel(ctx)
	gapsDone := make(chan struct{})
	go func() { defer close(gapsDone); h.gaps.run(gapCtx, h.rt) }()

	start := time.Now()
	var work sync.WaitGroup
	work.Go(func() { h.runVol(ctx, start) })
	work.Go(func() { h.runRT(ctx) })

	faultCtx, stopFaults := context.WithTimeout(ctx, k.duration)
	defer stopFaults()
	var faults sync.WaitGroup
	faults.Go(func() { h.infraFaults(faultCtx) })
	faults.Go(func() { h.ariFaults(faultCtx) })
	faults.Go(func() { h.messageFaults(faultCtx) })
	faults.Wait()
	h.ensureUp(ctx)
	work.Wait()
	t.Logf("workload and faults done after %v", time.Since(start).Round(time.Millisecond))
	h.drain(ctx)
	stopGaps()
	<-gapsDone
	h.check(ctx)
}

// runVol plays the virtual-time calls in batches spread over the fault period.
func (h *harness) runVol(ctx context.Context, start time.Time) {
	batches := (h.k.calls + volBatch - 1) / volBatch
	for i := range batches {
		n := min(volBatch, h.k.calls-i*volBatch)
		res, err := h.vol.Generate(ctx, sim.GenOptions{
			Calls: n, Concurrency: 200, Seed: h.k.seed*1_000_003 + uint64(i), VirtualTime: true,
			Shapes:   map[sim.Shape]float64{sim.ShapeAnswered: 6, sim.ShapeTwoLeg: 2, sim.ShapeUnanswered: 1, sim.ShapeBusy: 1, sim.ShapeCongestion: 1},
			Projects: h.projects, MaxTalk: 400 * time.Second, AttributeBy: sim.AttributeMixed,
			Location: time.FixedZone("MSK", 3*3600),
		})
		if err != nil {
			h.t.Errorf("virtual-time batch %d: %v", i, err)
			return
		}
		h.record(res.Calls)
		next := start.Add(time.Duration(i+1) * h.k.duration / time.Duration(batches))
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// runRT plays real-time calls (3–15 s of talk) during the fault period so
// that blocks are debited while calls are up.
func (h *harness) runRT(ctx context.Context) {
	n := int(h.k.duration.Seconds()) * rtRatePerSec
	// Two-leg calls too: their dialled legs outlive kill -9s of ingest and
	// must not be billed as calls of their own when it adopts them.
	shapes := map[sim.Shape]float64{sim.ShapeAnswered: 6, sim.ShapeTwoLeg: 2, sim.ShapeUnanswered: 1, sim.ShapeBusy: 1}
	res, err := h.rt.Generate(ctx, sim.GenOptions{
		Calls: n, Rate: rtRatePerSec, Concurrency: 150, Seed: h.k.seed*7 + 3,
		Shapes:   shapes,
		Projects: h.projects, MinTalk: 3 * time.Second, MaxTalk: 15 * time.Second, AttributeBy: sim.AttributeMixed,
	})
	if err != nil {
		h.t.Errorf("real-time calls: %v", err)
		return
	}
	h.record(res.Calls)
}

func sleepRand(ctx context.Context, rng *rand.Rand, lo, hi time.Duration) bool {
	d := lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func pick(rng *rand.Rand, weights map[string]float64, order []string) string {
	var sum float64
	for _, k := range order {
		sum += weights[k]
	}
	x := rng.Float64() * sum
	for _, k := range order {
		x -= weights[k]
		if x < 0 {
			return k
		}
	}
	return order[len(order)-1]
}

// Fault kinds (the table's rows).
const (
	fBillKill      = "kill -9 bill (restarted)"
	fIngestKill    = "kill -9 ingest (restarted, reconciles from GET /channels)"
	fRedisKill     = "redis-server kill -9 + restart (AOF)"
	fRedisDown     = "Redis unreachable 1–3 s"
	fRedisSlow     = "slow Redis (CLIENT PAUSE 200–600 ms)"
	fNATSRestart   = "NATS server restart"
	fWSDrop        = "ARI websocket dropped"
	fARIDown       = "Asterisk unreachable 0.3–1.2 s"
	fCrash         = "Asterisk crash (channels vanish, no ChannelDestroyed)"
	fDup           = "duplicated deliveries (raw copies, no Msg-Id)"
	fReorder       = "reordered deliveries (shuffled copies)"
	fGarbage       = "garbage messages into CALLS"
	fTopUp         = "top-ups during the run"
	fTopUpReplay   = "top-up replays (same reference)"
	fUnexpectedRst = "unexpected process exits (restarted)"
)

var faultOrder = []string{fBillKill, fIngestKill, fRedisKill, fRedisDown, fRedisSlow, fNATSRestart, fWSDrop, fARIDown, fCrash, fDup, fReorder, fGarbage, fTopUp, fTopUpReplay, fUnexpectedRst}

func (h *harness) infraFaults(ctx context.Context) {
	rng := rand.New(rand.NewPCG(h.k.seed, 101))
	w := map[string]float64{fBillKill: 3, fRedisKill: 1, fRedisDown: 1, fRedisSlow: 2, fNATSRestart: 1.2}
	order := []string{fBillKill, fRedisKill, fRedisDown, fRedisSlow, fNATSRestart}
	if !h.k.all {
		order = order[:len(order)-1]
	}
	for sleepRand(ctx, rng, 500*time.Millisecond, 2500*time.Millisecond) {
		f := pick(rng, w, order)
		switch f {
		case fBillKill:
			h.bills[rng.IntN(len(h.bills))].kill(syscall.SIGKILL, time.Duration(rng.IntN(1000))*time.Millisecond)
		case fRedisKill:
			h.rds.Stop()
			h.rds.Start(bgTB{h.t})
		case fRedisDown:
			h.rds.Stop()
			time.Sleep(time.Second + time.Duration(rng.IntN(2000))*time.Millisecond)
			h.rds.Start(bgTB{h.t})
		case fRedisSlow:
			ms := 200 + rng.IntN(400)
			if err := h.rdb.Do(ctx, "CLIENT", "PAUSE", ms, "ALL").Err(); err != nil {
				continue
			}
		case fNATSRestart:
			down := time.Now()
			h.nats.kill(syscall.SIGTERM, 200*time.Millisecond+time.Duration(rng.IntN(1300))*time.Millisecond)
			wctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			err := waitPort(wctx, h.natsURL()[len("nats://"):])
			cancel()
			h.natsDown.add(window{down, time.Now()})
			if err != nil {
				h.t.Errorf("NATS did not come back: %v", err)
				return
			}
		}
		h.faults.add(f, 1)
	}
}

func (h *harness) ariFaults(ctx context.Context) {
	rng := rand.New(rand.NewPCG(h.k.seed, 202))
	w := map[string]float64{fIngestKill: 2, fWSDrop: 3, fARIDown: 1.5, fCrash: 0.3}
	order := []string{fIngestKill, fWSDrop, fARIDown, fCrash}
	if !h.k.all {
		order = order[1:]
	}
	for sleepRand(ctx, rng, time.Second, 3*time.Second) {
		f := pick(rng, w, order)
		switch f {
		case fIngestKill:
			h.ingRT.kill(syscall.SIGKILL, time.Duration(rng.IntN(800))*time.Millisecond)
		case fWSDrop:
			h.rt.DropWebsockets()
		case fARIDown:
			h.rt.SetDown(true)
			h.rt.DropWebsockets()
			time.Sleep(300*time.Millisecond + time.Duration(rng.IntN(900))*time.Millisecond)
			h.rt.SetDown(false)
		case fCrash:
			h.rt.Crash()
		}
		h.faults.add(f, 1)
	}
}

func (h *harness) messageFaults(ctx context.Context) {
	rng := rand.New(rand.NewPCG(h.k.seed, 303))
	w := map[string]float64{fDup: 3, fReorder: 2, fGarbage: 2, fTopUp: 1.5}
	order := []string{fDup, fReorder, fGarbage, fTopUp}
	garbageN, topupN := 0, 0
	for sleepRand(ctx, rng, 200*time.Millisecond, time.Second) {
		f := pick(rng, w, order)
		switch f {
		case fDup, fReorder:
			h.mu.Lock()
			var sel []captured
			if len(h.ring) > 0 {
				for range 5 + rng.IntN(45) {
					sel = append(sel, h.ring[rng.IntN(len(h.ring))])
				}
			}
			h.mu.Unlock()
			if f == fReorder {
				rng.Shuffle(len(sel), func(i, j int) { sel[i], sel[j] = sel[j], sel[i] })
			}
			for _, c := range sel {
				m := &nats.Msg{Subject: c.subject, Data: c.data, Header: nats.Header{"Chaos": []string{"copy"}}}
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := h.js.PublishMsg(pctx, m)
				cancel()
				if err == nil {
					h.faults.add(f, 1)
				}
			}
		case fGarbage:
			for range 1 + rng.IntN(3) {
				garbageN++
				subj, body := garbage(rng, garbageN, h.projects)
				h.publishGarbage(subj, body, garbageN)
			}
		case fTopUp:
			topupN++
			p := h.projects[rng.IntN(len(h.projects))]
			secs := h.expected[p]/5 + int64(rng.IntN(600))
			ref := fmt.Sprintf("chaos-topup-%d", topupN)
			if h.topUp(context.WithoutCancel(ctx), p, secs, ref) {
				h.faults.add(fTopUp, 1)
			}
			if rng.IntN(3) == 0 { // replay an applied reference: must not apply twice
				h.mu.Lock()
				r := h.topupRef[rng.IntN(len(h.topupRef))]
				h.mu.Unlock()
				if h.topUp(context.WithoutCancel(ctx), r.project, r.seconds, r.ref) {
					h.t.Errorf("top-up reference %s of %s applied twice", r.ref, r.project)
				}
				h.faults.add(fTopUpReplay, 1)
			}
		}
	}
}

// garbage returns an undecodable or invalid CALLS message, unique by n.
func garbage(rng *rand.Rand, n int, projects []string) (string, []byte) {
	p := projects[rng.IntN(len(projects))]
	subj := "minuted.calls." + p + ".ended"
	switch rng.IntN(6) {
	case 0:
		return subj, fmt.Appendf(nil, "not json at all #%d", n)
	case 1:
		return subj, fmt.Appendf(nil, `{"schema":1,"event":"ended","node":"chaos","channel":"g%d","created_at":"2025-01-`, n)
	case 2:
		return subj, fmt.Appendf(nil, `{"schema":99,"event":"ended","node":"chaos","channel":"g%d","project":%q,"created_at":"2025-01-01T00:00:00Z","ended_at":"2025-01-01T00:01:00Z"}`, n, p)
	case 3:
		return "minuted.calls." + p + ".answered", fmt.Appendf(nil, `{"schema":1,"event":"exploded","node":"chaos","channel":"g%d","project":%q,"created_at":"2025-01-01T00:00:00Z"}`, n, p)
	case 4:
		return "minuted.calls.garbage.ended", fmt.Appendf(nil, `{"schema":1,"event":"ended","node":"chaos","channel":"g%d","project":"bad project!","created_at":"2025-01-01T00:00:00Z","ended_at":"2025-01-01T00:01:00Z"}`, n)
	default:
		b := make([]byte, 16+rng.IntN(48))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return subj, append(b, fmt.Appendf(nil, "#%d", n)...)
	}
}

// publishGarbage publishes one garbage message until JetStream acknowledges
// it; its own Msg-Id makes the retries land once.
func (h *harness) publishGarbage(subj string, body []byte, n int) {
	h.mu.Lock()
	h.garbage[string(body)] = true
	h.mu.Unlock()
	h.faults.add(fGarbage, 1)
	m := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{"Chaos": []string{"garbage"}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := h.js.PublishMsg(pctx, m, jetstream.WithMsgID(fmt.Sprintf("chaos-garbage-%d", n)))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Errorf("garbage message %d never reached JetStream: %v", n, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ensureUp waits until every process runs and Redis answers after the faults.
func (h *harness) ensureUp(ctx context.Context) {
	h.t.Helper()
	testutil.Eventually(h.t, 30*time.Second, func() bool {
		for _, p := range h.procs {
			if !p.running() {
				return false
			}
		}
		return h.rdb.Ping(ctx).Err() == nil
	}, "every process running and Redis answering after the faults")
}
