// Package sim is a test double of Asterisk's REST Interface (ARI): the events
// websocket and the few REST calls minuted uses, spoken like Asterisk speaks
// them, fed by recorded traces (Replay) or by a call generator (Generate).
package sim

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// DefaultAsteriskID is the entity id of the Asterisk that recorded the traces.
const DefaultAsteriskID = "02:fc:00:00:00:01"

// Options configure a Server. The zero value works (random port, no password).
type Options struct {
	Addr         string        // listen address; default "127.0.0.1:0"
	Username     string        // HTTP Basic user; default "minuted"
	Password     string        // HTTP Basic password
	AsteriskID   string        // system.entity_id and asterisk_id of events; default DefaultAsteriskID
	WriteTimeout time.Duration // like ari.conf websocket_write_timeout; default 100 ms
	MaxQueue     int           // events queued for one socket before it counts as stalled; default 1<<20
	Logger       *slog.Logger  // default: discard
}

// Stats are counters of the double.
type Stats struct {
	Emitted       int64 // events produced (sent to every connected app, or lost if none)
	Delivered     int64 // event copies written to sockets
	Lost          int64 // events produced while no socket listened
	Connections   int64 // websocket connections accepted
	StalledClosed int64 // sockets closed because a write stalled past WriteTimeout
}

// Hangup records one DELETE /channels/{id}.
type Hangup struct {
	ChannelID string
	Cause     int
	Found     bool
}

// Server is the ARI double. Create it with Start.
type Server struct {
	opts Options
	log  *slog.Logger
	ln   net.Listener
	http *http.Server
	up   websocket.Upgrader

	mu        sync.Mutex
	conns     map[*wsConn]struct{}
	changed   chan struct{} // closed and replaced whenever the set of listening sockets changes
	live      map[string]*liveChannel
	order     []string // ids in creation order (may hold stale ids; filtered by live)
	owners    map[string]owner
	continues []string
	hangups   []Hangup
	down      bool

	tplOnce sync.Once
	tpl     *templates
	tplErr  error

	idCounter  atomic.Int64
	seqCounter atomic.Int64

	emitted, delivered, lost, accepted, stalled atomic.Int64
}

// owner is a generated call that wants to play its own hangup when one of its
// channels is hung up over REST, and to vanish silently on Crash.
type owner interface {
	hangupRequested(cause int)
	kill(at time.Time)
}

// continuer is an owner that waits in Stasis for POST /channels/{id}/continue.
type continuer interface {
	continued()
}

type liveChannel struct {
	snapshot []byte // latest channel object as Asterisk sent it
	vars     map[string]string
	inStasis bool
}

// Start listens and serves the double until Close.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Username == "" {
		opts.Username = "minuted"
	}
	if opts.AsteriskID == "" {
		opts.AsteriskID = DefaultAsteriskID
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 100 * time.Millisecond
	}
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 1 << 20
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("ARI double cannot listen on %s: %w", opts.Addr, err)
	}
	s := &Server{
		opts:    opts,
		log:     log,
		ln:      ln,
		conns:   map[*wsConn]struct{}{},
		changed: make(chan struct{}),
		live:    map[string]*liveChannel{},
		owners:  map[string]owner{},
		up: websocket.Upgrader{
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("ARI double stopped serving", "err", err)
		}
	}()
	return s, nil
}

// Addr is the host:port the double listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the ARI base URL, e.g. http://127.0.0.1:8088/ari.
func (s *Server) URL() string { return "http://" + s.Addr() + "/ari" }

// WSURL is the events websocket URL without query, e.g. ws://127.0.0.1:8088/ari/events.
func (s *Server) WSURL() string { return "ws://" + s.Addr() + "/ari/events" }

// AsteriskID is the node id the double reports.
func (s *Server) AsteriskID() string { return s.opts.AsteriskID }

// Close stops serving and drops every socket.
func (s *Server) Close() error {
	s.DropWebsockets()
	return s.http.Close()
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Emitted:       s.emitted.Load(),
		Delivered:     s.delivered.Load(),
		Lost:          s.lost.Load(),
		Connections:   s.accepted.Load(),
		StalledClosed: s.stalled.Load(),
	}
}

