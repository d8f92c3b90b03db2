package bill

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/testutil"
)

// publishSeq publishes ev and returns its CALLS stream sequence.
func (e *env) publishSeq(ev call.Event) uint64 {
	e.t.Helper()
	ev.Schema = call.Schema
	data, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	ack, err := e.js.Publish(e.ctx, ev.Subject(), data, jetstream.WithMsgID(ev.MsgID()))
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}

// snapshot publishes a connected snapshot of node listing chans.
func (e *env) snapshot(node string, seq uint64, chans ...string) {
	e.t.Helper()
	s := call.Snapshot{Schema: call.Schema, Node: node, At: time.Now().UTC(), Connected: true, CallsSeq: seq, Calls: []call.LiveCall{}}
	for _, c := range chans {
		s.Calls = append(s.Calls, call.LiveCall{Channel: c, Project: "p"})
	}
	d, err := json.Marshal(s)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.nc.Publish(call.SnapshotSubject(node), d); err != nil {
		e.t.Fatal(err)
	}
}

// TestBacklogIsNotOrphans: bill is stopped while calls are answered and
// end and the node keeps sending snapshots that no longer list them; bill
// then starts with a short orphan_after and a slow consumer, so the ended
// events stay in its backlog for longer than orphan_after while snapshots
// keep coming. With calls_seq every call is settled exactly, none
// estimated. The same run with calls_seq 0 (an older ingest) does settle
// calls as estimated: the case the sequence fixes.
func TestBacklogIsNotOrphans(t *testing.T) {
	for _, withSeq := range []bool{true, false} {
		t.Run(fmt.Sprintf("calls_seq=%v", withSeq), func(t *testing.T) { testBacklog(t, withSeq) })
	}
}

func testBacklog(t *testing.T, withSeq bool) {
	e := setup(t)
	tr := tariffs["t306"]
	e.project("p", tr, topup, nil)
	const n = 60
	// A first bill opens the calls, then stops.
	_, stop := e.start(func(o *Options) { o.Config.OrphanAfter = time.Hour })
	var last atomic.Uint64
	seq := func(s uint64) {
		if withSeq {
			last.Store(s)
		}
	}
	ends := make([]call.Event, n)
	want := map[[3]string]int64{}
	var chans []string
	base := time.Now().Add(-time.Minute)
	for i := range n {
		ch := fmt.Sprint("c", i)
		talk := time.Duration(20000+i*331) * time.Millisecond
		a, en := events("p", "n1", ch, base.Add(time.Duration(i)*10*time.Millisecond), talk)
		seq(e.publishSeq(a))
		ends[i] = en
		want[[3]string{"p", "n1", ch}] = tr.BilledMS(talk.Milliseconds())
		chans = append(chans, ch)
	}
	e.snapshot("n1", last.Load(), chans...)
	testutil.Eventually(t, 10*time.Second, func() bool {
		c, err := e.callState("p", "n1", fmt.Sprint("c", n-1))
		return err == nil && c.Debited > 0
	}, "calls open")
	stop()

	// Bill is down: the calls end, snapshots stop listing them.
	for _, en := range ends {
		seq(e.publishSeq(en))
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			e.snapshot("n1", last.Load())
			select {
			case <-done:
				return
			case <-tk.C:
			}
		}
	})
	defer func() { close(done); wg.Wait() }()
	time.Sleep(300 * time.Millisecond) // a few snapshots while bill is down

	// Bill restarts with a backlog of n ended events it takes ~n·25 ms to
	// work through, against orphan_after 500 ms.
	b, _ := e.start(func(o *Options) {
		o.Config.OrphanAfter = 500 * time.Millisecond
		o.Config.MaxInFlight = 1
		o.OrphanCheck = 50 * time.Millisecond
		o.Hooks.AfterCommit = func(*call.Event) error { time.Sleep(25 * time.Millisecond); return nil }
	})
	if !withSeq {
		testutil.Eventually(t, 20*time.Second, func() bool { return b.Stats().Estimated > 0 }, "an older ingest's snapshots settle backlog calls as estimated")
		return
	}
	e.waitSettled(20*time.Second, want)
	testutil.Eventually(t, 5*time.Second, func() bool { return b.Stats().Ended == n }, "every ended processed")
	if st := b.Stats(); st.Estimated != 0 || st.Ended != n {
		t.Fatalf("stats %+v: want no estimated settlement and %d ended", st, n)
	}
	var spent int64
	for k, w := range want {
		spent += w
		if c, _ := e.callState(k[0], k[1], k[2]); c.Estimated {
			t.Errorf("call %s/%s settled as estimated: %+v", k[1], k[2], c)
		}
	}
	if got := e.balance("p"); got != topup-spent {
		t.Fatalf("balance %d, want %d", got, topup-spent)
	}
	var cdrs [][]byte
	testutil.Eventually(t, 10*time.Second, func() bool {
		cdrs = e.readAll(call.CDRStream, "minuted.cdr.p")
		return len(cdrs) >= n
	}, "one CDR per call")
	for _, d := range cdrs {
		var c call.CDR
		if err := json.Unmarshal(d, &c); err != nil {
			t.Fatal(err)
		}
		if c.Estimated || c.BilledSeconds != want[[3]string{"p", "n1", c.Channel}] {
			t.Errorf("CDR %+v, want exact billed %d", c, want[[3]string{"p", "n1", c.Channel}])
		}
	}
	if len(cdrs) != n {
		t.Errorf("%d CDRs, want %d", len(cdrs), n)
	}
}

// TestSilentNodeCallAnsweredAfterLastSnapshot: a node's last snapshot is
// at S; a call is answered 1 s after it and another call of the node ends
// 3 s after it; then the node dies. The call is closed at the last time
// the node was known alive (the other call's end), not at its own answer,
// and flagged estimated.
func TestSilentNodeCallAnsweredAfterLastSnapshot(t *testing.T) {
	e := setup(t)
	tr := tariffs["t11"]
	e.project("p", tr, 1000, nil)
	b, _ := e.start(func(o *Options) { o.Config.OrphanAfter = time.Second })
	s := time.Now().Add(-5 * time.Second).UTC().Truncate(time.Millisecond)
	a0, en0 := events("p", "dying", "old", s.Add(-10*time.Second), 13*time.Second)
	seq := e.publishSeq(a0)
	d, _ := json.Marshal(call.Snapshot{Schema: call.Schema, Node: "dying", At: s, Connected: true, CallsSeq: seq,
		Calls: []call.LiveCall{{Channel: "old", Project: "p"}}})
	if err := e.nc.Publish(call.SnapshotSubject("dying"), d); err != nil {
		t.Fatal(err)
	}
	a1, _ := events("p", "dying", "late", s.Add(time.Second), 0)
	e.publish(a1)
	e.publish(en0) // ends at s+3s
	e.waitSettled(10*time.Second, map[[3]string]int64{
		{"p", "dying", "old"}:  tr.BilledMS(13000),
		{"p", "dying", "late"}: tr.BilledMS(2000),
	})
	c, _ := e.callState("p", "dying", "late")
	if !c.Estimated || b.Stats().Estimated != 1 {
		t.Fatalf("call %+v (stats %+v): want it settled estimated", c, b.Stats())
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		for _, d := range e.readAll(call.CDRStream, "minuted.cdr.p") {
			var c call.CDR
			if json.Unmarshal(d, &c) == nil && c.Channel == "late" {
				return c.Estimated && c.EndReason == EndOrphaned && c.EndedAt.Equal(s.Add(3*time.Second)) && c.BilledSeconds == 2
			}
		}
		return false
	}, "estimated CDR ending at the node's last known-alive time")
}
