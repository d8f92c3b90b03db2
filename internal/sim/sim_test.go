package sim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/CyCoreSystems/ari/v6"
	"github.com/CyCoreSystems/ari/v6/client/native"
	"github.com/gorilla/websocket"
	"github.com/minuted/minuted/internal/testutil"
)

const testPassword = "s3cret"

func startServer(t testing.TB, mod func(*Options)) *Server {
	t.Helper()
	opts := Options{Username: "minuted", Password: testPassword}
	if mod != nil {
		mod(&opts)
	}
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// client is a real websocket reader that records every message.
type client struct {
	ws   *websocket.Conn
	mu   sync.Mutex
	msgs [][]byte
	err  error
	done chan struct{}
}

func dial(t testing.TB, s *Server, app string) *client {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Basic "+basic("minuted", testPassword))
	ws, _, err := websocket.DefaultDialer.Dial(s.WSURL()+"?app="+url.QueryEscape(app)+"&subscribeAll=true", h)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{ws: ws, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, b, err := ws.ReadMessage()
			c.mu.Lock()
			if err != nil {
				c.err = err
				c.mu.Unlock()
				return
			}
			c.msgs = append(c.msgs, b)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = ws.Close() })
	return c
}

func (c *client) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func (c *client) events(t testing.TB) []map[string]any {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]map[string]any, len(c.msgs))
	for i, b := range c.msgs {
		if err := json.Unmarshal(b, &out[i]); err != nil {
			t.Fatalf("message %d is not JSON: %v: %s", i, err, b)
		}
	}
	return out
}

func basic(u, p string) string {
	r, _ := http.NewRequest("GET", "http://x", nil)
	r.SetBasicAuth(u, p)
	return r.Header.Get("Authorization")[len("Basic "):]
}

func nativeClient(t testing.TB, s *Server) *native.Client {
	t.Helper()
	return native.New(&native.Options{URL: s.URL(), Username: "minuted", Password: testPassword})
}

