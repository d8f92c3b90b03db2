package bill

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

// liveCalls makes a Biller tick n answered calls of one node, as if each
// had been opened in the ledger (every string fresh, as a Redis reply or a
// decoded message gives it), and has it observe the node's snapshot that
// lists them all: the state bill keeps per live call.
func liveCalls(tb testing.TB, n int) *Biller {
	tb.Helper()
	at := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)
	b := New(Options{Now: func() time.Time { return at }}, nil, nil, nil)
	projects := [...]string{"acme", "globex", "initech", "umbrella"}
	snap := call.Snapshot{Schema: call.Schema, Node: "pbx-1", At: at, Connected: true, Calls: make([]call.LiveCall, 0, n)}
	for k := range n {
		answered := at.Add(-time.Duration(k) * time.Millisecond)
		c := ledger.Call{
			Project: strings.Clone(projects[k%len(projects)]), Node: strings.Clone(snap.Node),
			Channel: fmt.Sprintf("1796%06d.%d", k, k%100), AnsweredAt: answered, Tariff: tariff.Default, NextBlock: 1,
		}
		if !b.schedule(c) {
			tb.Fatalf("call %s scheduled twice", c.Key())
		}
		snap.Calls = append(snap.Calls, call.LiveCall{Channel: c.Channel, Project: c.Project, AnsweredAt: &answered})
	}
	data, err := json.Marshal(snap)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := DecodeSnapshot(data)
	if err != nil {
		tb.Fatal(err)
	}
	b.orph.Observe(s, at)
	if got := b.sched.Len(); got != n {
		tb.Fatalf("%d calls scheduled, want %d", got, n)
	}
	if got := len(b.orph.nodes[snap.Node].listed); got != n {
		tb.Fatalf("the admitted snapshot lists %d calls, want %d", got, n)
	}
	return b
}

// liveCallBytes is the heap a Biller holds per live call it ticks.
func liveCallBytes(tb testing.TB, n int) float64 {
	return testutil.HeapPer(n, func() any { return liveCalls(tb, n) })
}

// BenchmarkLiveCalls reports the heap held per live call (B/live-call) by
// a Biller ticking 100,000 calls (docs/benchmarks.md: 100,000 live calls
// within 300 MB RSS for all of minuted).
func BenchmarkLiveCalls(b *testing.B) {
	const n = 100_000
	var per float64
	for range b.N {
		per = liveCallBytes(b, n)
	}
	b.ReportMetric(per, "B/live-call")
}

// TestLiveCallMemory keeps bill's memory per live call small: its
// scheduler entry and what the orphan judge remembers of the node's
// snapshots.
func TestLiveCallMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("schedules 20,000 calls")
	}
	per := liveCallBytes(t, 20_000)
	t.Logf("%.0f heap bytes per live call", per)
	const limit = 350 // 261 measured (go1.26); 448 with time.Time fields and an inline tariff
	if per > limit {
		t.Errorf("a live call holds %.0f bytes of heap in bill, want at most %d", per, limit)
	}
}

// TestEntrySize keeps the scheduler entry within its 80-byte size class:
// one more field takes every live call to the next (96).
func TestEntrySize(t *testing.T) {
	if size := unsafe.Sizeof(entry{}); size > 80 {
		t.Errorf("a scheduler entry takes %d bytes, want at most 80", size)
	}
}
