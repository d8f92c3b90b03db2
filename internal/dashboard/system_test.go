package dashboard

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/stream"
)

// A snapshot too big for one message comes in parts: the view counts the
// live calls of every part of the newest snapshot, and a late part of an
// older snapshot changes nothing.
func TestSystemCountsEverySnapshotPart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, err := stream.StartEmbedded(ctx, stream.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sys := NewNATSSystem(nc, nil, "bill")

	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	publish := func(node string, at time.Time, gen uint64, part, parts, calls int, connected bool) {
		t.Helper()
		s := call.Snapshot{Schema: 1, Node: node, At: at, Connected: connected, Gen: gen, Part: part, Parts: parts,
			Calls: make([]call.LiveCall, calls)}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(call.SnapshotPartSubject(node, part), b); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(node string, want int, connected bool) {
		t.Helper()
		var got Node
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			f, _ := sys.Figures(ctx)
			for _, n := range f.Nodes {
				if n.Node == node {
					got = n
				}
			}
			if got.LiveCalls == want && got.ARIConnected == connected {
				return
			}
		}
		t.Fatalf("%s shows %+v, want %d live calls, connected %v", node, got, want, connected)
	}

	publish("pbx1", t0, 1, 1, 3, 4, true)
	publish("pbx1", t0, 1, 2, 3, 4, true)
	publish("pbx1", t0, 1, 3, 3, 2, true)
	waitFor("pbx1", 10, true)

	publish("pbx1", t0.Add(10*time.Second), 2, 1, 0, 1, false) // newer, whole
	waitFor("pbx1", 1, false)

	// A late part of the older snapshot, then a marker on the same
	// subscription (parts 2+): once pbx2 shows, the late part was seen.
	publish("pbx1", t0, 1, 2, 3, 4, true)
	publish("pbx2", t0, 1, 2, 2, 7, true)
	waitFor("pbx2", 7, true)
	waitFor("pbx1", 1, false)
}