// Continues lists the channel ids continued over REST, in order.
func (s *Server) Continues() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.continues...)
}

// Hangups lists the DELETE /channels/{id} requests received, in order.
func (s *Server) Hangups() []Hangup {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Hangup(nil), s.hangups...)
}

// LiveChannels returns the ids of the live channels in creation order.
func (s *Server) LiveChannels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveIDsLocked()
}

func (s *Server) liveIDsLocked() []string {
	ids := make([]string, 0, len(s.live))
	kept := s.order[:0]
	for _, id := range s.order {
		if _, ok := s.live[id]; ok {
			ids = append(ids, id)
			kept = append(kept, id)
		}
	}
	s.order = kept
	return ids
}

// Clients is the number of sockets currently receiving events.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listeningLocked()
}

func (s *Server) listeningLocked() int {
	n := 0
	for c := range s.conns {
		if !c.deaf {
			n++
		}
	}
	return n
}

func (s *Server) signalLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WaitClients waits until at least n sockets receive events.
func (s *Server) WaitClients(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		have, ch := s.listeningLocked(), s.changed
		s.mu.Unlock()
		if have >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d ARI client(s), have %d: %w", n, have, ctx.Err())
		case <-ch:
		}
	}
}

// WaitApp waits until a socket of application app receives events.
func (s *Server) WaitApp(ctx context.Context, app string) error {
	for {
		s.mu.Lock()
		found, ch := false, s.changed
		for c := range s.conns {
			found = found || !c.deaf && string(c.app) == app
		}
		s.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for ARI application %q to connect: %w", app, ctx.Err())
		case <-ch:
		}
	}
}

// DropWebsockets closes every events socket abruptly, without a close frame
// (the client sees 1006), like a dying Asterisk. Live channels are kept.
func (s *Server) DropWebsockets() {
	s.mu.Lock()
	conns := s.conns
	s.conns = map[*wsConn]struct{}{}
	s.signalLocked()
	s.mu.Unlock()
	var wg sync.WaitGroup
	for c := range conns {
		wg.Go(c.flushAndAbort)
	}
	wg.Wait()
}

// Crash is `kill -9` of Asterisk: sockets drop without a close frame and every
// live channel is forgotten without a ChannelDestroyed. Generated calls in
// progress end silently.
func (s *Server) Crash() {
	s.mu.Lock()
	owners := s.owners
	s.owners = map[string]owner{}
	s.live = map[string]*liveChannel{}
	s.order = nil
	s.mu.Unlock()
	now := time.Now()
	seen := map[owner]bool{}
	for _, o := range owners {
		if !seen[o] {
			seen[o] = true
			o.kill(now)
		}
	}
	s.DropWebsockets()
}

// SetDown makes the double refuse every HTTP request and websocket (the
// connection is closed at once) while down, like an Asterisk being restarted.
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Emit sends one raw ARI event (one JSON object) to every listening socket and
// applies it to the live channel set. Its "application" is rewritten per socket.
func (s *Server) Emit(event []byte) error {
	if !json.Valid(event) {
		return fmt.Errorf("cannot emit event: %w", errSyntax)
	}
	m, err := scanEvent(event)
	if err != nil {
		return fmt.Errorf("cannot emit event: %w", err)
	}
	s.emit(event, m)
	return nil
}

func (s *Server) emit(b []byte, m eventMeta) {
	msg := outMsg{b: b, appStart: -1}
	if m.app.ok() {
		msg.appStart, msg.appEnd = m.app.start, m.app.end
	}
	s.mu.Lock()
	s.applyLocked(b, m)
	n := 0
	for c := range s.conns {
		if !c.deaf {
			c.enqueue(msg)
			n++
		}
	}
	s.mu.Unlock()
	s.emitted.Add(1)
	if n == 0 {
		s.lost.Add(1)
	}
}

