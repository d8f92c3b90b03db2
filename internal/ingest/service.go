package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/backoff"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/stream"
)

// Publisher appends CALLS messages in order (stream.Publisher satisfies it).
type Publisher interface {
	Enqueue(ctx context.Context, subject, msgID string, data []byte) error
	// LastSeq is the highest CALLS sequence JetStream acknowledged for
	// this publisher: a snapshot carries it as calls_seq.
	LastSeq() uint64
	// Flush waits until every message enqueued before the call is
	// acknowledged by JetStream, or ctx ends.
	Flush(ctx context.Context) error
}

// SnapshotPartCalls is the most calls one snapshot message lists; a node
// with more sends its snapshot in parts (same At, Part 1..Parts), so that
// 100,000 live calls stay under NATS's default 1 MB max payload.
const SnapshotPartCalls = 5000

// EstimatedSubject is where ingest keeps, beside its node's snapshot in the
// NODES stream, the live calls whose answer time is an estimate (a
// snapshot's answered_at does not say so): the next ingest process adopts
// them with the flag. Only ingest reads it.
func EstimatedSubject(node string) string { return "minuted.nodes." + node + ".ingest" }

// estimatedAnswers is the body on EstimatedSubject.
type estimatedAnswers struct {
	Schema          int       `json:"schema"`
	Node            string    `json:"node"`
	At              time.Time `json:"at"`
	AnswerEstimated []string  `json:"answer_estimated"`
}

// Options configure the ingest role.
type Options struct {
	Node             string // override of the asterisk_id
	ARI              config.ARIConfig
	Attribution      Attribution
	SnapshotInterval time.Duration
	// PingInterval of the ARI websocket (0: ari's default).
	PingInterval time.Duration
	Logger       *slog.Logger
	// Config supplies auth_timeout, auth_policy, auth_hangup_cause and
	// ari_lost_grace (zero values: 250ms, fail_open, rejected, 30s).
	Config config.IngestConfig
	// JS is where ARI alerts go (ALERTS stream) and where the node's last
	// snapshot is read back at start-up (NODES stream); nil disables both.
	JS jetstream.JetStream
}

// Stats are the Service's counters.
type Stats struct {
	EventsReceived int64
	DecodeErrors   int64
	DeadLettered   int64
	Published      int64
	PublishErrors  int64
	Reconnects     int64
	Reconciles     int64
	Snapshots      int64
	Hangups        int64
	HangupErrors   int64
	Alerts         int64 // ARI alerts published
	AlertErrors    int64 // failed alert publish attempts (retried)
	Auth           AuthStats
	Tracker        TrackerStats
	// FrameQueue is the number of ARI frames read but not yet processed,
	// FrameQueuePeak the most there ever were (logged at 10k/100k/1M).
	FrameQueue, FrameQueuePeak int
}

// Service is the ingest role of one Asterisk.
type Service struct {
	o   Options
	pub Publisher
	nc  *nats.Conn
	log *slog.Logger
	cli *ari.Client

	// dec and enc serve the event loop (Run) alone.
	dec ari.Decoder
	enc callEncoder

	mu       sync.Mutex // guards tr, up and produced
	tr       *Tracker
	up       bool
	produced uint64        // call events the tracker has handed out
	handed   atomic.Uint64 // of those, how many publish has enqueued (or given up on)

	snapMu    sync.Mutex    // one snapshot at a time; guards gen and lastParts
	gen       uint64        // Gen of the last snapshot
	lastParts int           // parts stored in NODES for this node (of the last snapshot, or found at start)
	snapNow   chan struct{} // asks the snapshot loop for a snapshot at once
	snapJSON  reusedJSON    // snapshot parts' bodies (guarded by snapMu)

	lis atomic.Pointer[ari.Listener]
	// seedDone: the node's last snapshot was read, found absent, or given
	// up on; no snapshot is published before (it would replace it).
	seedDone atomic.Bool
	estOut   bool // the last list on EstimatedSubject was not empty

	received, decodeErr, dead, published, pubErr atomic.Int64
	reconnects, reconciles, snapshots            atomic.Int64
	hangups, hangupErr                           atomic.Int64

	authTimeout    time.Duration
	authFailClosed bool
	authCause      string
	authSem        chan struct{}
	authWG         sync.WaitGroup
	authReq, authAllowed, authDenied, authNoAnswer, authNoProject,
	authOpen, authClosed, authErr atomic.Int64

	grace      time.Duration
	alertMu    sync.Mutex
	lostAt     time.Time // start of the current ARI outage, zero when connected
	lostRaised bool
	lostTimer  *time.Timer
	alertWG    sync.WaitGroup
	alerts     atomic.Int64
	alertErr   atomic.Int64
}

