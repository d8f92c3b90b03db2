package ari

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/minuted/minuted/internal/backoff"
	"github.com/minuted/minuted/internal/config"
)

// MessageKind says what a Listener delivers.
type MessageKind int

const (
	// Frame is one websocket text frame (an ARI event, undecoded).
	Frame MessageKind = iota
	// Connected: a websocket is up; events from here on are seen.
	Connected
	// Disconnected: the websocket is gone (Reason says why); events are
	// lost until the next Connected.
	Disconnected
)

func (k MessageKind) String() string {
	switch k {
	case Frame:
		return "frame"
	case Connected:
		return "connected"
	case Disconnected:
		return "disconnected"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Message is what the Listener hands its consumer, in arrival order.
type Message struct {
	Kind   MessageKind
	Data   string    // Frame only: its text, for DecodeString
	At     time.Time // local clock when received / (dis)connected
	Reason string    // Disconnected only
}

// ListenerOptions configures a Listener. Zero durations get defaults.
type ListenerOptions struct {
	ARI config.ARIConfig
	// PingInterval is how often a ping is sent; a connection with no frame
	// and no pong for ReadTimeout is declared dead.
	PingInterval time.Duration // default 10s
	ReadTimeout  time.Duration // default 3 × PingInterval
	Logger       *slog.Logger
}

// Listener reads ARI events from /events?app=NAME&subscribeAll=true,
// reconnecting with capped, jittered exponential backoff. Its reader never
// waits on the consumer: frames go to an unbounded in-memory queue, so
// Asterisk's websocket_write_timeout never fires because minuted is slow.
type Listener struct {
	opts   ListenerOptions
	wsURL  string
	header http.Header
	log    *slog.Logger

	mu     sync.Mutex
	queue  []Message
	spare  []Message // a batch the consumer released: the next queue's array
	signal chan struct{}
	closed bool
	level  int // index in queueLevels of the depth last logged
	peak   int // deepest queue seen

	statsMu    sync.Mutex
	reconnects int64
}

// WebsocketURL derives the events URL: ws_url (ARI_WSURL) if set, else the
// REST URL with http→ws, https→wss and /events appended; app and
// subscribeAll query parameters are added.
func WebsocketURL(c config.ARIConfig) (string, error) {
	raw := c.WSURL
	if raw == "" {
		u, err := url.Parse(c.URL)
		if err != nil {
			return "", fmt.Errorf("ari.url %q: %w", c.URL, err)
		}
		switch u.Scheme {
		case "http":
			u.Scheme = "ws"
		case "https":
			u.Scheme = "wss"
		default:
			return "", fmt.Errorf("ari.url %q must be http(s)", c.URL)
		}
		u.Path = strings.TrimRight(u.Path, "/") + "/events"
		raw = u.String()
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("ari.ws_url %q: %w", raw, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return "", fmt.Errorf("ari.ws_url %q must be ws(s)", raw)
	}
	q := u.Query()
	q.Set("app", c.Application)
	q.Set("subscribeAll", "true")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// NewListener checks the options; Run starts it.
func NewListener(o ListenerOptions) (*Listener, error) {
	if o.ARI.Application == "" {
		return nil, errors.New("ari.application must be set: Asterisk refuses /events without app=")
	}
	u, err := WebsocketURL(o.ARI)
	if err != nil {
		return nil, err
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 10 * time.Second
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 3 * o.PingInterval
	}
	if o.ARI.ReconnectMin <= 0 {
		o.ARI.ReconnectMin = 250 * time.Millisecond
	}
	if o.ARI.ReconnectMax < o.ARI.ReconnectMin {
		o.ARI.ReconnectMax = max(10*time.Second, o.ARI.ReconnectMin)
	}
	if o.ARI.RequestTimeout <= 0 {
		o.ARI.RequestTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	h := http.Header{}
	if o.ARI.Username != "" || o.ARI.Password != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(o.ARI.Username+":"+string(o.ARI.Password))))
	}
	return &Listener{opts: o, wsURL: u, header: h, log: o.Logger, signal: make(chan struct{}, 1)}, nil
}

// URL is the websocket URL dialled (no credentials in it).
func (l *Listener) URL() string { return l.wsURL }

// Reconnects counts connections made after the first.
func (l *Listener) Reconnects() int64 {
	l.statsMu.Lock()
	defer l.statsMu.Unlock()
	return l.reconnects
}

// Pending is the number of messages queued for the consumer.
func (l *Listener) Pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// PeakPending is the deepest the queue has been.
func (l *Listener) PeakPending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.peak
}

// queueLevels are the queue depths that are logged when passed (the queue
// is unbounded in count: a bound would stall Asterisk, which then drops
// the socket and the events with it).
var queueLevels = [...]int{0, 10_000, 100_000, 1_000_000}

func (l *Listener) push(m Message) {
	l.mu.Lock()
	if l.queue == nil {
		l.queue, l.spare = l.spare, nil
	}
	l.queue = append(l.queue, m)
	n := len(l.queue)
	l.peak = max(l.peak, n)
	up := l.level+1 < len(queueLevels) && n >= queueLevels[l.level+1]
	if up {
		l.level++
	}
	level := l.level
	l.mu.Unlock()
	if up {
		l.log.Warn("ARI frame queue is deep: ingest processes events slower than Asterisk sends them (nothing is lost; memory grows)",
			"frames", n, "passed", queueLevels[level])
	}
	select {
	case l.signal <- struct{}{}:
	default:
	}
}

// Next returns the queued messages in order (at least one), waiting until
// there is one or ctx ends. After Run has returned and the queue is empty
// it returns io.EOF-like ErrClosed.
func (l *Listener) Next(ctx context.Context) ([]Message, error) {
	for {
		l.mu.Lock()
		if len(l.queue) > 0 {
			q := l.take()
			l.mu.Unlock()
			return q, nil
		}
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.signal:
		}
	}
}