func (s *Server) applyLocked(b []byte, m eventMeta) {
	if m.chanID == "" {
		return
	}
	ch := s.live[m.chanID]
	switch m.typ {
	case "ChannelDestroyed":
		delete(s.live, m.chanID)
		delete(s.owners, m.chanID)
		return
	case "ChannelCreated":
		if ch == nil {
			ch = &liveChannel{}
			s.live[m.chanID] = ch
			s.order = append(s.order, m.chanID)
		}
	}
	if ch == nil {
		return
	}
	ch.snapshot = b[m.channel.start:m.channel.end]
	switch m.typ {
	case "StasisStart":
		ch.inStasis = true
	case "StasisEnd":
		ch.inStasis = false
	case "ChannelVarset":
		if m.variable.ok() && m.value.ok() {
			if ch.vars == nil {
				ch.vars = map[string]string{}
			}
			ch.vars[varValue(b[m.variable.start:m.variable.end])] = varValue(b[m.value.start:m.value.end])
		}
	}
}

func (s *Server) setOwner(id string, o owner) {
	s.mu.Lock()
	s.owners[id] = o
	s.mu.Unlock()
}

func (s *Server) nextChannelID(at time.Time) string {
	return strconv.FormatInt(at.Unix(), 10) + "." + strconv.FormatInt(s.idCounter.Add(1)-1, 10)
}

// ---- websocket connections ----

type outMsg struct {
	b                []byte
	appStart, appEnd int // the recorded application name, replaced per socket; appStart < 0: none
}

type wsConn struct {
	s    *Server
	ws   *websocket.Conn
	app  []byte
	deaf bool // guarded by s.mu: replaced by a newer socket of the same app

	mu      sync.Mutex
	q       []outMsg
	wake    chan struct{}
	done    chan struct{} // closed by abort: the writer stops
	drained chan struct{} // closed by the writer once it has stopped
	closing bool          // no more events; flush the queue then abort
	closed  bool
}

// flushAndAbort writes what is already queued (events Asterisk had sent before
// dying), then drops the connection without a close frame.
func (c *wsConn) flushAndAbort() {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	select {
	case <-c.drained:
	case <-time.After(c.s.opts.WriteTimeout + time.Second):
	}
	c.abort()
}

func (c *wsConn) enqueue(m outMsg) {
	c.mu.Lock()
	if c.closed || c.closing {
		c.mu.Unlock()
		return
	}
	if len(c.q) >= c.s.opts.MaxQueue {
		c.mu.Unlock()
		c.s.stalled.Add(1)
		go c.s.removeConn(c, true)
		return
	}
	c.q = append(c.q, m)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// abort closes the TCP connection without a close frame.
func (c *wsConn) abort() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.q = nil
	c.mu.Unlock()
	close(c.done)
	_ = c.ws.NetConn().Close()
}

func (s *Server) removeConn(c *wsConn, abort bool) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		s.signalLocked()
	}
	s.mu.Unlock()
	if abort {
		c.abort()
	}
}

func (c *wsConn) writeLoop() {
	defer close(c.drained)
	var batch []outMsg
	for {
		select {
		case <-c.done:
			return
		case <-c.wake:
		}
		c.mu.Lock()
		batch, c.q = c.q, batch[:0]
		closing := c.closing
		c.mu.Unlock()
		for _, m := range batch {
			if err := c.write(m); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					c.s.stalled.Add(1)
					c.s.log.Warn("ARI double closes a socket whose write stalled", "app", string(c.app), "timeout", c.s.opts.WriteTimeout)
				}
				c.s.removeConn(c, true)
				return
			}
			c.s.delivered.Add(1)
		}
		clear(batch)
		if closing {
			c.mu.Lock()
			empty := len(c.q) == 0
			c.mu.Unlock()
			if empty {
				return
			}
		}
	}
}

func (c *wsConn) write(m outMsg) error {
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.s.opts.WriteTimeout)); err != nil {
		return err
	}
	w, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	if m.appStart >= 0 {
		_, _ = w.Write(m.b[:m.appStart])
		_, _ = w.Write(c.app)
		_, _ = w.Write(m.b[m.appEnd:])
	} else {
		_, _ = w.Write(m.b)
	}
	return w.Close()
}

