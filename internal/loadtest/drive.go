package loadtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/minuted/minuted/internal/sim"
)

// Load is a workload for the ARI double's generator: synthetic calls
// shaped like the recorded ones, arriving at Rate for Duration, each
// talking (or ringing) for a time drawn uniformly in [MinTalk, MaxTalk].
// The same Seed gives the same calls.
type Load struct {
	Rate           float64       // new calls per second
	Duration       time.Duration // arrivals span this long: Rate×Duration calls
	Concurrency    int           // most calls up at once (0: enough for Rate×MaxTalk)
	MinTalk        time.Duration
	MaxTalk        time.Duration
	Projects       []string
	ProjectWeights []float64
	Shapes         map[sim.Shape]float64 // default: answered only
	Seed           uint64
	// OnCall is called as each call ends (from the generator's goroutine).
	OnCall func(sim.Expected)
}

// Calls is the number of calls the load generates.
func (l Load) Calls() int { return int(l.Rate*l.Duration.Seconds() + 0.5) }

// DriveResult is what the load tool did and what it cost.
type DriveResult struct {
	Calls      int            `json:"calls"`
	Events     int64          `json:"events"`
	Elapsed    time.Duration  `json:"elapsed_ns"`
	ArrivalSec float64        `json:"arrival_span_s"` // first to last arrival
	Achieved   float64        `json:"achieved_rate"`  // arrivals per second
	CPU        time.Duration  `json:"cpu_ns"`         // this process's user+sys while driving
	Cores      float64        `json:"cores"`          // CPU / Elapsed
	LagP99MS   float64        `json:"gen_lag_p99_ms"` // how late call ends were emitted (p99)
	LagMaxMS   float64        `json:"gen_lag_max_ms"` // and at worst
	Truth      []sim.Expected `json:"-"`
	// EmittedAt is when the generator finished each call (its
	// ChannelDestroyed and trailing events sent), by billed channel.
	EmittedAt map[string]time.Time `json:"-"`
}

// Drive plays l on srv in real time (every call lasts as long as its
// timestamps say) and returns once every call has ended.
func Drive(ctx context.Context, srv *sim.Server, l Load) (DriveResult, error) {
	if l.Rate <= 0 || l.Duration <= 0 {
		return DriveResult{}, fmt.Errorf("load: rate and duration must be positive (got %v calls/s for %s)", l.Rate, l.Duration)
	}
	if l.Shapes == nil {
		l.Shapes = map[sim.Shape]float64{sim.ShapeAnswered: 1}
	}
	if l.Concurrency <= 0 {
		l.Concurrency = int(l.Rate*l.MaxTalk.Seconds()*1.2) + 1000
	}
	var mu sync.Mutex
	var lags []float64
	emitted := map[string]time.Time{}
	onCall := func(e sim.Expected) {
		now := time.Now()
		mu.Lock()
		lags = append(lags, float64(now.Sub(e.Ended).Microseconds())/1000)
		emitted[e.BilledChannel] = now
		mu.Unlock()
		if l.OnCall != nil {
			l.OnCall(e)
		}
	}
	cpu0 := SelfCPU()
	res, err := srv.Generate(ctx, sim.GenOptions{
		Calls: l.Calls(), Rate: l.Rate, Concurrency: l.Concurrency, Seed: l.Seed,
		Shapes: l.Shapes, Projects: l.Projects, ProjectWeights: l.ProjectWeights,
		MinTalk: l.MinTalk, MaxTalk: l.MaxTalk, OnCall: onCall,
	})
	out := DriveResult{Calls: len(res.Calls), Events: res.Events, Elapsed: res.Elapsed, CPU: SelfCPU() - cpu0, Truth: res.Calls}
	mu.Lock()
	out.EmittedAt = emitted
	mu.Unlock()
	if err != nil {
		return out, err
	}
	if out.Elapsed > 0 {
		out.Cores = out.CPU.Seconds() / out.Elapsed.Seconds()
	}
	var first, last time.Time
	for i, c := range res.Calls {
		if i == 0 || c.Created.Before(first) {
			first = c.Created
		}
		if c.Created.After(last) {
			last = c.Created
		}
	}
	if span := last.Sub(first).Seconds(); span > 0 {
		out.ArrivalSec = span
		out.Achieved = float64(len(res.Calls)-1) / span
	}
	q := Quantiles(lags, 0.99, 1)
	out.LagP99MS, out.LagMaxMS = q[0], q[1]
	return out, nil
}
