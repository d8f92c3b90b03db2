package bill

import (
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/testutil"
)

// TestNATSRestartIsNotNodeSilence: the NATS server restarts (down 2 s)
// while a node's call is live; the node's ingest reports again 1 s after
// bill is back, so more than orphan_after (2 s) passes between its last
// snapshot before the outage and its first one after. That is bill's own
// outage, not the node's silence: the call is not settled as an orphan,
// and its real end bills it exactly.
func TestNATSRestartIsNotNodeSilence(t *testing.T) {
	e := setupStorage(t, "file")
	tr := tariffs["t11"]
	e.project("p", tr, 10_000, nil)
	b, _ := e.start(func(o *Options) { o.Config.OrphanAfter = 2 * time.Second })
	answered := time.Now().Add(-2 * time.Second).UTC().Truncate(time.Millisecond)
	a, en := events("p", "n1", "c1", answered, 10*time.Second)
	var seq atomic.Uint64
	seq.Store(e.publishSeq(a))
	testutil.Eventually(t, 5*time.Second, func() bool {
		c, err := e.callState("p", "n1", "c1")
		return err == nil && c.Debited > 0
	}, "call open and ticking")

	// The node: its own connection, a snapshot every 200 ms unless paused.
	node := e.nats.Connect(t)
	var paused atomic.Bool
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if !paused.Load() {
				s := call.Snapshot{Schema: call.Schema, Node: "n1", At: time.Now().UTC(), Connected: true, CallsSeq: seq.Load(),
					Calls: []call.LiveCall{{Channel: "c1", Project: "p", AnsweredAt: &answered}}}
				d, _ := json.Marshal(s)
				_ = node.Publish(call.SnapshotSubject("n1"), d)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-done }()
	time.Sleep(time.Second)

	paused.Store(true)
	e.nats.Restart(t, 2*time.Second)
	testutil.Eventually(t, 10*time.Second, e.nc.IsConnected, "bill reconnected")
	time.Sleep(time.Second) // the node's ingest reconnects later
	paused.Store(false)
	time.Sleep(1500 * time.Millisecond)
	if c, err := e.callState("p", "n1", "c1"); err != nil || c.Settled || b.Stats().Estimated != 0 {
		t.Fatalf("call %+v (err %v, estimated %d): settled as an orphan over bill's own NATS outage", c, err, b.Stats().Estimated)
	}
	seq.Store(e.publishSeq(en))
	e.waitSettled(15*time.Second, map[[3]string]int64{{"p", "n1", "c1"}: tr.BilledMS(10_000)})
	if c, _ := e.callState("p", "n1", "c1"); c.Estimated {
		t.Fatalf("call %+v settled estimated, want its exact end", c)
	}
}

// splitSnapshot publishes the live calls c0..c(n−1) of node as a snapshot
// of gen in parts of per calls, one subject per part, as ingest does.
func (e *env) splitSnapshot(node string, at time.Time, gen uint64, n, per int) {
	e.t.Helper()
	parts := (n + per - 1) / per
	for i := range parts {
		s := call.Snapshot{Schema: call.Schema, Node: node, At: at, Connected: true, Gen: gen, Calls: []call.LiveCall{}}
		if parts > 1 {
			s.Part, s.Parts = i+1, parts
		}
		for j := i * per; j < min((i+1)*per, n); j++ {
			s.Calls = append(s.Calls, call.LiveCall{Channel: fmt.Sprint("c", j), Project: "p"})
		}
		d, err := json.Marshal(s)
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.nc.Publish(call.SnapshotPartSubject(node, s.Part), d); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
}

// TestReplaySplitSnapshotWhole: a node's 12,000 live calls went out as a
// 3-part snapshot, after an older 4-part one (its part 4 is still in the
// NODES stream). A bill that starts reads the whole 3-part snapshot back
// (12,000 calls listed, one admitted snapshot) and ignores the stale part.
// If the latest snapshot's parts are not all there (the node died while
// sending it), what is there only proves the node and its calls alive.
func TestReplaySplitSnapshotWhole(t *testing.T) {
	e := setup(t)
	old := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	at := old.Add(30 * time.Second)
	e.splitSnapshot("n1", old, 1, 16_000, 5000) // 4 parts, c0..c15999
	e.splitSnapshot("n1", at, 2, 12_000, 5000)  // 3 parts: part 4 above is stale
	// n2: 3 parts of gen 2 over 3 parts of gen 1, part 3 of gen 2 lost.
	e.splitSnapshot("n2", old, 1, 15_000, 5000)
	// Of gen 2, parts 1 and 2 of 3 only reached NATS.
	d, _ := json.Marshal(call.Snapshot{Schema: call.Schema, Node: "n2", At: at, Connected: true, Gen: 2, Part: 2, Parts: 3,
		Calls: []call.LiveCall{{Channel: "c9999", Project: "p"}}})
	if err := e.nc.Publish(call.SnapshotPartSubject("n2", 2), d); err != nil {
		t.Fatal(err)
	}
	d, _ = json.Marshal(call.Snapshot{Schema: call.Schema, Node: "n2", At: at, Connected: true, Gen: 2, Part: 1, Parts: 3,
		Calls: []call.LiveCall{{Channel: "c0", Project: "p"}}})
	if err := e.nc.Publish(call.SnapshotPartSubject("n2", 1), d); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return e.streamMsgs(call.NodesStream) == 7 }, "7 snapshot subjects stored")

	b, _ := e.start(func(o *Options) { o.Config.OrphanAfter = time.Hour })
	testutil.Eventually(t, 10*time.Second, func() bool {
		b.orph.mu.Lock()
		defer b.orph.mu.Unlock()
		return b.orph.nodes["n1"] != nil && b.orph.nodes["n2"] != nil
	}, "both nodes replayed")
	b.orph.mu.Lock()
	defer b.orph.mu.Unlock()
	n1 := b.orph.nodes["n1"]
	if len(n1.times) != 1 || !n1.lastAt.Equal(at) || len(n1.listed) != 12_000 {
		t.Fatalf("n1: %d admitted snapshots (last %v), %d calls listed; want the whole 3-part snapshot of %v: 12000 calls", len(n1.times), n1.lastAt, len(n1.listed), at)
	}
	if _, ok := n1.listed["c12000"]; ok {
		t.Fatal("n1: a call of the stale 4th part of an older snapshot is listed")
	}
	n2 := b.orph.nodes["n2"]
	if len(n2.times) != 0 || !n2.heardAt.Equal(at) {
		t.Fatalf("n2: %d admitted snapshots, heard at %v; want none admitted (a part is missing), heard at %v", len(n2.times), n2.heardAt, at)
	}
	if _, ok := n2.lastListed["c9999"]; !ok || len(n2.lastListed) != 2 {
		t.Fatalf("n2: %d calls known alive, want the 2 of the parts found", len(n2.lastListed))
	}
}

func (e *env) streamMsgs(name string) uint64 {
	e.t.Helper()
	s, err := e.js.Stream(e.ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}
