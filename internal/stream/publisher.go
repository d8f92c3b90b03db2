package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PublisherOptions tune a Publisher.
type PublisherOptions struct {
	// Buffer is how many messages may wait unacknowledged (queued or in
	// flight) before Enqueue blocks. Default 65536.
	Buffer int
	// MaxPending is how many messages may be in flight without an ack.
	// Default 1024 (capped at Buffer).
	MaxPending int
	// AckTimeout is how long a message may wait for its ack before it is
	// sent again. Default 5s.
	AckTimeout time.Duration
	// MaxBackoff caps the wait between attempts while NATS fails.
	// Default 2s.
	MaxBackoff time.Duration
	// Logger (nil: discard).
	Logger *slog.Logger
	// OnDepth, if set, is called with the buffer depth each time it
	// changes (a metric hook). It runs with the Publisher's lock held: it
	// must be quick and must not call the Publisher.
	OnDepth func(int)
	// Spool, if set, keeps every message on disk from Enqueue until
	// JetStream acknowledges it, so that a crashed process loses none: the
	// messages a previous process left in it are published first. The
	// Publisher uses it under its lock; the caller closes it after Run.
	Spool *Spool
}

// PublisherStats are the Publisher's counters since it was created.
type PublisherStats struct {
	// Published counts messages acknowledged by JetStream.
	Published uint64
	// Retried counts messages sent again after a failure or timeout.
	Retried uint64
	// Duplicates counts acks saying the stream already had the message
	// (a retry of a message that had in fact been stored).
	Duplicates uint64
	// Depth is the number of messages enqueued and not yet acknowledged.
	Depth int
	// Recovered counts the messages found in the spool at start.
	Recovered int
	// SpoolErrors counts messages that could not be written to the spool
	// (kept in memory only) and failed spool truncations.
	SpoolErrors uint64
}

type pubItem struct {
	subject, id string
	data        []byte
	spooled     int64 // bytes of the message in the spool file (0: not there)
}

type flight struct {
	fut    jetstream.PubAckFuture
	sentAt time.Time
}

// Publisher publishes messages to JetStream in the order they were
// enqueued and never drops one while the process runs: a message leaves
// its bounded buffer only when JetStream has acknowledged it. On any
// failure (NATS down, ack timeout, no responders while JetStream
// restarts) it waits, with capped backoff, and sends again the same
// messages in order, starting with the oldest unacknowledged one. Each
// message carries its Nats-Msg-Id, so the stream's duplicate window drops
// the copies retries create.
//
// Order: on a single connection the server stores messages in the order
// they were sent, and after a failure the Publisher sends nothing new until
// the oldest unacknowledged message is stored again. Strict order across a
// NATS crash also requires that the connection does not replay its own
// reconnect buffer ahead of those retries: give the Publisher a connection
// made with nats.ReconnectBufSize(-1). With a reconnect buffer, a message
// buffered by nats.go during the crash may be stored before an older one
// that was lost on the wire; nothing is lost or duplicated either way.
type Publisher struct {
	js  jetstream.JetStream
	o   PublisherOptions
	log *slog.Logger

	mu        sync.Mutex
	q         []pubItem // unacknowledged messages, q[head:] in order
	head      int
	enqueued  uint64
	acked     uint64
	changed   chan struct{} // closed when acked advances, if someone waits
	warnLevel int
	spoolErrs uint64
	recovered int

	wake       chan struct{}
	running    atomic.Bool
	published  atomic.Uint64
	lastSeq    atomic.Uint64 // highest stream sequence JetStream acked
	retried    atomic.Uint64
	duplicates atomic.Uint64
}

// NewPublisher returns a Publisher on js; call Run to start publishing.
func NewPublisher(js jetstream.JetStream, o PublisherOptions) *Publisher {
	if o.Buffer <= 0 {
		o.Buffer = 1 << 16
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 1024
	}
	o.MaxPending = min(o.MaxPending, o.Buffer)
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 2 * time.Second
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{js: js, o: o, log: log.With("component", "publisher"), wake: make(chan struct{}, 1)}
	if o.Spool != nil {
		for _, r := range o.Spool.takeRecovered() {
			p.q = append(p.q, pubItem{subject: r.Subject, id: r.ID, data: r.Data, spooled: r.encodedLen()})
		}
		p.recovered = len(p.q)
		p.enqueued = uint64(len(p.q))
	}
	return p
}

