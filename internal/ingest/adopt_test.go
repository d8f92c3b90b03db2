package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/testutil"
)

// liveAt is what GET /channels shows after the first n events: the last
// snapshot of every channel not yet destroyed.
func liveAt(evs []ari.Event, n int) []ari.Channel {
	last := map[string]ari.Channel{}
	var order []string
	note := func(c *ari.Channel) {
		if c == nil {
			return
		}
		if _, ok := last[c.ID]; !ok {
			order = append(order, c.ID)
		}
		last[c.ID] = *c
	}
	for _, ev := range evs[:n] {
		note(ev.Channel)
		note(ev.Caller)
		note(ev.Peer)
		if ev.Type == ari.ChannelDestroyed {
			delete(last, ev.Channel.ID)
		}
	}
	var out []ari.Channel
	for _, id := range order {
		if c, ok := last[id]; ok {
			out = append(out, c)
		}
	}
	return out
}

// accountcodeOnly strips BILLING_PROJECT from a trace, as a dialplan that
// only sets CHANNEL(accountcode) would show it.
func accountcodeOnly(evs []ari.Event) []ari.Event {
	var out []ari.Event
	strip := func(c *ari.Channel) *ari.Channel {
		if c == nil {
			return nil
		}
		cp := *c
		cp.Vars = maps.Clone(c.Vars)
		if cp.Vars["BILLING_PROJECT"] != "" {
			cp.Vars["BILLING_PROJECT"] = ""
		}
		return &cp
	}
	for _, ev := range evs {
		if ev.Type == ari.ChannelVarset && ev.Variable == "BILLING_PROJECT" {
			continue
		}
		ev.Channel, ev.Caller, ev.Peer = strip(ev.Channel), strip(ev.Caller), strip(ev.Peer)
		out = append(out, ev)
	}
	return out
}

// cutBefore is the index of the first event at or after ts.
func cutBefore(t *testing.T, evs []ari.Event, ts string) int {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs {
		if !ev.Timestamp.Before(at) {
			return i
		}
	}
	t.Fatalf("no event at or after %s", ts)
	return 0
}

// TestRestartAdoptsTwoLegCallOnce is the chaos suite's double billing: a
// two-leg call whose legs are all up across a kill -9 of ingest. The new
// process must bill the call once, on the channel the old one billed, with
// its exact answer time when the old snapshot is available, and must not
// bill the dialled legs (they inherit the accountcode) even without it.
func TestRestartAdoptsTwoLegCallOnce(t *testing.T) {
	const billedCh = "1795789857.19" // Local/dial@gen-00000009;2
	for _, mode := range []string{"variable", "accountcode"} {
		evs := loadTrace(t, "two_leg_dial")
		if mode == "accountcode" {
			evs = accountcodeOnly(evs)
		}
		cut := cutBefore(t, evs, "2026-11-27T14:30:58.000Z") // bridged, talking
		live := liveAt(evs, cut)
		if len(live) != 4 {
			t.Fatalf("%s: %d live channels at the cut, want the 4 legs", mode, len(live))
		}
		old := NewTracker("n1", defaultAttr)
		run(old, evs[:cut], nil)
		snap := old.Snapshot(evs[cut-1].Timestamp)
		if len(snap.Calls) != 1 || snap.Calls[0].Channel != billedCh || snap.Calls[0].AnsweredAt == nil {
			t.Fatalf("%s: old process's snapshot %+v, want the one answered call %s", mode, snap.Calls, billedCh)
		}
		exactAnswer := *snap.Calls[0].AnsweredAt
		restartAt := evs[cut].Timestamp.Add(500 * time.Millisecond)

		for _, seeded := range []bool{true, false} {
			name := fmt.Sprintf("%s/seeded=%v", mode, seeded)
			tr := NewTracker("n1", defaultAttr)
			if seeded {
				tr.Seed(snap)
				if got := tr.Snapshot(restartAt); len(got.Calls) != 1 || got.Calls[0].Channel != billedCh {
					t.Fatalf("%s: before reconciling, the snapshot lists %+v, want the seeded call", name, got.Calls)
				}
			}
			out := tr.Reconcile(live, restartAt)
			for i := cut; i < len(evs); i++ {
				out = append(out, tr.Handle(evs[i])...)
			}
			var ended []call.Event
			for _, e := range out {
				if e.Channel != billedCh && e.Kind != call.Ended {
					t.Errorf("%s: %s for %s: only %s is billed", name, e.Kind, e.Channel, billedCh)
				}
				if e.Kind == call.Ended && e.Project != "" && e.EndReason == "" {
					ended = append(ended, e)
				}
			}
			if len(ended) != 1 || ended[0].Channel != billedCh || ended[0].Project != "proj-a" {
				t.Fatalf("%s: billed ended messages %+v, want one for %s on proj-a", name, ended, billedCh)
			}
			e := ended[0]
			if e.Estimated {
				t.Errorf("%s: end estimated, but the hangup was seen", name)
			}
			if seeded {
				if e.AnswerEstimated || !e.AnsweredAt.Equal(exactAnswer) || e.TalkMS != 20511 {
					t.Errorf("%s: answered %v (estimated %v), talk %d ms; want the exact %v and 20511 ms",
						name, e.AnsweredAt, e.AnswerEstimated, e.TalkMS, exactAnswer)
				}
			} else if !e.AnswerEstimated {
				t.Errorf("%s: answer %v not flagged estimated, but no snapshot said when it was", name, e.AnsweredAt)
			}
		}
	}
}

