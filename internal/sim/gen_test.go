package sim

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/CyCoreSystems/ari/v6"
	"github.com/minuted/minuted/internal/testutil"
)

type evView struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Cause     *int   `json:"cause"`
	Variable  string `json:"variable"`
	Value     string `json:"value"`
	Channel   *struct {
		ID          string            `json:"id"`
		Name        string            `json:"name"`
		State       string            `json:"state"`
		Accountcode string            `json:"accountcode"`
		Vars        map[string]string `json:"channelvars"`
	} `json:"channel"`
}

func decodeAll(t testing.TB, msgs [][]byte) []evView {
	t.Helper()
	out := make([]evView, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m, &out[i]); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	return out
}

func (c *client) raw() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.msgs...)
}

// TestGeneratedShapesMatchTraces: one call of each shape has exactly the event
// types, in order, of the recorded trace, and the ari library decodes every event.
func TestGeneratedShapesMatchTraces(t *testing.T) {
	for sh := range numShapes {
		t.Run(sh.String(), func(t *testing.T) {
			s := startServer(t, nil)
			c := dial(t, s, "minuted")
			res, err := s.Generate(ctxT(t, 10*time.Second), GenOptions{Calls: 1, Shapes: map[Shape]float64{sh: 1},
				VirtualTime: true, Projects: []string{"acme_7"}, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			rec := traceLines(t, shapeFiles[sh]+".jsonl")
			testutil.Eventually(t, 5*time.Second, func() bool { return c.count() == len(rec) }, "got %d events, want %d", c.count(), len(rec))
			got, want := decodeAll(t, c.raw()), decodeAll(t, rec)
			for i := range want {
				if got[i].Type != want[i].Type {
					t.Fatalf("event %d is %s, recorded %s", i, got[i].Type, want[i].Type)
				}
				if (got[i].Channel == nil) != (want[i].Channel == nil) {
					t.Fatalf("event %d channel presence differs", i)
				}
				if got[i].Channel != nil && got[i].Channel.State != want[i].Channel.State {
					t.Fatalf("event %d state %s, recorded %s", i, got[i].Channel.State, want[i].Channel.State)
				}
			}
			for i, m := range c.raw() {
				if _, err := ari.DecodeEvent(m); err != nil {
					t.Fatalf("ari cannot decode generated event %d: %v: %s", i, err, m)
				}
				if bytes.Contains(m, []byte("proj-a")) {
					t.Fatalf("event %d still names the recorded project: %s", i, m)
				}
			}
			checkTruth(t, res.Calls[0], got)
			if len(s.LiveChannels()) != 0 {
				t.Errorf("live channels left: %v", s.LiveChannels())
			}
		})
	}
}

// waitDestroyed waits until the client got the ChannelDestroyed of channel id.
func waitDestroyed(t testing.TB, c *client, id string) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() bool {
		for _, m := range c.raw() {
			if bytes.HasPrefix(m, []byte(`{"type":"ChannelDestroyed"`)) && bytes.Contains(m, []byte(`"id":"`+id+`"`)) {
				return true
			}
		}
		return false
	}, "no ChannelDestroyed for %s", id)
}

