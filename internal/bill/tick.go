package bill

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
)

// debitWorker debits the blocks the scheduler hands out, a batch at a time.
func (b *Biller) debitWorker(ctx context.Context, in <-chan []*entry) {
	for {
		select {
		case <-ctx.Done():
			return
		case es := <-in:
			b.tick(ctx, es)
		}
	}
}

// tick debits the due block of each live call of es in one round trip to
// Redis and schedules each call's next block.
//
// Blocks are debited one by one even when late (restart, adoption, Redis
// outage): the next one is due at once, and exhaustion stays decided at
// the boundary of the first block the balance cannot cover.
func (b *Biller) tick(ctx context.Context, es []*entry) {
	reqs := make([]ledger.DebitReq, len(es))
	for i, e := range es {
		reqs[i] = ledger.DebitReq{Project: e.project, Node: e.node(), Channel: e.channel(), Block: e.tariff.Value().Block(int(e.block))}
	}
	res, errs := b.l.DebitMany(ctx, reqs)
	for i, e := range es {
		b.debited(ctx, e, res[i], errs[i])
	}
}

// debited acts on the outcome of debiting e's due block. A block already
// debited (by this or another instance) just moves on; a settled call
// leaves the scheduler; a block the balance cannot cover under
// on_exhausted: hangup is not debited, the node is told to hang up, and the
// block is tried again (and the hangup repeated) with backoff until the
// call ends or a top-up covers it.
func (b *Biller) debited(ctx context.Context, e *entry, res ledger.DebitResult, err error) {
	now := b.now()
	if err != nil {
		if ctx.Err() != nil {
			b.sched.Requeue(e)
			return
		}
		if errors.Is(err, ledger.ErrNotFound) {
			b.log.Warn("live call vanished from the ledger, no longer ticked", "call", e.key, "project", e.project)
			b.sched.Done(e)
			return
		}
		b.redisTrouble(ctx, err)
		e.attempts++
		wait := b.backoff(b.o.RetryDelay, int(e.attempts))
		e.due = now.Add(wait).UnixNano()
		b.log.Warn("cannot debit block, will retry", "call", e.key, "project", e.project, "block", e.block, "retry_in", wait, "err", err)
		b.sched.Requeue(e)
		return
	}
	if len(res.Crossed) > 0 {
		for _, x := range res.Crossed {
			b.alertAsync(ctx, alert.ThresholdCrossed(e.project, x.ThresholdMinutes, x.Generation, x.Balance, now.UTC()))
		}
	}
	if res.Settled {
		b.sched.Done(e)
		return
	}
	if res.Exhausted {
		e.exhausted.Store(true)
		b.c.exhausted.Add(1)
		e.attempts++
		b.exhausted(ctx, e, res)
		e.due = now.Add(b.backoff(b.o.HangupRetry, int(e.attempts))).UnixNano()
		b.sched.Requeue(e)
		return
	}
	if res.Applied {
		b.c.debits.Add(1)
	}
	e.exhausted.Store(false)
	e.attempts = 0
	e.block++
	e.due = e.answered + int64(e.tariff.Value().Block(int(e.block)).Due)
	b.sched.Requeue(e)
}

// exhausted asks the node to hang the call up and raises the alert once.
func (b *Biller) exhausted(ctx context.Context, e *entry, res ledger.DebitResult) {
	h := call.Hangup{Schema: call.Schema, Node: e.node(), Channel: e.channel(), Project: e.project, Reason: alert.Exhausted}
	data, err := jsonMarshal(h)
	if err == nil {
		err = b.nc.Publish(call.ControlSubject(e.node(), "hangup"), data)
	}
	if err != nil {
		b.log.Warn("cannot send hangup", "call", e.key, "err", err)
	}
	if e.attempts == 1 {
		b.log.Warn("balance exhausted: hanging up call", "project", e.project, "call", e.key, "block", e.block, "balance_seconds", res.Balance)
		b.alertAsync(ctx, alert.Alert{
			Schema: alert.Schema, ID: "exhausted/" + e.project + "/" + e.key, Kind: alert.Exhausted,
			Project: e.project, Node: e.node(), At: b.now().UTC(), BalanceSeconds: res.Balance,
			Detail: fmt.Sprintf("call %s cut: balance cannot cover its next %d s", e.key, e.tariff.Value().Block(int(e.block)).Amount),
		})
	}
}

// alertAsync publishes a in the background, retrying with backoff for a
// while (the id keeps retries and other instances from duplicating it).
func (b *Biller) alertAsync(ctx context.Context, a alert.Alert) {
	b.goBackground(func() {
		for n := 1; ; n++ {
			err := b.publishAlert(ctx, a)
			if err == nil {
				return
			}
			if n >= 8 || ctx.Err() != nil {
				b.log.Error("alert lost: cannot publish to ALERTS", "kind", a.Kind, "id", a.ID, "err", err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(b.backoff(b.o.RetryDelay, n)):
			}
		}
	})
}

// goBackground runs fn in a goroutine Run waits for, unless Run is ending.
func (b *Biller) goBackground(fn func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return false
	}
	b.bg.Go(fn)
	return true
}

// waitBackground refuses new background work and waits for the rest.
func (b *Biller) waitBackground() {
	b.mu.Lock()
	b.closing = true
	b.mu.Unlock()
	b.bg.Wait()
}

// forEachProject runs fn for every project of the ledger.
func (b *Biller) forEachProject(ctx context.Context, fn func(p ledger.Project) error) error {
	ps, err := b.l.List(ctx)
	if err != nil {
		b.redisTrouble(ctx, err)
		return fmt.Errorf("list projects: %w", err)
	}
	var errs []error
	for _, p := range ps {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fn(p))
	}
	return errors.Join(errs...)
}

// adopt schedules the unsettled calls fetch returns for every project.
func (b *Biller) adopt(ctx context.Context, what string, fetch func(project string) ([]ledger.Call, error)) (int, error) {
	n := 0
	err := b.forEachProject(ctx, func(p ledger.Project) error {
		calls, err := fetch(p.ID)
		if err != nil {
			return fmt.Errorf("%s calls of %s: %w", what, p.ID, err)
		}
		for _, c := range calls {
			if !c.Settled && b.schedule(c) {
				n++
			}
		}
		return nil
	})
	return n, err
}

// loadLive schedules every live call of the ledger (on start).
func (b *Biller) loadLive(ctx context.Context) (int, error) {
	return b.adopt(ctx, "live", func(p string) ([]ledger.Call, error) { return b.l.Live(ctx, p) })
}

// sweep adopts live calls whose next block is overdue by more than
// TickSlack: the instance that ticked them died or stalls.
func (b *Biller) sweep(ctx context.Context) (int, error) {
	before := b.now().Add(-b.cfg.TickSlack)
	return b.adopt(ctx, "overdue", func(p string) ([]ledger.Call, error) { return b.l.Overdue(ctx, p, before, 1000) })
}

// every runs fn each period until ctx ends.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