// New builds the service; Run starts it.
func New(o Options, pub Publisher, nc *nats.Conn) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = 10 * time.Second
	}
	log := o.Logger.With("component", "ingest")
	s := &Service{o: o, pub: pub, nc: nc, log: log, cli: ari.NewClient(o.ARI, log), snapNow: make(chan struct{}, 1),
		authTimeout: o.Config.AuthTimeout, authFailClosed: o.Config.AuthPolicy == FailClosed,
		authCause: o.Config.AuthHangupCause, authSem: make(chan struct{}, authConcurrency), grace: o.Config.ARILostGrace}
	if s.authTimeout <= 0 {
		s.authTimeout = defaultAuthTimeout
	}
	if _, ok := config.HangupReasons[s.authCause]; !ok {
		s.authCause = defaultAuthCause
	}
	if s.grace <= 0 {
		s.grace = defaultARILostGrace
	}
	s.tr = NewTracker(o.Node, o.Attribution)
	s.tr.OnInvalid = func(ch, p string) {
		log.Warn("channel has an invalid project id; published as unbilled", "channel", ch, "project", p,
			"rule", "project ids match ^[A-Za-z0-9_-]{1,64}$")
	}
	s.tr.OnLateProject = func(ch, billed, late string) {
		log.Warn("attribution variable changed after the call was answered; the call stays billed to its project",
			"channel", ch, "billed_project", billed, "variable_project", late)
	}
	return s
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	ts := s.tr.Stats()
	s.mu.Unlock()
	var fq, fqPeak int
	if l := s.lis.Load(); l != nil {
		fq, fqPeak = l.Pending(), l.PeakPending()
	}
	return Stats{
		FrameQueue: fq, FrameQueuePeak: fqPeak,
		EventsReceived: s.received.Load(), DecodeErrors: s.decodeErr.Load(), DeadLettered: s.dead.Load(),
		Published: s.published.Load(), PublishErrors: s.pubErr.Load(), Reconnects: s.reconnects.Load(),
		Reconciles: s.reconciles.Load(), Snapshots: s.snapshots.Load(), Hangups: s.hangups.Load(),
		HangupErrors: s.hangupErr.Load(), Alerts: s.alerts.Load(), AlertErrors: s.alertErr.Load(), Tracker: ts,
		Auth: AuthStats{
			Requests: s.authReq.Load(), Allowed: s.authAllowed.Load(), Denied: s.authDenied.Load(),
			NoAnswer: s.authNoAnswer.Load(), NoProject: s.authNoProject.Load(), FailOpen: s.authOpen.Load(),
			FailClosed: s.authClosed.Load(), Errors: s.authErr.Load(),
		},
	}
}

// Node is the node id in use ("" until learnt).
func (s *Service) Node() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tr.Node()
}

// Connected reports whether the websocket is up and reconciled.
func (s *Service) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up
}

