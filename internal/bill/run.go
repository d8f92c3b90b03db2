package bill

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/stream"
)

// Run consumes CALLS, ticks live calls, watches node snapshots and answers
// authorisation requests until ctx ends. The streams must exist.
func (b *Biller) Run(ctx context.Context) error {
	cons, err := stream.EnsureConsumer(ctx, b.js, call.CallsStream, b.o.Consumer, stream.ConsumerOptions{
		FilterSubjects: []string{call.CallsSubjects},
		AckWait:        b.cfg.AckWait,
		MaxDeliver:     b.cfg.MaxDeliver,
		MaxAckPending:  b.cfg.MaxInFlight,
	})
	if err != nil {
		return fmt.Errorf("bill: %w", err)
	}
	b.cons = cons

	// Silence is judged only over time this process could hear the nodes.
	b.orph.Listening(b.now())
	b.reconnects = b.nc.Stats().Reconnects
	var snapSubs []*nats.Subscription
	for _, subj := range []string{call.SnapshotWildcard, call.SnapshotPartsWildcard} {
		sub, err := b.nc.Subscribe(subj, b.onSnapshot)
		if err != nil {
			for _, s := range snapSubs {
				_ = s.Unsubscribe()
			}
			return fmt.Errorf("bill: subscribe %s: %w", subj, err)
		}
		snapSubs = append(snapSubs, sub)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		// Stop intake first, then wait for what is still running.
		cancel()
		for _, s := range snapSubs {
			_ = s.Unsubscribe()
		}
		b.waitBackground()
	}()
	// Requests are answered concurrently (bounded), so one slow ledger read
	// does not make every waiting call hit its timeout.
	authSem := make(chan struct{}, 32)
	authSub, err := b.nc.QueueSubscribe(AuthWildcard, AuthQueue, func(m *nats.Msg) {
		select {
		case authSem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		if !b.goBackground(func() {
			defer func() { <-authSem }()
			b.onAuth(ctx, m)
		}) {
			<-authSem
		}
	})
	if err != nil {
		return fmt.Errorf("bill: subscribe %s: %w", AuthWildcard, err)
	}
	defer func() { _ = authSub.Unsubscribe() }() // runs before the wait above

	if n, err := b.replaySnapshots(ctx); err != nil {
		b.log.Warn("cannot read the nodes' last snapshots; nodes that stay silent are judged once they report", "err", err)
	} else if n > 0 {
		b.log.Info("last snapshots read", "nodes", n)
	}
	if n, err := b.loadLive(ctx); err != nil {
		b.log.Warn("cannot load all live calls on start; the sweeper will adopt them", "err", err)
	} else {
		b.log.Info("bill started", "consumer", b.o.Consumer, "live_calls", n)
	}

	due := make(chan []*entry, b.o.DebitWorkers)
	var wg sync.WaitGroup
	wg.Go(func() { b.sched.Run(ctx, due) })
	for range b.o.DebitWorkers {
		wg.Go(func() { b.debitWorker(ctx, due) })
	}
	wg.Go(func() {
		every(ctx, b.cfg.TickSlack, func() {
			if n, err := b.sweep(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("sweep of overdue calls failed", "err", err)
			} else if n > 0 {
				b.log.Info("adopted overdue live calls", "calls", n)
			}
		})
	})
	wg.Go(func() {
		every(ctx, b.o.OrphanCheck, func() {
			if err := b.closeOrphans(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("orphan check failed", "err", err)
			}
		})
	})
	err = b.consume(ctx, cons)
	cancel()
	wg.Wait()
	return err
}

// maxParts bounds the parts of one snapshot (5,000 calls a part: 5 million
// live calls on one node).
const maxParts = 1000

// DecodeSnapshot parses and validates a node snapshot.
func DecodeSnapshot(b []byte) (*call.Snapshot, error) {
	var s call.Snapshot
	if err := unmarshalSnapshot(b, &s); err != nil {
		return nil, fmt.Errorf("decode node snapshot: %w", err)
	}
	var errs []error
	if s.Schema != call.Schema {
		errs = append(errs, fmt.Errorf("schema %d, want %d", s.Schema, call.Schema))
	}
	if s.Node == "" || strings.ContainsAny(s.Node, " .*>") {
		errs = append(errs, fmt.Errorf("bad node %q", s.Node))
	}
	if s.At.IsZero() {
		errs = append(errs, errors.New("missing at"))
	}
	switch {
	case s.Parts < 0 || s.Parts > maxParts:
		errs = append(errs, fmt.Errorf("parts %d, want 0..%d", s.Parts, maxParts))
	case s.Parts > 1 && (s.Part < 1 || s.Part > s.Parts):
		errs = append(errs, fmt.Errorf("part %d of %d", s.Part, s.Parts))
	}
	for i, c := range s.Calls {
		if c.Channel == "" {
			errs = append(errs, fmt.Errorf("calls[%d]: missing channel", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid node snapshot: %w", err)
	}
	return &s, nil
}

func (b *Biller) onSnapshot(m *nats.Msg) {
	s, err := DecodeSnapshot(m.Data)
	if err != nil {
		b.log.Warn("ignoring node snapshot", "subject", m.Subject, "err", err)
		return
	}
	if m.Subject != call.SnapshotPartSubject(s.Node, s.Part) {
		b.log.Warn("ignoring node snapshot published on another node's subject", "subject", m.Subject, "node", s.Node)
		return
	}
	b.orph.Observe(s, b.now())
}

// replaySnapshots reads the last snapshot of every node from the NODES
// stream, received "at" their own time, so that a node that died before
// this bill started is still found silent and its calls closed. A snapshot
// whose parts are not all stored only proves its node (and the calls it
// lists) alive.
func (b *Biller) replaySnapshots(ctx context.Context) (int, error) {
	msgs, err := stream.LastPerSubject(ctx, b.js, call.NodesStream, call.SnapshotWildcard, call.SnapshotPartsWildcard)
	byNode := map[string][]call.Snapshot{}
	for _, m := range msgs {
		s, derr := DecodeSnapshot(m.Data)
		if derr != nil || m.Subject != call.SnapshotPartSubject(s.Node, s.Part) {
			continue
		}
		byNode[s.Node] = append(byNode[s.Node], *s)
	}
	for _, parts := range byNode {
		s, complete, _ := call.LatestSnapshot(parts)
		if complete {
			b.orph.Observe(&s, s.At)
		} else {
			b.orph.Heard(&s, s.At)
		}
	}
	if err != nil {
		return len(byNode), fmt.Errorf("read %s: %w", call.NodesStream, err)
	}
	return len(byNode), nil
}

// closeOrphans settles, as estimated, the live calls their node no longer
// reports (SPEC §6).
func (b *Biller) closeOrphans(ctx context.Context) error {
	if !b.orph.Any() {
		return nil
	}
	// While bill is cut off from NATS it hears no snapshot: no verdict
	// then, and a node's silence counts again from the reconnection.
	if b.nc.Status() != nats.CONNECTED {
		return nil
	}
	if n := b.nc.Stats().Reconnects; n != b.reconnects {
		b.reconnects = n
		b.orph.Listening(b.now())
	}
	// A node's snapshot is judged only once this consumer has processed
	// CALLS up to the snapshot's calls_seq: a call whose ended is still in
	// the backlog is not an orphan.
	ci, err := b.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read the state of consumer %s (orphans are judged only against what bill has processed): %w", b.o.Consumer, err)
	}
	now := b.now()
	b.orph.Refresh(ci.AckFloor.Stream, ci.Delivered.Stream+ci.NumPending, now)
	return b.forEachProject(ctx, func(p ledger.Project) error {
		// Most live calls are listed in their node's latest snapshot: only
		// the others are read from the ledger and judged.
		keys, err := b.l.LiveKeys(ctx, p.ID)
		if err != nil {
			return fmt.Errorf("live calls of %s: %w", p.ID, err)
		}
		calls, err := b.l.LiveCalls(ctx, p.ID, b.orph.Suspects(keys, now))
		if err != nil {
			return fmt.Errorf("live calls of %s: %w", p.ID, err)
		}
		var errs []error
		for _, c := range calls {
			if c.Settled {
				continue
			}
			end, ok := b.orph.Judge(c.Node, c.Channel, c.AnsweredAt.UTC(), now)
			if !ok {
				continue
			}
			errs = append(errs, b.settleOrphan(ctx, c, end))
		}
		return errors.Join(errs...)
	})
}

func (b *Biller) settleOrphan(ctx context.Context, c ledger.Call, end time.Time) error {
	answered := call.UTCms(c.AnsweredAt)
	end = call.UTCms(end)
	talk := max(end.Sub(answered).Milliseconds(), 0)
	cdr := call.CDR{
		Schema: call.Schema, Node: c.Node, Channel: c.Channel, Project: c.Project,
		AnsweredAt: answered, EndedAt: end, TalkMS: talk,
		TalkSeconds: c.Tariff.TalkSeconds(talk), BilledSeconds: c.Tariff.BilledMS(talk),
		Estimated: true, EndReason: EndOrphaned,
	}
	if err := b.settle(ctx, &cdr); err != nil {
		return err
	}
	b.c.estimated.Add(1)
	b.log.Warn("call no longer reported by its node: settled with an estimated end",
		"project", c.Project, "call", c.Key(), "ended_at", end, "billed_seconds", cdr.BilledSeconds)
	return b.publishCDR(ctx, cdr)
}

// EndOrphaned is the CDR end_reason of a call bill closed because its node
// stopped reporting it.
const EndOrphaned = "orphaned"

// onAuth answers a Stasis authorisation request from the ledger. When the
// ledger cannot be read it does not answer, so the asker's configured
// fail_open / fail_closed policy decides.
func (b *Biller) onAuth(ctx context.Context, m *nats.Msg) {
	respond := func(r AuthResponse) {
		data, err := jsonMarshal(r)
		if err == nil {
			err = m.Respond(data)
		}
		if err != nil {
			b.log.Warn("cannot answer authorisation request", "subject", m.Subject, "err", err)
		}
	}
	req, err := DecodeAuthRequest(m.Data)
	if err != nil || m.Subject != AuthSubject(req.Project) {
		if err == nil {
			err = fmt.Errorf("project %q does not match subject %s", req.Project, m.Subject)
		}
		b.log.Warn("bad authorisation request", "subject", m.Subject, "err", err)
		respond(AuthResponse{Schema: call.Schema, Reason: ReasonInvalid})
		return
	}
	ev := &call.Event{Node: req.Node, Channel: req.Channel, Project: req.Project}
	if err := b.ensureProject(ctx, ev); err != nil {
		var dl *deadLetterError
		if errors.As(err, &dl) {
			respond(AuthResponse{Schema: call.Schema, Reason: ReasonUnknown})
			return
		}
		b.log.Warn("cannot authorise call: ledger unavailable, not answering", "project", req.Project, "err", err)
		return
	}
	p, err := b.l.Get(ctx, req.Project)
	if err != nil {
		b.redisTrouble(ctx, err)
		b.log.Warn("cannot authorise call: ledger unavailable, not answering", "project", req.Project, "err", err)
		return
	}
	respond(authorise(p))
}