// checkTruth compares an Expected record with the events of its billed channel.
func checkTruth(t testing.TB, e Expected, evs []evView) {
	t.Helper()
	var up, end time.Time
	var sawVar bool
	for _, ev := range evs {
		if ev.Channel == nil || ev.Channel.ID != e.BilledChannel {
			continue
		}
		ts, err := time.Parse(TimeLayout, ev.Timestamp)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case ev.Type == "ChannelStateChange" && ev.Channel.State == "Up" && up.IsZero():
			up = ts
		case ev.Type == "ChannelDestroyed":
			end = ts
			if *ev.Cause != e.Cause {
				t.Errorf("cause %d, expected %d", *ev.Cause, e.Cause)
			}
			if ev.Channel.Accountcode != e.Project {
				t.Errorf("billed channel accountcode %q, want %q", ev.Channel.Accountcode, e.Project)
			}
			if e.AttributedBy == AttributeVariable && ev.Channel.Vars["BILLING_PROJECT"] != e.Project {
				t.Errorf("BILLING_PROJECT %q, want %q", ev.Channel.Vars["BILLING_PROJECT"], e.Project)
			}
			if e.AttributedBy == AttributeAccountcode && ev.Channel.Vars["BILLING_PROJECT"] != "" {
				t.Errorf("accountcode call carries BILLING_PROJECT %q", ev.Channel.Vars["BILLING_PROJECT"])
			}
		case ev.Type == "ChannelVarset" && ev.Variable == "BILLING_PROJECT":
			sawVar = true
		}
	}
	if end.IsZero() || !end.Equal(e.Ended) {
		t.Errorf("ChannelDestroyed at %v, expected %v", end, e.Ended)
	}
	if e.TalkMS != 0 && (!up.Equal(e.Answered) || end.Sub(up).Milliseconds() != e.TalkMS) {
		t.Errorf("talk %v (%v..%v), expected %d ms", end.Sub(up), up, end, e.TalkMS)
	}
	if e.Answered.IsZero() != up.IsZero() {
		t.Errorf("answered %v, events say %v", e.Answered, up)
	}
	if sawVar != (e.AttributedBy == AttributeVariable) {
		t.Errorf("ChannelVarset BILLING_PROJECT seen=%v for %s attribution", sawVar, e.AttributedBy)
	}
}

// TestGenerateVirtualTimeTruth: many mixed calls, interleaved; every Expected
// record matches the events, talk times follow the drawn durations, and the
// same seed gives the same calls.
func TestGenerateVirtualTimeTruth(t *testing.T) {
	opts := GenOptions{Calls: 200, Rate: 50, Concurrency: 40, Seed: 42, VirtualTime: true,
		Shapes:   map[Shape]float64{ShapeAnswered: 5, ShapeTwoLeg: 2, ShapeUnanswered: 1, ShapeBusy: 1, ShapeCongestion: 1},
		Projects: []string{"a", "b", "c"}, ProjectWeights: []float64{1, 2, 3},
		MinTalk: 500 * time.Millisecond, MaxTalk: 300 * time.Second, AttributeBy: AttributeMixed,
		Location: time.FixedZone("MSK", 3*3600), Start: time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)}
	run := func() (GenResult, []evView) {
		s := startServer(t, func(o *Options) { o.AsteriskID = "02:fc:00:00:00:09"; o.WriteTimeout = 10 * time.Second })
		c := dial(t, s, "minuted")
		began := time.Now()
		res, err := s.Generate(ctxT(t, 60*time.Second), opts)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(began) > 25*time.Second {
			t.Errorf("virtual time took %v of wall time", time.Since(began))
		}
		testutil.Eventually(t, 30*time.Second, func() bool { return int64(c.count()) == res.Events }, "got %d of %d", c.count(), res.Events)
		if n := len(s.LiveChannels()); n != 0 {
			t.Errorf("%d live channels left", n)
		}
		return res, decodeAll(t, c.raw())
	}
	res, evs := run()
	if res.ClockEnd.Sub(opts.Start) < 200/50*time.Second {
		t.Errorf("virtual clock only reached %v", res.ClockEnd)
	}
	seen := map[string]bool{}
	shapes := map[Shape]int{}
	var talkMax int64
	for _, e := range res.Calls {
		shapes[e.Shape]++
		if e.Node != "02:fc:00:00:00:09" {
			t.Fatalf("node %q", e.Node)
		}
		for _, id := range e.Channels {
			if seen[id] {
				t.Fatalf("channel id %s reused", id)
			}
			seen[id] = true
		}
		if _, off := e.Ended.Zone(); off != 3*3600 {
			t.Fatalf("offset %d", off)
		}
		checkTruth(t, e, evs)
		answered := e.Shape == ShapeAnswered || e.Shape == ShapeTwoLeg
		if answered && (e.TalkMS < 500 || e.TalkMS > 300000) {
			t.Errorf("call %d talk %d ms outside the range", e.Index, e.TalkMS)
		}
		if !answered && e.TalkMS != 0 {
			t.Errorf("%s call with talk %d", e.Shape, e.TalkMS)
		}
		talkMax = max(talkMax, e.TalkMS)
	}
	if len(shapes) != int(numShapes) || talkMax < 100000 {
		t.Errorf("shapes %v, longest talk %d", shapes, talkMax)
	}
	// timestamps carry the offset like a PBX in Moscow
	if evs[0].Timestamp[23:] != "+0300" {
		t.Errorf("timestamp %s", evs[0].Timestamp)
	}
	res2, _ := run()
	for i := range res.Calls {
		a, b := res.Calls[i], res2.Calls[i]
		if a.Project != b.Project || a.Shape != b.Shape || a.TalkMS != b.TalkMS || a.AttributedBy != b.AttributedBy {
			t.Fatalf("seed not reproducible at call %d: %+v vs %+v", i, a, b)
		}
	}
}

