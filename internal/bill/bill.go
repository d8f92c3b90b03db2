// Package bill is minuted's bill role: it consumes the CALLS stream, debits
// each live call's blocks in Redis while the call runs (SPEC §5), settles it
// exactly at its end, publishes CDRs and alerts, closes calls a node no
// longer reports (SPEC §6) and answers Stasis authorisation requests (§8).
//
// Every effect goes through the ledger's idempotent scripts, so any number
// of Billers may share the durable consumer and tick the same calls: a
// redelivered, reordered or duplicated message, or a block ticked twice,
// changes nothing.
package bill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
)

// Ledger is what bill needs of the Redis ledger (*ledger.Ledger).
type Ledger interface {
	Ensure(ctx context.Context, id string, defaults ledger.Settings) (bool, error)
	Get(ctx context.Context, id string) (ledger.Project, error)
	List(ctx context.Context) ([]ledger.Project, error)
	Open(ctx context.Context, o ledger.Open) (ledger.Call, error)
	DebitMany(ctx context.Context, reqs []ledger.DebitReq) ([]ledger.DebitResult, []error)
	Settle(ctx context.Context, s ledger.Settlement) (ledger.SettleResult, error)
	Live(ctx context.Context, project string) ([]ledger.Call, error)
	LiveKeys(ctx context.Context, project string) ([]string, error)
	LiveCalls(ctx context.Context, project string, keys []string) ([]ledger.Call, error)
	Overdue(ctx context.Context, project string, before time.Time, limit int) ([]ledger.Call, error)
	Ping(ctx context.Context) error
}

// consumerInfo is what the orphan check needs of the CALLS consumer.
type consumerInfo interface {
	Info(ctx context.Context) (*jetstream.ConsumerInfo, error)
}

// Hooks let tests inject faults.
type Hooks struct {
	// AfterCommit runs once an event's effect is committed in Redis, before
	// its CDR is published and the message acknowledged. An error leaves
	// the message unacknowledged, as if the process had died there.
	AfterCommit func(ev *call.Event) error
}

// Options configure a Biller. Zero tuning fields take defaults.
type Options struct {
	Config   config.BillConfig
	Defaults ledger.Settings // settings of projects created on first sight
	Consumer string          // durable consumer name shared by all instances ("bill")
	Logger   *slog.Logger
	Now      func() time.Time
	Hooks    Hooks

	Shards       int           // message workers (calls are hashed to one; default 16)
	DebitWorkers int           // concurrent batches of block debits (default 16)
	OrphanMargin time.Duration // grace for calls answered just before a snapshot (default 2s)
	OrphanCheck  time.Duration // how often live calls are judged (default OrphanAfter/4)
	AlertEvery   time.Duration // rate limit of unbilled / dead-letter alerts (default 1m)
	HangupRetry  time.Duration // first wait before repeating a hangup (default 1s)
	RetryDelay   time.Duration // first backoff after a Redis error (default 250ms)
	MaxBackoff   time.Duration // cap of every backoff (default 10s)
}

// Stats are counters since New.
type Stats struct {
	Processed    int64 // messages handled (acked, dead-lettered or given up)
	Started      int64
	Answered     int64
	Ended        int64
	Unbilled     int64
	Debits       int64 // debits applied (blocks and settlement differences)
	Refunds      int64 // settlements that refunded
	Settled      int64 // settlements applied
	Estimated    int64 // orphans settled with an estimated end
	Exhausted    int64 // blocks refused for lack of balance
	DeadLettered int64
	Redeliveries int64
	Errors       int64 // processing errors (NAKed)
	Scheduled    int   // live calls in this instance's scheduler
	SettleLag    Lag   // hangup → settlement committed, of exact settlements applied
}

type counters struct {
	processed, started, answered, ended, unbilled      atomic.Int64
	debits, refunds, settled, estimated, exhausted     atomic.Int64
	deadLettered, redeliveries, errors, unbilledUnsent atomic.Int64
	settleLag                                          lagHistogram
}

// Biller is one bill instance.
type Biller struct {
	o     Options
	cfg   config.BillConfig
	js    jetstream.JetStream
	nc    *nats.Conn
	cons  consumerInfo // the CALLS consumer, set by Run
	l     Ledger
	log   *slog.Logger
	now   func() time.Time
	sched *scheduler
	orph  *orphans
	c     counters

	// reconnects is the NATS connection's reconnect count when the orphan
	// loop (its only user) last looked.
	reconnects uint64

	known sync.Map // project id -> struct{}: exists in the ledger

	bg sync.WaitGroup // background alert publishers

	mu        sync.Mutex
	lastAlert map[string]time.Time // rate-limited alert kinds
	redisDown bool
	closing   bool // Run is ending: no new background work
}