// Enqueue appends a message to the in-order buffer. It blocks only while
// the buffer is full, until space frees or ctx ends. msgID must be the
// message's deterministic Nats-Msg-Id. The Publisher keeps data: the caller
// must not modify it afterwards.
func (p *Publisher) Enqueue(ctx context.Context, subject, msgID string, data []byte) error {
	if subject == "" || msgID == "" {
		return fmt.Errorf("enqueue: subject %q and message id %q must both be set", subject, msgID)
	}
	p.mu.Lock()
	for p.depthLocked() >= p.o.Buffer {
		p.noteLevelLocked()
		ch := p.waitLocked()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("enqueue %s: publish buffer full (%d messages waiting for NATS): %w", subject, p.o.Buffer, ctx.Err())
		}
		p.mu.Lock()
	}
	it := pubItem{subject: subject, id: msgID, data: data}
	if p.o.Spool != nil {
		n, err := p.o.Spool.Append(subject, msgID, data)
		if err != nil {
			p.spoolErrorLocked("cannot write an event to the spool file; it is kept in memory only until NATS acknowledges it", err)
		}
		it.spooled = n
	}
	p.q = append(p.q, it)
	p.enqueued++
	p.noteLevelLocked()
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// Flush waits until every message enqueued before the call is
// acknowledged by JetStream, or ctx ends. Run must be running.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	target := p.enqueued
	for p.acked < target {
		ch := p.waitLocked()
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			p.mu.Lock()
			left := target - p.acked
			p.mu.Unlock()
			return fmt.Errorf("flush publisher: %d messages not yet acknowledged by NATS: %w", left, ctx.Err())
		}
		p.mu.Lock()
	}
	p.mu.Unlock()
	return nil
}

// Depth is the number of messages enqueued and not yet acknowledged.
func (p *Publisher) Depth() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.depthLocked()
}

// Stats returns the counters.
func (p *Publisher) Stats() PublisherStats {
	p.mu.Lock()
	depth, recovered, spoolErrs := p.depthLocked(), p.recovered, p.spoolErrs
	p.mu.Unlock()
	return PublisherStats{
		Published:   p.published.Load(),
		Retried:     p.retried.Load(),
		Duplicates:  p.duplicates.Load(),
		Depth:       depth,
		Recovered:   recovered,
		SpoolErrors: spoolErrs,
	}
}

// spoolErrorLocked counts a spool failure and logs the first one and
// every 1000th after it.
func (p *Publisher) spoolErrorLocked(msg string, err error) {
	p.spoolErrs++
	if p.spoolErrs%1000 == 1 {
		p.log.Error(msg, "spool", p.o.Spool.Path(), "failures", p.spoolErrs, "err", err)
	}
}

// LastSeq is the highest stream sequence JetStream acknowledged for a
// message of this Publisher (0 before the first ack). Every message
// enqueued before the one stored at LastSeq is stored too (at a lower
// sequence, or earlier as a duplicate), so a reader that has processed the
// stream up to LastSeq has seen everything this Publisher had published
// when LastSeq was read.
func (p *Publisher) LastSeq() uint64 { return p.lastSeq.Load() }