func traceLines(t testing.TB, name string) [][]byte {
	t.Helper()
	lines, err := ReadTrace(filepath.Join("..", "..", "testdata", "ari-traces", name))
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestAuthAndErrors(t *testing.T) {
	s := startServer(t, nil)
	for _, tc := range []struct {
		path, user, pass string
		want             int
	}{
		{"/ari/asterisk/info", "", "", 401},
		{"/ari/asterisk/info", "minuted", "wrong", 401},
		{"/ari/channels", "minuted", testPassword, 200},
		{"/ari/events?subscribeAll=true", "minuted", testPassword, 400},
		{"/ari/events?app=x", "", "", 401},
		{"/ari/nope", "minuted", testPassword, 404},
		{"/ari/channels/1.1", "minuted", testPassword, 404},
		{"/ari/channels/1.1/variable?variable=X", "minuted", testPassword, 404},
		{"/ari/channels?api_key=minuted:" + testPassword, "", "", 200},
	} {
		req, _ := http.NewRequest("GET", "http://"+s.Addr()+tc.path, nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s as %q: status %d, want %d", tc.path, tc.user, resp.StatusCode, tc.want)
		}
		if tc.want == 404 && tc.path == "/ari/channels/1.1" && body["message"] != "Channel not found" {
			t.Errorf("404 body %v", body)
		}
	}
	info, err := nativeClient(t, s).Asterisk().Info(nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.SystemInfo.EntityID != DefaultAsteriskID || info.SystemInfo.Version == "" {
		t.Errorf("info = %+v", info)
	}
}

func TestApplicationReplaced(t *testing.T) {
	s := startServer(t, nil)
	a := dial(t, s, "minuted")
	if err := s.WaitClients(ctxT(t, 5*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	other := dial(t, s, "other")
	b := dial(t, s, "minuted")
	testutil.Eventually(t, 5*time.Second, func() bool { return a.count() == 1 }, "first socket never got ApplicationReplaced")
	if got := a.events(t)[0]; got["type"] != "ApplicationReplaced" || got["application"] != "minuted" {
		t.Fatalf("first socket got %v", got)
	}
	if s.Clients() != 2 {
		t.Fatalf("listening clients = %d, want 2", s.Clients())
	}
	if err := s.Emit(traceLines(t, "answered_short.jsonl")[0]); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return b.count() == 1 && other.count() == 1 }, "event not delivered")
	ev := b.events(t)[0]
	if ev["application"] != "minuted" || other.events(t)[0]["application"] != "other" {
		t.Errorf("application not rewritten per socket: %v", ev["application"])
	}
	time.Sleep(50 * time.Millisecond) // give a wrong delivery a chance to show
	if a.count() != 1 {
		t.Errorf("replaced socket got %d messages, want only ApplicationReplaced", a.count())
	}
	select {
	case <-a.done:
		t.Errorf("replaced socket was closed: %v", a.err)
	default:
	}
}

func TestReplayRebasesAndKeepsGaps(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s, "minuted")
	lines := traceLines(t, "answered_long.jsonl")
	start := time.Date(2030, 1, 2, 3, 4, 5, 678e6, time.UTC)
	res, err := s.Replay(ctxT(t, 10*time.Second), lines, ReplayOptions{Start: start})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != len(lines) {
		t.Fatalf("sent %d of %d", res.Sent, len(lines))
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return c.count() == len(lines) }, "client got %d of %d", c.count(), len(lines))
	got := c.events(t)
	for i, l := range lines {
		var rec map[string]any
		_ = json.Unmarshal(l, &rec)
		rt, _ := time.Parse(TimeLayout, rec["timestamp"].(string))
		gt, err := time.Parse(TimeLayout, got[i]["timestamp"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if gt.Sub(rt) != res.Shift {
			t.Fatalf("event %d moved by %v, want %v", i, gt.Sub(rt), res.Shift)
		}
		if i == 0 && !gt.Equal(start) {
			t.Fatalf("first event at %v, want %v", gt, start)
		}
		if len(got[i]["timestamp"].(string)) != len(TimeLayout) || got[i]["timestamp"].(string)[23:] != "+0000" {
			t.Fatalf("format changed: %s", got[i]["timestamp"])
		}
		stripShifted(t, rec, got[i], res.Shift)
		rec["application"] = "minuted"
		a, _ := json.Marshal(rec)
		b, _ := json.Marshal(got[i])
		if string(a) != string(b) {
			t.Fatalf("event %d changed beyond timestamps:\n%s\n%s", i, a, b)
		}
	}
	// talk time of answered_long is 125.601 s and must stay so to the ms
	got = c.events(t)
	up, end := findTS(t, got, "ChannelStateChange", "Up"), findTS(t, got, "ChannelDestroyed", "")
	if end.Sub(up) != 125601*time.Millisecond {
		t.Errorf("talk = %v, want 125.601s", end.Sub(up))
	}
	if len(s.LiveChannels()) != 0 {
		t.Errorf("live channels after a complete trace: %v", s.LiveChannels())
	}
}

// stripShifted checks that every timestamp in got is the one in rec moved by
// shift, and blanks both so the rest can be compared.
func stripShifted(t testing.TB, rec, got map[string]any, shift time.Duration) {
	t.Helper()
	for k, rv := range rec {
		switch v := rv.(type) {
		case map[string]any:
			if g, ok := got[k].(map[string]any); ok {
				stripShifted(t, v, g, shift)
			}
		case string:
			if !isTimestamp([]byte(v)) {
				continue
			}
			gs, _ := got[k].(string)
			rt, _ := time.Parse(TimeLayout, v)
			gt, err := time.Parse(TimeLayout, gs)
			if err != nil || gt.Sub(rt) != shift || gs[23:] != v[23:] {
				t.Fatalf("%s: %q became %q, want a shift of %v", k, v, gs, shift)
			}
			rec[k], got[k] = nil, nil
		}
	}
}

// findTS finds the first event of type typ (and state, for state changes) of the ;2 channel.
func findTS(t testing.TB, evs []map[string]any, typ, state string) time.Time {
	t.Helper()
	for _, e := range evs {
		ch, _ := e["channel"].(map[string]any)
		if e["type"] != typ || ch == nil {
			continue
		}
		if name := ch["name"].(string); name[len(name)-1] != '2' {
			continue
		}
		if state != "" && ch["state"] != state {
			continue
		}
		ts, _ := time.Parse(TimeLayout, e["timestamp"].(string))
		return ts
	}
	t.Fatalf("no %s %s", typ, state)
	return time.Time{}
}

func TestReplayPacing(t *testing.T) {
	s := startServer(t, nil)
	dial(t, s, "minuted")
	lines := traceLines(t, "answered_short.jsonl") // 3.504 s from first to last event
	began := time.Now()
	if _, err := s.Replay(ctxT(t, 10*time.Second), lines, ReplayOptions{Speed: 10}); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(began); el < 340*time.Millisecond || el > 3*time.Second {
		t.Errorf("replay at speed 10 took %v, want about 350ms", el)
	}
}

func TestReplayRestartDropsAndWaits(t *testing.T) {
	s := startServer(t, nil)
	f, err := os.Open(filepath.Join("..", "..", "testdata", "ari-traces", "restart.connections.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	drops, err := ParseConnections(f)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{34, 67, 92, 126}; len(drops) != 4 || drops[0] != want[0] || drops[3] != want[3] {
		t.Fatalf("drops = %v, want %v", drops, want)
	}
	lines := traceLines(t, "restart.jsonl")
	ctx := ctxT(t, 20*time.Second)
	var (
		mu      sync.Mutex
		counts  []int
		liveAt  []int
		clients []*client
	)
	dial(t, s, "minuted")
	mu.Lock()
	clients = append(clients, dial(t, s, "m2")) // a second app that we follow
	mu.Unlock()
	go func() {
		for i := 0; i < len(drops); i++ {
			mu.Lock()
			cur := clients[len(clients)-1]
			mu.Unlock()
			<-cur.done // dropped without close frame
			var ce *websocket.CloseError
			if errors.As(cur.err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
				t.Errorf("drop %d closed with %d, want 1006", i, ce.Code)
			}
			mu.Lock()
			counts = append(counts, cur.count())
			liveAt = append(liveAt, len(s.LiveChannels()))
			c := dial(t, s, "m2")
			clients = append(clients, c)
			mu.Unlock()
		}
	}()
	res, err := s.Replay(ctx, lines, ReplayOptions{DropAfter: drops})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != len(lines) {
		t.Fatalf("sent %d of %d", res.Sent, len(lines))
	}
	mu.Lock()
	defer mu.Unlock()
	prev := 0
	for i, n := range drops {
		if counts[i] != n-prev {
			t.Errorf("connection %d got %d messages, want %d", i, counts[i], n-prev)
		}
		if liveAt[i] != 0 {
			t.Errorf("after restart %d, %d live channels remain", i, liveAt[i])
		}
		prev = n
	}
	last := clients[len(clients)-1]
	testutil.Eventually(t, 5*time.Second, func() bool { return last.count() == len(lines)-prev }, "last connection got %d", last.count())
}

func TestCrashForgetsChannels(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s, "minuted")
	lines := traceLines(t, "answered_long.jsonl")
	// everything up to the 125 s silence: the call is up
	if _, err := s.Replay(ctxT(t, 5*time.Second), lines[:20], ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := len(s.LiveChannels()); n != 2 {
		t.Fatalf("live channels = %d, want 2", n)
	}
	list, err := nativeClient(t, s).Channel().List(nil)
	if err != nil || len(list) != 2 {
		t.Fatalf("GET /channels = %v, %v", list, err)
	}
	s.Crash()
	<-c.done
	if n := len(s.LiveChannels()); n != 0 {
		t.Fatalf("after crash %d live channels", n)
	}
	for _, m := range c.events(t) {
		if m["type"] == "ChannelDestroyed" {
			t.Fatal("crash sent ChannelDestroyed")
		}
	}
}

func TestDeleteContinueVariable(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s, "minuted")
	lines := traceLines(t, "answered_stasis.jsonl")
	if _, err := s.Replay(ctxT(t, 5*time.Second), lines[:21], ReplayOptions{}); err != nil { // up to StasisStart
		t.Fatal(err)
	}
	ids := s.LiveChannels()
	if len(ids) != 2 {
		t.Fatalf("live %v", ids)
	}
	cl := nativeClient(t, s)
	v, err := cl.Channel().GetVariable(ari.NewKey(ari.ChannelKey, ids[1]), "BILLING_PROJECT")
	if err != nil || v != "proj-a" {
		t.Fatalf("BILLING_PROJECT of ;2 = %q, %v", v, err)
	}
	v, err = cl.Channel().GetVariable(ari.NewKey(ari.ChannelKey, ids[0]), "STASISSTATUS") // set by ChannelVarset
	if err != nil || v != "" {
		t.Fatalf("STASISSTATUS = %q, %v", v, err)
	}
	if err := cl.Channel().Continue(ari.NewKey(ari.ChannelKey, ids[1]), "", "", 0); err == nil {
		t.Fatal("continue of a channel not in Stasis succeeded")
	}
	if err := cl.Channel().Continue(ari.NewKey(ari.ChannelKey, ids[0]), "", "", 0); err != nil {
		t.Fatal(err)
	}
	if got := s.Continues(); len(got) != 1 || got[0] != ids[0] {
		t.Fatalf("continues = %v", got)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return c.count() == 22 }, "StasisEnd of continue not received")
	if ev := c.events(t)[21]; ev["type"] != "StasisEnd" {
		t.Fatalf("continue sent %v", ev["type"])
	}
	before := c.count()
	if err := cl.Channel().Hangup(ari.NewKey(ari.ChannelKey, ids[1]), "busy"); err != nil {
		t.Fatal(err)
	}
	if len(s.LiveChannels()) != 0 {
		t.Fatalf("after DELETE of ;2 live = %v (the ;1 half must go too)", s.LiveChannels())
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return c.count() == before+4 }, "got %d events after delete", c.count()-before)
	var types []string
	for _, e := range c.events(t)[before-1:] {
		types = append(types, e["type"].(string))
		if e["type"] == "ChannelDestroyed" && (e["cause"].(float64) != 17 || e["cause_txt"] != "User busy") {
			t.Errorf("destroyed with %v %v", e["cause"], e["cause_txt"])
		}
	}
	want := []string{"StasisEnd", "ChannelHangupRequest", "ChannelHangupRequest", "ChannelDestroyed", "ChannelDestroyed"}
	for i, w := range want {
		if types[i] != w {
			t.Fatalf("events %v, want %v", types, want)
		}
	}
	if h := s.Hangups(); len(h) != 1 || h[0].Cause != 17 {
		t.Errorf("hangups %v", h)
	}
	if _, err := cl.Channel().Data(ari.NewKey(ari.ChannelKey, ids[1])); err == nil {
		t.Error("GET of a destroyed channel succeeded")
	}
}

