package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
)

// Tariff6060 bills by the minute: every answered call ticks a 60 s block at
// answer and one more each minute it stays up.
var Tariff6060 = tariff.Tariff{MinimumSeconds: 60, IncrementSeconds: 60}

// SetupProjects creates the projects with t and a large balance, no
// thresholds (no alerts on the measured path).
func (s *Stack) SetupProjects(ctx context.Context, t tariff.Tariff, projects ...string) error {
	for _, p := range projects {
		if _, _, err := s.Ledger.Put(ctx, p, ledger.Settings{Tariff: t, ThresholdsMinutes: []float64{}}); err != nil {
			return fmt.Errorf("create project %s: %w", p, err)
		}
		if _, err := s.Ledger.TopUp(ctx, p, 1<<50, "load-initial-"+p, ledger.KindTopUp); err != nil {
			return fmt.Errorf("top up project %s: %w", p, err)
		}
	}
	return nil
}

// Usage is the CPU each process of the stack used over a span of time.
type Usage struct {
	Wall time.Duration            `json:"wall_ns"`
	CPU  map[string]time.Duration `json:"cpu_ns"` // by process; "load" is this process
}

// Cores is the average number of cores a process used.
func (u Usage) Cores(name string) float64 {
	if u.Wall <= 0 {
		return 0
	}
	return u.CPU[name].Seconds() / u.Wall.Seconds()
}

// Minuted is the CPU of minuted's own processes (ingest + bill).
func (u Usage) Minuted() time.Duration { return u.CPU["ingest"] + u.CPU["bill"] }

type cpuSnap struct {
	at  time.Time
	cpu map[string]time.Duration
}

func (s *Stack) snap() cpuSnap {
	c := cpuSnap{at: time.Now(), cpu: map[string]time.Duration{"load": SelfCPU()}}
	for _, p := range s.Procs() {
		if d, err := ProcCPU(p.Pid); err == nil {
			c.cpu[p.Name] = d
		}
	}
	return c
}

func (a cpuSnap) to(b cpuSnap) Usage {
	u := Usage{Wall: b.at.Sub(a.at), CPU: map[string]time.Duration{}}
	for k, v := range b.cpu {
		u.CPU[k] = v - a.cpu[k]
	}
	return u
}

// cdrWatch records when each CDR is seen on minuted.cdr.> (core NATS).
type cdrWatch struct {
	sub  *nats.Subscription
	mu   sync.Mutex
	seen map[string]seenCDR // by channel
	bad  int
}

type seenCDR struct {
	at     time.Time
	billed int64
	talk   int64
	dups   int
}

