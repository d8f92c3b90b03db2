package loadtest

import (
	"context"
	"os/exec"
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
	if b.PerCallUS != sum || b.PerCallUS <= 0 {
		t.Errorf("per call %.1f µs, parts sum to %.1f", b.PerCallUS, sum)
	}
}
