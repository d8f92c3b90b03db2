package bill

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

var tariffs = map[string]tariff.Tariff{
	"t6060": {MinimumSeconds: 60, IncrementSeconds: 60},
	"t306":  {MinimumSeconds: 30, IncrementSeconds: 6},
	"t11":   {MinimumSeconds: 1, IncrementSeconds: 1},
	"tfree": {FreeSeconds: 5, MinimumSeconds: 60, IncrementSeconds: 60},
	"tceil": {MinimumSeconds: 30, IncrementSeconds: 6, CountInitiatedSeconds: true},
}

const topup = 1_000_000

// TestExactBillingAndOrder: every tariff, every talk time, every order of
// delivery gives exactly billed(talk), once, with one CDR per call.
func TestExactBillingAndOrder(t *testing.T) {
	e := setup(t)
	for id, tr := range tariffs {
		e.project(id, tr, topup, nil)
	}
	b, _ := e.start(nil)
	talks := []time.Duration{0, 500 * time.Millisecond, time.Second, 4900 * time.Millisecond, 5 * time.Second,
		31 * time.Second, 60 * time.Second, 61500 * time.Millisecond, 125 * time.Second}
	orders := []string{"normal", "ended-first", "answered-twice", "ended-twice", "ended-only"}
	want := map[[3]string]int64{}
	spent := map[string]int64{}
	now := time.Now()
	n := 0
	for id, tr := range tariffs {
		for i, talk := range talks {
			for _, order := range orders {
				ch := fmt.Sprintf("%s-%d-%s", id, i, order)
				a, en := events(id, "n1", ch, now.Add(-talk-time.Minute), talk)
				// Republished events carry a new Msg-Id, as if ingest had
				// restarted past the duplicate window.
				dup := func(ev call.Event) { ev.Name = "dup"; e.publishID(ev, ev.MsgID()+"/again") }
				switch order {
				case "normal":
					e.publish(a)
					e.publish(en)
				case "ended-first":
					e.publish(en)
					e.publish(a)
				case "answered-twice":
					e.publish(a)
					dup(a)
					e.publish(en)
				case "ended-twice":
					e.publish(a)
					e.publish(en)
					dup(en)
				case "ended-only":
					e.publish(en)
				}
				w := tr.BilledMS(talk.Milliseconds())
				want[[3]string{id, "n1", ch}] = w
				spent[id] += w
				n++
			}
		}
	}
	e.publish(call.Event{Kind: call.Started, Node: "n1", Channel: "s1", Project: "t11", CreatedAt: now})
	e.waitSettled(20*time.Second, want)
	for id := range tariffs {
		if got := e.balance(id); got != topup-spent[id] {
			t.Errorf("project %s: balance %d, want %d", id, got, topup-spent[id])
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(e.readAll(call.CDRStream, "minuted.cdr.>")) >= n },
		"CDRs")
	cdrs := e.readAll(call.CDRStream, "minuted.cdr.>")
	seen := map[string]bool{}
	for _, d := range cdrs {
		var c call.CDR
		if err := json.Unmarshal(d, &c); err != nil {
			t.Fatal(err)
		}
		k := c.Node + "/" + c.Channel
		if seen[k] {
			t.Errorf("two CDRs for %s", k)
		}
		seen[k] = true
		if w := want[[3]string{c.Project, c.Node, c.Channel}]; c.BilledSeconds != w || c.Estimated {
			t.Errorf("CDR %s: billed %d estimated %v, want %d", k, c.BilledSeconds, c.Estimated, w)
		}
	}
	if len(cdrs) != n {
		t.Errorf("%d CDRs for %d calls", len(cdrs), n)
	}
	st := b.Stats()
	if st.Started != 1 || st.Settled != int64(n) || st.Debits == 0 || st.Refunds == 0 || st.Scheduled != 0 {
		t.Errorf("stats %+v", st)
	}
}

func (e *env) publishID(ev call.Event, id string) {
	e.t.Helper()
	ev.Schema = call.Schema
	data, _ := json.Marshal(ev)
	if _, err := e.js.Publish(e.ctx, ev.Subject(), data, jetstream.WithMsgID(id)); err != nil {
		e.t.Fatal(err)
	}
}

