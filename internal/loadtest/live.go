package loadtest

import (
	"context"
	"fmt"
	"time"

	"github.com/minuted/minuted/internal/sim"
)

// LiveOptions configure RunLive.
type LiveOptions struct {
	Calls    int           // concurrent live calls to reach
	Ramp     float64       // calls started per second while ramping up
	Window   time.Duration // measured span once all calls are up
	Projects []string
	Seed     uint64
	Progress func(format string, args ...any)
}

// LiveResult is the steady state of many live calls ticking per minute.
type LiveResult struct {
	Calls       int     `json:"calls"`
	Ramp        float64 `json:"ramp_rate"`
	RampSeconds float64 `json:"ramp_s"`
	RampTaken   float64 `json:"ramp_taken_s"`
	LiveStart   int     `json:"live_calls_at_window_start"`
	LiveEnd     int     `json:"live_calls_at_window_end"`
	Usage       Usage   `json:"usage"` // over the window
	// RSS at the end of the window and the most seen during it, bytes.
	RSS    map[string]int64 `json:"rss_bytes"`
	MaxRSS map[string]int64 `json:"max_rss_bytes"`
	// Blocks debited during the window (balance fall / 60 s) and how many
	// the calls were due (one per call per minute).
	Blocks       int64   `json:"blocks_debited"`
	BlocksDue    float64 `json:"blocks_due"`
	MinutedCores float64 `json:"minuted_cores"` // ingest + bill, average over the window
}

// RunLive starts o.Calls calls lasting longer than the ramp and the
// window (60/60 tariff: each ticks once a minute), measures CPU and RSS
// over the window once all are up, then stops generating (calls stay up
// in the double; Close the stack afterwards).
func (s *Stack) RunLive(ctx context.Context, o LiveOptions) (LiveResult, error) {
	r := LiveResult{Calls: o.Calls, Ramp: o.Ramp, RSS: map[string]int64{}, MaxRSS: map[string]int64{}}
	progress := o.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	ramp := time.Duration(float64(o.Calls) / o.Ramp * float64(time.Second))
	r.RampSeconds = ramp.Seconds()
	talk := ramp + o.Window + time.Minute
	gctx, stop := context.WithCancel(ctx)
	defer stop()
	genErr := make(chan error, 1)
	go func() {
		_, err := s.Sim.Generate(gctx, sim.GenOptions{
			Calls: o.Calls, Rate: o.Ramp, Concurrency: o.Calls + 1, Seed: o.Seed,
			Shapes: map[sim.Shape]float64{sim.ShapeAnswered: 1}, Projects: o.Projects,
			MinTalk: talk, MaxTalk: talk + 30*time.Second,
		})
		genErr <- err
	}()
	// Ramp until the double holds every call (2 channels each), at most
	// three times the planned ramp, then let a few seconds go by.
	progress("live: ramping %d calls at %.0f/s (%s planned)", o.Calls, o.Ramp, ramp.Round(time.Second))
	began := time.Now()
	for len(s.Sim.LiveChannels()) < 2*o.Calls && time.Since(began) < 3*ramp+10*time.Second {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case err := <-genErr:
			return r, fmt.Errorf("generator stopped during the ramp: %w", err)
		case <-time.After(time.Second):
		}
	}
	r.RampTaken = time.Since(began).Seconds()
	time.Sleep(5 * time.Second)
	r.LiveStart = len(s.Sim.LiveChannels()) / 2
	before, err := s.balances(ctx, o.Projects)
	if err != nil {
		return r, err
	}
	progress("live: %d calls up; measuring %s", o.Calls, o.Window)
	c0 := s.snap()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.Now().Add(o.Window)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
		}
		for _, p := range []*Proc{s.Ingest, s.Bill} {
			if n, err := ProcRSS(p.Pid); err == nil {
				r.RSS[p.Name] = n
				r.MaxRSS[p.Name] = max(r.MaxRSS[p.Name], n)
			}
		}
		r.RSS["load"] = SelfRSS()
	}
	r.Usage = c0.to(s.snap())
	r.LiveEnd = len(s.Sim.LiveChannels()) / 2
	after, err := s.balances(ctx, o.Projects)
	if err != nil {
		return r, err
	}
	for p, b := range before {
		r.Blocks += (b - after[p]) / 60
	}
	r.BlocksDue = float64(o.Calls) * o.Window.Minutes()
	r.MinutedCores = r.Usage.Minuted().Seconds() / r.Usage.Wall.Seconds()
	stop()
	<-genErr
	return r, nil
}