// TestAnswerInGapIsEstimated: the answer event is lost in an ARI gap; the
// first event after it that shows the channel Up does not give the answer
// time, it only bounds it: flagged estimated, at the earliest time
// consistent with what was seen.
func TestAnswerInGapIsEstimated(t *testing.T) {
	evs := loadTrace(t, "two_leg_dial")
	const billedCh = "1795789857.19"
	up := -1
	for i, ev := range evs {
		if ev.Type == ari.ChannelStateChange && ev.Channel.ID == billedCh && ev.Channel.State == "Up" {
			up = i
			break
		}
	}
	if up < 0 {
		t.Fatal("no answer of the billed channel in the trace")
	}
	// The websocket drops just before the answer and comes back 2 events
	// later: the next event about the channel shows it Up.
	tr := NewTracker("n1", defaultAttr)
	out := run(tr, evs[:up], nil)
	lastSeen := evs[up-1].Timestamp
	tr.Disconnected(lastSeen.Add(time.Millisecond))
	after := up + 1
	for evs[after].Channel == nil || evs[after].Channel.ID != billedCh {
		after++
	}
	for i := after; i < after+3; i++ { // frames read while GET /channels runs
		out = append(out, tr.Handle(evs[i])...)
	}
	out = append(out, tr.Reconcile(liveAt(evs, after+3), evs[after+2].Timestamp)...)
	// Then ingest is restarted: the new process adopts the call from the
	// old one's snapshot and keeps both the estimate and its flag.
	snap, est := tr.Snapshot(evs[after+2].Timestamp), tr.EstimatedAnswers()
	if len(est) != 1 || est[0] != billedCh {
		t.Fatalf("estimated answers %v, want [%s]", est, billedCh)
	}
	tr2 := NewTracker("n1", defaultAttr)
	tr2.Seed(snap)
	tr2.SeedEstimatedAnswers(est)
	out = append(out, tr2.Reconcile(liveAt(evs, after+3), evs[after+2].Timestamp.Add(time.Second))...)
	for i := after + 3; i < len(evs); i++ {
		out = append(out, tr2.Handle(evs[i])...)
	}
	var ans, first *call.Event
	for i := range out {
		if out[i].Channel != billedCh {
			continue
		}
		if out[i].Kind == call.Answered && first == nil {
			first = &out[i]
		}
		if out[i].Kind == call.Ended {
			ans = &out[i]
		}
	}
	if ans == nil || ans.AnsweredAt == nil || first == nil {
		t.Fatalf("no answered and ended messages for %s in %+v", billedCh, out)
	}
	if !first.AnswerEstimated || !ans.AnswerEstimated {
		t.Errorf("answer %v taken from a later event without the answer_estimated flag (answered %v, ended after the restart %v)",
			ans.AnsweredAt, first.AnswerEstimated, ans.AnswerEstimated)
	}
	if !ans.AnsweredAt.Equal(*first.AnsweredAt) {
		t.Errorf("the restarted process answers at %v, the first one estimated %v", ans.AnsweredAt, first.AnsweredAt)
	}
	if ans.AnsweredAt.Before(lastSeen) || ans.AnsweredAt.After(evs[after].Timestamp) {
		t.Errorf("estimated answer %v outside [last seen %v, first event showing Up %v]", ans.AnsweredAt, lastSeen, evs[after].Timestamp)
	}
}