// noteSeq raises LastSeq to seq.
func (p *Publisher) noteSeq(seq uint64) {
	for {
		cur := p.lastSeq.Load()
		if seq <= cur || p.lastSeq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

func (p *Publisher) depthLocked() int { return len(p.q) - p.head }

// waitLocked returns a channel closed at the next ack.
func (p *Publisher) waitLocked() <-chan struct{} {
	if p.changed == nil {
		p.changed = make(chan struct{})
	}
	return p.changed
}

// levelOf maps a depth to 0 (<50 %), 1 (>=50 %), 2 (>=90 %), 3 (full).
func (p *Publisher) levelOf(depth int) int {
	switch {
	case depth >= p.o.Buffer:
		return 3
	case depth*10 >= p.o.Buffer*9:
		return 2
	case depth*2 >= p.o.Buffer:
		return 1
	}
	return 0
}

// noteLevelLocked reports the depth to the hook and warns once each time
// the buffer passes 50 %, 90 % and full; a level re-arms when the depth
// has fallen 10 % of the buffer below it.
func (p *Publisher) noteLevelLocked() {
	d := p.depthLocked()
	if p.o.OnDepth != nil {
		p.o.OnDepth(d)
	}
	if lvl := p.levelOf(d); lvl > p.warnLevel {
		p.warnLevel = lvl
		msg := [...]string{"", "NATS publish buffer over 50% full", "NATS publish buffer over 90% full", "NATS publish buffer full: call events wait until NATS accepts messages"}[lvl]
		p.log.Warn(msg, "depth", d, "buffer", p.o.Buffer)
		return
	}
	if p.warnLevel > 0 {
		if lvl := p.levelOf(d + p.o.Buffer/10 + 1); lvl < p.warnLevel {
			p.warnLevel = lvl
			if lvl == 0 {
				p.log.Info("NATS publish buffer drained below 40%", "depth", d, "buffer", p.o.Buffer)
			}
		}
	}
}

// items appends to dst up to n unacknowledged messages from the i-th on,
// and returns the number of the i-th message since the start.
func (p *Publisher) items(dst []pubItem, i, n int) ([]pubItem, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	from := min(p.head+i, len(p.q))
	to := min(from+n, len(p.q))
	return append(dst, p.q[from:to]...), p.acked + uint64(i)
}

// ackOldest removes the n oldest messages, acknowledged by JetStream.
func (p *Publisher) ackOldest(n, dups int) {
	p.published.Add(uint64(n))
	p.duplicates.Add(uint64(dups))
	p.mu.Lock()
	if p.o.Spool != nil {
		var bytes int64
		for _, it := range p.q[p.head : p.head+n] {
			bytes += it.spooled
		}
		if err := p.o.Spool.Ack(bytes); err != nil {
			p.spoolErrorLocked("cannot drop acknowledged events from the spool file; they are published again (as duplicates) after a restart", err)
		}
	}
	clear(p.q[p.head : p.head+n])
	p.head += n
	p.acked += uint64(n)
	if p.head >= 1024 && p.head*2 >= len(p.q) {
		n := copy(p.q, p.q[p.head:])
		clear(p.q[n:])
		p.q = p.q[:n]
		p.head = 0
	}
	p.noteLevelLocked()
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
	p.mu.Unlock()
}

// errAckTimeout marks a message whose ack did not come within AckTimeout.
var errAckTimeout = errors.New("no acknowledgement from JetStream in time")

// Run publishes until ctx ends (then it returns nil; messages not yet
// acknowledged stay buffered and a later Run sends them). It returns an
// error only if the NATS connection is closed for good.
func (p *Publisher) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("publisher: Run called twice")
	}
	defer p.running.Store(false)

	nc := p.js.Conn()
	var (
		inflight  []flight
		window    = p.o.MaxPending
		sentHigh  uint64 // 1 + highest message number ever sent
		backoff   time.Duration
		failing   bool
		failSince time.Time
		timer     = time.NewTimer(time.Hour)
		batch     []pubItem
		// Built once: each With… call allocates, per message otherwise.
		pubOpts = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0), jetstream.WithStallWait(p.o.AckTimeout)}
	)
	defer timer.Stop()

	fail := func(err error) error {
		if nc.IsClosed() {
			return fmt.Errorf("publisher: NATS connection closed with %d messages unpublished: %w", p.Depth(), err)
		}
		if !failing {
			failing, failSince = true, time.Now()
			p.log.Warn("publishing to NATS failed; retrying the same messages in order", "err", err, "depth", p.Depth())
		} else {
			p.log.Debug("publish retry failed", "err", err)
		}
		inflight = inflight[:0]
		window = 1 // probe with one message until NATS acks again
		backoff = min(max(backoff*2, 50*time.Millisecond), p.o.MaxBackoff)
		select {
		case <-ctx.Done():
		case <-time.After(jitter(backoff)):
		}
		return nil
	}

	for {
		if ctx.Err() != nil {
			return nil
		}
		connected := nc.Status() == nats.CONNECTED
		// Fill the window.
		var first uint64
		batch, first = p.items(batch[:0], len(inflight), window-len(inflight))
		if !connected {
			batch = batch[:0]
		}
		for k, it := range batch {
			if n := first + uint64(k); n < sentHigh {
				p.retried.Add(1)
			} else {
				sentHigh = n + 1
			}
			m := &nats.Msg{Subject: it.subject, Data: it.data, Header: nats.Header{jetstream.MsgIDHeader: []string{it.id}}}
			fut, err := p.js.PublishMsgAsync(m, pubOpts...)
			if err != nil {
				if ferr := fail(fmt.Errorf("publish %s: %w", it.subject, err)); ferr != nil {
					return ferr
				}
				connected = false
				break
			}
			inflight = append(inflight, flight{fut: fut, sentAt: time.Now()})
		}
		if len(inflight) == 0 {
			if !connected {
				if nc.IsClosed() {
					return fmt.Errorf("publisher: NATS connection closed with %d messages unpublished", p.Depth())
				}
				select {
				case <-ctx.Done():
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			select {
			case <-ctx.Done():
			case <-p.wake:
			}
			continue
		}
		// Wait for the oldest message's outcome, or for room to send more.
		var wake <-chan struct{}
		if len(inflight) < window {
			wake = p.wake
		}
		f := inflight[0]
		timer.Reset(time.Until(f.sentAt.Add(p.o.AckTimeout)))
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case ack := <-f.fut.Ok():
			// Take every ack already in, in order, in one go.
			n, dups := 1, 0
			if ack.Duplicate {
				dups++
			}
			p.noteSeq(ack.Sequence)
		more:
			for n < len(inflight) {
				select {
				case ack := <-inflight[n].fut.Ok():
					n++
					if ack.Duplicate {
						dups++
					}
					p.noteSeq(ack.Sequence)
				default:
					break more
				}
			}
			inflight = inflight[n:]
			p.ackOldest(n, dups)
			if failing {
				p.log.Info("publishing to NATS resumed", "after", time.Since(failSince).Round(time.Millisecond), "retried_total", p.retried.Load(), "depth", p.Depth())
				failing, backoff = false, 0
			}
			window = p.o.MaxPending
		case err := <-f.fut.Err():
			if ferr := fail(err); ferr != nil {
				return ferr
			}
		case <-timer.C:
			if ferr := fail(errAckTimeout); ferr != nil {
				return ferr
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
