package loadtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Hotspot is one symbol of a CPU profile and its share of the samples.
type Hotspot struct {
	Percent float64 `json:"percent"`
	Symbol  string  `json:"symbol"`
}

// PerfProfile samples a process with `perf record` for d and returns its
// top symbols (self time). It needs perf and perf_event_paranoid ≤ 2.
func PerfProfile(ctx context.Context, pid int, d time.Duration, dir string, top int) ([]Hotspot, error) {
	out := filepath.Join(dir, "perf-"+strconv.Itoa(pid)+".data")
	rec := exec.CommandContext(ctx, "perf", "record", "--all-user", "-F", "499", "-p", strconv.Itoa(pid), "-o", out, "--", "sleep", strconv.Itoa(int(d.Seconds())))
	if b, err := rec.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("perf record: %w: %s", err, bytes.TrimSpace(b))
	}
	rep := exec.CommandContext(ctx, "perf", "report", "-i", out, "--stdio", "--no-children", "--sort", "symbol")
	b, err := rep.Output()
	if err != nil {
		return nil, fmt.Errorf("perf report: %w", err)
	}
	return parsePerf(b, top), nil
}

// ByPackage sums the shares of hs by Go package (symbols without a
// package, like memmove's assembly helpers or the vDSO, go to "(other)").
func ByPackage(hs []Hotspot) []Hotspot {
	sum := map[string]float64{}
	for _, h := range hs {
		sum[pkgOf(h.Symbol)] += h.Percent
	}
	out := make([]Hotspot, 0, len(sum))
	for k, v := range sum {
		out = append(out, Hotspot{Percent: v, Symbol: k})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Percent > out[j].Percent || out[i].Percent == out[j].Percent && out[i].Symbol < out[j].Symbol
	})
	return out
}

func pkgOf(sym string) string {
	slash := strings.LastIndexByte(sym, '/')
	dot := strings.IndexByte(sym[slash+1:], '.')
	if dot <= 0 || strings.HasPrefix(sym, "0x") { // no package before the first dot
		return "(other)"
	}
	return strings.ReplaceAll(sym[:slash+1+dot], "%2e", ".")
}

// parsePerf reads `perf report --stdio --sort symbol` lines like
// "    12.34%  [.] runtime.mallocgc".
func parsePerf(b []byte, top int) []Hotspot {
	var hs []Hotspot
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && (top <= 0 || len(hs) < top) {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		pct, rest, ok := strings.Cut(line, "%")
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
		if err != nil {
			continue
		}
		rest = strings.TrimSpace(rest)
		if i := strings.Index(rest, "] "); i >= 0 {
			rest = strings.TrimSpace(rest[i+2:])
		}
		rest = strings.TrimSpace(strings.TrimRight(rest, "- "))
		if rest == "" {
			continue
		}
		hs = append(hs, Hotspot{Percent: x, Symbol: rest})
	}
	return hs
}