func TestSlowClientIsClosed(t *testing.T) {
	s := startServer(t, func(o *Options) { o.WriteTimeout = 50 * time.Millisecond })
	h := http.Header{}
	h.Set("Authorization", "Basic "+basic("minuted", testPassword))
	ws, _, err := websocket.DefaultDialer.Dial(s.WSURL()+"?app=slow", h)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close() // never read
	big := traceLines(t, "two_leg_dial.jsonl")
	began := time.Now()
	for range 200 {
		for _, l := range big {
			if err := s.Emit(l); err != nil {
				t.Fatal(err)
			}
		}
	}
	if el := time.Since(began); el > 30*time.Second { // blocked on the stalled socket, not merely slow
		t.Errorf("emitting to a stalled client blocked for %v", el)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return s.Stats().StalledClosed == 1 && s.Clients() == 0 }, "stalled socket not closed: %+v", s.Stats())
}

// TestStasisCall: a call that waits in Stasis(app) until continue (then
// answers and talks) or DELETE (hung up unanswered); POST variable.
func TestStasisCall(t *testing.T) {
	s := startServer(t, nil)
	c := dial(t, s, "minuted")
	cl := nativeClient(t, s)
	types := func(evs []map[string]any) (out []string) {
		for _, e := range evs {
			out = append(out, e["type"].(string))
		}
		return out
	}

	// continued
	l, err := s.StartCall(ctxT(t, 5*time.Second), CallOptions{Project: "proj-s", StasisApp: "auth-app"})
	if err != nil {
		t.Fatal(err)
	}
	key := ari.NewKey(ari.ChannelKey, l.BilledChannel())
	testutil.Eventually(t, 5*time.Second, func() bool {
		evs := c.events(t)
		return len(evs) > 0 && evs[len(evs)-1]["type"] == "StasisStart"
	}, "StasisStart received")
	evs := c.events(t)
	st := evs[len(evs)-1]
	ch := st["channel"].(map[string]any)
	if st["application"] != "auth-app" || ch["id"] != l.BilledChannel() || ch["state"] != "Ring" ||
		ch["channelvars"].(map[string]any)["BILLING_PROJECT"] != "proj-s" {
		t.Fatalf("StasisStart %v", st)
	}
	time.Sleep(50 * time.Millisecond) // it must wait, not answer
	if n := c.count(); n != len(evs) {
		t.Fatalf("%d events while waiting in Stasis", n-len(evs))
	}
	if err := cl.Channel().SetVariable(key, "MINUTED_MAX_SECONDS", "120"); err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Variable(l.BilledChannel(), "MINUTED_MAX_SECONDS"); !ok || v != "120" {
		t.Fatalf("variable %q %v", v, ok)
	}
	if err := cl.Channel().SetVariable(ari.NewKey(ari.ChannelKey, "nope"), "X", "1"); err == nil {
		t.Fatal("set variable on an unknown channel succeeded")
	}
	paused := time.Now()
	if err := cl.Channel().Continue(key, "", "", 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Up():
	case <-time.After(5 * time.Second):
		t.Fatal("not answered after continue")
	}
	if e := l.Expected(); e.Answered.Before(paused.Add(-time.Millisecond)) {
		t.Fatalf("answered at %v, before the continue at %v", e.Answered, paused)
	}
	e := l.Hangup(16)
	if e.Answered.IsZero() || e.TalkMS <= 0 {
		t.Fatalf("continued call %+v", e)
	}

	// refused
	n0 := c.count()
	l2, err := s.StartCall(ctxT(t, 5*time.Second), CallOptions{Project: "proj-s", StasisApp: "auth-app"})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		evs := c.events(t)
		return len(evs) > n0 && evs[len(evs)-1]["type"] == "StasisStart"
	}, "second StasisStart")
	n1 := c.count()
	if err := cl.Channel().Hangup(ari.NewKey(ari.ChannelKey, l2.BilledChannel()), "rejected"); err != nil {
		t.Fatal(err)
	}
	<-l2.Done()
	testutil.Eventually(t, 5*time.Second, func() bool { return c.count() == n1+5 }, "refusal events")
	got := types(c.events(t)[n1:])
	want := []string{"ChannelHangupRequest", "StasisEnd", "ChannelDestroyed", "ChannelHangupRequest", "ChannelDestroyed"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("refusal events %v, want %v", got, want)
	}
	mine := map[string]bool{}
	for _, id := range l2.Channels() {
		mine[id] = true
	}
	for _, ev := range c.events(t) {
		ch, _ := ev["channel"].(map[string]any)
		if ev["type"] == "ChannelStateChange" && ch["state"] == "Up" && mine[fmt.Sprint(ch["id"])] {
			t.Fatal("a refused call was answered")
		}
	}
	if e := l2.Expected(); !e.Answered.IsZero() || e.TalkMS != 0 || e.Cause != 21 || !e.HungUpByREST {
		t.Fatalf("refused call %+v", e)
	}
	if len(s.LiveChannels()) != 0 {
		t.Fatalf("live %v", s.LiveChannels())
	}
}
