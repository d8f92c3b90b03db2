package loadtest

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "**no**"
}

// WriteMarkdown writes the human report (docs/benchmarks.md).
func (r Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	m := r.Machine
	p("# minuted benchmarks")
	p("")
	p("Produced by `%s` on %s (UTC). Raw figures: [benchmarks.json](benchmarks.json).", r.Command, r.Started.Format("2006-01-02 15:04"))
	p("")
	p("Machine: %d × %s, %s, %s, %s (AOF, appendfsync %s). Load average before %s, after %s — the machine is shared, so figures move between runs.",
		m.CPUs, m.Model, m.Go, m.NATS, m.Redis, m.RedisFsync, m.LoadBefore, m.LoadAfter)
	if m.GoMemLimit != "" {
		p("")
		p("ingest and bill ran with `GOMEMLIMIT=%s` (Go's soft memory limit: the collector runs more often as the heap nears it, instead of letting the heap grow to twice what is live).", m.GoMemLimit)
	}
	p("")
	p("Pipeline, every part on this machine: the ARI double (in the harness process, the *load tool*) → `minuted ingest` and `minuted bill` (separate processes, `go build`, no -race) → nats-server (JetStream, file storage) → redis-server. Calls are the recorded single-leg answered call (%d ARI events) with talk times uniform in the step's range, over 4 projects weighted 4:3:2:1, tariff 60/60 (a 60 s block at answer, one more per minute). CPU is user+sys from /proc/<pid>/stat (the load tool: getrusage).", r.Baseline.EventsPerCall)
	p("")
	p("## Targets (issue 7)")
	p("")
	p("| target | want | measured | met |")
	p("|---|---|---|---|")
	for _, t := range r.Targets {
		p("| %s | %s | %s | %s |", t.Name, t.Want, t.Got, yes(t.Met))
	}
	p("")
	bl := r.Baseline
	p("## Baseline: the unavoidable parts of one call, timed raw in the same run")
	p("")
	p("Client CPU is this process's CPU per operation (what minuted's own CPU compares with); server CPU is nats-server's or redis-server's; wall is per operation at the throughput reached.")
	p("")
	p("| part | per call | client CPU µs/op | server CPU µs/op | wall µs/op | ops/s | client µs per call |")
	p("|---|---|---|---|---|---|---|")
	row := func(name string, o Op) {
		p("| %s | %.0f | %.2f | %.2f | %.2f | %.0f | %.1f |", name, o.PerCall, o.ClientUS, o.ServerUS, o.WallUS, o.PerSec, o.CallClientUS)
	}
	row("decode ARI event: encoding/json into a minimal struct (**baseline**)", bl.DecodeMinimal)
	row("decode ARI event: ari/v6 DecodeEvent (reference)", bl.DecodeUpstream)
	row("JetStream PublishAsync with Msg-Id (file stream)", bl.Publish)
	row("JetStream pull Fetch(256) + Ack", bl.FetchAck)
	row("EVALSHA of a 4-write script (HINCRBY, HSET, XADD, ZADD), 16 clients", bl.Script)
	p("")
	p("Baseline per call: **%.3f core-ms** (%.3f with ari/v6 decoding); sum of wall times per op %.3f ms.", bl.PerCallUS/1000, bl.PerCallUpstreamUS/1000, bl.PerCallWallUS/1000)
	p("")
	p("## Rate steps (arrivals for the stated time, each step on the same stack)")
	p("")
	p("Latency is hangup → balance: from the double emitting the billed channel's ChannelDestroyed (the moment the generator has handed it and the call's last events to the websocket writer; how late the generator itself ran behind the calls' schedule is *gen lag*) to the call's CDR arriving on `minuted.cdr.>` (core NATS subscription in the harness). bill publishes the CDR after the settlement script has committed in Redis, so this bounds the time until the balance is visible from above. *Sustained*: the load tool kept the rate (≥ 97%%), every answered call settled once with the exact amount, every project's balance fell by exactly Σ billed, and the last CDR came ≤ 5 s after the last hangup.")
	p("")
	p("| calls/s | s | answered | settled | lost | wrong | balances | p50 ms | p99 ms | p99.9 ms | max ms | drain ms | gen lag p99 ms | minuted core-ms/call | calls/s per core | ingest cores | bill cores | nats cores | redis cores | load tool cores | sustained |")
	p("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	steps := r.Steps
	if r.LowRate != nil {
		steps = append([]StepResult{*r.LowRate}, steps...)
	}
	for _, s := range steps {
		u := s.Usage
		p("| %.0f | %.0f | %d | %d | %d | %d | %s | %.1f | %.1f | %.1f | %.1f | %.0f | %.1f | %.3f | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %s |",
			s.Rate, s.Seconds, s.Answered, s.Settled, s.Lost, s.Wrong, map[bool]string{true: "exact", false: "**off**"}[s.BalanceOK],
			s.P50MS, s.P99MS, s.P999MS, s.MaxMS, s.DrainMS, s.Drive.LagP99MS, s.CoreMSPerCall, s.CallsPerCore,
			u.Cores("ingest"), u.Cores("bill"), u.Cores("nats-server"), u.Cores("redis-server"), u.Cores("load"), yes(s.Sustained))
	}
	p("")
	for _, s := range steps {
		if s.Note != "" {
			p("- %.0f calls/s: %s", s.Rate, strings.TrimSuffix(s.Note, "; "))
		}
	}
	p("")
	p("Highest rate sustained: **%.0f calls/s**.", r.MaxRate)
	if n := len(r.Steps); n > 0 && !r.Steps[n-1].Sustained {
		s := r.Steps[n-1]
		u := s.Usage
		total := 0.0
		for _, c := range u.CPU {
			total += c.Seconds()
		}
		total /= u.Wall.Seconds()
		p("At %.0f calls/s the machine's %d cores were %.0f%% busy with the pipeline: minuted %.2f cores (ingest %.2f, bill %.2f), nats-server %.2f, redis-server %.2f, load tool %.2f.",
			s.Rate, m.CPUs, 100*total/float64(m.CPUs), u.Cores("ingest")+u.Cores("bill"), u.Cores("ingest"), u.Cores("bill"), u.Cores("nats-server"), u.Cores("redis-server"), u.Cores("load"))
	}
	if r.Headline != nil {
		p("")
		p("Per-call figures are taken from the %.0f calls/s step: minuted %.3f core-ms per settled call = %.0f calls/s per core; %.2f× the baseline.", r.Headline.Rate, r.Headline.CoreMSPerCall, r.Headline.CallsPerCore, r.Ratio)
	}
	if l := r.Live; l != nil {
		p("")
		p("## %d concurrent live calls ticking every minute", l.Calls)
		p("")
		p("On a stack of its own (ingest and bill freshly started, not those of the rate steps). Ramp at %.0f calls/s (%.0f s planned, %.0f s taken), then a %.0f s window; live calls in the double at its start %d, at its end %d (calls last longer than the run).",
			l.Ramp, l.RampSeconds, l.RampTaken, l.Usage.Wall.Seconds(), l.LiveStart, l.LiveEnd)
		p("")
		p("| process | avg cores | RSS end MB | RSS max MB |")
		p("|---|---|---|---|")
		for _, n := range []string{"ingest", "bill"} {
			p("| minuted %s | %.3f | %d | %d |", n, l.Usage.Cores(n), l.RSS[n]>>20, l.MaxRSS[n]>>20)
		}
		p("| nats-server | %.3f | | |", l.Usage.Cores("nats-server"))
		p("| redis-server | %.3f | | |", l.Usage.Cores("redis-server"))
		p("| load tool | %.3f | %d | |", l.Usage.Cores("load"), l.RSS["load"]>>20)
		p("")
		p("Blocks debited in the window: %d (one per call per minute: %.0f due).", l.Blocks, l.BlocksDue)
	}
	if len(r.Profile) > 0 || r.ProfileErr != "" {
		p("")
		p("## Where minuted's CPU goes (perf, self time, 15 s at the profile rate)")
		p("")
		if r.ProfileErr != "" {
			p("Profile incomplete: %s", r.ProfileErr)
		}
		names := make([]string, 0, len(r.Profile))
		for n := range r.Profile {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			p("**%s**, by package: ", n)
			for i, h := range ByPackage(r.Profile[n]) {
				if i == 12 {
					break
				}
				p("- %.1f%% `%s`", h.Percent, h.Symbol)
			}
			p("")
			p("**%s**, top functions: ", n)
			for i, h := range r.Profile[n] {
				if i == 15 {
					break
				}
				p("- %.1f%% `%s`", h.Percent, h.Symbol)
			}
			p("")
		}
	}
	if len(r.Micro) > 0 {
		p("")
		p("## Micro-benchmarks (`go test -bench . -benchmem ./internal/loadtest`)")
		p("")
		p("| benchmark | ns/op | B/op | allocs/op | other |")
		p("|---|---|---|---|---|")
		for _, mb := range r.Micro {
			p("| %s | %.1f | %.0f | %.0f | %s |", mb.Name, mb.NsOp, mb.BytesOp, mb.AllocsOp, mb.Extra)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