// TestCrashBetweenCommitAndAck: a Biller dies after settling in Redis and
// before acking; the message goes to a second Biller; billed once, one CDR.
func TestCrashBetweenCommitAndAck(t *testing.T) {
	e := setup(t)
	e.project("p", tariffs["t306"], topup, nil)
	var crashed atomic.Int64
	_, stop1 := e.start(func(o *Options) {
		o.Hooks.AfterCommit = func(ev *call.Event) error {
			if ev.Kind == call.Ended {
				crashed.Add(1)
				return errors.New("killed")
			}
			return nil
		}
	})
	const n = 20
	want := map[[3]string]int64{}
	var spent int64
	for i := range n {
		talk := time.Duration(10+i*7) * time.Second
		a, en := events("p", "n1", fmt.Sprint("c", i), time.Now().Add(-talk), talk)
		e.publish(a)
		e.publish(en)
		w := tariffs["t306"].BilledMS(talk.Milliseconds())
		want[[3]string{"p", "n1", fmt.Sprint("c", i)}] = w
		spent += w
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return crashed.Load() >= n }, "hook ran for every ended")
	stop1()
	e.waitSettled(time.Second, want) // committed before the "crash"
	if got := len(e.readAll(call.CDRStream, "minuted.cdr.>")); got != 0 {
		t.Fatalf("%d CDRs published before the crash point", got)
	}
	b2, _ := e.start(nil)
	testutil.Eventually(t, 15*time.Second, func() bool { return len(e.readAll(call.CDRStream, "minuted.cdr.>")) == n },
		"second biller publishes the CDRs of the redelivered ended events")
	e.waitSettled(time.Second, want)
	if got := e.balance("p"); got != topup-spent {
		t.Fatalf("balance %d, want %d", got, topup-spent)
	}
	if st := b2.Stats(); st.Redeliveries < n || st.Settled != 0 {
		t.Fatalf("second biller stats %+v: want ≥ %d redeliveries and no new settlement", st, n)
	}
}

// TestTwoBillersThousandCalls: two instances on one consumer, 1,000 calls
// over projects with mixed tariffs, duplicates and reordering.
func TestTwoBillersThousandCalls(t *testing.T) {
	e := setup(t)
	ids := []string{"t6060", "t306", "t11", "tfree", "tceil"}
	for _, id := range ids {
		e.project(id, tariffs[id], topup, func(s *ledger.Settings) { s.ThresholdsMinutes = []float64{16600, 16500} })
	}
	b1, _ := e.start(nil)
	b2, _ := e.start(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	want := map[[3]string]int64{}
	spent := map[string]int64{}
	now := time.Now()
	const n = 1000
	for i := range n {
		id := ids[i%len(ids)]
		node := fmt.Sprint("n", i%3)
		ch := fmt.Sprint("ch", i)
		talk := time.Duration(rng.Int64N(400_000)) * time.Millisecond
		a, en := events(id, node, ch, now.Add(-talk-time.Duration(rng.IntN(3000))*time.Millisecond), talk)
		if rng.IntN(4) == 0 {
			e.publish(en)
			e.publish(a)
		} else {
			e.publish(a)
			e.publish(en)
		}
		if rng.IntN(10) == 0 {
			e.publishID(en, en.MsgID()+"/again")
		}
		w := tariffs[id].BilledMS(talk.Milliseconds())
		want[[3]string{id, node, ch}] = w
		spent[id] += w
	}
	e.waitSettled(40*time.Second, want)
	for _, id := range ids {
		if got := e.balance(id); got != topup-spent[id] {
			t.Errorf("project %s: balance %d, want %d", id, got, topup-spent[id])
		}
	}
	testutil.Eventually(t, 10*time.Second, func() bool { return len(e.readAll(call.CDRStream, "minuted.cdr.>")) >= n }, "CDRs")
	if got := len(e.readAll(call.CDRStream, "minuted.cdr.>")); got != n {
		t.Errorf("%d CDRs for %d calls", got, n)
	}
	s1, s2 := b1.Stats(), b2.Stats()
	if s1.Settled+s2.Settled != n || s1.Processed == 0 || s2.Processed == 0 {
		t.Errorf("stats: %+v / %+v", s1, s2)
	}
	// Each threshold crossed once, alerted once though two instances ran.
	for _, id := range ids {
		var got []string
		for _, d := range e.readAll(call.AlertsStream, call.AlertSubject(id)) {
			a, err := alert.Decode(d)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, a.ID)
		}
		spentMin := float64(spent[id]) / 60
		wantN := 0
		for _, th := range []float64{16600, 16500} {
			if float64(topup)/60-spentMin < th {
				wantN++
			}
		}
		if len(got) != wantN {
			t.Errorf("project %s: threshold alerts %v, want %d", id, got, wantN)
		}
	}
}