// TestGenerateRealTimeAndDelete: real-time calls really last; a DELETE ends a
// generated call at once with the requested cause and the truth follows.
func TestGenerateRealTimeAndDelete(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s, "minuted")
	done := make(chan GenResult, 1)
	began := time.Now()
	go func() {
		res, err := s.Generate(ctxT(t, 20*time.Second), GenOptions{Calls: 3, Concurrency: 3,
			MinTalk: 60 * time.Second, MaxTalk: 60 * time.Second, Shapes: map[Shape]float64{ShapeTwoLeg: 1}})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return len(s.LiveChannels()) == 12 }, "live %d", len(s.LiveChannels()))
	time.Sleep(300 * time.Millisecond) // let the calls talk a little
	cl := nativeClient(t, s)
	list, err := cl.Channel().List(nil)
	if err != nil || len(list) != 12 {
		t.Fatalf("list %d %v", len(list), err)
	}
	for _, k := range list {
		if err := cl.Channel().Hangup(k, "normal"); err != nil && len(s.LiveChannels()) > 0 {
			// the other channels of an ended call are gone: 404 is what Asterisk says
			continue
		}
	}
	var res GenResult
	select {
	case res = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("generator did not end after the calls were hung up")
	}
	if el := time.Since(began); el > 30*time.Second {
		t.Errorf("hung-up calls still took %v", el)
	}
	for _, e := range res.Calls {
		waitDestroyed(t, c, e.BilledChannel)
	}
	evs := decodeAll(t, c.raw())
	for _, e := range res.Calls {
		if !e.HungUpByREST || e.TalkMS < 250 || e.TalkMS > 5000 {
			t.Errorf("call %+v", e)
		}
		checkTruth(t, e, evs)
	}
}

func TestLiveCall(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s, "minuted")
	l, err := s.StartCall(ctxT(t, 5*time.Second), CallOptions{Project: "proj-z", AttributeBy: AttributeAccountcode})
	if err != nil {
		t.Fatal(err)
	}
	if e := l.Expected(); e.Answered.IsZero() || !e.Ended.IsZero() {
		t.Fatalf("after start %+v", e)
	}
	time.Sleep(1200 * time.Millisecond)
	if len(s.LiveChannels()) != 2 {
		t.Fatalf("live %v", s.LiveChannels())
	}
	e := l.Hangup(0)
	<-l.Done()
	waitDestroyed(t, c, e.BilledChannel)
	if e.TalkMS < 1200 || e.TalkMS > 4000 || e.Cause != 16 || e.AttributedBy != AttributeAccountcode {
		t.Fatalf("truth %+v", e)
	}
	checkTruth(t, e, decodeAll(t, c.raw()))
	if len(s.LiveChannels()) != 0 {
		t.Errorf("live after hangup %v", s.LiveChannels())
	}
	// DELETE over REST ends a second live call; Crash a third silently
	l2, err := s.StartCall(ctxT(t, 5*time.Second), CallOptions{Shape: ShapeTwoLeg})
	if err != nil {
		t.Fatal(err)
	}
	if err := nativeClient(t, s).Channel().Hangup(ari.NewKey(ari.ChannelKey, l2.BilledChannel()), "congestion"); err != nil {
		t.Fatal(err)
	}
	<-l2.Done()
	if e := l2.Expected(); e.Cause != 34 || !e.HungUpByREST {
		t.Errorf("l2 %+v", e)
	}
	l3, err := s.StartCall(ctxT(t, 5*time.Second), CallOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Crash()
	<-l3.Done()
	if e := l3.Expected(); !e.Crashed || e.Answered.IsZero() {
		t.Errorf("l3 %+v", e)
	}
}