// Run listens until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	l, err := ari.NewListener(ari.ListenerOptions{ARI: s.o.ARI, PingInterval: s.o.PingInterval, Logger: s.log})
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	s.lis.Store(l)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer s.alertWG.Wait()
	defer s.authWG.Wait()
	defer s.stopAlertTimer()
	started := time.Now()
	s.ariDown(ctx, started) // until the first connection
	s.mu.Lock()
	s.tr.Starting()
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = l.Run(ctx) }()
	go func() { defer wg.Done(); s.snapshotLoop(ctx) }()
	defer wg.Wait()
	if s.Node() != "" {
		// First what the previous process billed, then a snapshot that
		// says this node is alive and still has those calls (the snapshot
		// loop holds its snapshots until then: one published before would
		// replace the stored list). Frames queue meanwhile.
		s.loadSeedRetry(ctx)
		s.PublishSnapshot()
	}
	var sub *nats.Subscription
	defer func() {
		if sub != nil {
			_ = sub.Unsubscribe()
		}
	}()
	first := true
	for {
		batch, err := l.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ari.ErrClosed) {
				return nil
			}
			return err
		}
		for i := 0; i < len(batch); i++ {
			m := batch[i]
			batch[i] = ari.Message{} // a deep batch frees its frames as it goes
			switch m.Kind {
			case ari.Frame:
				s.frame(ctx, m.Data)
			case ari.Disconnected:
				s.mu.Lock()
				s.up = false
				s.tr.Disconnected(m.At)
				s.mu.Unlock()
				s.ariDown(ctx, m.At)
			case ari.Connected:
				if !first {
					s.reconnects.Add(1)
				}
				first = false
				live, ok := s.listLive(ctx)
				if !ok {
					return nil
				}
				if !s.seedDone.Load() {
					s.loadSeedRetry(ctx) // the node id was only just learnt
				}
				if sub == nil {
					sub = s.subscribeControl(ctx)
				}
				// Frames that arrived while listing are older than the
				// list: apply them first, then reconcile.
				more := l.TryNext()
				batch = appendMore(batch, more)
				l.Release(more) // copied into batch
				j := i + 1
				for ; j < len(batch) && batch[j].Kind == ari.Frame; j++ {
					s.frame(ctx, batch[j].Data)
				}
				s.mu.Lock()
				out := s.tr.Reconcile(live, time.Now())
				s.produced += uint64(len(out))
				s.up = true
				s.mu.Unlock()
				s.reconciles.Add(1)
				s.publish(ctx, out)
				// Report at once: a restarted ingest must not leave its node
				// silent for a whole interval (bill closes the calls of a
				// node silent for orphan_after). The snapshot loop sends it:
				// it may wait for the events above to be acknowledged.
				s.requestSnapshot()
				s.ariUp(ctx, time.Now())
				i = j - 1
			}
		}
		l.Release(batch)
	}
}

// appendMore adds the messages that arrived meanwhile after the whole
// batch (a fresh array: the listener may reuse nothing of it). It once
// kept only the batch up to the Connected message, so frames queued behind
// it in the same batch (a consumer busy at reconnect) were dropped.
func appendMore(batch, more []ari.Message) []ari.Message {
	return append(batch[:len(batch):len(batch)], more...)
}

// listLive fetches the live channels, retrying until it works or ctx ends;
// it also learns the node id from /asterisk/info when none is configured.
func (s *Service) listLive(ctx context.Context) ([]ari.Channel, bool) {
	for attempt := 0; ; attempt++ {
		if s.Node() == "" {
			if id, err := s.cli.Info(ctx); err == nil {
				s.mu.Lock()
				s.tr.SetNode(id)
				s.mu.Unlock()
			}
		}
		live, err := s.cli.ListChannels(ctx)
		if err == nil {
			return live, true
		}
		s.log.Error("cannot list live channels after connecting; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil, false
		case <-time.After(backoff.Delay(s.o.ARI.ReconnectMin, max(s.o.ARI.ReconnectMax, s.o.ARI.ReconnectMin), attempt, 0.5)):
		}
	}
}

func (s *Service) frame(ctx context.Context, b string) {
	s.received.Add(1)
	ev, err := s.dec.DecodeString(b) // its channels are valid until the next frame
	if err != nil {
		s.decodeErr.Add(1)
		s.log.Warn("undecodable ARI event sent to the dead-letter subject", "reason", err, "subject", call.DLQSubject("ari"), "bytes", len(b))
		s.deadLetter(ctx, []byte(b), err)
		return
	}
	s.mu.Lock()
	out := s.tr.Handle(ev)
	s.produced += uint64(len(out))
	auth := s.wantsAuth(ev)
	var node, project string
	if auth {
		node = s.tr.Node()
		project, _ = s.tr.ProjectOf(ev.Channel.ID)
	}
	s.mu.Unlock()
	s.publish(ctx, out)
	if auth {
		s.startAuth(ctx, node, ev.Channel.ID, project)
	}
}

func (s *Service) deadLetter(ctx context.Context, b []byte, reason error) {
	if s.nc == nil {
		return
	}
	js, err := jetstream.New(s.nc)
	if err == nil {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = stream.DeadLetter(dctx, js, "ari", b, reason)
		cancel()
	}
	if err != nil {
		s.log.Error("cannot dead-letter an undecodable ARI event", "err", err)
		return
	}
	s.dead.Add(1)
}