func (c *wsConn) readLoop() {
	for {
		if _, _, err := c.ws.NextReader(); err != nil {
			c.s.removeConn(c, true)
			return
		}
	}
}

// ---- HTTP ----

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ari/asterisk/info", s.handleInfo)
	mux.HandleFunc("GET /ari/events", s.handleEvents)
	mux.HandleFunc("GET /ari/channels", s.handleList)
	mux.HandleFunc("GET /ari/channels/{id}", s.handleGet)
	mux.HandleFunc("DELETE /ari/channels/{id}", s.handleDelete)
	mux.HandleFunc("POST /ari/channels/{id}/continue", s.handleContinue)
	mux.HandleFunc("GET /ari/channels/{id}/variable", s.handleVariable)
	mux.HandleFunc("POST /ari/channels/{id}/variable", s.handleSetVariable)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Resource not found"})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		down := s.down
		s.mu.Unlock()
		if down {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					_ = conn.Close()
					return
				}
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="Asterisk REST Interface"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Authentication required"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		// Asterisk also takes ?api_key=user:password.
		if k := r.URL.Query().Get("api_key"); k != "" {
			user, pass, ok = strings.Cut(k, ":")
		}
	}
	return ok &&
		subtle.ConstantTimeCompare([]byte(user), []byte(s.opts.Username)) == 1 &&
		subtle.ConstantTimeCompare([]byte(pass), []byte(s.opts.Password)) == 1
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeRaw(w http.ResponseWriter, code int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

var channelNotFound = map[string]string{"message": "Channel not found"}

func (s *Server) handleInfo(w http.ResponseWriter, _ *http.Request) {
	now := time.Now().UTC().Format(TimeLayout)
	writeJSON(w, http.StatusOK, map[string]any{
		"build": map[string]string{
			"os": "Linux", "kernel": "6.8.0", "machine": "x86_64", "options": "",
			"date": "2026-11-01 00:00:00 UTC", "user": "minuted-sim",
		},
		"system": map[string]string{"version": "23.4.1", "entity_id": s.opts.AsteriskID},
		"config": map[string]any{
			"name": "", "default_language": "en",
			"setid": map[string]string{"user": "asterisk", "group": "asterisk"},
		},
		"status": map[string]string{"startup_time": now, "last_reload_time": now},
	})
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	app := r.URL.Query().Get("app")
	if app == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "\"app\" parameter is required"})
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader already answered
	}
	appJSON, _ := json.Marshal(app)
	c := &wsConn{s: s, ws: ws, app: appJSON[1 : len(appJSON)-1], wake: make(chan struct{}, 1), done: make(chan struct{}), drained: make(chan struct{})}
	replaced := fmt.Appendf(nil, `{"type":"ApplicationReplaced","timestamp":"%s","application":%s,"asterisk_id":%q}`,
		time.Now().Format(TimeLayout), appJSON, s.opts.AsteriskID)
	s.mu.Lock()
	for o := range s.conns {
		if !o.deaf && string(o.app) == string(c.app) {
			o.enqueue(outMsg{b: replaced, appStart: -1})
			o.deaf = true
		}
	}
	s.conns[c] = struct{}{}
	s.signalLocked()
	s.mu.Unlock()
	s.accepted.Add(1)
	s.log.Info("ARI client connected", "app", app, "remote", r.RemoteAddr)
	go c.writeLoop()
	go c.readLoop()
}

func (s *Server) handleList(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	ids := s.liveIDsLocked()
	buf := []byte{'['}
	for i, id := range ids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, s.live[id].snapshot...)
	}
	s.mu.Unlock()
	buf = append(buf, ']')
	writeRaw(w, http.StatusOK, buf)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ch := s.live[r.PathValue("id")]
	var snap []byte
	if ch != nil {
		snap = ch.snapshot
	}
	s.mu.Unlock()
	if ch == nil {
		writeJSON(w, http.StatusNotFound, channelNotFound)
		return
	}
	writeRaw(w, http.StatusOK, snap)
}

