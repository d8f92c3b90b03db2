package bill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/stream"
)

func jsonMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

// job is one fetched message, decoded once by the dispatcher.
type job struct {
	msg jetstream.Msg
	ev  *call.Event
	err error
}

// errDeadLetter marks a message that must not be retried.
type deadLetterError struct{ reason string }

func (e *deadLetterError) Error() string { return e.reason }

// consume pulls CALLS messages in batches and hands each to the shard of
// its call, so the events of one call are processed in order while
// different calls proceed in parallel. In-flight messages are bounded by
// MaxInFlight (shard queues) and the consumer's MaxAckPending.
func (b *Biller) consume(ctx context.Context, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(b.cfg.Batch))
	if err != nil {
		return fmt.Errorf("start pulling from stream %s: %w", call.CallsStream, err)
	}
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		it.Stop()
	}()
	defer close(stopped)

	n := b.o.Shards
	per := max(b.cfg.MaxInFlight/n-1, 0)
	shards := make([]chan job, n)
	done := make(chan struct{}, n)
	acks := make(chan cdrAck, b.cfg.MaxInFlight)
	ackDone := make(chan struct{})
	go func() {
		defer close(ackDone)
		b.ackAfterCDR(ctx, acks)
	}()
	for i := range shards {
		shards[i] = make(chan job, per)
		go func(q chan job) {
			defer func() { done <- struct{}{} }()
			for j := range q {
				b.handle(ctx, j, acks)
			}
		}(shards[i])
	}
	defer func() {
		for _, q := range shards {
			close(q)
		}
		for range shards {
			<-done
		}
		close(acks)
		<-ackDone
	}()

	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			b.log.Warn("pull from CALLS interrupted, continuing", "err", err)
			continue
		}
		j := job{msg: msg}
		j.ev, j.err = call.Decode(msg.Data())
		var h uint32
		if j.err == nil {
			h = fnv32(fnv32(fnv32(fnvOffset, j.ev.Node), "/"), j.ev.Channel)
		} else {
			h = fnv32(fnvOffset, msg.Subject())
		}
		shards[int(h%uint32(n))] <- j
	}
}

// FNV-1a, inline so that hashing a call's key allocates nothing.
const fnvOffset uint32 = 2166136261

func fnv32(h uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// cdrAck is a processed ended message waiting for its CDR to be stored.
type cdrAck struct {
	msg       jetstream.Msg
	fut       jetstream.PubAckFuture
	delivered int
}

// cdrDrain is how long a stopping bill still waits for CDR acks before it
// leaves their messages to be redelivered.
const cdrDrain = 2 * time.Second

// ackAfterCDR acknowledges each ended message once JetStream has stored
// its CDR, in the order they were settled (acks arrive in that order). A
// CDR that fails or is not acknowledged within AckWait gets its message
// NAKed: the redelivery settles nothing twice and publishes the CDR again
// under the same Msg-Id. When ctx ends it waits at most cdrDrain in all.
func (b *Biller) ackAfterCDR(ctx context.Context, in <-chan cdrAck) {
	drained := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(cdrDrain, func() { close(drained) }) })
	defer stop()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for p := range in {
		t.Reset(b.cfg.AckWait)
		select {
		case <-p.fut.Ok():
			b.c.processed.Add(1)
			b.ack(p.msg)
		case err := <-p.fut.Err():
			b.cdrFailed(p, err)
		case <-t.C:
			b.cdrFailed(p, errors.New("no acknowledgement from JetStream within the ack wait"))
		case <-drained:
			// stopping: leave it unacknowledged, AckWait redelivers it
		}
	}
}

func (b *Biller) cdrFailed(p cdrAck, err error) {
	b.c.errors.Add(1)
	d := b.backoff(b.o.RetryDelay, p.delivered)
	b.log.Warn("CDR not stored in JetStream: its call event will be redelivered and the CDR published again",
		"subject", p.msg.Subject(), "retry_in", d, "err", err)
	_ = p.msg.NakWithDelay(d)
}

