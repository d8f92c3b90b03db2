package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/minuted/minuted/internal/dashboard"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
)

// Scale of the issue: 500 projects, 5,000 live calls.
const (
	scaleProjects = 500
	scaleCalls    = 10 // per project
)

// scaleFixture fills the ledger: every project topped up, its calls open
// and each debited its first 60 s block (in the burn window). Redis does
// not fsync here: the figures are the dashboard's reads.
func scaleFixture(tb testing.TB) *fixture {
	tb.Helper()
	f := newFixture(tb, nil, "--appendfsync", "no")
	ctx := context.Background()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	tr := tariff.Tariff{MinimumSeconds: 60, IncrementSeconds: 60}
	for p := range scaleProjects {
		g.Go(func() error {
			id := fmt.Sprintf("proj-%03d", p)
			if _, _, err := f.led.Put(gctx, id, ledger.Settings{Tariff: tr, ThresholdsMinutes: []float64{60, 10}}); err != nil {
				return err
			}
			if _, err := f.led.TopUp(gctx, id, int64(3600+p*60), "initial", ledger.KindTopUp); err != nil {
				return err
			}
			for c := range scaleCalls {
				ch := fmt.Sprint("chan-", c)
				call, err := f.led.Open(gctx, ledger.Open{Project: id, Node: "pbx", Channel: ch, AnsweredAt: f.clk.Now()})
				if err != nil {
					return err
				}
				if _, err := f.led.Debit(gctx, id, "pbx", ch, call.Tariff.Block(0)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
	return f
}

// timedGet GETs path with the token, decodes it, and returns the duration
// and the body size.
func timedGet(tb testing.TB, f *fixture, path string, out any) (time.Duration, int) {
	tb.Helper()
	start := time.Now()
	code, b, _ := f.do(tb, "GET", path, token)
	d := time.Since(start)
	if code != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", path, code, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		tb.Fatal(err)
	}
	return d, len(b)
}

// TestScale measures the overview endpoint at 500 projects and 5,000 live
// calls: cold (every burn rate measured: one bounded entries read per
// project, 16 at a time) and warm (one pipelined read of all balances), and
// a project page. The bounds are loose (a loaded CI machine, -race); the
// figures are logged.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a ledger with 5,000 calls")
	}
	f := scaleFixture(t)
	f.clk.Advance(time.Minute)
	var ov dashboard.Overview
	cold, size := timedGet(t, f, "/ui/api/overview", &ov)
	if len(ov.Projects) != scaleProjects || ov.Totals.LiveCalls != scaleProjects*scaleCalls {
		t.Fatalf("%d projects, %d live calls", len(ov.Projects), ov.Totals.LiveCalls)
	}
	// 10 calls × 60 s over 15 min = 40 min/h each; the smallest balance
	// runs dry first.
	first := ov.Projects[0]
	if first.ID != "proj-000" || first.BurnMinutesPerHour != 40 || first.TimeToEmptySeconds == nil {
		t.Errorf("first row %+v", first)
	}
	f.clk.Advance(time.Second)
	warm, _ := timedGet(t, f, "/ui/api/overview", &ov)
	var pv dashboard.ProjectView
	page, _ := timedGet(t, f, "/ui/api/projects/proj-250?range=week", &pv)
	if len(pv.Calls) != scaleCalls {
		t.Errorf("project page: %d calls", len(pv.Calls))
	}
	t.Logf("overview of %d projects / %d live calls: cold %v, warm %v, %d KiB; project page (week) %v",
		scaleProjects, scaleProjects*scaleCalls, cold, warm, size>>10, page)
	if cold > 10*time.Second || warm > 3*time.Second {
		t.Errorf("too slow: cold %v (bound 10s), warm %v (bound 3s)", cold, warm)
	}
}

// BenchmarkOverview: the overview endpoint at 500 projects / 5,000 live
// calls; warm reads balances only, cold measures every burn rate too.
func BenchmarkOverview(b *testing.B) {
	f := scaleFixture(b)
	for _, mode := range []struct {
		name string
		step time.Duration
	}{{"warm", time.Second}, {"cold", dashboard.DefaultBurnEvery}} {
		b.Run(mode.name, func(b *testing.B) {
			var ov dashboard.Overview
			for b.Loop() {
				f.clk.Advance(mode.step)
				timedGet(b, f, "/ui/api/overview", &ov)
			}
		})
	}
}
