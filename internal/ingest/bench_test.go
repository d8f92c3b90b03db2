package ingest

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/sim"
)

// BenchmarkDecodeHandle: what ingest does per ARI frame, decode then
// Tracker.Handle, over a recorded answered call replayed with fresh ids
// (more calls than the tracker remembers destroyed ids for).
func BenchmarkDecodeHandle(b *testing.B) {
	lines, err := sim.TraceEvents(sim.ShapeAnswered)
	if err != nil {
		b.Fatal(err)
	}
	const copies = 2100
	frames := make([][]byte, 0, copies*len(lines))
	for k := range copies {
		prefix := []byte(fmt.Sprintf("17957%05d.", k))
		for _, l := range lines {
			frames = append(frames, bytes.ReplaceAll(l, []byte("1795789839."), prefix))
		}
	}
	tr := NewTracker("", defaultAttr)
	out := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ev, err := ari.Decode(frames[i%len(frames)])
		if err != nil {
			b.Fatal(err)
		}
		out += len(tr.Handle(ev))
	}
	if b.N >= len(lines) && out == 0 {
		b.Fatal("the tracker emitted no call event")
	}
}

// BenchmarkIngestCall: what ingest does for one whole answered call (the
// recorded trace with fresh ids, 29 frames): take each frame off the
// websocket reader's buffer as the listener does, decode it, track it, and
// encode each CALLS message it causes with its subject and Nats-Msg-Id
// (Service.frame and publish, without NATS).
func BenchmarkIngestCall(b *testing.B) {
	c := answeredTemplate(b)
	const calls = 4096
	frames := make([][][]byte, calls)
	for k := range frames {
		frames[k] = render(append(c.head[:len(c.head):len(c.head)], c.tail...), k)
	}
	tr := NewTracker("", defaultAttr)
	var dec ari.Decoder
	var enc callEncoder
	msgs := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for _, f := range frames[i%calls] {
			ev, err := dec.DecodeString(string(f)) // the listener's copy of its read buffer
			if err != nil {
				b.Fatal(err)
			}
			for _, e := range tr.Handle(ev) {
				if _, _, _, err := enc.encode(&e); err != nil {
					b.Fatal(err)
				}
				msgs++
			}
		}
	}
	b.ReportMetric(float64(msgs)/float64(b.N), "msgs/call")
}