func (s *Stack) watchCDRs() (*cdrWatch, error) {
	w := &cdrWatch{seen: map[string]seenCDR{}}
	var err error
	w.sub, err = s.NC.Subscribe(call.CDRSubject(">"), func(m *nats.Msg) {
		now := time.Now()
		var c call.CDR
		if err := json.Unmarshal(m.Data, &c); err != nil {
			w.mu.Lock()
			w.bad++
			w.mu.Unlock()
			return
		}
		w.mu.Lock()
		if old, ok := w.seen[c.Channel]; ok {
			old.dups++
			w.seen[c.Channel] = old
		} else {
			w.seen[c.Channel] = seenCDR{at: now, billed: c.BilledSeconds, talk: c.TalkMS}
		}
		w.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to CDRs: %w", err)
	}
	if err := w.sub.SetPendingLimits(-1, -1); err != nil {
		return nil, fmt.Errorf("CDR subscription limits: %w", err)
	}
	return w, s.NC.Flush()
}

func (w *cdrWatch) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

// StepResult is one run at a fixed rate.
type StepResult struct {
	Rate     float64     `json:"rate"`
	Seconds  float64     `json:"seconds"`
	Drive    DriveResult `json:"load_tool"`
	Answered int         `json:"answered"`
	Settled  int         `json:"settled"`  // CDRs matching a generated call
	Lost     int         `json:"lost"`     // answered calls with no CDR by the drain deadline
	Wrong    int         `json:"wrong"`    // CDRs whose billed seconds or talk differ from the truth
	Dups     int         `json:"dup_cdrs"` // CDRs seen more than once
	// BalanceOK: each project's balance fell by exactly Σ billed of the step.
	BalanceOK bool `json:"balance_ok"`
	// DrainMS is the time from the last hangup to the last CDR.
	DrainMS float64 `json:"drain_ms"`
	// Latency of hangup → CDR (settled in Redis), in ms.
	P50MS  float64 `json:"p50_ms"`
	P99MS  float64 `json:"p99_ms"`
	P999MS float64 `json:"p999_ms"`
	MaxMS  float64 `json:"max_ms"`
	Usage  Usage   `json:"usage"`
	// CoreMSPerCall is minuted's CPU (ingest + bill) per settled call.
	CoreMSPerCall float64 `json:"minuted_core_ms_per_call"`
	CallsPerCore  float64 `json:"calls_per_core_second"`
	// Sustained: the load tool kept the rate, nothing was lost or wrong,
	// balances add up and minuted kept pace (drain ≤ 5 s).
	Sustained bool   `json:"sustained"`
	Note      string `json:"note,omitempty"`
}

// StepOptions configure RunStep.
type StepOptions struct {
	Load     Load
	Tariff   tariff.Tariff
	Drain    time.Duration // how long to wait for the last CDRs (default 60s)
	Progress func(format string, args ...any)
}

// RunStep plays one load on the stack and measures it. Projects must exist
// (SetupProjects) with o.Tariff.
func (s *Stack) RunStep(ctx context.Context, o StepOptions) (StepResult, error) {
	if o.Drain <= 0 {
		o.Drain = 60 * time.Second
	}
	r := StepResult{Rate: o.Load.Rate, Seconds: o.Load.Duration.Seconds()}
	before, err := s.balances(ctx, o.Load.Projects)
	if err != nil {
		return r, err
	}
	w, err := s.watchCDRs()
	if err != nil {
		return r, err
	}
	defer w.sub.Unsubscribe()
	c0 := s.snap()
	drv, err := Drive(ctx, s.Sim, o.Load)
	r.Drive = drv
	if err != nil {
		return r, err
	}
	truth := map[string]sim.Expected{}
	var lastEnd time.Time
	for _, e := range drv.Truth {
		if e.Answered.IsZero() {
			continue
		}
		truth[e.BilledChannel] = e
		if e.Ended.After(lastEnd) {
			lastEnd = e.Ended
		}
	}
	r.Answered = len(truth)
	deadline := time.Now().Add(o.Drain)
	for w.count() < len(truth) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	c1 := s.snap()
	r.Usage = c0.to(c1)
	w.mu.Lock()
	var lat []float64
	var lastCDR time.Time
	billed := map[string]int64{}
	for ch, e := range truth {
		c, ok := w.seen[ch]
		if !ok {
			r.Lost++
			continue
		}
		r.Settled++
		r.Dups += c.dups
		want := o.Tariff.BilledMS(e.TalkMS)
		if c.billed != want || c.talk != e.TalkMS {
			r.Wrong++
		}
		billed[e.Project] += want
		from, ok := drv.EmittedAt[ch]
		if !ok {
			from = e.Ended
		}
		lat = append(lat, max(float64(c.at.Sub(from).Microseconds())/1000, 0))
		if c.at.After(lastCDR) {
			lastCDR = c.at
		}
	}
	w.mu.Unlock()
	q := Quantiles(lat, 0.5, 0.99, 0.999, 1)
	r.P50MS, r.P99MS, r.P999MS, r.MaxMS = q[0], q[1], q[2], q[3]
	if !lastCDR.IsZero() {
		r.DrainMS = float64(lastCDR.Sub(lastEnd).Microseconds()) / 1000
	}
	after, err := s.balances(ctx, o.Load.Projects)
	if err != nil {
		return r, err
	}
	r.BalanceOK = true
	for p, b := range before {
		if b-after[p] != billed[p] {
			r.BalanceOK = false
			r.Note += fmt.Sprintf("project %s fell by %d s, billed %d s; ", p, b-after[p], billed[p])
		}
	}
	if r.Settled > 0 {
		r.CoreMSPerCall = float64(r.Usage.Minuted().Microseconds()) / 1000 / float64(r.Settled)
		r.CallsPerCore = 1000 / r.CoreMSPerCall
	}
	kept := drv.Achieved >= 0.97*o.Load.Rate || drv.Calls < 100
	if !kept {
		r.Note += fmt.Sprintf("load tool reached %.0f calls/s only; ", drv.Achieved)
	}
	r.Sustained = kept && r.Lost == 0 && r.Wrong == 0 && r.BalanceOK && r.DrainMS <= 5000
	return r, nil
}

func (s *Stack) balances(ctx context.Context, projects []string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, p := range projects {
		pr, err := s.Ledger.Get(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("balance of %s: %w", p, err)
		}
		out[p] = pr.BalanceSeconds
	}
	return out, nil
}
