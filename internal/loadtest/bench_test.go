package loadtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	upstream "github.com/CyCoreSystems/ari/v6"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ingest"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
)

// Hot-path micro-benchmarks; the report runs them with -benchmem. Each
// reports per event / per message / per tariff computation.

func answeredLines(b *testing.B) [][]byte {
	b.Helper()
	lines, err := sim.TraceEvents(sim.ShapeAnswered)
	if err != nil {
		b.Fatal(err)
	}
	return lines
}

func benchDecode(b *testing.B, decode func([]byte) error) {
	lines := answeredLines(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := decode(lines[i%len(lines)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEventDecode: minuted's lean ari.Decode, per ARI event.
func BenchmarkEventDecode(b *testing.B) {
	benchDecode(b, func(l []byte) error { _, err := ari.Decode(l); return err })
}

// BenchmarkEventDecodeMinimal: encoding/json into the baseline's minimal struct.
func BenchmarkEventDecodeMinimal(b *testing.B) {
	benchDecode(b, func(l []byte) error { var e minimalEvent; return json.Unmarshal(l, &e) })
}

// BenchmarkEventDecodeUpstream: ari/v6 DecodeEvent.
func BenchmarkEventDecodeUpstream(b *testing.B) {
	benchDecode(b, func(l []byte) error { _, err := upstream.DecodeEvent(l); return err })
}

// BenchmarkTrackerHandle: ingest's Tracker.Handle per event, over the
// events of a recorded answered call played with fresh channel ids for
// each call (more calls than the tracker remembers destroyed ids for).
func BenchmarkTrackerHandle(b *testing.B) {
	lines := answeredLines(b)
	const copies = 2100
	evs := make([]ari.Event, 0, copies*len(lines))
	for k := range copies {
		prefix := []byte(fmt.Sprintf("17957%05d.", k))
		for _, l := range lines {
			ev, err := ari.Decode(bytes.ReplaceAll(l, []byte("1795789839."), prefix))
			if err != nil {
				b.Fatal(err)
			}
			evs = append(evs, ev)
		}
	}
	tr := ingest.NewTracker("", ingest.Attribution{Variable: "BILLING_PROJECT", UseAccountcode: true})
	out := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		out += len(tr.Handle(evs[i%len(evs)]))
	}
	b.StopTimer()
	if b.N >= len(lines) && out == 0 {
		b.Fatal("the tracker emitted no call event")
	}
	b.ReportMetric(float64(out)/float64(b.N)*float64(len(lines)), "msgs/call")
}

// BenchmarkTariffBilled: billed seconds of a talk time.
func BenchmarkTariffBilled(b *testing.B) {
	t := tariff.Tariff{FreeSeconds: 5, MinimumSeconds: 30, IncrementSeconds: 6}
	var sum int64
	b.ReportAllocs()
	for i := range b.N {
		sum += t.BilledMS(int64(i%3_600_000) + 1)
	}
	if sum < 0 {
		b.Fatal(sum)
	}
}

// BenchmarkTariffBlock: the real-time block schedule (Block + BlockAt).
func BenchmarkTariffBlock(b *testing.B) {
	t := tariff.Tariff{FreeSeconds: 5, MinimumSeconds: 30, IncrementSeconds: 6}
	var sum int64
	b.ReportAllocs()
	for i := range b.N {
		k := t.BlockAt(time.Duration(i%3600) * time.Second)
		sum += t.Block(k).Amount
	}
	if sum < 0 {
		b.Fatal(sum)
	}
}

func benchEvent() call.Event {
	created := time.Date(2026, 11, 27, 14, 30, 39, 21e6, time.UTC)
	ans, end := created.Add(time.Millisecond), created.Add(3504*time.Millisecond)
	return call.Event{Schema: call.Schema, Kind: call.Ended, Node: "02:fc:00:00:00:01", Channel: "1795789839.13",
		Name: "Local/100@from-internal-00000001;2", Project: "proj-a", AttributedBy: call.ByVariable,
		CreatedAt: created, AnsweredAt: &ans, EndedAt: &end, TalkMS: 3503, Cause: 16, CauseTxt: "Normal Clearing"}
}

// BenchmarkCallEventEncode: json.Marshal of a CALLS message (ingest).
func BenchmarkCallEventEncode(b *testing.B) {
	e := benchEvent()
	b.ReportAllocs()
	for range b.N {
		if _, err := json.Marshal(&e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCallEventDecode: call.Decode (unmarshal + validate) of a CALLS
// message (bill).
func BenchmarkCallEventDecode(b *testing.B) {
	e := benchEvent()
	body, err := json.Marshal(&e)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for range b.N {
		if _, err := call.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