func (s *Server) handleVariable(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("variable")
	if name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Variable name is required"})
		return
	}
	s.mu.Lock()
	ch := s.live[r.PathValue("id")]
	var snap []byte
	val, found := "", false
	if ch != nil {
		snap = ch.snapshot
		val, found = ch.vars[name]
	}
	s.mu.Unlock()
	if ch == nil {
		writeJSON(w, http.StatusNotFound, channelNotFound)
		return
	}
	if !found {
		var c struct {
			ChannelVars map[string]string `json:"channelvars"`
		}
		if json.Unmarshal(snap, &c) == nil {
			val, found = c.ChannelVars[name]
		}
	}
	if !found {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "Provided variable was not found"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"value": val})
}

func (s *Server) handleContinue(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	ch := s.live[id]
	var snap []byte
	inStasis := false
	if ch != nil {
		snap, inStasis = ch.snapshot, ch.inStasis
	}
	s.mu.Unlock()
	if ch == nil {
		writeJSON(w, http.StatusNotFound, channelNotFound)
		return
	}
	if !inStasis {
		writeJSON(w, http.StatusConflict, map[string]string{"message": "Channel not in Stasis application"})
		return
	}
	s.mu.Lock()
	s.continues = append(s.continues, id)
	o, _ := s.owners[id].(continuer)
	s.mu.Unlock()
	s.emitBuilt(fmt.Appendf(nil, `{"type":"StasisEnd","timestamp":"%s","channel":%s,"asterisk_id":%q,"application":"capture"}`,
		time.Now().Format(TimeLayout), snap, s.opts.AsteriskID))
	if o != nil {
		o.continued()
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleSetVariable is POST /channels/{id}/variable: variable and value come
// from the query or, as the ari library sends them, a JSON body. Like
// Asterisk it raises ChannelVarset.
func (s *Server) handleSetVariable(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name, value := q.Get("variable"), q.Get("value")
	if name == "" && r.Body != nil {
		var body struct {
			Variable string `json:"variable"`
			Value    string `json:"value"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err == nil {
			name, value = body.Variable, body.Value
		}
	}
	if name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Variable name is required"})
		return
	}
	id := r.PathValue("id")
	s.mu.Lock()
	ch := s.live[id]
	var snap []byte
	if ch != nil {
		snap = ch.snapshot
	}
	s.mu.Unlock()
	if ch == nil {
		writeJSON(w, http.StatusNotFound, channelNotFound)
		return
	}
	// The ChannelVarset applies the value to the live channel (applyLocked).
	s.emitBuilt(fmt.Appendf(nil, `{"type":"ChannelVarset","timestamp":"%s","variable":%s,"value":%s,"channel":%s,"asterisk_id":%q,"application":"capture"}`,
		time.Now().Format(TimeLayout), jsonString(name), jsonString(value), snap, s.opts.AsteriskID))
	w.WriteHeader(http.StatusNoContent)
}

func jsonString(v string) []byte {
	b, _ := json.Marshal(v)
	return b
}

// Variable returns a variable set on a live channel (over REST or by a
// ChannelVarset event).
func (s *Server) Variable(id, name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.live[id]
	if ch == nil {
		return "", false
	}
	v, ok := ch.vars[name]
	return v, ok
}

// emitBuilt emits an event built by the double itself (always well formed).
func (s *Server) emitBuilt(b []byte) {
	if err := s.Emit(b); err != nil {
		s.log.Error("ARI double built a malformed event", "err", err)
	}
}

// causeByReason maps the `reason` of DELETE /channels/{id} to a Q.850 cause, as Asterisk does.
var causeByReason = map[string]int{
	"normal": 16, "busy": 17, "congestion": 34, "no_answer": 19, "timeout": 19, "rejected": 21,
	"unallocated": 1, "normal_unspecified": 31, "number_incomplete": 28, "codec_mismatch": 58,
	"interworking": 127, "failure": 38, "answered_elsewhere": 26,
}

// CauseText is Asterisk's cause_txt of a hangup cause.
func CauseText(cause int) string {
	switch cause {
	case 1:
		return "Unallocated (unassigned) number"
	case 16:
		return "Normal Clearing"
	case 17:
		return "User busy"
	case 19:
		return "User alerting, no answer"
	case 21:
		return "Call Rejected"
	case 26:
		return "Answered elsewhere"
	case 28:
		return "Invalid number format (addressing incomplete)"
	case 31:
		return "Normal, unspecified"
	case 34:
		return "Circuit/channel congestion"
	case 38:
		return "Network out of order"
	case 58:
		return "Bearer capability not available"
	case 127:
		return "Interworking, unspecified"
	}
	return "Unknown"
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	cause := 16
	q := r.URL.Query()
	if rc := q.Get("reason_code"); rc != "" {
		n, err := strconv.Atoi(rc)
		if err != nil || n < 0 || n > 127 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Invalid reason for hangup provided"})
			return
		}
		cause = n
	} else if rs := q.Get("reason"); rs != "" {
		n, ok := causeByReason[rs]
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Invalid reason for hangup provided"})
			return
		}
		cause = n
	}
	if !s.HangupChannel(id, cause) {
		writeJSON(w, http.StatusNotFound, channelNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// HangupChannel hangs a live channel up as DELETE /channels/{id} does and
// reports whether it existed. A generated call plays its own recorded hangup;
// any other channel gets ChannelHangupRequest, StasisEnd if in Stasis, and
// ChannelDestroyed, and so does the other half of a Local channel.
func (s *Server) HangupChannel(id string, cause int) bool {
	s.mu.Lock()
	ch := s.live[id]
	o := s.owners[id]
	s.hangups = append(s.hangups, Hangup{ChannelID: id, Cause: cause, Found: ch != nil})
	if ch == nil {
		s.mu.Unlock()
		return false
	}
	targets := []string{id}
	if other := localPeer(ch.snapshot, s.live); other != "" {
		targets = append(targets, other)
	}
	snaps := make([][]byte, len(targets))
	stasis := make([]bool, len(targets))
	for i, t := range targets {
		snaps[i], stasis[i] = s.live[t].snapshot, s.live[t].inStasis
	}
	s.mu.Unlock()
	if o != nil {
		o.hangupRequested(cause)
		return true
	}
	ts := time.Now().Format(TimeLayout)
	for i, snap := range snaps {
		soft := ""
		if i > 0 {
			soft = `,"soft":true`
		}
		s.emitBuilt(fmt.Appendf(nil, `{"type":"ChannelHangupRequest","timestamp":"%s","cause":%d%s,"channel":%s,"asterisk_id":%q,"application":"capture"}`,
			ts, cause, soft, snap, s.opts.AsteriskID))
	}
	for i, snap := range snaps {
		if stasis[i] {
			s.emitBuilt(fmt.Appendf(nil, `{"type":"StasisEnd","timestamp":"%s","channel":%s,"asterisk_id":%q,"application":"capture"}`,
				ts, snap, s.opts.AsteriskID))
		}
		s.emitBuilt(fmt.Appendf(nil, `{"type":"ChannelDestroyed","timestamp":"%s","cause":%d,"cause_txt":%q,"channel":%s,"asterisk_id":%q,"application":"capture"}`,
			ts, cause, CauseText(cause), snap, s.opts.AsteriskID))
	}
	return true
}

// localPeer finds the live other half of a Local channel (";1" <-> ";2").
func localPeer(snapshot []byte, live map[string]*liveChannel) string {
	name := objectStringField(snapshot, "name")
	if !strings.HasPrefix(name, "Local/") || len(name) < 2 || name[len(name)-2] != ';' {
		return ""
	}
	want := name[:len(name)-1] + "2"
	if name[len(name)-1] == '2' {
		want = name[:len(name)-1] + "1"
	}
	ids := make([]string, 0, 2)
	for id, ch := range live {
		if objectStringField(ch.snapshot, "name") == want {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids) // names restart with Asterisk: prefer a deterministic pick
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1]
}
