package bill

import (
	"context"
	"encoding/json"
	"fmt"
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
		s.Add(&entry{key: fmt.Sprint("k", i), due: base.Add(time.Duration(off) * time.Millisecond), idx: -1})
	}
	if s.Add(&entry{key: "k1", due: base, idx: -1}) {
		t.Fatal("a second Add of a scheduled call must be refused")
	}
	s.Remove("k2") // due at 20ms: never handed out
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := make(chan *entry)
	go s.Run(ctx, out)
	var got []string
	for range 3 {
		e := <-out
		if time.Now().Before(e.due) {
			t.Errorf("%s handed out %v before due", e.key, e.due.Sub(time.Now()))
		}
		got = append(got, e.key)
		s.Done(e)
	}
	if fmt.Sprint(got) != "[k3 k1 k0]" {
		t.Fatalf("order %v, want [k3 k1 k0]", got)
	}
	if s.Len() != 0 {
		t.Fatalf("%d left", s.Len())
	}
	// Requeue after Remove while busy is dropped.
	e := &entry{key: "x", due: time.Now(), idx: -1}
	s.Add(e)
	e = <-out
	s.Remove("x")
	s.Requeue(e)
	if s.Len() != 0 || len(s.h) != 0 {
		t.Fatal("a call removed while busy was requeued")
	}
	// A new earlier entry wakes the loop sleeping on a later one.
	s.Add(&entry{key: "late", due: time.Now().Add(time.Hour), idx: -1})
	s.Add(&entry{key: "soon", due: time.Now().Add(20 * time.Millisecond), idx: -1})
	select {
	case e := <-out:
		if e.key != "soon" {
			t.Fatalf("got %s", e.key)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("scheduler did not wake for an earlier entry")
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
	if _, ok := o.Judge("n2", "a", t0, t0.Add(39*time.Second)); ok {
		t.Fatal("silent for 29s only")
	}
	end, ok = o.Judge("n2", "a", t0, t0.Add(40*time.Second))
	if !ok || !end.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("silent node: %v %v", end, ok)
	}
	end, ok = o.Judge("n2", "b", t0.Add(15*time.Second), t0.Add(40*time.Second))
	if !ok || !end.Equal(t0.Add(15*time.Second)) {
		t.Fatalf("silent node, call answered after its last snapshot: %v %v", end, ok)
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
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSnapshot(b)
		if err != nil {
			return
		}
		if s.Node == "" || s.At.IsZero() || s.Schema != call.Schema {
			t.Fatalf("accepted invalid snapshot %+v", s)
		}
		o := newOrphans(time.Second, 0)
		o.Observe(s, time.Now()) // must not panic
		o.Judge(s.Node, "x", s.At, time.Now())
	})
}