// handle processes one message and acknowledges it only once its effect is
// committed; a failure is NAKed with backoff so nothing is lost.
func (b *Biller) handle(ctx context.Context, j job, acks chan<- cdrAck) {
	if ctx.Err() != nil {
		_ = j.msg.Nak() // let another instance have it now
		return
	}
	delivered := uint64(1)
	if md, err := j.msg.Metadata(); err == nil {
		delivered = md.NumDelivered
	}
	if delivered > 1 {
		b.c.redeliveries.Add(1)
	}
	err := j.err
	var cdr jetstream.PubAckFuture
	if err == nil {
		cdr, err = b.process(ctx, j.ev)
	} else {
		err = &deadLetterError{reason: err.Error()}
	}
	var dl *deadLetterError
	if err == nil {
		b.orph.Alive(j.ev.Node, eventTime(j.ev))
	}
	switch {
	case err == nil && cdr != nil:
		acks <- cdrAck{msg: j.msg, fut: cdr, delivered: int(delivered)}
	case err == nil:
		b.c.processed.Add(1)
		b.ack(j.msg)
	case errors.As(err, &dl):
		if derr := b.deadLetter(ctx, j.msg, dl.reason); derr != nil {
			b.c.errors.Add(1)
			b.log.Warn("cannot dead-letter message, will retry", "subject", j.msg.Subject(), "err", derr)
			_ = j.msg.NakWithDelay(b.backoff(b.o.RetryDelay, int(delivered)))
			return
		}
		b.c.processed.Add(1)
		b.c.deadLettered.Add(1)
		b.log.Warn("message dead-lettered", "subject", j.msg.Subject(), "reason", dl.reason)
		_ = j.msg.TermWithReason(trim(dl.reason, 200))
		b.systemAlert(ctx, alert.DeadLettered, "CALLS message dead-lettered: "+trim(dl.reason, 200), 1)
	case errors.Is(err, errCrash):
		// as if the process had died: no ack, no nak; AckWait redelivers it.
	default:
		b.c.errors.Add(1)
		d := b.backoff(b.o.RetryDelay, int(delivered))
		b.log.Warn("cannot process call event, will retry", "subject", j.msg.Subject(), "delivery", delivered, "retry_in", d, "err", err)
		_ = j.msg.NakWithDelay(d)
	}
}

// eventTime is the latest time an event reports.
func eventTime(ev *call.Event) time.Time {
	t := ev.CreatedAt
	if ev.AnsweredAt != nil {
		t = maxTime(t, *ev.AnsweredAt)
	}
	if ev.EndedAt != nil {
		t = maxTime(t, *ev.EndedAt)
	}
	return t.UTC()
}

// deadLetter sends the original bytes of m to minuted.dlq.calls.
func (b *Biller) deadLetter(ctx context.Context, m jetstream.Msg, reason string) error {
	return stream.DeadLetter(ctx, b.js, DLQSource, m.Data(), errors.New(reason))
}

// DLQSource is the dead-letter subject token of CALLS messages bill could
// not process: minuted.dlq.calls.
const DLQSource = "calls"

func (b *Biller) ack(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		// The effect is committed; a redelivery is harmless.
		b.log.Debug("ack failed, message will be redelivered", "err", err)
	}
}

