package ari

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/sim"
)

func TestWebsocketURL(t *testing.T) {
	u, err := WebsocketURL(config.ARIConfig{URL: "https://pbx:8089/ari/", Application: "m1"})
	if err != nil || u != "wss://pbx:8089/ari/events?app=m1&subscribeAll=true" {
		t.Fatalf("%q %v", u, err)
	}
	u, err = WebsocketURL(config.ARIConfig{URL: "http://x/ari", WSURL: "ws://y:1/ari/events", Application: "a b"})
	if err != nil || u != "ws://y:1/ari/events?app=a+b&subscribeAll=true" {
		t.Fatalf("%q %v", u, err)
	}
}

func startSim(t *testing.T) (*sim.Server, config.ARIConfig) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := sim.Start(ctx, sim.Options{Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	c := config.Default().ARI
	c.URL, c.Password, c.Application = s.URL(), "pw", "lt"
	c.ReconnectMin, c.ReconnectMax = 10*time.Millisecond, 50*time.Millisecond
	return s, c
}

// TestListenerReconnectAndReplaced: a dropped socket yields Disconnected
// then Connected; a second client with the same app name makes the first
// reconnect (it logs the replacement) instead of staying deaf.
func TestListenerReconnectAndReplaced(t *testing.T) {
	s, c := startSim(t)
	// Pings every 2 s: a busy CI machine must not make the read deadline
	// drop the socket on its own (that is an extra Disconnected).
	l, err := NewListener(ListenerOptions{ARI: c, PingInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() { _ = l.Run(ctx) }()
	expect := func(kinds ...MessageKind) {
		t.Helper()
		for _, k := range kinds {
			ms, err := l.Next(ctx)
			if err != nil {
				t.Fatalf("waiting for %v: %v", k, err)
			}
			if ms[0].Kind != k {
				t.Fatalf("got %v (%s), want %v", ms[0].Kind, ms[0].Reason, k)
			}
			l.mu.Lock()
			l.queue = append(append([]Message(nil), ms[1:]...), l.queue...) // put the rest back, in order
			l.mu.Unlock()
		}
	}
	expect(Connected)
	s.DropWebsockets()
	expect(Disconnected, Connected)
	if l.Reconnects() != 1 {
		t.Fatalf("reconnects %d", l.Reconnects())
	}
	// Only once the double has registered l's new socket may a second
	// listener replace it (else the double sees l2 first and replaces it).
	if err := s.WaitApp(ctx, c.Application); err != nil {
		t.Fatal(err)
	}
	l2, _ := NewListener(ListenerOptions{ARI: c})
	ctx2, cancel2 := context.WithCancel(ctx)
	go func() { _ = l2.Run(ctx2) }()
	expect(Disconnected)
	cancel2()
}

func TestClientREST(t *testing.T) {
	_, c := startSim(t)
	cl := NewClient(c, nil)
	ctx := context.Background()
	id, err := cl.Info(ctx)
	if err != nil || id == "" {
		t.Fatalf("info %q %v", id, err)
	}
	if live, err := cl.ListChannels(ctx); err != nil || len(live) != 0 {
		t.Fatalf("list %v %v", live, err)
	}
	if err := cl.Hangup(ctx, "no.such", "normal"); err != nil {
		t.Fatalf("hangup of a gone channel must succeed (404): %v", err)
	}
	c.Password = "wrong"
	if _, err := NewClient(c, nil).ListChannels(ctx); err == nil {
		t.Fatal("wrong password accepted")
	}
}

// TestQueueDepthLogged: the frame queue stays unbounded but says so in the
// log when it passes 10,000 frames, and again once drained.
func TestQueueDepthLogged(t *testing.T) {
	var logs bytes.Buffer
	l, err := NewListener(ListenerOptions{ARI: config.ARIConfig{URL: "http://127.0.0.1:1/ari", Application: "q"},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	for range 10_500 {
		l.push(Message{Kind: Frame, Data: "x"})
	}
	if l.Pending() != 10_500 || l.PeakPending() != 10_500 {
		t.Fatalf("pending %d, peak %d: the queue must keep every frame", l.Pending(), l.PeakPending())
	}
	if n := strings.Count(logs.String(), "ARI frame queue is deep"); n != 1 || !strings.Contains(logs.String(), "passed=10000") {
		t.Fatalf("want one warning at 10000 frames, log:\n%s", logs.String())
	}
	if q := l.TryNext(); len(q) != 10_500 {
		t.Fatalf("took %d frames", len(q))
	}
	if !strings.Contains(logs.String(), "ARI frame queue drained") || l.Pending() != 0 || l.PeakPending() != 10_500 {
		t.Fatalf("drain not logged or counters wrong (pending %d, peak %d):\n%s", l.Pending(), l.PeakPending(), logs.String())
	}
}

// TestFrameChunks: frames copied into shared chunks keep their text
// whatever is copied after them, big frames included, and cost about one
// allocation per chunk.
func TestFrameChunks(t *testing.T) {
	var c frameChunks
	var got, want []string
	for i := range 200 {
		n := 1 + i*37%1500
		if i%50 == 7 {
			n = 3 * frameChunk // bigger than a chunk
		}
		p := bytes.Repeat([]byte{byte('a' + i%26)}, n)
		got = append(got, c.string(p))
		want = append(want, string(p))
		p[0] = '!' // the caller reuses its buffer
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("frame %d changed: %.20q…, want %.20q…", i, got[i], want[i])
		}
	}
	frame := bytes.Repeat([]byte("x"), 1000)
	allocs := testing.AllocsPerRun(100, func() {
		for range 100 {
			_ = c.string(frame)
		}
	})
	if max := float64(100*len(frame)/frameChunk + 1); allocs > max {
		t.Errorf("100 frames of %d bytes took %.0f allocations, want at most %.0f", len(frame), allocs, max)
	}
}

// TestListenerRelease: a released batch's array takes the next messages,
// cleared first; an empty queue gives nil; a huge batch is not kept.
func TestListenerRelease(t *testing.T) {
	l, err := NewListener(ListenerOptions{ARI: config.ARIConfig{URL: "http://127.0.0.1:1/ari", Application: "r"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		l.push(Message{Kind: Frame, Data: strings.Repeat("a", i+1)})
	}
	first := l.TryNext()
	if len(first) != 3 || l.TryNext() != nil {
		t.Fatalf("took %d messages, then not nil", len(first))
	}
	l.Release(first)
	if first[:cap(first)][2].Data != "" {
		t.Fatal("a released batch keeps its frames alive")
	}
	l.push(Message{Kind: Frame, Data: "b"})
	next, err := l.Next(context.Background())
	if err != nil || len(next) != 1 || next[0].Data != "b" || &next[0] != &first[:1][0] {
		t.Fatalf("Next = %v, %v: want [b] in the released array", next, err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		l.push(Message{Kind: Frame, Data: "c"})
		l.Release(l.TryNext())
	})
	if allocs != 0 {
		t.Errorf("push, take and release allocate %.1f times, want 0", allocs)
	}
	l.Release(next)
	for range maxSpare + 1 {
		l.push(Message{Kind: Frame, Data: "d"})
	}
	big := l.TryNext()
	l.Release(big)
	l.push(Message{Kind: Frame, Data: "e"})
	if q := l.TryNext(); cap(q) > maxSpare {
		t.Fatalf("a batch of %d messages was kept for reuse", cap(big))
	}
}

// TestListenerReadTimeout: frames keep the connection up however long it
// lives; silence for ReadTimeout drops it, never earlier.
func TestListenerReadTimeout(t *testing.T) {
	const readTimeout = 150 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for range 20 { // 400 ms of frames, then silence
			if conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"X"}`)) != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(10 * readTimeout)
	}))
	defer srv.Close()
	l, err := NewListener(ListenerOptions{ARI: config.ARIConfig{URL: srv.URL, Application: "t", ReconnectMin: time.Hour},
		PingInterval: time.Hour, ReadTimeout: readTimeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	go func() { _ = l.Run(ctx) }()
	var frames int
	var last time.Time
	for {
		ms, err := l.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			switch m.Kind {
			case Frame:
				frames++
				last = m.At
			case Disconnected:
				if frames != 20 || !strings.Contains(m.Reason, "timeout") {
					t.Fatalf("dropped after %d of 20 frames: %s", frames, m.Reason)
				}
				if quiet := m.At.Sub(last); quiet < readTimeout || quiet > readTimeout+time.Second {
					t.Fatalf("dropped %v after the last frame, want %v (and a little more)", quiet, readTimeout)
				}
				return
			}
		}
	}
}