func FuzzRebaseTimestamps(f *testing.F) {
	for _, name := range []string{"answered_short.jsonl", "two_leg_dial.jsonl"} {
		for _, l := range traceLines(f, name)[:12] {
			f.Add(l, int64(1234567))
		}
	}
	f.Add([]byte(`{"type":"X","timestamp":"9999-12-31T23:59:59.999+0000"}`), int64(1))
	f.Add([]byte(`{"a":"\"2026-11-27T14:30:39.021+0000"}`), int64(-5))
	f.Fuzz(func(t *testing.T, b []byte, shiftMS int64) {
		shift := time.Duration(shiftMS%(1<<40)) * time.Millisecond
		if m, err := scanEvent(b); err == nil {
			if m.channel.ok() && (m.channel.start > m.channel.end || m.channel.end > len(b)) {
				t.Fatalf("bad channel span %v", m.channel)
			}
		}
		out, err := RebaseTimestamps(b, shift)
		if err != nil {
			return
		}
		back, err := RebaseTimestamps(out, -shift)
		if err != nil {
			t.Fatalf("cannot move back: %v", err)
		}
		if !bytes.Equal(back, b) {
			t.Fatalf("round trip changed bytes:\n%q\n%q", b, back)
		}
		if json.Valid(b) != json.Valid(out) {
			t.Fatalf("validity changed: %q -> %q", b, out)
		}
	})
}

func FuzzScanEvent(f *testing.F) {
	for _, l := range traceLines(f, "answered_stasis.jsonl") {
		f.Add(l)
	}
	f.Add([]byte(`{"type":"A","channel":{"id":"1.2"},"application":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := scanEvent(b)
		if err != nil {
			return
		}
		for _, sp := range []span{m.channel, m.timestamp, m.app, m.variable, m.value} {
			if sp.ok() && (sp.start > sp.end || sp.end > len(b)) {
				t.Fatalf("span %v out of %d bytes", sp, len(b))
			}
		}
		if !json.Valid(b) {
			return // the lean scanner is no validator; Emit checks validity
		}
		var v struct {
			Type    string          `json:"type"`
			Channel json.RawMessage `json:"channel"`
		}
		if json.Unmarshal(b, &v) != nil {
			return
		}
		if m.channel.ok() {
			var ch struct {
				ID string `json:"id"`
			}
			if !json.Valid(b[m.channel.start:m.channel.end]) {
				t.Fatalf("channel span is not JSON: %q", b[m.channel.start:m.channel.end])
			}
			obj := string(b[m.channel.start:m.channel.end])
			plain := !strings.Contains(obj, `\`) && strings.Count(strings.ToLower(obj), `"id"`) == strings.Count(obj, `"id"`)
			if plain && json.Unmarshal(b[m.channel.start:m.channel.end], &ch) == nil && varValue([]byte(`"`+m.chanID+`"`)) != ch.ID {
				t.Fatalf("channel id %q, encoding/json says %q", m.chanID, ch.ID)
			}
		}
	})
}

// BenchmarkGenerate measures the generator end to end (render, scan, live set,
// queue, websocket write) with one reading client, in virtual time.
func BenchmarkGenerate(b *testing.B) {
	s := startServer(b, nil)
	c := dial(b, s, "minuted")
	ctx := context.Background()
	b.ResetTimer()
	var events int64
	for b.Loop() {
		res, err := s.Generate(ctx, GenOptions{Calls: 200, Concurrency: 100, VirtualTime: true,
			Shapes: map[Shape]float64{ShapeAnswered: 6, ShapeTwoLeg: 2, ShapeUnanswered: 1, ShapeBusy: 1}})
		if err != nil {
			b.Fatal(err)
		}
		events += res.Events
	}
	for int64(c.count()) < events {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRender measures producing events without any socket.
func BenchmarkRender(b *testing.B) {
	s := startServer(b, nil)
	tpls, err := s.templates()
	if err != nil {
		b.Fatal(err)
	}
	t := tpls.byMode[0][ShapeTwoLeg]
	n := 0
	for b.Loop() {
		call := s.newCall(t, 0, time.Now(), time.UTC, "proj-b", AttributeVariable, 30000, time.Now)
		for i := range t.events {
			ev := call.render(i)
			if _, err := scanEvent(ev); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
