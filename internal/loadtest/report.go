package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// ReportOptions configure RunReport.
type ReportOptions struct {
	Command      string        // the command line that produced the report
	Binary       string        // minuted executable (empty: go build)
	Steps        []float64     // rates stepped up, calls/s
	StepDuration time.Duration // arrivals per step (60s)
	LowRate      float64       // an extra latency run (100 calls/s)
	MinTalk      time.Duration
	MaxTalk      time.Duration
	LiveCalls    int // 0 skips the live-calls run
	LiveRamp     float64
	LiveWindow   time.Duration
	Profile      bool    // perf-profile ingest and bill at ProfileRate
	ProfileRate  float64 // default 2000
	Micro        bool    // run the micro-benchmarks (go test -bench)
	Seed         uint64
	// GoMemLimit is the GOMEMLIMIT of ingest and bill ("": Go's default,
	// no limit).
	GoMemLimit string
	Log        func(format string, args ...any)
}

// Report is everything the benchmark measured (docs/benchmarks.json).
type Report struct {
	Command    string               `json:"command"`
	Started    time.Time            `json:"started"`
	Machine    Machine              `json:"machine"`
	Baseline   Baseline             `json:"baseline"`
	Steps      []StepResult         `json:"steps"`
	LowRate    *StepResult          `json:"low_rate,omitempty"`
	MaxRate    float64              `json:"max_sustained_rate"`
	Headline   *StepResult          `json:"headline,omitempty"` // the step the per-call figures come from
	Ratio      float64              `json:"minuted_over_baseline"`
	Live       *LiveResult          `json:"live,omitempty"`
	Profile    map[string][]Hotspot `json:"profile,omitempty"`
	ProfileErr string               `json:"profile_error,omitempty"`
	Micro      []Micro              `json:"micro,omitempty"`
	Targets    []Target             `json:"targets"`
}

// Machine describes where the report was measured.
type Machine struct {
	CPUs       int    `json:"cpus"`
	Model      string `json:"cpu_model"`
	Go         string `json:"go"`
	NATS       string `json:"nats_server"`
	Redis      string `json:"redis_server"`
	LoadBefore string `json:"loadavg_before"`
	LoadAfter  string `json:"loadavg_after"`
	RedisFsync string `json:"redis_appendfsync"`
	// GoMemLimit is the GOMEMLIMIT ingest and bill ran with ("": none).
	GoMemLimit string `json:"gomemlimit,omitempty"`
}

// Micro is one micro-benchmark line.
type Micro struct {
	Name     string  `json:"name"`
	NsOp     float64 `json:"ns_op"`
	BytesOp  float64 `json:"bytes_op"`
	AllocsOp float64 `json:"allocs_op"`
	Extra    string  `json:"extra,omitempty"`
}