// publish enqueues the events the tracker handed out (each counted in
// produced, in the same order).
func (s *Service) publish(ctx context.Context, out []call.Event) {
	defer s.handed.Add(uint64(len(out)))
	for i := range out {
		e := &out[i]
		subject, id, b, err := s.enc.encode(e)
		if err == nil {
			err = s.pub.Enqueue(ctx, subject, id, b)
		}
		if err != nil {
			s.pubErr.Add(1)
			s.log.Error("cannot enqueue call event", "subject", e.Subject(), "msg_id", msgID(e), "err", err)
			continue
		}
		s.published.Add(1)
		if e.Project == "" {
			s.log.Info("unbilled call: no project attributed", "channel", e.Channel, "name", e.Name, "talk_ms", e.TalkMS)
		}
	}
}

// snapshotLoop publishes a snapshot every interval; one that fails (NATS
// away) is retried every snapshotRetry until it goes out, and the moment
// the NATS connection is back, so the node reports as soon as it can (a
// process killed right after an outage has then told where its calls were).
func (s *Service) snapshotLoop(ctx context.Context) {
	t := time.NewTicker(s.o.SnapshotInterval)
	defer t.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var back chan nats.Status // NATS reconnected: report at once
	if s.nc != nil {
		back = s.nc.StatusChanged(nats.CONNECTED)
		defer s.nc.RemoveStatusListener(back)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-retry.C:
		case <-s.snapNow:
		case _, ok := <-back:
			if !ok {
				back = nil
				continue
			}
		}
		if !s.PublishSnapshot() {
			retry.Reset(min(snapshotRetry, s.o.SnapshotInterval))
		}
	}
}

const snapshotRetry = 50 * time.Millisecond

// snapshotAckWait bounds how long a snapshot waits for the events it
// reflects to be acknowledged by JetStream (at most half the interval);
// past it, it goes out marked pending.
const snapshotAckWait = 2 * time.Second

// requestSnapshot has the snapshot loop publish a snapshot now.
func (s *Service) requestSnapshot() {
	select {
	case s.snapNow <- struct{}{}:
	default:
	}
}

