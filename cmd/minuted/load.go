package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minuted/minuted/internal/loadtest"
	"github.com/minuted/minuted/internal/sim"
)

// runLoad is `minuted load`: the load tool. Without -report it serves the
// ARI double and drives synthetic calls into whatever ingest connects;
// with -report it stands up the whole pipeline and writes the benchmark
// report (docs/benchmarks.md and .json).
func runLoad(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8088", "address the ARI double listens on (without -report)")
	password := fs.String("password", envOr("MINUTED_SIM_PASSWORD", os.Getenv("ARI_PASSWORD")), "ARI password of the double (without -report)")
	rate := fs.Float64("rate", 100, "new calls per second")
	dur := fs.Duration("for", time.Minute, "how long calls keep arriving")
	concurrency := fs.Int("concurrency", 0, "most calls up at once (0: enough for rate × longest talk)")
	talk := fs.String("talk", "1s..10s", "talk time range min..max of each call (uniform)")
	projects := fs.String("projects", "proj-a", "projects and weights: a=3,b=1")
	shapes := fs.String("shapes", "answered", "weights of call shapes (answered=6,two_leg=2,unanswered=1,...)")
	seed := fs.Uint64("seed", 1, "random seed: same seed, same calls")
	report := fs.String("report", "", "run the whole benchmark and write this Markdown report")
	jsonOut := fs.String("json", "", "JSON report path (default: the -report path with .json)")
	steps := fs.String("steps", "500,1000,2000,3000", "rates stepped up with -report, calls/s ('': none, e.g. to run only -live)")
	stepFor := fs.Duration("step-for", time.Minute, "arrival time of each rate step")
	low := fs.Float64("low-rate", 100, "extra latency run at this rate (0: none)")
	live := fs.Int("live", 100000, "concurrent live calls of the RSS/CPU run (0: skip)")
	liveRamp := fs.Float64("live-ramp", 2000, "calls/s while ramping the live calls")
	liveWindow := fs.Duration("live-window", 90*time.Second, "measured span with every live call up")
	profile := fs.Bool("profile", true, "perf-profile ingest and bill at -profile-rate")
	profileRate := fs.Float64("profile-rate", 2000, "rate of the profiled run")
	micro := fs.Bool("micro", true, "run the micro-benchmarks (needs the go toolchain)")
	memLimit := fs.String("gomemlimit", "", "GOMEMLIMIT of ingest and bill with -report, e.g. 150MiB ('': Go's default, none)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %v", fs.Args())}
	}
	minTalk, maxTalk, err := parseRange(*talk)
	if err != nil {
		return usageError{err}
	}
	if *report != "" {
		rates, err := parseRates(*steps)
		if err != nil {
			return usageError{err}
		}
		if *jsonOut == "" {
			*jsonOut = strings.TrimSuffix(*report, ".md") + ".json"
		}
		rep, err := loadtest.RunReport(ctx, loadtest.ReportOptions{
			Command: "minuted load " + strings.Join(args, " "), // minuted is built with symbols for perf
			Steps:   rates, StepDuration: *stepFor, LowRate: *low, MinTalk: minTalk, MaxTalk: maxTalk,
			LiveCalls: *live, LiveRamp: *liveRamp, LiveWindow: *liveWindow,
			Profile: *profile, ProfileRate: *profileRate, Micro: *micro, Seed: *seed, GoMemLimit: *memLimit,
			Log: func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) },
		})
		if err != nil {
			return fmt.Errorf("benchmark: %w", err)
		}
		return writeReport(rep, *report, *jsonOut)
	}
	if *password == "" {
		return usageError{errors.New("load needs -password (or MINUTED_SIM_PASSWORD) for the ARI double")}
	}
	names, weights, err := parseWeights(*projects)
	if err != nil {
		return usageError{err}
	}
	sw, err := parseShapes(*shapes)
	if err != nil {
		return usageError{err}
	}
	srv, err := sim.Start(ctx, sim.Options{Addr: *listen, Password: *password, WriteTimeout: 5 * time.Second, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	log.Info("ARI double listening; waiting for ingest", "url", srv.URL())
	stop := reportCPU(ctx, log, srv)
	defer stop()
	res, err := loadtest.Drive(ctx, srv, loadtest.Load{Rate: *rate, Duration: *dur, Concurrency: *concurrency,
		MinTalk: minTalk, MaxTalk: maxTalk, Projects: names, ProjectWeights: weights, Shapes: sw, Seed: *seed})
	if err != nil {
		return err
	}
	log.Info("load done", "calls", res.Calls, "events", res.Events, "achieved_calls_per_s", res.Achieved,
		"elapsed", res.Elapsed.Round(time.Millisecond), "load_tool_cpu", res.CPU.Round(time.Millisecond),
		"load_tool_cores", res.Cores, "gen_lag_p99_ms", res.LagP99MS)
	return nil
}

// reportCPU logs the load tool's own CPU every 5 s, so one can see it is
// not the bottleneck.
func reportCPU(ctx context.Context, log *slog.Logger, srv *sim.Server) func() {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		last, at := loadtest.SelfCPU(), time.Now()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				c := loadtest.SelfCPU()
				st := srv.Stats()
				log.Info("load tool", "cores", (c-last).Seconds()/now.Sub(at).Seconds(), "events", st.Emitted,
					"delivered", st.Delivered, "live_channels", len(srv.LiveChannels()))
				last, at = c, now
			}
		}
	}()
	return cancel
}

func writeReport(rep loadtest.Report, md, js string) error {
	f, err := os.Create(md)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := rep.WriteMarkdown(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", md, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", md, err)
	}
	g, err := os.Create(js)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := rep.WriteJSON(g); err != nil {
		g.Close()
		return fmt.Errorf("write %s: %w", js, err)
	}
	return g.Close()
}

// parseRates reads "500,1000,2000"; "" is no rate.
func parseRates(s string) ([]float64, error) {
	var out []float64
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(s, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(part), 64)
		if err != nil || x <= 0 {
			return nil, fmt.Errorf("-steps: %q is not a positive rate", part)
		}
		out = append(out, x)
	}
	return out, nil
}

// parseWeights reads "a=3,b=1" (a bare name weighs 1).
func parseWeights(s string) ([]string, []float64, error) {
	var names []string
	var ws []float64
	for _, part := range strings.Split(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			w = "1"
		}
		x, err := strconv.ParseFloat(w, 64)
		if err != nil || x < 0 || name == "" {
			return nil, nil, fmt.Errorf("-projects: %q is not name or name=weight", part)
		}
		names, ws = append(names, name), append(ws, x)
	}
	return names, ws, nil
}