// New builds a Biller; Run starts it.
func New(o Options, js jetstream.JetStream, nc *nats.Conn, l Ledger) *Biller {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Consumer == "" {
		o.Consumer = "bill"
	}
	c := &o.Config
	if c.UnknownProject == "" {
		c.UnknownProject = "create"
	}
	c.Batch = max(c.Batch, 1)
	c.MaxInFlight = max(c.MaxInFlight, 1)
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = -1
	}
	if c.OrphanAfter <= 0 {
		c.OrphanAfter = 35 * time.Second
	}
	if c.TickSlack <= 0 {
		c.TickSlack = 3 * time.Second
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.OrphanMargin, 2*time.Second)
	def(&o.OrphanCheck, c.OrphanAfter/4)
	def(&o.AlertEvery, time.Minute)
	def(&o.HangupRetry, time.Second)
	def(&o.RetryDelay, 250*time.Millisecond)
	def(&o.MaxBackoff, 10*time.Second)
	if o.Shards <= 0 {
		o.Shards = 16
	}
	o.Shards = min(o.Shards, c.MaxInFlight)
	if o.DebitWorkers <= 0 {
		o.DebitWorkers = 16
	}
	return &Biller{
		o: o, cfg: *c, js: js, nc: nc, l: l,
		log:       o.Logger.With("component", "bill"),
		now:       o.Now,
		sched:     newScheduler(o.Now),
		orph:      newOrphans(c.OrphanAfter, o.OrphanMargin),
		lastAlert: make(map[string]time.Time),
	}
}

// Stats returns the counters.
func (b *Biller) Stats() Stats {
	return Stats{
		Processed: b.c.processed.Load(), Started: b.c.started.Load(), Answered: b.c.answered.Load(),
		Ended: b.c.ended.Load(), Unbilled: b.c.unbilled.Load(), Debits: b.c.debits.Load(),
		Refunds: b.c.refunds.Load(), Settled: b.c.settled.Load(), Estimated: b.c.estimated.Load(),
		Exhausted: b.c.exhausted.Load(), DeadLettered: b.c.deadLettered.Load(),
		Redeliveries: b.c.redeliveries.Load(), Errors: b.c.errors.Load(), Scheduled: b.sched.Len(),
		SettleLag: b.c.settleLag.snapshot(),
	}
}

// errCrash marks a hook-simulated crash: the message is left unacknowledged.
var errCrash = errors.New("simulated crash after commit")

// backoff returns base·2^(n−1) capped at MaxBackoff.
func (b *Biller) backoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < b.o.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, b.o.MaxBackoff)
}

// thresholdAlert turns a crossing into its alert; the id makes every
// instance and replay publish the same message, dropped as a duplicate.
// publishCrossings publishes the threshold alerts of one ledger change.
func (b *Biller) publishCrossings(ctx context.Context, project string, xs []ledger.Crossing) error {
	var errs []error
	for _, x := range xs {
		errs = append(errs, b.publishAlert(ctx, alert.ThresholdCrossed(project, x.ThresholdMinutes, x.Generation, x.Balance, b.now().UTC())))
	}
	return errors.Join(errs...)
}

// publishAlert publishes a to the ALERTS stream with its id as Msg-Id.
func (b *Biller) publishAlert(ctx context.Context, a alert.Alert) error {
	data, err := jsonMarshal(a)
	if err != nil {
		return err
	}
	if _, err := b.js.Publish(ctx, call.AlertSubject(a.Project), data, jetstream.WithMsgID(a.ID)); err != nil {
		return fmt.Errorf("publish %s alert %s: %w", a.Kind, a.ID, err)
	}
	return nil
}

// rateLimited reports whether an alert of kind may be raised now, and
// records it if so.
func (b *Biller) rateLimited(kind string) (string, bool) {
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if last, ok := b.lastAlert[kind]; ok && now.Sub(last) < b.o.AlertEvery {
		return "", false
	}
	b.lastAlert[kind] = now
	// The id is the window, so instances raising the same kind in the same
	// window publish one alert.
	return kind + "/" + strconv.FormatInt(now.Truncate(b.o.AlertEvery).Unix(), 10), true
}

// systemAlert publishes a rate-limited system alert, logging a failure.
func (b *Biller) systemAlert(ctx context.Context, kind, detail string, count int) {
	id, ok := b.rateLimited(kind)
	if !ok {
		return
	}
	a := alert.Alert{Schema: alert.Schema, ID: id, Kind: kind, At: b.now().UTC(), Detail: detail, Count: count}
	if err := b.publishAlert(ctx, a); err != nil {
		b.log.Warn("cannot raise system alert", "kind", kind, "err", err)
	}
}

// redisTrouble is called on every ledger error: if Redis does not answer a
// ping, the outage is logged and alerted once, and a watcher logs its end.
func (b *Biller) redisTrouble(ctx context.Context, err error) {
	b.mu.Lock()
	down := b.redisDown
	b.mu.Unlock()
	if down || ctx.Err() != nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	perr := b.l.Ping(pctx)
	cancel()
	if perr == nil {
		return
	}
	b.mu.Lock()
	if b.redisDown {
		b.mu.Unlock()
		return
	}
	b.redisDown = true
	b.mu.Unlock()
	start := b.now().UTC()
	b.log.Error("Redis unreachable: billing paused, messages stay in JetStream until it is back", "err", err, "ping", perr)
	a := alert.Alert{
		Schema: alert.Schema, ID: "redis_down/" + strconv.FormatInt(start.Truncate(time.Minute).Unix(), 10),
		Kind: alert.RedisDown, At: start, Detail: perr.Error(),
	}
	if err := b.publishAlert(ctx, a); err != nil {
		b.log.Warn("cannot raise Redis alert", "err", err)
	}
	wctx, stop := context.WithCancel(ctx)
	go every(wctx, 500*time.Millisecond, func() {
		pctx, cancel := context.WithTimeout(wctx, time.Second)
		defer cancel()
		if b.l.Ping(pctx) != nil {
			return
		}
		b.mu.Lock()
		b.redisDown = false
		b.mu.Unlock()
		b.log.Info("Redis reachable again: billing resumes", "down_for", b.now().Sub(start).Round(time.Millisecond))
		stop()
	})
}