// TestRealTimeDebit: a 1/1 call answered 3 s ago and still up is debited
// while it runs; its end is exact.
func TestRealTimeDebit(t *testing.T) {
	e := setup(t)
	e.project("p", tariffs["t11"], 1000, nil)
	e.start(nil)
	answered := time.Now().Add(-3 * time.Second)
	a, _ := events("p", "n1", "live", answered, 0)
	e.publish(a)
	testutil.Eventually(t, 5*time.Second, func() bool { return e.balance("p") <= 1000-3 }, "first blocks debited")
	b1 := e.balance("p")
	testutil.Eventually(t, 5*time.Second, func() bool { return e.balance("p") <= b1-2 }, "balance keeps falling while the call is up")
	c, err := e.callState("p", "n1", "live")
	if err != nil || c.Settled {
		t.Fatalf("call %+v %v", c, err)
	}
	talk := time.Since(answered) + 700*time.Millisecond
	_, en := events("p", "n1", "live", answered, talk)
	e.publish(en)
	w := tariffs["t11"].BilledMS(talk.Milliseconds())
	e.waitSettled(5*time.Second, map[[3]string]int64{{"p", "n1", "live"}: w})
	time.Sleep(1200 * time.Millisecond) // a stray tick after the end must change nothing
	if got := e.balance("p"); got != 1000-w {
		t.Fatalf("balance %d, want %d", got, 1000-w)
	}
}

// TestExhaustionHangup: under on_exhausted: hangup the block the balance
// cannot cover is not debited and the node is told to hang up.
func TestExhaustionHangup(t *testing.T) {
	e := setup(t)
	e.project("p", tariffs["t11"], 3, func(s *ledger.Settings) { s.OnExhausted = ledger.Hangup })
	hangups := make(chan *nats.Msg, 16)
	sub, err := e.nc.ChanSubscribe(call.ControlSubject("n1", "hangup"), hangups)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	b, _ := e.start(func(o *Options) { o.HangupRetry = 100 * time.Millisecond })
	answered := time.Now().Add(-10 * time.Second)
	a, en := events("p", "n1", "c1", answered, 10*time.Second)
	e.publish(a)
	for i := range 2 { // repeated until the call ends
		select {
		case m := <-hangups:
			var h call.Hangup
			if err := json.Unmarshal(m.Data, &h); err != nil || h.Channel != "c1" || h.Reason != alert.Exhausted {
				t.Fatalf("hangup %d: %s (%v)", i, m.Data, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no hangup %d", i)
		}
	}
	if got := e.balance("p"); got != 0 {
		t.Fatalf("balance %d, want 0: blocks 0-2 debited, block 3 not", got)
	}
	e.publish(en)
	e.waitSettled(5*time.Second, map[[3]string]int64{{"p", "n1", "c1"}: 3})
	if got := e.balance("p"); got != 0 {
		t.Fatalf("balance after settlement %d, want 0", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return len(e.readAll(call.CDRStream, "minuted.cdr.p")) == 1 }, "CDR")
	var cdr call.CDR
	_ = json.Unmarshal(e.readAll(call.CDRStream, "minuted.cdr.p")[0], &cdr)
	if cdr.EndReason != alert.Exhausted {
		t.Fatalf("CDR end_reason %q", cdr.EndReason)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		for _, d := range e.readAll(call.AlertsStream, call.AlertSubject("p")) {
			if a, err := alert.Decode(d); err == nil && a.Kind == alert.Exhausted {
				return true
			}
		}
		return false
	}, "exhausted alert")
	if b.Stats().Exhausted == 0 {
		t.Fatal("exhaustion not counted")
	}
}

// TestOrphanFromSnapshots: a call its node stops listing is settled as
// estimated at the last listing; a later exact ended corrects it.
func TestOrphanFromSnapshots(t *testing.T) {
	e := setup(t)
	e.project("p", tariffs["t11"], 1000, nil)
	b, _ := e.start(func(o *Options) { o.Config.OrphanAfter = 1500 * time.Millisecond })
	answered := time.Now().Add(-5 * time.Second).UTC().Truncate(time.Millisecond)
	a, en := events("p", "n1", "c1", answered, 9*time.Second)
	e.publish(a)
	testutil.Eventually(t, 5*time.Second, func() bool { c, err := e.callState("p", "n1", "c1"); return err == nil && c.Debited > 0 }, "call open")
	pub := func(listed bool) time.Time {
		at := time.Now().UTC().Truncate(time.Millisecond)
		s := call.Snapshot{Schema: call.Schema, Node: "n1", At: at, Connected: true}
		if listed {
			s.Calls = []call.LiveCall{{Channel: "c1", Project: "p", AnsweredAt: &answered}}
		}
		d, _ := json.Marshal(s)
		if err := e.nc.Publish(call.SnapshotSubject("n1"), d); err != nil {
			t.Fatal(err)
		}
		return at
	}
	var last time.Time
	for range 4 {
		last = pub(true)
		time.Sleep(150 * time.Millisecond)
	}
	_ = e.nc.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pub(false)
		if c, err := e.callState("p", "n1", "c1"); err == nil && c.Settled {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("orphan not settled")
		}
		time.Sleep(150 * time.Millisecond)
	}
	c, _ := e.callState("p", "n1", "c1")
	if wantEst := tariffs["t11"].BilledMS(last.Sub(answered).Milliseconds()); !c.Estimated || c.Debited != wantEst {
		t.Fatalf("orphan %+v, want estimated at last listing: %d s", c, wantEst)
	}
	if b.Stats().Estimated != 1 {
		t.Fatalf("stats %+v", b.Stats())
	}
	e.publish(en)
	e.waitSettled(5*time.Second, map[[3]string]int64{{"p", "n1", "c1"}: 9})
	if c, _ := e.callState("p", "n1", "c1"); c.Estimated {
		t.Fatal("exact ended did not clear estimated")
	}
	if got := e.balance("p"); got != 1000-9 {
		t.Fatalf("balance %d, want %d", got, 1000-9)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return len(e.readAll(call.CDRStream, "minuted.cdr.p")) == 2 },
		"an estimated and an exact CDR")
}