// Target is one goal of issue 7 and whether it is met.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// RunReport stands the stack up, measures everything and returns the report.
func RunReport(ctx context.Context, o ReportOptions) (rep Report, err error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	rep = Report{Command: o.Command, Started: time.Now().UTC()}
	rep.Machine = Machine{CPUs: runtime.NumCPU(), Model: cpuModel(), Go: runtime.Version(), LoadBefore: loadavg(),
		Redis: versionOf("redis-server", "--version"), RedisFsync: "everysec", GoMemLimit: o.GoMemLimit}
	so := StackOptions{Binary: o.Binary, RedisFsync: "everysec"}
	if o.GoMemLimit != "" {
		so.Env = []string{"GOMEMLIMIT=" + o.GoMemLimit}
	}
	st, err := Start(ctx, so)
	if err != nil {
		return rep, err
	}
	defer func() {
		if st == nil {
			return
		}
		if cerr := st.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	rep.Machine.NATS = versionOf(st.NATS.cmd.Path, "--version")
	projects := []string{"bench-a", "bench-b", "bench-c", "bench-d"}
	weights := []float64{4, 3, 2, 1}
	if err := st.SetupProjects(ctx, Tariff6060, projects...); err != nil {
		return rep, err
	}
	logf("baseline: timing the raw operations")
	if rep.Baseline, err = st.MeasureBaseline(ctx, 1); err != nil {
		return rep, err
	}
	step := func(rate float64, d time.Duration) (StepResult, error) {
		logf("step: %.0f calls/s for %s", rate, d)
		r, err := st.RunStep(ctx, StepOptions{Tariff: Tariff6060, Load: Load{
			Rate: rate, Duration: d, MinTalk: o.MinTalk, MaxTalk: o.MaxTalk,
			Projects: projects, ProjectWeights: weights, Seed: o.Seed + uint64(rate),
		}})
		r.Drive.Truth = nil
		if err == nil {
			logf("  settled %d/%d lost %d wrong %d, p50 %.1f p99 %.1f p99.9 %.1f ms, minuted %.3f core-ms/call, load tool %.2f cores, sustained %v %s",
				r.Settled, r.Answered, r.Lost, r.Wrong, r.P50MS, r.P99MS, r.P999MS, r.CoreMSPerCall, r.Usage.Cores("load"), r.Sustained, r.Note)
		}
		return r, err
	}
	if o.LowRate > 0 {
		r, err := step(o.LowRate, min(o.StepDuration, 30*time.Second))
		if err != nil {
			return rep, err
		}
		rep.LowRate = &r
	}
	for _, rate := range o.Steps {
		r, err := step(rate, o.StepDuration)
		if err != nil {
			return rep, err
		}
		rep.Steps = append(rep.Steps, r)
		if !r.Sustained {
			break
		}
		rep.MaxRate = rate
	}
	for i := range rep.Steps {
		if s := &rep.Steps[i]; s.Sustained && s.Rate <= 2000 {
			rep.Headline = s
		}
	}
	if rep.Headline != nil && rep.Baseline.PerCallUS > 0 {
		rep.Ratio = rep.Headline.CoreMSPerCall * 1000 / rep.Baseline.PerCallUS
	}
	if o.Profile {
		rate := o.ProfileRate
		if rate <= 0 {
			rate = 2000
		}
		rep.Profile, err = st.profile(ctx, rate, o, projects, weights, logf)
		if err != nil {
			rep.ProfileErr = err.Error()
			logf("profile: %v", err)
		}
	}
	if o.LiveCalls > 0 {
		// A fresh stack: the memory of 100,000 live calls, not what the
		// rate steps' backlogs left behind in ingest and bill.
		if len(o.Steps) > 0 || o.LowRate > 0 || o.Profile {
			logf("live: restarting the stack")
			old := st
			st = nil
			if err := old.Close(); err != nil {
				return rep, err
			}
			fresh, err := Start(ctx, so) // closed by Start itself on failure
			if err != nil {
				return rep, err
			}
			st = fresh
			if err := st.SetupProjects(ctx, Tariff6060, projects...); err != nil {
				return rep, err
			}
		}
		l, err := st.RunLive(ctx, LiveOptions{Calls: o.LiveCalls, Ramp: o.LiveRamp, Window: o.LiveWindow, Projects: projects, Seed: o.Seed, Progress: logf})
		if err != nil {
			return rep, err
		}
		rep.Live = &l
		logf("  live: minuted %.3f cores, RSS ingest %d MB bill %d MB, blocks %d of %.0f due",
			l.MinutedCores, l.MaxRSS["ingest"]>>20, l.MaxRSS["bill"]>>20, l.Blocks, l.BlocksDue)
	}
	if o.Micro {
		logf("micro-benchmarks: go test -bench")
		if rep.Micro, err = RunMicro(ctx); err != nil {
			return rep, err
		}
	}
	rep.Machine.LoadAfter = loadavg()
	rep.Targets = targets(rep)
	return rep, nil
}

// profile runs a 20 s load at rate and perf-samples ingest and bill.
func (s *Stack) profile(ctx context.Context, rate float64, o ReportOptions, projects []string, weights []float64, logf func(string, ...any)) (map[string][]Hotspot, error) {
	if _, err := exec.LookPath("perf"); err != nil {
		return nil, fmt.Errorf("perf is not installed: %w", err)
	}
	logf("profile: %.0f calls/s, perf on ingest and bill", rate)
	type res struct {
		name string
		hs   []Hotspot
		err  error
	}
	out := make(chan res, 2)
	for _, p := range []*Proc{s.Ingest, s.Bill} {
		go func() {
			time.Sleep(3 * time.Second)
			hs, err := PerfProfile(ctx, p.Pid, 15*time.Second, s.dir, 0)
			out <- res{p.Name, hs, err}
		}()
	}
	_, err := s.RunStep(ctx, StepOptions{Tariff: Tariff6060, Load: Load{Rate: rate, Duration: 20 * time.Second,
		MinTalk: o.MinTalk, MaxTalk: o.MaxTalk, Projects: projects, ProjectWeights: weights, Seed: o.Seed + 99}})
	prof := map[string][]Hotspot{}
	for range 2 {
		r := <-out
		if r.err != nil {
			return prof, fmt.Errorf("%s: %w", r.name, r.err)
		}
		prof[r.name] = r.hs
	}
	return prof, err
}

// RunMicro runs this package's micro-benchmarks with -benchmem.
func RunMicro(ctx context.Context) ([]Micro, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", ".", "-benchmem", "-benchtime", "1s", "github.com/minuted/minuted/internal/loadtest")
	b, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w: %s", err, b)
	}
	return ParseBench(b), nil
}

