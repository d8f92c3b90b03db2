package ingest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/testutil"
)

// liveCall renders the recorded answered call (sim.ShapeAnswered: a Local
// pair whose ;2 half is billed) as call k of many: fresh channel ids and
// Local sequence, and only the events up to the talk (the call stays up).
type liveCall struct {
	head [][]byte // the events until the call talks
	tail [][]byte // the hangup
}

func answeredTemplate(tb testing.TB) liveCall {
	tb.Helper()
	lines, err := sim.TraceEvents(sim.ShapeAnswered)
	if err != nil {
		tb.Fatal(err)
	}
	var c liveCall
	for _, l := range lines {
		if c.tail == nil && !bytes.Contains(l, []byte(`"app_name":"Hangup"`)) {
			c.head = append(c.head, l)
		} else {
			c.tail = append(c.tail, l)
		}
	}
	if len(c.head) == 0 || len(c.tail) == 0 {
		tb.Fatal("the answered trace has no hangup to cut at")
	}
	return c
}

// render returns call k's frames, each a fresh copy as the listener hands
// them over (so a tracker that keeps a frame alive is charged for it).
func render(frames [][]byte, k int) [][]byte {
	ids := []byte(fmt.Sprintf("1796%06d.", k))
	seq := []byte(fmt.Sprintf("gen-%08x;", k))
	out := make([][]byte, len(frames))
	for i, f := range frames {
		f = bytes.ReplaceAll(f, []byte("1795789839."), ids)
		out[i] = bytes.ReplaceAll(f, []byte("gen-00000006;"), seq)
	}
	return out
}

// feedLive applies calls [from, to) up to their talk; it returns how many
// messages the tracker emitted.
func feedLive(tb testing.TB, tr *Tracker, c liveCall, from, to int) int {
	n := 0
	for k := from; k < to; k++ {
		for _, f := range render(c.head, k) {
			ev, err := ari.Decode(f)
			if err != nil {
				tb.Fatal(err)
			}
			n += len(tr.Handle(ev))
		}
	}
	return n
}

var liveHeapProfile = flag.String("live-heapprofile", "", "write a heap profile with the live calls up to this file")

func writeHeapProfile(tb testing.TB, path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("heap").WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
}

// liveCallBytes is the heap the tracker holds per live answered call, with
// n calls up and a snapshot of them built.
func liveCallBytes(tb testing.TB, n int) float64 {
	c := answeredTemplate(tb)
	var tr *Tracker
	per := testutil.HeapPer(n, func() any {
		tr = NewTracker("", defaultAttr)
		if msgs := feedLive(tb, tr, c, 0, n); msgs != 2*n {
			tb.Fatalf("%d live calls gave %d messages, want started and answered of each", n, msgs)
		}
		return tr
	})
	if *liveHeapProfile != "" {
		writeHeapProfile(tb, *liveHeapProfile)
	}
	if got := len(tr.Snapshot(time.Unix(0, 0)).Calls); got != n {
		tb.Fatalf("snapshot lists %d calls, want %d", got, n)
	}
	return per
}

// BenchmarkLiveCalls reports the heap held per live call (B/live-call) by
// a tracker with 100,000 answered calls up (docs/benchmarks.md: 100,000
// live calls within 300 MB RSS for all of minuted).
func BenchmarkLiveCalls(b *testing.B) {
	const n = 100_000
	var per float64
	for range b.N {
		per = liveCallBytes(b, n)
	}
	b.ReportMetric(per, "B/live-call")
}

// TestLiveCallMemory keeps the tracker's memory per live call small: it
// holds what billing needs of each channel, not the frames it came in.
func TestLiveCallMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("feeds 20,000 calls")
	}
	per := liveCallBytes(t, 20_000)
	t.Logf("%.0f heap bytes per live call", per)
	const limit = 560 // 474 measured (go1.26); 761 with a 208-byte channel, 4,257 before the tracker kept frames out
	if per > limit {
		t.Errorf("a live call holds %.0f bytes of heap in the tracker, want at most %d", per, limit)
	}
}