// TestUnknownProjectAndBadMessages: create vs dead_letter, unbilled and
// undecodable messages.
func TestUnknownProjectAndBadMessages(t *testing.T) {
	e := setup(t)
	bc, stopC := e.start(nil)
	now := time.Now()
	for i := range 2 {
		a, en := events("newp", "n1", fmt.Sprint("c", i), now.Add(-time.Minute), 30*time.Second)
		e.publish(a)
		e.publish(en)
	}
	e.publishID(call.Event{Kind: call.Started, Node: "n1", Channel: "u1", CreatedAt: now}, "u1")
	e.publishID(call.Event{Kind: call.Ended, Node: "n1", Channel: "u1", EndedAt: &now, CreatedAt: now}, "u1e")
	if _, err := e.js.Publish(e.ctx, "minuted.calls.p.ended", []byte(`{"schema":1,"event":"ended"`)); err != nil {
		t.Fatal(err)
	}
	e.waitSettled(10*time.Second, map[[3]string]int64{{"newp", "n1", "c0"}: 60, {"newp", "n1", "c1"}: 60})
	if got := e.balance("newp"); got != -120 {
		t.Fatalf("created project balance %d, want -120", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return len(e.readAll(call.DLQStream, "minuted.dlq.>")) == 1 }, "undecodable dead-lettered")
	kinds := func(subj string) map[string]int {
		m := map[string]int{}
		for _, d := range e.readAll(call.AlertsStream, subj) {
			a, err := alert.Decode(d)
			if err != nil {
				t.Fatal(err)
			}
			m[a.Kind]++
		}
		return m
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		return kinds(call.AlertSubject("newp"))[alert.UnknownProject] == 1 && kinds(call.AlertSubject(""))[alert.Unbilled] == 1 &&
			kinds(call.AlertSubject(""))[alert.DeadLettered] == 1
	}, "one unknown-project, unbilled and dead-letter alert")
	if st := bc.Stats(); st.Unbilled != 2 || st.DeadLettered != 1 {
		t.Fatalf("stats %+v", st)
	}
	stopC()

	_, _ = e.start(func(o *Options) { o.Config.UnknownProject = "dead_letter"; o.Consumer = "bill2" })
	// bill2 replays the whole stream: newp now exists; "other" does not.
	a, en := events("other", "n1", "x", now.Add(-time.Minute), 30*time.Second)
	e.publish(a)
	e.publish(en)
	testutil.Eventually(t, 10*time.Second, func() bool { return len(e.readAll(call.DLQStream, "minuted.dlq.>")) == 3 },
		"both events of the unknown project dead-lettered")
	if _, err := e.l.Get(e.ctx, "other"); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("dead_letter policy created the project: %v", err)
	}
	cons, err := e.js.Consumer(e.ctx, call.CallsStream, "bill2")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		ci, err := cons.Info(e.ctx)
		return err == nil && ci.NumAckPending == 0 && ci.NumPending == 0
	}, "dead-lettered messages acknowledged, not retried")
}