// TestSnapshotParts: 12,000 live calls (long ids, 64-character projects)
// go out as 3 parts of one snapshot, each under NATS's 1 MB max payload.
func TestSnapshotParts(t *testing.T) {
	tr := NewTracker("n1", defaultAttr)
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	const n = 12000
	project := strings.Repeat("p", 64)
	for i := range n {
		ch := &ari.Channel{ID: fmt.Sprintf("asterisk-node-0001-1795789857.%07d", i), Name: fmt.Sprintf("PJSIP/trunk-%08x", i),
			State: "Ring", CreationTime: t0, Vars: map[string]string{"BILLING_PROJECT": project}}
		tr.Handle(ari.Event{Type: ari.ChannelCreated, Timestamp: t0, Channel: ch})
		up := *ch
		up.State = "Up"
		tr.Handle(ari.Event{Type: ari.ChannelStateChange, Timestamp: t0.Add(time.Second), Channel: &up})
	}
	snap := tr.Snapshot(t0.Add(time.Minute))
	snap.CallsSeq = 42
	parts := SplitSnapshot(snap, SnapshotPartCalls)
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	seen := map[string]bool{}
	for i, p := range parts {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) >= 1<<20 {
			t.Errorf("part %d is %d bytes, not under 1 MB", i+1, len(b))
		}
		if p.Part != i+1 || p.Parts != 3 || !p.At.Equal(snap.At) || p.CallsSeq != 42 || p.Node != "n1" {
			t.Errorf("part %d: part %d/%d at %v seq %d node %q", i+1, p.Part, p.Parts, p.At, p.CallsSeq, p.Node)
		}
		for _, c := range p.Calls {
			if seen[c.Channel] || c.Project != project || c.AnsweredAt == nil {
				t.Fatalf("part %d: bad or repeated call %+v", i+1, c)
			}
			seen[c.Channel] = true
		}
	}
	if len(seen) != n {
		t.Errorf("parts list %d calls, want %d", len(seen), n)
	}
	if one := SplitSnapshot(tr.Snapshot(t0), 20000); len(one) != 1 || one[0].Parts != 0 || len(one[0].Calls) != n {
		t.Errorf("a snapshot that fits is split: %d parts", len(one))
	}
}

// TestStartReadsSeedAndReportsAtOnce: a restarted ingest reads its node's
// last snapshot from the NODES stream, reports at once that the node is
// alive with those calls (not one snapshot interval later: bill closes the
// calls of a node silent for orphan_after), and once reconciled reports
// again at once, without the calls that are no longer live.
func TestStartReadsSeedAndReportsAtOnce(t *testing.T) {
	const node = "n-seed"
	answered := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	snaps := make(chan call.Snapshot, 16)
	h := startHarnessWith(t, sim.Options{}, func(o *Options, js jetstream.JetStream) {
		o.Node, o.JS, o.SnapshotInterval = node, js, time.Hour
		prev := call.Snapshot{Schema: call.Schema, Node: node, At: answered.Add(30 * time.Second), Connected: true,
			Calls: []call.LiveCall{{Channel: "1795789857.19", Project: "proj-a", AnsweredAt: &answered}}}
		b, _ := json.Marshal(prev)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := js.Publish(ctx, call.SnapshotSubject(node), b); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Conn().Subscribe(call.SnapshotSubject(node), func(m *nats.Msg) {
			var s call.Snapshot
			if json.Unmarshal(m.Data, &s) == nil {
				snaps <- s
			}
		}); err != nil {
			t.Fatal(err)
		}
	})
	next := func() call.Snapshot {
		t.Helper()
		select {
		case s := <-snaps:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("no snapshot within 5s of the start (interval 1h)")
		}
		return call.Snapshot{}
	}
	first := next()
	if first.Connected || len(first.Calls) != 1 || first.Calls[0].Channel != "1795789857.19" || !first.Calls[0].AnsweredAt.Equal(answered) {
		t.Fatalf("first snapshot %+v: want not connected, listing the previous process's call", first)
	}
	second := next()
	if !second.Connected || len(second.Calls) != 0 {
		t.Fatalf("snapshot after reconciling %+v: want connected and empty (the call is not live in the double)", second)
	}
	// The call hung up while no ingest watched: it ends, estimated, when
	// the previous process last saw it alive.
	var ended call.Event
	testutil.Eventually(t, 5*time.Second, func() bool {
		ended = h.calls(t)[node+"/1795789857.19/ended"]
		return ended.EndedAt != nil
	}, "the vanished seeded call ended")
	if !ended.Estimated || ended.Project != "proj-a" || !ended.EndedAt.Equal(answered.Add(30*time.Second)) || ended.TalkMS != 30000 {
		t.Errorf("ended %+v: want estimated at the snapshot's time, proj-a, 30 s of talk", ended)
	}
}