// TryNext returns the queued messages without waiting (nil if none).
func (l *Listener) TryNext() []Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.take()
}

// maxSpare is the largest batch Release keeps for reuse (a deep backlog's
// array is let go).
const maxSpare = 4096

// Release hands back, once, a batch Next or TryNext returned, when the
// consumer is done with it and keeps nothing of it: the next messages are queued in
// its array, which saves an allocation per batch (about one per frame when
// ingest keeps up).
func (l *Listener) Release(batch []Message) {
	if cap(batch) > maxSpare {
		return
	}
	clear(batch[:cap(batch)]) // no frame kept alive by the spare
	l.mu.Lock()
	if l.spare == nil {
		l.spare = batch[:0]
	}
	l.mu.Unlock()
}

// take empties the queue (l.mu held), logging when it was deep; nil if
// it is empty.
func (l *Listener) take() []Message {
	if len(l.queue) == 0 {
		return nil
	}
	q := l.queue
	l.queue = nil
	if l.level > 0 {
		l.log.Info("ARI frame queue drained", "frames_taken", len(q), "was_above", queueLevels[l.level])
		l.level = 0
	}
	return q
}

// ErrClosed is returned by Next once Run has ended and the queue is drained.
var ErrClosed = errors.New("ari listener stopped")

// Run connects, reads and reconnects until ctx ends.
func (l *Listener) Run(ctx context.Context) error {
	defer func() {
		l.mu.Lock()
		l.closed = true
		l.mu.Unlock()
		select {
		case l.signal <- struct{}{}:
		default:
		}
	}()
	attempt := 0
	first := true
	for ctx.Err() == nil {
		conn, err := l.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			d := backoff.Delay(l.opts.ARI.ReconnectMin, l.opts.ARI.ReconnectMax, attempt, rand.Float64())
			attempt++
			l.log.Warn("cannot reach Asterisk ARI; retrying (point minuted at your Asterisk with ARI_URL / ari.url, and check ari.conf, http.conf and the credentials)",
				"url", l.wsURL, "err", err, "retry_in", d.String())
			if !backoff.Sleep(ctx, d) {
				break
			}
			continue
		}
		if !first {
			l.statsMu.Lock()
			l.reconnects++
			l.statsMu.Unlock()
		}
		first = false
		up := time.Now()
		l.log.Info("ARI websocket connected", "url", l.wsURL)
		l.push(Message{Kind: Connected, At: up})
		reason := l.read(ctx, conn)
		now := time.Now()
		l.push(Message{Kind: Disconnected, At: now, Reason: reason})
		if ctx.Err() != nil {
			break
		}
		l.log.Warn("ARI websocket lost; reconnecting", "reason", reason, "was_up", now.Sub(up).Round(time.Millisecond))
		if now.Sub(up) >= l.opts.ARI.ReconnectMax {
			attempt = 0 // a connection that lived a while resets the backoff
		}
		d := backoff.Delay(l.opts.ARI.ReconnectMin, l.opts.ARI.ReconnectMax, attempt, rand.Float64())
		attempt++
		if !backoff.Sleep(ctx, d) {
			break
		}
	}
	return ctx.Err()
}