// TestRedisOutage: Redis killed for 10 s under load; processing resumes
// and balances are exact; one redis_down alert.
func TestRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s outage")
	}
	e := setup(t)
	tr := map[string]tariff.Tariff{"p": tariffs["t306"], "q": tariffs["t11"]}
	for id, x := range tr {
		e.project(id, x, topup, nil)
	}
	e.start(nil)
	e.start(nil)
	want := map[[3]string]int64{}
	spent := map[string]int64{}
	var wg sync.WaitGroup
	pub := func(from, to int) {
		for i := from; i < to; i++ {
			id := []string{"p", "q"}[i%2]
			talk := time.Duration(1000+i*397) * time.Millisecond
			a, en := events(id, "n1", fmt.Sprint("c", i), time.Now().Add(-talk), talk)
			e.publish(a)
			e.publish(en)
			w := tr[id].BilledMS(talk.Milliseconds())
			want[[3]string{id, "n1", fmt.Sprint("c", i)}] = w
			spent[id] += w
			time.Sleep(5 * time.Millisecond)
		}
	}
	wg.Go(func() { pub(0, 100) })
	time.Sleep(200 * time.Millisecond)
	e.redis.Stop()
	stopped := time.Now()
	wg.Wait()
	pub(100, 200) // published while Redis is down
	time.Sleep(10*time.Second - time.Since(stopped))
	e.redis.Start(t)
	e.waitSettled(30*time.Second, want)
	for id, s := range spent {
		if got := e.balance(id); got != topup-s {
			t.Errorf("project %s: balance %d, want %d", id, got, topup-s)
		}
	}
	n := 0
	for _, d := range e.readAll(call.AlertsStream, call.AlertSubject("")) {
		if a, err := alert.Decode(d); err == nil && a.Kind == alert.RedisDown {
			n++
		}
	}
	if n < 1 || n > 2 { // one per outage; two only if the outage straddles a minute boundary between instances
		t.Fatalf("%d redis_down alerts", n)
	}
}

