package bill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"

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
	for i := range shards {
		shards[i] = make(chan job, per)
		go func(q chan job) {
			defer func() { done <- struct{}{} }()
			for j := range q {
				b.handle(ctx, j)
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
		key := msg.Subject()
		if j.err == nil {
			key = j.ev.Key()
		}
		h := fnv.New32a()
		h.Write([]byte(key))
		shards[int(h.Sum32()%uint32(n))] <- j
	}
}

// handle processes one message and acknowledges it only once its effect is
// committed; a failure is NAKed with backoff so nothing is lost.
func (b *Biller) handle(ctx context.Context, j job) {
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
	if err == nil {
		err = b.process(ctx, j.ev)
	} else {
		err = &deadLetterError{reason: err.Error()}
	}
	var dl *deadLetterError
	switch {
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

// process applies one decoded event.
func (b *Biller) process(ctx context.Context, ev *call.Event) error {
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
		return nil
	}
	switch ev.Kind {
	case call.Started:
		b.c.started.Add(1)
		return nil
	case call.Answered:
		if err := b.answered(ctx, ev); err != nil {
			return err
		}
		b.c.answered.Add(1)
		return nil
	case call.Ended:
		if err := b.ended(ctx, ev); err != nil {
			return err
		}
		b.c.ended.Add(1)
		return nil
	}
	return &deadLetterError{reason: fmt.Sprintf("unknown event kind %q", ev.Kind)}
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
		b.known.Store(ev.Project, struct{}{})
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
	b.known.Store(ev.Project, struct{}{})
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
		b.schedule(c)
	}
	if h := b.o.Hooks.AfterCommit; h != nil {
		if err := h(ev); err != nil {
			return fmt.Errorf("%w: %v", errCrash, err)
		}
	}
	return nil
}

func (b *Biller) ended(ctx context.Context, ev *call.Event) error {
	if ev.AnsweredAt == nil {
		b.sched.Remove(ev.Key()) // never answered: nothing to bill
		return nil
	}
	c, err := b.open(ctx, ev)
	if err != nil {
		return err
	}
	answeredAt, estimated := call.UTCms(*ev.AnsweredAt), ev.Estimated
	if ev.AnswerEstimated {
		// An ingest that adopted the call after a restart guessed its
		// answer; the ledger keeps the one it saw first, exact if the
		// original answered message came through.
		if !c.AnsweredAt.IsZero() && !c.AnsweredAt.Equal(answeredAt) {
			answeredAt = c.AnsweredAt
		} else {
			estimated = true
		}
	}
	talk := max(ev.EndedAt.Sub(answeredAt).Milliseconds(), 0)
	cdr := call.CDR{
		Schema: call.Schema, Node: ev.Node, Channel: ev.Channel, Project: ev.Project,
		AttributedBy: ev.AttributedBy, CreatedAt: call.UTCms(ev.CreatedAt),
		AnsweredAt: answeredAt, EndedAt: call.UTCms(*ev.EndedAt),
		TalkMS: talk, TalkSeconds: c.Tariff.TalkSeconds(talk), BilledSeconds: c.Tariff.BilledMS(talk),
		Cause: ev.Cause, CauseTxt: ev.CauseTxt, Estimated: estimated, EndReason: ev.EndReason,
	}
	if cdr.EndReason == "" && c.Exhausted {
		cdr.EndReason = alert.Exhausted
	}
	if err := b.settle(ctx, cdr); err != nil {
		return err
	}
	if h := b.o.Hooks.AfterCommit; h != nil {
		if err := h(ev); err != nil {
			return fmt.Errorf("%w: %v", errCrash, err)
		}
	}
	return b.publishCDR(ctx, cdr)
}

// settle settles a call to cdr.BilledSeconds, stops ticking it and raises
// the crossings of the settlement.
func (b *Biller) settle(ctx context.Context, cdr call.CDR) error {
	res, err := b.l.Settle(ctx, ledger.Settlement{
		Project: cdr.Project, Node: cdr.Node, Channel: cdr.Channel,
		AnsweredAt: cdr.AnsweredAt, EndedAt: cdr.EndedAt,
		Billed: cdr.BilledSeconds, TalkMS: cdr.TalkMS, Estimated: cdr.Estimated, CDR: cdr,
	})
	if err != nil {
		b.redisTrouble(ctx, err)
		return fmt.Errorf("settle call %s/%s of project %s: %w", cdr.Node, cdr.Channel, cdr.Project, err)
	}
	b.sched.Remove(cdr.Node + "/" + cdr.Channel)
	b.orph.Forget(cdr.Node, cdr.Channel)
	if res.Applied {
		b.c.settled.Add(1)
		switch {
		case res.Delta < 0:
			b.c.refunds.Add(1)
		case res.Delta > 0:
			b.c.debits.Add(1)
		}
	}
	return b.publishCrossings(ctx, cdr.Project, res.Crossed)
}

// publishCDR sends the record of a settled call to minuted.cdr.<project>.
// Its Msg-Id makes a replay (the crash case) publish it once; an estimated
// record has its own id so that the exact one that corrects it still goes.
func (b *Biller) publishCDR(ctx context.Context, cdr call.CDR) error {
	data, err := jsonMarshal(cdr)
	if err != nil {
		return err
	}
	id := "cdr/" + cdr.Node + "/" + cdr.Channel
	if cdr.Estimated {
		id += "/estimated"
	}
	if _, err := b.js.Publish(ctx, call.CDRSubject(cdr.Project), data, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("publish CDR of %s/%s: %w", cdr.Node, cdr.Channel, err)
	}
	return nil
}

// schedule queues a live call's next block in this instance's scheduler.
func (b *Biller) schedule(c ledger.Call) bool {
	k := max(c.NextBlock, 0)
	answered := c.AnsweredAt.UTC()
	return b.sched.Add(&entry{
		key: c.Key(), project: c.Project, node: c.Node, channel: c.Channel,
		answered: answered, tariff: c.Tariff, block: k,
		due: answered.Add(c.Tariff.Block(k).Due), idx: -1,
	})
}
