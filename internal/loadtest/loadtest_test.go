package loadtest

import (
	"context"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func needEngines(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"redis-server", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	if _, err := exec.LookPath("/usr/sbin/nats-server"); err != nil {
		if _, err := exec.LookPath("nats-server"); err != nil {
			t.Skip("nats-server not installed")
		}
	}
}

// TestSmoke runs the whole pipeline at a low rate for a few seconds: every
// answered call is settled exactly once with the right amount, balances
// add up, and the CPU figures are measured.
func TestSmoke(t *testing.T) {
	needEngines(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	st, err := Start(ctx, StackOptions{Dir: t.TempDir(), SnapshotInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	}()
	b, err := st.MeasureBaseline(ctx, 0.05)
	if err != nil {
		t.Fatal(err)
	}
	checkBaseline(t, b)
	projects := []string{"load-a", "load-b"}
	if err := st.SetupProjects(ctx, Tariff6060, projects...); err != nil {
		t.Fatal(err)
	}
	r, err := st.RunStep(ctx, StepOptions{Tariff: Tariff6060, Drain: 15 * time.Second, Load: Load{
		Rate: 40, Duration: 3 * time.Second, MinTalk: 200 * time.Millisecond, MaxTalk: 1500 * time.Millisecond,
		Projects: projects, ProjectWeights: []float64{3, 1}, Seed: 7,
	}})
	if err != nil {
		t.Fatal(err)
	}
	r.Drive.Truth = nil
	t.Logf("%+v", r)
	if r.Answered != 120 || r.Settled != r.Answered || r.Lost != 0 || r.Wrong != 0 || r.Dups != 0 || !r.BalanceOK {
		t.Fatalf("step: answered %d settled %d lost %d wrong %d dups %d balance ok %v (%s)\ningest: %s\nbill: %s",
			r.Answered, r.Settled, r.Lost, r.Wrong, r.Dups, r.BalanceOK, r.Note, st.Logs("ingest"), st.Logs("bill"))
	}
	if r.CoreMSPerCall <= 0 || r.Usage.CPU["nats-server"] <= 0 || r.Drive.Events < 29*120 {
		t.Errorf("no CPU measured: %+v, events %d", r.Usage, r.Drive.Events)
	}
	if r.P50MS <= 0 || r.P99MS < r.P50MS || r.P99MS > 5000 {
		t.Errorf("latency p50 %.1f ms p99 %.1f ms", r.P50MS, r.P99MS)
	}
}

// checkBaseline: every raw cost is measured and the sum is what the parts say.
func checkBaseline(t *testing.T, b Baseline) {
	t.Helper()
	t.Logf("%+v", b)
	if b.EventsPerCall < 20 {
		t.Errorf("%d events per recorded call", b.EventsPerCall)
	}
	for name, op := range map[string]Op{"decode": b.DecodeMinimal, "upstream": b.DecodeUpstream, "publish": b.Publish, "fetch": b.FetchAck, "script": b.Script} {
		if op.WallUS <= 0 || op.PerSec <= 0 || op.N < 100 || op.CallClientUS <= 0 {
			t.Errorf("%s: %+v", name, op)
		}
	}
	sum := b.DecodeMinimal.CallClientUS + b.Publish.CallClientUS + b.FetchAck.CallClientUS + b.Script.CallClientUS
	// The sum is computed in another order: compare within a rounding error.
	if math.Abs(b.PerCallUS-sum) > 1e-6*sum || b.PerCallUS <= 0 {
		t.Errorf("per call %.1f µs, parts sum to %.1f", b.PerCallUS, sum)
	}
}

func TestParsePerfAndPackages(t *testing.T) {
	out := []byte("# comment\n\n     4.10%  [.] runtime.memmove                -      -\n     2.00%  [.] github.com/nats-io/nats%2ego.(*Conn).processMsg   -   -\n" +
		"     1.50%  [.] runtime.mallocgc\n     1.00%  [.] encoding/json.checkValid\n     0.50%  [.] memeqbody\nnot a line\n")
	hs := parsePerf(out, 0)
	if len(hs) != 5 || hs[0] != (Hotspot{4.1, "runtime.memmove"}) || hs[1].Symbol != "github.com/nats-io/nats%2ego.(*Conn).processMsg" {
		t.Fatalf("parsePerf: %+v", hs)
	}
	if top := parsePerf(out, 2); len(top) != 2 {
		t.Errorf("top 2: %+v", top)
	}
	pk := ByPackage(hs)
	want := []Hotspot{{5.6, "runtime"}, {2, "github.com/nats-io/nats.go"}, {1, "encoding/json"}, {0.5, "(other)"}}
	if len(pk) != len(want) {
		t.Fatalf("ByPackage: %+v", pk)
	}
	for i := range want {
		if pk[i].Symbol != want[i].Symbol || pk[i].Percent-want[i].Percent > 1e-9 || want[i].Percent-pk[i].Percent > 1e-9 {
			t.Errorf("ByPackage[%d] = %+v, want %+v", i, pk[i], want[i])
		}
	}
}

func TestParseBench(t *testing.T) {
	out := []byte("goos: linux\nBenchmarkEventDecode-2   \t  10000\t     77094 ns/op\t    1258 B/op\t      26 allocs/op\n" +
		"BenchmarkTrackerHandle-2 \t 340358\t      2045 ns/op\t         3.000 msgs/call\t      75 B/op\t       0 allocs/op\nPASS\n")
	ms := ParseBench(out)
	if len(ms) != 2 || ms[0] != (Micro{Name: "EventDecode", NsOp: 77094, BytesOp: 1258, AllocsOp: 26}) ||
		ms[1].Name != "TrackerHandle" || ms[1].Extra != "3.000 msgs/call" || ms[1].BytesOp != 75 {
		t.Fatalf("ParseBench: %+v", ms)
	}
}

func FuzzParsePerf(f *testing.F) {
	f.Add([]byte("     4.10%  [.] runtime.memmove   -   -\n"))
	f.Add([]byte("%%%] \n0x1234\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, h := range ByPackage(parsePerf(b, 0)) {
			if h.Symbol == "" {
				t.Fatalf("empty package from %q", b)
			}
		}
	})
}

func FuzzParseBench(f *testing.F) {
	f.Add([]byte("BenchmarkX-2 10 5 ns/op 3 B/op 1 allocs/op\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, m := range ParseBench(b) {
			if m.Name == "" && !strings.HasPrefix(string(b), "Benchmark") {
				t.Fatalf("bench without a name from %q", b)
			}
		}
	})
}