// TestAuthorisation: Stasis requests answered from the ledger.
func TestAuthorisation(t *testing.T) {
	e := setup(t)
	e.project("rich", tariffs["t6060"], 125, func(s *ledger.Settings) { s.OnExhausted = ledger.Hangup })
	e.project("broke", tariffs["t6060"], 0, func(s *ledger.Settings) { s.OnExhausted = ledger.Hangup })
	e.project("open", tariffs["t6060"], 0, nil)
	e.start(func(o *Options) { o.Config.UnknownProject = "dead_letter" })
	ask := func(project string, body any) AuthResponse {
		d, _ := json.Marshal(body)
		m, err := e.nc.Request(AuthSubject(project), d, 2*time.Second)
		if err != nil {
			t.Fatalf("auth %s: %v", project, err)
		}
		var r AuthResponse
		if err := json.Unmarshal(m.Data, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	req := func(p string) AuthRequest {
		return AuthRequest{Schema: call.Schema, Node: "n1", Channel: "c", Project: p}
	}
	// The subscription may need a moment after Run starts.
	testutil.Eventually(t, 5*time.Second, func() bool {
		_, err := e.nc.Request(AuthSubject("rich"), []byte(`{}`), 200*time.Millisecond)
		return err == nil
	}, "auth responder up")
	for _, tc := range []struct {
		project string
		allow   bool
		seconds int64
		reason  string
	}{
		{"rich", true, 120, ""},
		{"broke", false, 0, ReasonExhausted},
		{"open", true, -1, ""},
		{"ghost", false, 0, ReasonUnknown},
	} {
		r := ask(tc.project, req(tc.project))
		if r.Allow != tc.allow || r.Seconds != tc.seconds || r.Reason != tc.reason {
			t.Errorf("%s: %+v", tc.project, r)
		}
	}
	if r := ask("rich", req("broke")); r.Allow || r.Reason != ReasonInvalid {
		t.Errorf("project not matching the subject: %+v", r)
	}
}

// TestSweeperAdoptsCallsOfDeadInstance: the instance ticking a live call
// stops; the other adopts it through the ledger's overdue set.
func TestSweeperAdoptsCallsOfDeadInstance(t *testing.T) {
	e := setup(t)
	e.project("p", tariffs["t11"], 1000, nil)
	b1, stop1 := e.start(nil)
	b2, stop2 := e.start(nil)
	answered := time.Now().Add(-100 * time.Millisecond)
	a, _ := events("p", "n1", "c1", answered, 0)
	e.publish(a)
	testutil.Eventually(t, 5*time.Second, func() bool { return b1.Stats().Scheduled+b2.Stats().Scheduled >= 1 }, "call scheduled")
	// (the other instance may already have adopted it: its first block was
	// overdue on arrival; stopping the one that has it still proves adoption)
	survivor := b2
	if b1.Stats().Scheduled == 1 {
		stop1()
	} else {
		stop2()
		survivor = b1
	}
	before := e.balance("p")
	testutil.Eventually(t, 5*time.Second, func() bool { return survivor.Stats().Scheduled == 1 }, "survivor adopts the call")
	testutil.Eventually(t, 5*time.Second, func() bool { return e.balance("p") <= before-2 }, "balance keeps falling after the adoption")
	talk := time.Since(answered)
	_, en := events("p", "n1", "c1", answered, talk)
	e.publish(en)
	w := tariffs["t11"].BilledMS(talk.Milliseconds())
	e.waitSettled(5*time.Second, map[[3]string]int64{{"p", "n1", "c1"}: w})
	if got := e.balance("p"); got != 1000-w {
		t.Fatalf("balance %d, want %d", got, 1000-w)
	}
}

// BenchmarkMessages measures the whole path: answered + ended events of
// 60/60 calls of 61 s (two blocks debited in real time, then settled)
// through one Biller on real NATS and Redis.
func BenchmarkMessages(b *testing.B) {
	for _, fsync := range []string{"always", "everysec"} {
		b.Run("fsync="+fsync, func(b *testing.B) { benchMessages(b, "--appendfsync", fsync) })
	}
}

func benchMessages(b *testing.B, redisArgs ...string) {
	e := setup(b, redisArgs...)
	e.project("p", tariffs["t6060"], 1<<40, nil)
	bl, _ := e.start(func(o *Options) { o.Config.MaxInFlight = 1024; o.Config.Batch = 256 })
	now := time.Now()
	want := map[[3]string]int64{}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		a, en := events("p", "n1", fmt.Sprint("c", i), now.Add(-61*time.Second), 61*time.Second)
		e.publishAsync(a)
		e.publishAsync(en)
		want[[3]string{"p", "n1", fmt.Sprint("c", i)}] = 120
	}
	<-e.js.PublishAsyncComplete()
	deadline := time.Now().Add(2 * time.Minute)
	for bl.Stats().Ended < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("stats %+v", bl.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	el := time.Since(start)
	b.StopTimer()
	st := bl.Stats()
	b.ReportMetric(float64(2*b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(st.Debits)/el.Seconds(), "ledger-writes/s")
	if b.N <= 2000 {
		e.waitSettled(10*time.Second, want)
	}
}

func (e *env) publishAsync(ev call.Event) {
	ev.Schema = call.Schema
	data, _ := json.Marshal(ev)
	// bill's own CDRs share the async window: wait for room, do not fail.
	if _, err := e.js.PublishAsync(ev.Subject(), data, jetstream.WithMsgID(ev.MsgID()), jetstream.WithStallWait(30*time.Second)); err != nil {
		e.t.Fatal(err)
	}
}

// TestAdoptedAnswerKeepsTheRecordedOne: an ingest restarted mid-call adopts
// the call with a guessed answer time (answer_estimated); bill keeps the
// exact answer it recorded first, so the call is billed exactly.
func TestAdoptedAnswerKeepsTheRecordedOne(t *testing.T) {
	e := setup(t)
	tr := tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}
	e.project("adopt", tr, 1000, nil)
	e.start(nil)
	answered := time.Now().Add(-62 * time.Second)
	a, en := events("adopt", "n1", "c1", answered, 62*time.Second)
	e.publish(a)
	// The restarted ingest's view: answer guessed 50 s later, end exact.
	guess := answered.Add(50 * time.Second)
	a2, en2 := a, en
	a2.AnsweredAt, en2.AnsweredAt = &guess, &guess
	a2.AnswerEstimated, en2.AnswerEstimated = true, true
	e.publishID(a2, a2.MsgID()+"/adopted")
	e.publish(en2)
	e.waitSettled(15*time.Second, map[[3]string]int64{{"adopt", "n1", "c1"}: 62})
	if got := e.balance("adopt"); got != 1000-62 {
		t.Errorf("balance %d, want %d", got, 1000-62)
	}
	// A call whose only answer is a guess is billed from it and flagged.
	g2 := time.Now().Add(-10 * time.Second)
	_, en3 := events("adopt", "n1", "c2", g2, 10*time.Second)
	en3.AnswerEstimated = true
	e.publish(en3)
	e.waitSettled(15*time.Second, map[[3]string]int64{{"adopt", "n1", "c2"}: 10})
	var cdrs [][]byte
	testutil.Eventually(t, 10*time.Second, func() bool {
		cdrs = e.readAll(call.CDRStream, "minuted.cdr.adopt")
		return len(cdrs) >= 2
	}, "two CDRs")
	estimated := map[string]bool{}
	for _, d := range cdrs {
		var c call.CDR
		if err := json.Unmarshal(d, &c); err != nil {
			t.Fatal(err)
		}
		estimated[c.Channel] = c.Estimated
	}
	if len(estimated) != 2 || estimated["c1"] || !estimated["c2"] {
		t.Errorf("CDR estimated flags %v, want c1 exact and c2 estimated", estimated)
	}
}

// TestDeadNodeFoundAfterBillRestart: a node's ingest dies for good, and
// bill restarts after that: the node's last snapshot (kept in the NODES
// stream) tells the new bill when the node was last heard of, so its live
// calls are closed, estimated at that time, instead of ticking forever.
func TestDeadNodeFoundAfterBillRestart(t *testing.T) {
	e := setup(t)
	e.project("p", tariffs["t11"], 1000, nil)
	_, stop := e.start(func(o *Options) { o.Config.OrphanAfter = time.Hour })
	answered := time.Now().Add(-5 * time.Second).UTC().Truncate(time.Millisecond)
	a, _ := events("p", "dead", "c1", answered, 9*time.Second)
	e.publish(a)
	testutil.Eventually(t, 5*time.Second, func() bool { c, err := e.callState("p", "dead", "c1"); return err == nil && c.Debited > 0 }, "call open")
	at := time.Now().UTC().Truncate(time.Millisecond)
	d, _ := json.Marshal(call.Snapshot{Schema: call.Schema, Node: "dead", At: at, Connected: true,
		Calls: []call.LiveCall{{Channel: "c1", Project: "p", AnsweredAt: &answered}}})
	if err := e.nc.Publish(call.SnapshotSubject("dead"), d); err != nil {
		t.Fatal(err)
	}
	_ = e.nc.Flush()
	stop() // bill goes away; the node never reports again
	time.Sleep(1200 * time.Millisecond)
	e.start(func(o *Options) { o.Config.OrphanAfter = time.Second })
	e.waitSettled(10*time.Second, map[[3]string]int64{{"p", "dead", "c1"}: tariffs["t11"].BilledMS(at.Sub(answered).Milliseconds())})
	if c, _ := e.callState("p", "dead", "c1"); !c.Estimated {
		t.Fatalf("call %+v not marked estimated", c)
	}
}