// ParseBench reads `go test -bench -benchmem` output lines.
func ParseBench(b []byte) []Micro {
	var ms []Micro
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		m := Micro{Name: strings.TrimPrefix(f[0], "Benchmark")}
		if i := strings.LastIndexByte(m.Name, '-'); i > 0 {
			m.Name = m.Name[:i]
		}
		var extra []string
		for i := 2; i+1 < len(f); i += 2 {
			x, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			switch f[i+1] {
			case "ns/op":
				m.NsOp = x
			case "B/op":
				m.BytesOp = x
			case "allocs/op":
				m.AllocsOp = x
			default:
				extra = append(extra, f[i]+" "+f[i+1])
			}
		}
		m.Extra = strings.Join(extra, ", ")
		ms = append(ms, m)
	}
	return ms
}

func targets(r Report) []Target {
	var ts []Target
	if h := r.Headline; h != nil {
		ts = append(ts,
			Target{"CPU per settled call vs baseline", "≤ 2× baseline", fmt.Sprintf("%.2f× (%.3f core-ms vs %.3f, at %.0f calls/s)", r.Ratio, h.CoreMSPerCall, r.Baseline.PerCallUS/1000, h.Rate), r.Ratio > 0 && r.Ratio <= 2},
			Target{"CPU per settled call", "≤ 0.5 core-ms", fmt.Sprintf("%.3f core-ms (%.0f calls/s per core)", h.CoreMSPerCall, h.CallsPerCore), h.CoreMSPerCall <= 0.5})
	} else {
		ts = append(ts, Target{"CPU per settled call", "≤ 2× baseline, ≤ 0.5 core-ms", "no sustained step", false})
	}
	ts = append(ts, Target{"sustained rate, 60 s, zero loss", "≥ 2,000 calls/s (or proof of the bound)", fmt.Sprintf("%.0f calls/s", r.MaxRate), r.MaxRate >= 2000})
	for _, s := range r.Steps {
		if s.Rate == 500 {
			ts = append(ts, Target{"p99 hangup → balance at 500 calls/s", "≤ 25 ms", fmt.Sprintf("%.1f ms", s.P99MS), s.P99MS <= 25 && s.Lost == 0})
		}
	}
	if l := r.Live; l != nil {
		rss := l.MaxRSS["ingest"] + l.MaxRSS["bill"]
		ts = append(ts,
			Target{fmt.Sprintf("%d live calls: RSS of minuted", l.Calls), "≤ 300 MB", fmt.Sprintf("%d MB (ingest %d + bill %d)", rss>>20, l.MaxRSS["ingest"]>>20, l.MaxRSS["bill"]>>20), rss <= 300<<20},
			Target{fmt.Sprintf("%d live calls: average CPU of minuted", l.Calls), "≤ 0.25 core", fmt.Sprintf("%.3f core", l.MinutedCores), l.MinutedCores <= 0.25})
	}
	return ts
}

// WriteJSON writes the report as indented JSON.
func (r Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
