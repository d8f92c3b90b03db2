package bill

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

	snapSub, err := b.nc.Subscribe(call.SnapshotWildcard, b.onSnapshot)
	if err != nil {
		return fmt.Errorf("bill: subscribe %s: %w", call.SnapshotWildcard, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		// Stop intake first, then wait for what is still running.
		cancel()
		_ = snapSub.Unsubscribe()
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

	due := make(chan *entry, b.o.DebitWorkers)
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
	if m.Subject != call.SnapshotSubject(s.Node) {
		b.log.Warn("ignoring node snapshot published on another node's subject", "subject", m.Subject, "node", s.Node)
		return
	}
	b.orph.Observe(s, b.now())
}

// replaySnapshots reads the last snapshot of every node from the NODES
// stream, received "at" their own time, so that a node that died before
// this bill started is still found silent and its calls closed.
func (b *Biller) replaySnapshots(ctx context.Context) (int, error) {
	st, err := b.js.Stream(ctx, call.NodesStream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", call.NodesStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return 0, err
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy})
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", call.NodesStream, err)
	}
	n := 0
	for n < int(info.State.Msgs) {
		batch, err := cons.FetchNoWait(int(info.State.Msgs) - n)
		if err != nil {
			return n, fmt.Errorf("read %s: %w", call.NodesStream, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			s, err := DecodeSnapshot(m.Data())
			if err != nil || m.Subject() != call.SnapshotSubject(s.Node) {
				continue
			}
			if s.Parts > 1 {
				// Only the last part is kept: it proves the node alive
				// then, and its own calls, but not the others' absence.
				b.orph.Heard(s, s.At)
			} else {
				b.orph.Observe(s, s.At)
			}
			n++
		}
		if got == 0 {
			break
		}
	}
	return n, nil
}

// closeOrphans settles, as estimated, the live calls their node no longer
// reports (SPEC §6).
func (b *Biller) closeOrphans(ctx context.Context) error {
	if !b.orph.Any() {
		return nil
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
