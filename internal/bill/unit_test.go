package bill

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestSchedulerOrderAndCancel(t *testing.T) {
	s := newScheduler(time.Now)
	base := time.Now()
	for i, off := range []int{30, 10, 20, 5} {
		s.Add(&entry{key: fmt.Sprint("k", i), due: base.Add(time.Duration(off) * time.Millisecond).UnixNano(), idx: -1})
	}
	if s.Add(&entry{key: "k1", due: base.UnixNano(), idx: -1}) {
		t.Fatal("a second Add of a scheduled call must be refused")
	}
	s.Remove("k2") // due at 20ms: never handed out
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := make(chan []*entry)
	go s.Run(ctx, out)
	var got []string
	for len(got) < 3 {
		for _, e := range <-out {
			if wait := e.dueIn(time.Now()); wait > 0 {
				t.Errorf("%s handed out %v before due", e.key, wait)
			}
			got = append(got, e.key)
			s.Done(e)
		}
	}
	if fmt.Sprint(got) != "[k3 k1 k0]" {
		t.Fatalf("order %v, want [k3 k1 k0]", got)
	}
	if s.Len() != 0 {
		t.Fatalf("%d left", s.Len())
	}
	// Requeue after Remove while busy is dropped.
	e := &entry{key: "x", due: time.Now().UnixNano(), idx: -1}
	s.Add(e)
	e = (<-out)[0]
	s.Remove("x")
	s.Requeue(e)
	if s.Len() != 0 || len(s.h) != 0 {
		t.Fatal("a call removed while busy was requeued")
	}
	// A new earlier entry wakes the loop sleeping on a later one.
	s.Add(&entry{key: "late", due: time.Now().Add(time.Hour).UnixNano(), idx: -1})
	s.Add(&entry{key: "soon", due: time.Now().Add(20 * time.Millisecond).UnixNano(), idx: -1})
	select {
	case es := <-out:
		if len(es) != 1 || es[0].key != "soon" {
			t.Fatalf("got %d entries, the first %s", len(es), es[0].key)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("scheduler did not wake for an earlier entry")
	}
}

// TestSchedulerBatches: blocks falling due close together are handed out
// together (one Redis round trip per batch), never more than tickBatch at
// once, each exactly once and none before it is due.
func TestSchedulerBatches(t *testing.T) {
	s := newScheduler(time.Now)
	const n = 200
	base := time.Now().Add(20 * time.Millisecond)
	for i := range n {
		s.Add(&entry{key: fmt.Sprint("k", i), due: base.Add(time.Duration(i) * 10 * time.Microsecond).UnixNano(), idx: -1})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := make(chan []*entry)
	go s.Run(ctx, out)
	seen := map[string]bool{}
	batches := 0
	for len(seen) < n {
		select {
		case es := <-out:
			batches++
			if len(es) > tickBatch {
				t.Fatalf("a batch of %d, want at most %d", len(es), tickBatch)
			}
			for _, e := range es {
				if wait := e.dueIn(time.Now()); wait > 0 {
					t.Errorf("%s handed out %v before due", e.key, wait)
				}
				if seen[e.key] {
					t.Fatalf("%s handed out twice", e.key)
				}
				seen[e.key] = true
				s.Done(e)
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d handed out", len(seen), n)
		}
	}
	// 200 blocks due within 2 ms: 4 full batches, and a few more if the
	// scheduler woke while they were still falling due.
	if batches > n/tickBatch+4 {
		t.Errorf("%d blocks due within 2 ms came in %d batches", n, batches)
	}
}

func snap(node string, at time.Time, connected bool, chans ...string) *call.Snapshot {
	s := &call.Snapshot{Schema: call.Schema, Node: node, At: at, Connected: connected}
	for _, c := range chans {
		s.Calls = append(s.Calls, call.LiveCall{Channel: c, Project: "p"})
	}
	return s
}

func TestOrphans(t *testing.T) {
	o := newOrphans(30*time.Second, 2*time.Second)
	ans := t0
	if _, ok := o.Judge("n1", "c1", ans, t0.Add(time.Hour)); ok {
		t.Fatal("a node never heard from must not be judged")
	}
	// Listed at +10s and +20s, missing from +30s on.
	for i := 1; i <= 6; i++ {
		at := t0.Add(time.Duration(i*10) * time.Second)
		var chans []string
		if i <= 2 {
			chans = []string{"c1"}
		}
		o.Observe(snap("n1", at, true, chans...), at)
		end, ok := o.Judge("n1", "c1", ans, at)
		want := i == 6 // unlisted since +30s: for OrphanAfter (30s) at +60s
		if ok != want {
			t.Fatalf("snapshot %d: orphan=%v, want %v", i, ok, want)
		}
		if ok && !end.Equal(t0.Add(20*time.Second)) {
			t.Fatalf("end %v, want last listed %v", end, t0.Add(20*time.Second))
		}
	}
	// Never listed: ends at max(answer, first miss − interval).
	ans2 := t0.Add(5 * time.Second)
	end, ok := o.Judge("n1", "c2", ans2, t0.Add(60*time.Second))
	if !ok || !end.Equal(ans2) {
		t.Fatalf("never listed: %v %v, want %v", end, ok, ans2)
	}
	if end, ok := o.Judge("n1", "c4", t0.Add(-25*time.Second), t0.Add(60*time.Second)); !ok || !end.Equal(t0) {
		t.Fatalf("never listed, answered long before: %v %v, want first miss − interval %v", end, ok, t0)
	}
	// Answered just before the last snapshot: too young.
	if _, ok := o.Judge("n1", "c3", t0.Add(59*time.Second), t0.Add(60*time.Second)); ok {
		t.Fatal("young call judged orphan")
	}
	// A disconnected snapshot suspends judgement.
	o.Observe(snap("n1", t0.Add(70*time.Second), false), t0.Add(70*time.Second))
	if _, ok := o.Judge("n1", "c1", ans, t0.Add(70*time.Second)); ok {
		t.Fatal("judged while ingest is disconnected from Asterisk")
	}
	// A silent node: everything closes at the last listing (or last snapshot).
	o.Observe(snap("n2", t0.Add(10*time.Second), true, "a"), t0.Add(10*time.Second))
	o.Refresh(0, 0, t0.Add(39*time.Second))
	if _, ok := o.Judge("n2", "a", t0, t0.Add(39*time.Second)); ok {
		t.Fatal("silent for 29s only")
	}
	o.Refresh(0, 0, t0.Add(40*time.Second))
	end, ok = o.Judge("n2", "a", t0, t0.Add(40*time.Second))
	if !ok || !end.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("silent node: %v %v", end, ok)
	}
	end, ok = o.Judge("n2", "b", t0.Add(15*time.Second), t0.Add(40*time.Second))
	if !ok || !end.Equal(t0.Add(15*time.Second)) {
		t.Fatalf("silent node, call answered after its last snapshot: %v %v", end, ok)
	}
}

// TestSuspectsCoverJudge: closeOrphans reads and judges only the calls
// Suspects returns, so every call Judge would close, at any answer time,
// must be among them, including on a node whose id contains "/"; a call
// listed in the latest snapshot of a node that is not silent is not.
func TestSuspectsCoverJudge(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	nodes := []string{"n1", "n1/x", "n2"}
	chans := []string{"c1", "x/c1", "c2", "PJSIP/a-1", "PJSIP/a-2"}
	var keys []string
	for _, n := range nodes {
		for _, c := range chans {
			keys = append(keys, n+"/"+c)
		}
	}
	for run := range 200 {
		o := newOrphans(30*time.Second, 2*time.Second)
		now := t0
		for step := range 30 {
			now = now.Add(time.Duration(rng.IntN(15)) * time.Second)
			if n := nodes[rng.IntN(len(nodes))]; rng.IntN(4) > 0 {
				var listed []string
				for _, c := range chans {
					if rng.IntN(3) > 0 {
						listed = append(listed, c)
					}
				}
				o.Observe(snap(n, now, rng.IntN(6) > 0, listed...), now)
			}
			o.Refresh(uint64(step), uint64(step), now)
			sus := map[string]bool{}
			for _, k := range o.Suspects(keys, now) {
				sus[k] = true
			}
			for _, n := range nodes {
				for _, c := range chans {
					for _, back := range []time.Duration{0, 5 * time.Second, time.Minute, time.Hour} {
						if _, ok := o.Judge(n, c, now.Add(-back), now); ok && !sus[n+"/"+c] {
							t.Fatalf("run %d step %d: Judge closes %s/%s (answered %v before) but Suspects leaves it out", run, step, n, c, back)
						}
					}
				}
			}
		}
	}
	o := newOrphans(30*time.Second, 2*time.Second)
	o.Observe(snap("n1/x", t0, true, "c1"), t0)
	if got := o.Suspects([]string{"n1/x/c1", "n1/x/c2", "n9/c1"}, t0.Add(time.Second)); len(got) != 1 || got[0] != "n1/x/c2" {
		t.Fatalf("Suspects = %q, want [n1/x/c2] (listed call and unknown node left out)", got)
	}
	if got := o.Suspects([]string{"n1/x/c1"}, t0.Add(30*time.Second)); len(got) != 1 {
		t.Fatalf("Suspects = %q on a silent node, want the listed call too", got)
	}
}

func TestAuthorise(t *testing.T) {
	p := ledger.Project{ID: "p", BalanceSeconds: 125, Settings: ledger.Settings{Tariff: tariff.Default, OnExhausted: ledger.Allow}}
	if r := authorise(p); !r.Allow || r.Seconds != -1 {
		t.Fatalf("allow policy: %+v", r)
	}
	p.OnExhausted = ledger.Hangup
	if r := authorise(p); !r.Allow || r.Seconds != 120 {
		t.Fatalf("125 s on 60/60: %+v, want 120 s", r)
	}
	p.BalanceSeconds, p.CreditLimitSeconds = 0, 0
	if r := authorise(p); r.Allow || r.Reason != ReasonExhausted {
		t.Fatalf("empty balance: %+v", r)
	}
	p.CreditLimitSeconds = 60
	if r := authorise(p); !r.Allow || r.Seconds != 60 {
		t.Fatalf("credit limit 60: %+v", r)
	}
	for _, tc := range []struct {
		tr    tariff.Tariff
		avail int64
	}{
		{tariff.Tariff{MinimumSeconds: 30, IncrementSeconds: 6}, 47},
		{tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}, 61},
		{tariff.Tariff{FreeSeconds: 20, MinimumSeconds: 60, IncrementSeconds: 60}, 0},
		{tariff.Tariff{FreeSeconds: 20, MinimumSeconds: 60, IncrementSeconds: 60}, 179},
		{tariff.Tariff{MinimumSeconds: 0, IncrementSeconds: 10}, 35},
	} {
		got := coveredSeconds(tc.tr, tc.avail)
		if tc.tr.Billed(got) > tc.avail || (got < 1<<20 && tc.tr.Billed(got+1) <= tc.avail) {
			t.Errorf("%+v avail %d: covered %d is not the longest talk billed within it", tc.tr, tc.avail, got)
		}
	}
}

func FuzzDecodeAuthRequest(f *testing.F) {
	good, _ := json.Marshal(AuthRequest{Schema: call.Schema, Node: "n", Channel: "c", Project: "p"})
	f.Add(good)
	f.Add([]byte(`{"schema":1,"project":"a b"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeAuthRequest(b)
		if err == nil && (r.Schema != call.Schema || !call.ValidProject(r.Project)) {
			t.Fatalf("accepted invalid request %+v", r)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	good, _ := json.Marshal(snap("n1", t0, true, "c1", "c2"))
	f.Add(good)
	f.Add([]byte(`{"schema":1,"node":"a.b","at":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`null`))
	p2, _ := json.Marshal(part("n1", t0, 7, 2, 3, "c1"))
	f.Add(p2)
	f.Add([]byte(`{"schema":1,"node":"n","at":"2026-01-01T00:00:00Z","connected":true,"part":4,"parts":3,"calls":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSnapshot(b)
		if err != nil {
			return
		}
		if s.Node == "" || s.At.IsZero() || s.Schema != call.Schema {
			t.Fatalf("accepted invalid snapshot %+v", s)
		}
		if s.Parts > 1 && (s.Part < 1 || s.Part > s.Parts) {
			t.Fatalf("accepted part %d of %d", s.Part, s.Parts)
		}
		o := newOrphans(time.Second, 0)
		o.Observe(s, time.Now()) // must not panic
		o.Judge(s.Node, "x", s.At, time.Now())
	})
}

// TestOrphansWaitForCallsSeq: a snapshot is judged only once bill's
// consumer has processed CALLS up to its calls_seq, and a silent node only
// once bill has processed the stream as it stood when the silence was
// found: a backlog never passes for vanished calls.
func TestOrphansWaitForCallsSeq(t *testing.T) {
	o := newOrphans(30*time.Second, 2*time.Second)
	ans := t0
	// Listed at +10s with calls_seq 100; missing from +20s on (calls_seq 200..700).
	first := snap("n1", t0.Add(10*time.Second), true, "c1")
	first.CallsSeq = 100
	o.Observe(first, first.At)
	for i := 2; i <= 7; i++ {
		at := t0.Add(time.Duration(i*10) * time.Second)
		s := snap("n1", at, true)
		s.CallsSeq = uint64(i * 100)
		o.Observe(s, at)
	}
	now := t0.Add(70 * time.Second)
	// Bill has processed nothing: no snapshot is judged.
	o.Refresh(0, 700, now)
	if _, ok := o.Judge("n1", "c1", ans, now); ok {
		t.Fatal("judged orphan while bill had processed none of the snapshots' events")
	}
	// Processed up to 400: snapshots to +40s admitted, missing since +20s: 20s < 30s.
	o.Refresh(400, 700, now)
	if _, ok := o.Judge("n1", "c1", ans, now); ok {
		t.Fatal("judged orphan on the admitted snapshots (missing 20s only)")
	}
	// Up to 500: the +50s snapshot is admitted, missing for 30s: orphan at its last listing.
	o.Refresh(500, 700, now)
	if end, ok := o.Judge("n1", "c1", ans, now); !ok || !end.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("after catching up: %v %v, want orphan ended at %v", end, ok, t0.Add(10*time.Second))
	}
	// A snapshot arriving once the floor covers it is admitted at once.
	s := snap("n1", t0.Add(80*time.Second), true)
	s.CallsSeq = 450
	o.Observe(s, s.At)
	if o.nodes["n1"].lastAt != s.At || len(o.nodes["n1"].pending) != 0 {
		t.Fatalf("snapshot under the floor not admitted (pending %d)", len(o.nodes["n1"].pending))
	}

	// A silent node: judged only once bill reached the stream's end as it
	// was when the silence was found (its last events may be after its
	// last snapshot's calls_seq).
	d := snap("n2", t0.Add(10*time.Second), true, "a")
	d.CallsSeq = 900
	o.Observe(d, d.At)
	now = t0.Add(45 * time.Second)
	o.Refresh(900, 950, now)
	if _, ok := o.Judge("n2", "a", ans, now); ok {
		t.Fatal("silent node judged before bill processed the stream to where it was when the node fell silent")
	}
	o.Refresh(949, 960, now.Add(time.Second))
	if _, ok := o.Judge("n2", "a", ans, now.Add(time.Second)); ok {
		t.Fatal("silent node judged at floor 949 < 950")
	}
	o.Refresh(950, 960, now.Add(2*time.Second))
	if end, ok := o.Judge("n2", "a", ans, now.Add(2*time.Second)); !ok || !end.Equal(d.At) {
		t.Fatalf("silent node after catching up: %v %v, want %v", end, ok, d.At)
	}
}

func part(node string, at time.Time, seq uint64, i, n int, chans ...string) *call.Snapshot {
	s := snap(node, at, true, chans...)
	s.CallsSeq, s.Part, s.Parts = seq, i, n
	return s
}

// TestOrphansSnapshotParts: a 3-part snapshot is judged only once whole;
// a newer At drops an incomplete older one; an incomplete assembly is
// dropped after OrphanAfter; a replayed last part (Heard) only proves the
// node alive and cannot make the calls of the other parts orphans.
func TestOrphansSnapshotParts(t *testing.T) {
	o := newOrphans(30*time.Second, 2*time.Second)
	ans := t0
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	// +10s: a, b, c over 3 parts, arriving out of order.
	o.Observe(part("n1", at(10), 0, 3, 3, "c"), at(10))
	o.Observe(part("n1", at(10), 0, 1, 3, "a"), at(10))
	if len(o.nodes["n1"].times) != 0 {
		t.Fatal("incomplete snapshot admitted")
	}
	o.Observe(part("n1", at(10), 0, 1, 3, "a"), at(10)) // repeated part
	o.Observe(part("n1", at(10), 0, 2, 3, "b"), at(10))
	if ns := o.nodes["n1"]; len(ns.times) != 1 || len(ns.listed) != 3 {
		t.Fatalf("3-part snapshot: %d admitted, listed %v", len(ns.times), ns.listed)
	}
	// Later snapshots list a and b in part 1 only; their part 2 (with c)
	// never arrives, or arrives after a newer At started.
	for s := 20; s <= 60; s += 10 {
		o.Observe(part("n1", at(s), 0, 1, 2, "a", "b"), at(s))
	}
	o.Observe(part("n1", at(50), 0, 2, 2, "c"), at(61)) // superseded by +60s
	o.Refresh(0, 0, at(61))
	if _, ok := o.Judge("n1", "c", ans, at(61)); ok {
		t.Fatal("call of a part that never came judged orphan")
	}
	if ns := o.nodes["n1"]; ns.asm == nil {
		t.Fatal("incomplete assembly of +60s dropped too early")
	}
	o.Refresh(0, 0, at(91))
	if ns := o.nodes["n1"]; ns.asm != nil {
		t.Fatal("incomplete assembly kept after OrphanAfter")
	}
	// +70s: complete, without c: c missing since +70s only.
	o.Observe(part("n1", at(70), 0, 1, 2, "a"), at(91))
	o.Observe(part("n1", at(70), 0, 2, 2, "b"), at(91))
	if _, ok := o.Judge("n1", "c", ans, at(91)); ok {
		t.Fatal("c judged on one complete snapshot that missed it")
	}

	// Replay: a bill starting sees only the last part of n2's snapshot.
	r := newOrphans(30*time.Second, 2*time.Second)
	r.Heard(part("n2", at(100), 0, 3, 3, "z"), at(100))
	r.Observe(part("n2", at(110), 0, 3, 3, "z"), at(110)) // live parts 1, 2 missing
	r.Refresh(0, 0, at(120))
	for _, ch := range []string{"x", "z"} {
		if _, ok := r.Judge("n2", ch, ans, at(120)); ok {
			t.Fatalf("%s judged orphan from a lone last part", ch)
		}
	}
	// Silent afterwards: calls close at the last time known alive.
	r.Refresh(0, 0, at(140))
	if end, ok := r.Judge("n2", "z", ans, at(140)); !ok || !end.Equal(at(110)) {
		t.Fatalf("z of a silent node: %v %v, want its last listing %v", end, ok, at(110))
	}
	if end, ok := r.Judge("n2", "x", ans, at(140)); !ok || !end.Equal(at(110)) {
		t.Fatalf("x of a silent node: %v %v, want the node's last report %v", end, ok, at(110))
	}
}

// TestOrphansOwnOutageIsNotSilence: bill cut off from NATS hears no
// snapshot; once it listens again, a node's silence counts from then, not
// from the node's last message before the outage.
func TestOrphansOwnOutageIsNotSilence(t *testing.T) {
	o := newOrphans(3*time.Second, time.Second)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	o.Listening(at(0))
	for ms := 1000; ms <= 5000; ms += 1000 {
		o.Observe(snap("n1", at(ms), true, "a"), at(ms))
	}
	// bill's connection is down from +5.5s to +10s; it reconnects then.
	o.Listening(at(10_000))
	for _, ms := range []int{10_000, 12_000, 12_999} {
		o.Refresh(0, 0, at(ms))
		if _, ok := o.Judge("n1", "a", t0, at(ms)); ok {
			t.Fatalf("at +%dms: call judged orphan over bill's own outage", ms)
		}
	}
	// Still nothing 3 s after bill listens again: the node is silent, its
	// calls end when it was last heard of.
	o.Refresh(0, 0, at(13_000))
	if end, ok := o.Judge("n1", "a", t0, at(13_000)); !ok || !end.Equal(at(5000)) {
		t.Fatalf("silent node after bill reconnected: %v %v, want last listing %v", end, ok, at(5000))
	}
}

// TestOrphansPendingSnapshot: a snapshot sent while some of its events
// were not yet acknowledged (pending) proves the node and its listed calls
// alive, but a call it does not list is no orphan, however long.
func TestOrphansPendingSnapshot(t *testing.T) {
	o := newOrphans(3*time.Second, time.Second)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	o.Observe(snap("n1", at(1), true, "a", "b"), at(1))
	for s := 2; s <= 20; s++ {
		p := snap("n1", at(s), true, "a") // b ended; its ended is still in ingest's buffer
		p.Pending = true
		o.Observe(p, at(s))
		o.Refresh(0, 0, at(s))
		if _, ok := o.Judge("n1", "b", t0, at(s)); ok {
			t.Fatalf("at +%ds: b judged orphan from pending snapshots", s)
		}
	}
	if ns := o.nodes["n1"]; !ns.lastRecv.Equal(at(20)) || ns.lastListed["a"] != at(20).UnixNano() {
		t.Fatalf("pending snapshots did not prove the node and a alive: %+v", ns)
	}
}

// TestOrphansSnapshotGenerations: parts are assembled per snapshot (At and
// Gen): a part of another snapshot with the same At does not complete it.
func TestOrphansSnapshotGenerations(t *testing.T) {
	o := newOrphans(30*time.Second, 2*time.Second)
	p1 := part("n1", t0, 0, 1, 2, "a")
	p1.Gen = 7
	p2 := part("n1", t0, 0, 2, 2, "b")
	p2.Gen = 6 // an older snapshot's part, same millisecond
	o.Observe(p1, t0)
	o.Observe(p2, t0)
	if len(o.nodes["n1"].times) != 0 {
		t.Fatal("parts of two snapshots assembled as one")
	}
	p2.Gen = 7
	o.Observe(p2, t0)
	if ns := o.nodes["n1"]; len(ns.times) != 1 || len(ns.listed) != 2 {
		t.Fatalf("2-part snapshot gen 7: %d admitted, listed %v", len(ns.times), ns.listed)
	}
}

// FuzzAppendCDR: the hand-written CDR encoding is byte for byte what
// encoding/json writes.
func FuzzAppendCDR(f *testing.F) {
	f.Add("n1", "1712.34", "p", "variable", int64(1_700_000_000_123), int64(61_500), 16, "Normal Clearing", true, "exhausted", int64(0))
	f.Add("n<1>", "c\"\\\u2028", "", "", int64(-62_135_596_800_001), int64(0), 0, "é\x00\xff", false, "", int64(3))
	f.Add("n", "c", "p", "", int64(253_402_300_800_000), int64(-1), -3, "", false, "orphaned", int64(999_999_999))
	f.Fuzz(func(t *testing.T, node, ch, project, by string, atMS, talk int64, cause int, txt string, est bool, reason string, ns int64) {
		at := time.UnixMilli(atMS).Add(time.Duration(ns % 1_000_000))
		c := call.CDR{Schema: call.Schema, Node: node, Channel: ch, Project: project, AttributedBy: by,
			CreatedAt: at, AnsweredAt: at.Add(time.Second).UTC(), EndedAt: at.Add(time.Duration(talk) * time.Millisecond).In(time.FixedZone("x", 3600)),
			TalkMS: talk, TalkSeconds: talk / 1000, BilledSeconds: talk / 7, Cause: cause, CauseTxt: txt, Estimated: est, EndReason: reason}
		want, werr := json.Marshal(c)
		got, gerr := appendCDR(nil, &c)
		if (werr != nil) != (gerr != nil) {
			t.Fatalf("errors differ: json %v, appendCDR %v", werr, gerr)
		}
		if werr == nil && string(got) != string(want) {
			t.Fatalf("appendCDR\n%s\nwant\n%s", got, want)
		}
	})
}