func (l *Listener) dial(ctx context.Context) (*websocket.Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: l.opts.ARI.RequestTimeout, Proxy: http.ProxyFromEnvironment}
	conn, resp, err := d.DialContext(ctx, l.wsURL, l.header)
	if err != nil {
		if resp != nil {
			switch resp.StatusCode {
			case http.StatusUnauthorized:
				return nil, fmt.Errorf("ARI refused the credentials of user %q (HTTP 401): check ari.username/password and ari.conf: %w", l.opts.ARI.Username, err)
			default:
				return nil, fmt.Errorf("ARI websocket handshake: HTTP %d: %w", resp.StatusCode, err)
			}
		}
		return nil, fmt.Errorf("ARI websocket dial: %w", err)
	}
	return conn, nil
}

// read pumps frames into the queue until the connection fails; it returns
// the reason.
func (l *Listener) read(ctx context.Context, conn *websocket.Conn) string {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // pinger and ctx watcher
		defer wg.Done()
		t := time.NewTicker(l.opts.PingInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "minuted stopping"), time.Now().Add(time.Second))
				_ = conn.Close()
				return
			case <-t.C:
				_ = conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(l.opts.PingInterval))
			}
		}
	}()
	defer func() {
		close(done)
		_ = conn.Close()
		wg.Wait()
	}()
	// extend moves the read deadline to ReadTimeout after now. Setting it
	// is a trip into the runtime's timers: it is moved by deadlineSlack or
	// more, not at every frame, so the connection is declared dead between
	// ReadTimeout and ReadTimeout+deadlineSlack after the last frame or pong.
	var deadline time.Time
	extend := func(now time.Time) {
		if now.Add(l.opts.ReadTimeout).After(deadline) {
			deadline = now.Add(l.opts.ReadTimeout + deadlineSlack)
			_ = conn.SetReadDeadline(deadline)
		}
	}
	extend(time.Now())
	conn.SetPongHandler(func(string) error { extend(time.Now()); return nil })
	var buf bytes.Buffer // reused: each frame is then copied once, into its string
	var frames frameChunks
	for {
		typ, r, err := conn.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			if ctx.Err() != nil {
				return "minuted stopping"
			}
			return err.Error()
		}
		now := time.Now()
		extend(now)
		if typ != websocket.TextMessage {
			continue
		}
		data := frames.string(buf.Bytes())
		if isReplaced(data) {
			l.log.Warn("ARI application replaced: another client opened a websocket with the same app name, so this one receives nothing more; closing and reconnecting (give each listener its own ari.application)",
				"application", l.opts.ARI.Application)
			return "application replaced by another client"
		}
		l.push(Message{Kind: Frame, Data: data, At: now})
	}
}

// deadlineSlack is how far past ReadTimeout a read deadline may fall.
const deadlineSlack = 10 * time.Millisecond

// frameChunk is the size of the chunks frames are copied into.
const frameChunk = 16 << 10

// frameChunks copies frames into shared chunks of memory, so that taking
// one costs an allocation only every frameChunk bytes rather than one per
// frame (ingest's garbage is mostly frames). A chunk is freed once nothing
// refers to any frame in it: the queue hands frames out in order, and
// whoever keeps a string of an event for long clones it (see lean.go).
type frameChunks struct{ b strings.Builder }

// string returns a copy of p. A Builder's String shares its memory, and
// writes only append after it, so strings handed out stay as they are.
func (c *frameChunks) string(p []byte) string {
	if c.b.Cap()-c.b.Len() < len(p) {
		c.b = strings.Builder{} // the old chunk lives on in the strings handed out
		c.b.Grow(max(frameChunk, len(p)))
	}
	start := c.b.Len()
	c.b.Write(p)
	return c.b.String()[start:]
}

func isReplaced(s string) bool {
	if !strings.Contains(s, ApplicationReplaced) {
		return false
	}
	ev, err := DecodeString(s)
	if err != nil {
		return strings.Contains(s, `"type":"ApplicationReplaced"`)
	}
	return ev.Replaced
}