// TestStartingTrackerDoesNotTakeUpAsAnswer: a new process that reads an
// event of a call already up before its first reconcile (here its hangup,
// after an event of the billed Local channel's other half) does not take
// that event's time as the answer: estimated, at creation.
func TestStartingTrackerDoesNotTakeUpAsAnswer(t *testing.T) {
	evs := loadTrace(t, "two_leg_dial")
	const billedCh, otherHalf = "1795789857.19", "1795789857.18"
	var destroyed, half ari.Event
	for _, ev := range evs {
		if ev.Type == ari.ChannelDestroyed && ev.Channel.ID == billedCh {
			destroyed = ev
		}
		if ev.Channel != nil && ev.Channel.ID == otherHalf && destroyed.Channel == nil {
			half = ev
		}
	}
	tr := NewTracker("n1", defaultAttr)
	tr.Starting()
	tr.Handle(half)
	var ended *call.Event
	for _, e := range tr.Handle(destroyed) {
		if e.Kind == call.Ended && e.Channel == billedCh {
			ended = &e
		}
	}
	if ended == nil || ended.AnsweredAt == nil {
		t.Fatalf("no answered ended message for %s", billedCh)
	}
	if !ended.AnswerEstimated || !ended.AnsweredAt.Equal(destroyed.Channel.CreationTime) {
		t.Errorf("answer %v (estimated %v), want the creation %v flagged estimated", ended.AnsweredAt, ended.AnswerEstimated, destroyed.Channel.CreationTime)
	}
}

// TestSnapshotAsSoonAsNATSIsBack: snapshots that fail while NATS is away
// are not left for the next interval: the node reports the moment the
// connection is back (a process killed just after an outage has then said
// which calls it still had).
func TestSnapshotAsSoonAsNATSIsBack(t *testing.T) {
	h := startHarnessWith(t, sim.Options{}, func(o *Options, js jetstream.JetStream) {
		o.Node, o.SnapshotInterval = "n-back", 2*time.Second
	})
	before := h.svc.Stats().Snapshots
	testutil.Eventually(t, 5*time.Second, func() bool { return h.svc.Stats().Snapshots > before }, "a first snapshot")
	h.ns.Stop()
	time.Sleep(2500 * time.Millisecond) // one interval's snapshot fails
	failed := h.svc.Stats().Snapshots
	h.ns.Start(t)
	back := time.Now()
	testutil.Eventually(t, 5*time.Second, func() bool { return h.svc.Stats().Snapshots > failed }, "a snapshot after NATS came back")
	if d := time.Since(back); d > time.Second {
		t.Errorf("first snapshot %v after NATS came back; want well under the 2 s interval", d)
	}
}

// TestAppendMoreKeepsTheBatch: frames queued behind a Connected message in
// the same batch are kept, before the ones read while listing.
func TestAppendMoreKeepsTheBatch(t *testing.T) {
	batch := []ari.Message{{Kind: ari.Connected}, {Kind: ari.Frame, Data: "a"}, {Kind: ari.Frame, Data: "b"}}
	got := appendMore(batch, []ari.Message{{Kind: ari.Frame, Data: "c"}})
	var s string
	for _, m := range got[1:] {
		s += m.Data
	}
	if len(got) != 4 || got[0].Kind != ari.Connected || s != "abc" {
		t.Fatalf("got %d messages, frames %q; want Connected then a, b, c", len(got), s)
	}
}