// PublishSnapshot publishes the live billed calls on core NATS now, in
// parts of at most SnapshotPartCalls calls; false if it could not.
//
// Its calls_seq covers every call event the snapshot reflects: it first
// waits (a little) until JetStream has acknowledged them all. Otherwise a
// call that ended just before, whose ended still waits in the publish
// buffer, would be missing from the snapshot with nothing in CALLS to say
// why, and bill could close it as an orphan. A snapshot whose events are
// not all acknowledged in time goes out marked pending: it proves the node
// alive, nothing more.
func (s *Service) PublishSnapshot() bool {
	if !s.seedDone.Load() && s.o.JS != nil {
		return false
	}
	if s.nc != nil && !s.nc.IsConnected() {
		return false
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.Lock()
	snap := s.tr.Snapshot(time.Now())
	snap.Connected = snap.Connected && s.up
	produced := s.produced
	est := s.tr.EstimatedAnswers()
	sendEst := len(est) > 0 || s.estOut
	s.estOut = len(est) > 0
	s.mu.Unlock()
	if snap.Node == "" || s.nc == nil {
		return true
	}
	s.gen = max(s.gen+1, uint64(time.Now().UnixNano()))
	snap.Gen = s.gen
	snap.Pending = !s.waitAcked(produced, min(s.o.SnapshotInterval/2, snapshotAckWait))
	if sendEst {
		b, err := json.Marshal(estimatedAnswers{Schema: call.Schema, Node: snap.Node, At: snap.At, AnswerEstimated: est})
		if err == nil {
			err = s.nc.Publish(EstimatedSubject(snap.Node), b)
		}
		if err != nil {
			s.log.Warn("cannot publish the calls with an estimated answer", "calls", len(est), "err", err)
		}
	}
	// Read once the events are acknowledged: every one of them is at or
	// below it.
	snap.CallsSeq = s.pub.LastSeq()
	parts := SplitSnapshot(snap, SnapshotPartCalls)
	for _, part := range parts {
		// One buffer for every part: Publish copies the body out.
		b, err := s.snapJSON.marshal(part)
		if err == nil {
			err = s.nc.Publish(call.SnapshotPartSubject(snap.Node, part.Part), b)
		}
		if err != nil {
			s.log.Warn("cannot publish node snapshot; retrying", "part", part.Part, "parts", part.Parts, "calls", len(part.Calls), "bytes", len(b), "err", err)
			return false
		}
	}
	s.snapshots.Add(1)
	s.purgeParts(snap.Node, len(parts))
	return true
}

// waitAcked waits up to d until the first n call events the tracker
// handed out are enqueued and acknowledged by JetStream.
func (s *Service) waitAcked(n uint64, d time.Duration) bool {
	if n == 0 {
		return true
	}
	deadline := time.Now().Add(d)
	for s.handed.Load() < n { // the event loop is enqueueing them
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return s.pub.Flush(ctx) == nil
}

// purgeParts removes from the NODES stream the parts beyond a snapshot's
// n that an older, bigger snapshot left there (readers ignore them, being
// of another snapshot; this keeps the stream tidy). Best effort: what fails
// is tried again after the next snapshot.
func (s *Service) purgeParts(node string, n int) {
	if s.lastParts <= n || s.o.JS == nil {
		s.lastParts = n
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := s.o.JS.Stream(ctx, call.NodesStream)
	for i := s.lastParts; err == nil && i > n; i-- {
		if err = st.Purge(ctx, jetstream.WithPurgeSubject(call.SnapshotPartSubject(node, i))); err == nil {
			s.lastParts = i - 1
		}
	}
	if err != nil {
		s.log.Debug("cannot purge the stale parts of an older snapshot; readers ignore them", "node", node, "parts", n, "stored", s.lastParts, "err", err)
	}
}

// SplitSnapshot cuts s into parts of at most per calls, numbered 1..n with
// the same At and CallsSeq; a snapshot that fits is returned whole, with
// Part and Parts zero.
func SplitSnapshot(s call.Snapshot, per int) []call.Snapshot {
	if per <= 0 || len(s.Calls) <= per {
		return []call.Snapshot{s}
	}
	n := (len(s.Calls) + per - 1) / per
	out := make([]call.Snapshot, 0, n)
	for i := range n {
		p := s
		p.Part, p.Parts = i+1, n
		p.Calls = s.Calls[i*per : min((i+1)*per, len(s.Calls))]
		out = append(out, p)
	}
	return out
}

// seedWait bounds how long a starting ingest waits for NATS to read its
// node's last snapshot before it goes on without (and reports again).
const seedWait = 10 * time.Second

// loadSeedRetry calls loadSeed, with short attempts, until it succeeds or
// seedWait has passed (NATS away at start-up: the calls are then adopted by
// the rules for unknown channels).
func (s *Service) loadSeedRetry(ctx context.Context) {
	defer s.seedDone.Store(true)
	deadline := time.Now().Add(seedWait)
	for attempt := 0; !s.loadSeed(ctx, attempt > 0); attempt++ {
		if time.Now().After(deadline) {
			s.log.Warn("gave up reading this node's last snapshot; live channels are adopted by the attribution rules alone",
				"node", s.Node(), "waited", seedWait)
			return
		}
		if !backoff.Sleep(ctx, snapshotRetry) {
			return
		}
	}
}

// loadSeed reads the node's last snapshot back from the NODES stream and
// seeds the tracker with it (see Tracker.Seed). A snapshot sent in parts is
// stored one subject per part; if some part of the latest one is missing
// (the process died while sending it), the parts found are seeded and the
// other calls are adopted by the rules for unknown channels. It reports
// false when the stream could not be read (a snapshot published then would
// replace the one still stored); quiet logs that at debug level (a retry).
func (s *Service) loadSeed(ctx context.Context, quiet bool) bool {
	node := s.Node()
	if node == "" || s.o.JS == nil {
		return true // nothing to read
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	msgs, err := stream.LastPerSubject(ctx, s.o.JS, call.NodesStream, call.SnapshotSubject(node), call.SnapshotPartsOf(node))
	if err != nil {
		lvl := slog.LevelWarn
		if quiet {
			lvl = slog.LevelDebug
		}
		s.log.Log(ctx, lvl, "cannot read this node's last snapshot yet; ARI events wait meanwhile",
			"node", node, "stream", call.NodesStream, "wait_at_most", seedWait, "err", err)
		return false
	}
	var parts []call.Snapshot
	stored := 0
	for _, m := range msgs {
		var p call.Snapshot
		if err := json.Unmarshal(m.Data, &p); err != nil || p.Node != node || m.Subject != call.SnapshotPartSubject(node, p.Part) {
			s.log.Warn("ignoring a stored snapshot of this node: undecodable, of another node or on another part's subject", "node", node, "subject", m.Subject, "err", err)
			continue
		}
		parts = append(parts, p)
		stored = max(stored, p.Part, 1)
	}
	snap, complete, ok := call.LatestSnapshot(parts)
	if !ok {
		s.log.Info("no previous snapshot of this node: live channels are adopted by the attribution rules", "node", node)
		return true
	}
	var est estimatedAnswers
	if st, err := s.o.JS.Stream(ctx, call.NodesStream); err == nil {
		if m, err := st.GetLastMsgForSubject(ctx, EstimatedSubject(node)); err == nil {
			if err := json.Unmarshal(m.Data, &est); err != nil || est.Node != node {
				est = estimatedAnswers{}
			}
		}
	}
	s.snapMu.Lock()
	s.lastParts = max(s.lastParts, stored) // parts beyond the next snapshot's are purged
	s.snapMu.Unlock()
	s.mu.Lock()
	s.tr.Seed(snap)
	s.tr.SeedEstimatedAnswers(est.AnswerEstimated)
	n := s.tr.Seeded()
	s.mu.Unlock()
	if !complete {
		s.log.Warn("this node's last snapshot is incomplete (a part is missing): the calls of the parts found are adopted with their project and answer time, the others by the attribution rules",
			"node", node, "at", snap.At, "calls", n, "answer_estimated", len(est.AnswerEstimated))
		return true
	}
	s.log.Info("read this node's last snapshot: its calls are adopted with their project and answer time",
		"node", node, "at", snap.At, "calls", n, "answer_estimated", len(est.AnswerEstimated))
	return true
}

func (s *Service) subscribeControl(ctx context.Context) *nats.Subscription {
	node := s.Node()
	if node == "" || s.nc == nil {
		s.log.Warn("hangup commands disabled: node id unknown or no NATS connection")
		return nil
	}
	subj := call.ControlSubject(node, "hangup")
	sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) {
		var h call.Hangup
		if err := json.Unmarshal(m.Data, &h); err != nil || h.Channel == "" {
			s.log.Warn("ignoring malformed hangup command", "subject", m.Subject, "err", err)
			s.respond(m, fmt.Errorf("malformed hangup command: %v", err))
			return
		}
		go s.hangup(ctx, m, h)
	})
	if err != nil {
		s.log.Error("cannot subscribe to hangup commands", "subject", subj, "err", err)
		return nil
	}
	return sub
}

func (s *Service) hangup(ctx context.Context, m *nats.Msg, h call.Hangup) {
	reason := h.Reason
	if _, ok := config.HangupReasons[reason]; !ok {
		reason = "normal"
	}
	s.hangups.Add(1)
	s.setEndReason(h.Channel, h.Reason)
	err := s.cli.Hangup(ctx, h.Channel, reason)
	if err != nil {
		s.setEndReason(h.Channel, "")
		s.hangupErr.Add(1)
		s.log.Error("hangup command failed", "channel", h.Channel, "project", h.Project, "err", err)
	} else {
		s.log.Info("hung up channel on command", "channel", h.Channel, "project", h.Project, "reason", h.Reason)
	}
	s.respond(m, err)
}

// setEndReason marks the channel's ended message with why minuted hangs
// it up (the control message's reason, e.g. "exhausted").
func (s *Service) setEndReason(ch, reason string) {
	s.mu.Lock()
	s.tr.SetEndReason(ch, reason)
	s.mu.Unlock()
}

func (s *Service) respond(m *nats.Msg, err error) {
	if m.Reply == "" {
		return
	}
	r := map[string]any{"ok": err == nil}
	if err != nil {
		r["error"] = err.Error()
	}
	b, _ := json.Marshal(r)
	_ = m.Respond(b)
}
