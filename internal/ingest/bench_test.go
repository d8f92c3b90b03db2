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