func trim(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// process applies one decoded event. For an ended event it also returns
// the pending publication of the call's CDR.
func (b *Biller) process(ctx context.Context, ev *call.Event) (jetstream.PubAckFuture, error) {
	if ev.Project == "" {
		b.c.unbilled.Add(1)
		b.c.unbilledUnsent.Add(1)
		if id, ok := b.rateLimited(alert.Unbilled); ok {
			n := b.c.unbilledUnsent.Swap(0)
			a := alert.Alert{
				Schema: alert.Schema, ID: id, Kind: alert.Unbilled, Node: ev.Node, At: b.now().UTC(),
				Count:  int(n),
				Detail: fmt.Sprintf("%d call events with no project (last: %s on node %s); check the attribution rules", n, ev.Name, ev.Node),
			}
			if err := b.publishAlert(ctx, a); err != nil {
				b.log.Warn("cannot raise unbilled alert", "err", err)
			}
		}
		return nil, nil
	}
	switch ev.Kind {
	case call.Started:
		b.c.started.Add(1)
		return nil, nil
	case call.Answered:
		if err := b.answered(ctx, ev); err != nil {
			return nil, err
		}
		b.c.answered.Add(1)
		return nil, nil
	case call.Ended:
		f, err := b.ended(ctx, ev)
		if err != nil {
			return nil, err
		}
		b.c.ended.Add(1)
		return f, nil
	}
	return nil, &deadLetterError{reason: fmt.Sprintf("unknown event kind %q", ev.Kind)}
}

// ensureProject applies the unknown-project policy.
func (b *Biller) ensureProject(ctx context.Context, ev *call.Event) error {
	if _, ok := b.known.Load(ev.Project); ok {
		return nil
	}
	if b.cfg.UnknownProject == "dead_letter" {
		_, err := b.l.Get(ctx, ev.Project)
		if errors.Is(err, ledger.ErrNotFound) {
			return &deadLetterError{reason: fmt.Sprintf("unknown project %q (bill.unknown_project: dead_letter)", ev.Project)}
		}
		if err != nil {
			b.redisTrouble(ctx, err)
			return fmt.Errorf("look up project %s: %w", ev.Project, err)
		}
		b.known.Store(strings.Clone(ev.Project), struct{}{}) // ev shares its message's memory
		return nil
	}
	created, err := b.l.Ensure(ctx, ev.Project, b.o.Defaults)
	if err != nil {
		b.redisTrouble(ctx, err)
		return fmt.Errorf("create project %s: %w", ev.Project, err)
	}
	if created {
		b.log.Warn("unknown project created with zero balance", "project", ev.Project, "node", ev.Node, "channel", ev.Channel)
	}
	if created {
		b.alertAsync(ctx, alert.Alert{
			Schema: alert.Schema, ID: "unknown_project/" + ev.Project, Kind: alert.UnknownProject,
			Project: ev.Project, Node: ev.Node, At: b.now().UTC(),
			Detail: fmt.Sprintf("calls of unknown project %s are billed to a new project with zero balance; set its tariff and top it up", ev.Project),
		})
	}
	b.known.Store(strings.Clone(ev.Project), struct{}{}) // ev shares its message's memory
	return nil
}

// open ensures the project and opens the call (idempotent).
func (b *Biller) open(ctx context.Context, ev *call.Event) (ledger.Call, error) {
	if err := b.ensureProject(ctx, ev); err != nil {
		return ledger.Call{}, err
	}
	c, err := b.l.Open(ctx, ledger.Open{Project: ev.Project, Node: ev.Node, Channel: ev.Channel, AnsweredAt: call.UTCms(*ev.AnsweredAt)})
	if err != nil {
		b.redisTrouble(ctx, err)
		return c, fmt.Errorf("open call %s of project %s: %w", ev.Key(), ev.Project, err)
	}
	return c, nil
}

func (b *Biller) answered(ctx context.Context, ev *call.Event) error {
	c, err := b.open(ctx, ev)
	if err != nil {
		return err
	}
	if !c.Settled {
		b.schedule(c) // copies c.Project, which shares ev's message memory
	}
	if h := b.o.Hooks.AfterCommit; h != nil {
		if err := h(ev); err != nil {
			return fmt.Errorf("%w: %v", errCrash, err)
		}
	}
	return nil
}

// ended settles the call and starts publishing its CDR; the returned
// future resolves when JetStream has stored it.
func (b *Biller) ended(ctx context.Context, ev *call.Event) (jetstream.PubAckFuture, error) {
	key := ev.Key()
	if ev.AnsweredAt == nil {
		b.sched.Remove(key) // never answered: nothing to bill
		return nil, nil
	}
	// A call this instance ticks needs no second Open: its scheduler entry
	// holds the ledger's answer time and tariff snapshot. Ended-only or
	// unknown calls (another instance ticks them, or a restart) are opened.
	ci, ok := b.sched.Lookup(key)
	if !ok {
		c, err := b.open(ctx, ev)
		if err != nil {
			return nil, err
		}
		ci = callInfo{answered: c.AnsweredAt, tariff: c.Tariff, exhausted: c.Exhausted}
	}
	answeredAt, estimated := call.UTCms(*ev.AnsweredAt), ev.Estimated
	if ev.AnswerEstimated {
		// An ingest that adopted the call after a restart guessed its
		// answer; the ledger keeps the one it saw first, exact if the
		// original answered message came through.
		if !ci.answered.IsZero() && !ci.answered.Equal(answeredAt) {
			answeredAt = call.UTCms(ci.answered)
		} else {
			estimated = true
		}
	}
	talk := max(ev.EndedAt.Sub(answeredAt).Milliseconds(), 0)
	cdr := call.CDR{
		Schema: call.Schema, Node: ev.Node, Channel: ev.Channel, Project: ev.Project,
		AttributedBy: ev.AttributedBy, CreatedAt: call.UTCms(ev.CreatedAt),
		AnsweredAt: answeredAt, EndedAt: call.UTCms(*ev.EndedAt),
		TalkMS: talk, TalkSeconds: ci.tariff.TalkSeconds(talk), BilledSeconds: ci.tariff.BilledMS(talk),
		Cause: ev.Cause, CauseTxt: ev.CauseTxt, Estimated: estimated, EndReason: ev.EndReason,
	}
	if cdr.EndReason == "" && ci.exhausted {
		cdr.EndReason = alert.Exhausted
	}
	if err := b.settle(ctx, &cdr); err != nil {
		return nil, err
	}
	if h := b.o.Hooks.AfterCommit; h != nil {
		if err := h(ev); err != nil {
			return nil, fmt.Errorf("%w: %v", errCrash, err)
		}
	}
	return b.publishCDRAsync(cdr)
}

// settle settles a call to cdr.BilledSeconds, stops ticking it and raises
// the crossings of the settlement. cdr.BilledSeconds becomes what the
// ledger billed when it stands: less for a call cut for lack of balance.
func (b *Biller) settle(ctx context.Context, cdr *call.CDR) error {
	res, err := b.l.Settle(ctx, ledger.Settlement{
		Project: cdr.Project, Node: cdr.Node, Channel: cdr.Channel,
		AnsweredAt: cdr.AnsweredAt, EndedAt: cdr.EndedAt,
		Billed: cdr.BilledSeconds, TalkMS: cdr.TalkMS, Estimated: cdr.Estimated, CDR: *cdr,
	})
	if err != nil {
		b.redisTrouble(ctx, err)
		return fmt.Errorf("settle call %s/%s of project %s: %w", cdr.Node, cdr.Channel, cdr.Project, err)
	}
	b.sched.Remove(cdr.Node + "/" + cdr.Channel)
	b.orph.Forget(cdr.Node, cdr.Channel)
	if res.Applied || !cdr.Estimated {
		// An exact settlement, or a replay of one, stands: the ledger's
		// total is the call's. A replayed estimate does not (the exact
		// one may have corrected it since).
		cdr.BilledSeconds = res.Billed
	}
	if res.Applied {
		b.c.settled.Add(1)
		if !cdr.Estimated {
			// An estimated end is a guess made long after the call.
			b.c.settleLag.observe(b.now().Sub(cdr.EndedAt))
		}
		switch {
		case res.Delta < 0:
			b.c.refunds.Add(1)
		case res.Delta > 0:
			b.c.debits.Add(1)
		}
	}
	return b.publishCrossings(ctx, cdr.Project, res.Crossed)
}

// cdrMsg builds the CDR message of a settled call. Its Msg-Id makes a
// replay (the crash case) publish it once; an estimated record has its own
// id so that the exact one that corrects it still goes.
func cdrMsg(cdr call.CDR) (*nats.Msg, error) {
	data, err := appendCDR(make([]byte, 0, 512), &cdr)
	if err != nil {
		return nil, err
	}
	id := "cdr/" + cdr.Node + "/" + cdr.Channel
	if cdr.Estimated {
		id += "/estimated"
	}
	return &nats.Msg{Subject: call.CDRSubject(cdr.Project), Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}, nil
}

// publishCDR sends the record of a settled call to minuted.cdr.<project>
// and waits for JetStream to store it.
func (b *Biller) publishCDR(ctx context.Context, cdr call.CDR) error {
	m, err := cdrMsg(cdr)
	if err != nil {
		return err
	}
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish CDR of %s/%s: %w", cdr.Node, cdr.Channel, err)
	}
	return nil
}

// publishCDRAsync starts publishing the record of a settled call; the
// CALLS message is acknowledged once the returned future resolves.
func (b *Biller) publishCDRAsync(cdr call.CDR) (jetstream.PubAckFuture, error) {
	m, err := cdrMsg(cdr)
	if err != nil {
		return nil, err
	}
	// With many CDRs (or another role's messages) awaiting acks on this
	// connection, wait for room rather than fail and redeliver.
	f, err := b.js.PublishMsgAsync(m, jetstream.WithStallWait(b.cfg.AckWait))
	if err != nil {
		return nil, fmt.Errorf("publish CDR of %s/%s: %w", cdr.Node, cdr.Channel, err)
	}
	return f, nil
}

// schedule queues a live call's next block in this instance's scheduler.
func (b *Biller) schedule(c ledger.Call) bool {
	e := newEntry(c.Project, c.Node, c.Channel, c.AnsweredAt, c.Tariff, max(c.NextBlock, 0))
	e.exhausted.Store(c.Exhausted)
	return b.sched.Add(e)
}
