package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/backoff"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
)

// Enricher reads a project's recent ledger lines, so the text can give the
// burn rate and the time to zero. *ledger.Ledger satisfies it. The figures
// are computed at delivery from the entries up to the alert's time, so they
// are those of the moment the alert was raised, however late it is sent.
type Enricher interface {
	Entries(ctx context.Context, project string, limit int) ([]ledger.Entry, error)
}

// EntriesLimit bounds the ledger lines read per alert: at one debit a
// minute per call, enough for 300 concurrent calls over a 15-minute window
// (more calls make the rate an underestimate).
const EntriesLimit = 5000

// DurablePrefix + sink name is the durable consumer of a sink.
const DurablePrefix = "notify-"

// Options of a Dispatcher. Config and Logger are required.
type Options struct {
	Config Config
	Logger *slog.Logger
	// Enricher, if set, gives texts their burn rate; without it the text
	// says the rate is unknown.
	Enricher Enricher
	// Registerer receives the counters; nil means a private registry.
	Registerer prometheus.Registerer
	// AckWait of the consumers (default 30s): while an alert is being
	// delivered or waits for a retry, its message is kept alive with
	// InProgress every AckWait/3.
	AckWait time.Duration
	// RecentSize bounds the per-sink set of recently delivered alert ids
	// (default 4096).
	RecentSize int
}

// Dispatcher runs one delivery loop per sink.
type Dispatcher struct {
	o       Options
	cfg     Config
	js      jetstream.JetStream
	log     *slog.Logger
	tmpl    *alert.Templates
	sinks   []sink
	metrics metrics
}

type sink struct {
	SinkConfig
	n Notifier
}

type metrics struct {
	delivered, attempts *prometheus.CounterVec
	failed              *prometheus.CounterVec // labels sink, reason
}

// Reasons a sink did not deliver an alert (label reason of
// minuted_notify_failed_total).
const (
	ReasonRejected    = "rejected"    // the sink answered a final error (4xx)
	ReasonGaveUp      = "gave_up"     // retries ran past retry.max_elapsed
	ReasonUndecodable = "undecodable" // not a valid alert message
	ReasonStale       = "stale"       // older than stale_after
)

// New checks the configuration and builds the sinks; Run starts them.
func New(o Options, js jetstream.JetStream) (*Dispatcher, error) {
	if o.Logger == nil {
		return nil, errors.New("notify: Options.Logger is required")
	}
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	cfg := o.Config.withDefaults()
	tmpl, err := alert.NewTemplates(cfg.Templates)
	if err != nil {
		return nil, fmt.Errorf("notify.%w", err)
	}
	if o.AckWait <= 0 {
		o.AckWait = 30 * time.Second
	}
	if o.RecentSize <= 0 {
		o.RecentSize = 4096
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	d := &Dispatcher{o: o, cfg: cfg, js: js, log: o.Logger.With("component", "notify"), tmpl: tmpl}
	d.metrics = metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minuted_notify_delivered_total", Help: "Alerts delivered, per sink."}, []string{"sink"}),
		attempts:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minuted_notify_attempts_total", Help: "Delivery attempts, per sink."}, []string{"sink"}),
		failed:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "minuted_notify_failed_total", Help: "Alerts a sink did not deliver, per sink and reason."}, []string{"sink", "reason"}),
	}
	for _, c := range []prometheus.Collector{d.metrics.delivered, d.metrics.attempts, d.metrics.failed} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("notify: register metrics: %w", err)
		}
	}
	for _, sc := range cfg.Sinks {
		var n Notifier
		switch sc.Type {
		case TypeLog:
			n = NewLog(d.log.With("sink", sc.Name))
		case TypeWebhook:
			n = NewWebhook(string(sc.URL), sc.Secret)
		case TypeSlack:
			n = NewSlack(string(sc.URL))
		case TypeTelegram:
			n = NewTelegram(sc.BaseURL, sc.Token, sc.ChatID)
		}
		d.sinks = append(d.sinks, sink{SinkConfig: sc, n: n})
		// Series start at 0, so a rate() sees the first event.
		d.metrics.delivered.WithLabelValues(sc.Name)
		d.metrics.attempts.WithLabelValues(sc.Name)
		for _, r := range []string{ReasonRejected, ReasonGaveUp, ReasonUndecodable, ReasonStale} {
			d.metrics.failed.WithLabelValues(sc.Name, r)
		}
	}
	return d, nil
}

// Run delivers until ctx ends; it returns nil then. The ALERTS stream must
// exist (stream.EnsureStreams); until it does, each sink logs and retries.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range d.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.runSink(ctx, s)
		}()
	}
	wg.Wait()
	return nil
}

func (d *Dispatcher) runSink(ctx context.Context, s sink) {
	log := d.log.With("sink", s.Name)
	recent := newRecent(d.o.RecentSize)
	for attempt := 0; ctx.Err() == nil; attempt++ {
		err := d.consume(ctx, s, recent, log)
		if ctx.Err() != nil {
			return
		}
		log.Warn("alert consumer stopped; recreating it", "consumer", DurablePrefix+s.Name, "err", err)
		if !backoff.Sleep(ctx, d.backoff(attempt)) {
			return
		}
	}
}

// consume reads the sink's durable consumer one message at a time (max ack
// pending 1: a sink's alerts go out in order) until ctx ends or it fails.
func (d *Dispatcher) consume(ctx context.Context, s sink, recent *recent, log *slog.Logger) error {
	cons, err := d.js.CreateOrUpdateConsumer(ctx, call.AlertsStream, jetstream.ConsumerConfig{
		Durable:       DurablePrefix + s.Name,
		Description:   "minuted notify: delivers alerts to sink " + s.Name,
		FilterSubject: call.AlertsSubject,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.o.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 1,
	})
	if err != nil {
		return fmt.Errorf("create consumer %s%s on stream %s (is the stream created?): %w", DurablePrefix, s.Name, call.AlertsStream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("pull from consumer %s%s: %w", DurablePrefix, s.Name, err)
	}
	// On shutdown Drain (not Stop): a message already pulled is handed
	// back with Nak below instead of waiting out its ack wait.
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			return fmt.Errorf("next alert: %w", err)
		}
		if ctx.Err() != nil {
			_ = msg.Nak()
			continue
		}
		d.handle(ctx, s, recent, log, msg)
	}
}

func (d *Dispatcher) handle(ctx context.Context, s sink, recent *recent, log *slog.Logger, msg jetstream.Msg) {
	a, err := alert.Decode(msg.Data())
	if err != nil {
		log.Error("dropping an alert message that does not decode", "subject", msg.Subject(), "err", err)
		d.metrics.failed.WithLabelValues(s.Name, ReasonUndecodable).Inc()
		_ = msg.Term()
		return
	}
	log = log.With("alert_id", a.ID, "kind", a.Kind, "project", a.Project)
	if recent.has(a.ID) {
		log.Debug("alert already delivered to this sink; skipping the duplicate")
		_ = msg.Ack()
		return
	}
	if age := time.Since(a.At); age > d.cfg.StaleAfter {
		log.Warn("alert is older than notify.stale_after; not sending it", "age", age.Round(time.Second))
		d.metrics.failed.WithLabelValues(s.Name, ReasonStale).Inc()
		recent.add(a.ID)
		_ = msg.Term()
		return
	}
	defer keepAlive(msg, d.o.AckWait/3)()
	title, text, err := alert.Render(a, d.measure(ctx, a, log), d.cfg.Language, d.tmpl)
	if err != nil { // templates are checked at load; keep the alert readable anyway
		log.Error("rendering the alert failed; sending a plain text", "err", err)
		title, text = "minuted: "+a.Kind, fmt.Sprintf("%s %s %s", a.Kind, a.Project, a.Detail)
	}
	start := time.Now()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.Timeout)
		retry, err := s.n.Notify(actx, a, title, text)
		cancel()
		d.metrics.attempts.WithLabelValues(s.Name).Inc()
		if err == nil {
			recent.add(a.ID)
			d.metrics.delivered.WithLabelValues(s.Name).Inc()
			log.Info("alert delivered", "attempts", attempt)
			if err := ackSync(ctx, msg); err != nil {
				log.Warn("ack of a delivered alert failed; a redelivery will be skipped by this process", "err", err)
			}
			return
		}
		if ctx.Err() != nil {
			_ = msg.Nak() // shutting down: the next start delivers it
			return
		}
		wait := d.backoff(attempt - 1)
		var ra *RetryAfterError
		if errors.As(err, &ra) {
			wait = max(wait, ra.Wait)
		}
		switch {
		case !retry:
			log.Error("sink rejected the alert; giving up", "attempts", attempt, "err", err)
			d.metrics.failed.WithLabelValues(s.Name, ReasonRejected).Inc()
		case time.Since(start)+wait > d.cfg.Retry.MaxElapsed:
			log.Error("alert not delivered within notify.retry.max_elapsed; giving up", "attempts", attempt, "max_elapsed", d.cfg.Retry.MaxElapsed, "err", err)
			d.metrics.failed.WithLabelValues(s.Name, ReasonGaveUp).Inc()
		default:
			log.Warn("alert delivery failed; will retry", "attempt", attempt, "retry_in", wait.Round(time.Millisecond), "err", err)
			if !backoff.Sleep(ctx, wait) {
				_ = msg.Nak()
				return
			}
			continue
		}
		recent.add(a.ID)
		_ = msg.Term()
		return
	}
}

// measure computes the burn rate from the ledger, or returns an unknown
// Context when there is no ledger or it cannot be read now.
func (d *Dispatcher) measure(ctx context.Context, a alert.Alert, log *slog.Logger) alert.Context {
	if d.o.Enricher == nil || a.Project == "" || !alert.ProjectKind(a.Kind) {
		return alert.Context{}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	entries, err := d.o.Enricher.Entries(ctx, a.Project, EntriesLimit)
	if err != nil {
		log.Warn("cannot read the ledger for the burn rate; the text will say it is unknown", "err", err)
		return alert.Context{}
	}
	return alert.Measure(a, entries, d.cfg.BurnWindow)
}

// backoff is the delay before retry n: Initial·2^n capped at Max, jittered.
func (d *Dispatcher) backoff(n int) time.Duration {
	return backoff.Delay(d.cfg.Retry.Initial, d.cfg.Retry.Max, n, rand.Float64())
}

// keepAlive extends the ack wait of msg every period until the returned
// func is called.
func keepAlive(msg jetstream.Msg, period time.Duration) func() {
	done := make(chan struct{})
	_ = msg.InProgress() // restart the ack wait now: the message may have waited in the client's buffer
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// ackSync acks and waits for the server's confirmation, so a restart right
// after a delivery does not redeliver it.
func ackSync(ctx context.Context, msg jetstream.Msg) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return msg.DoubleAck(ctx)
}

// recent is a bounded set of alert ids a sink has finished with (FIFO
// eviction). It makes redeliveries and re-publications outside JetStream's
// duplicate window harmless within one process; across a crash between a
// delivery and its ack, delivery is at least once.
type recent struct {
	ids  map[string]struct{}
	ring []string
	next int
}

func newRecent(n int) *recent {
	return &recent{ids: make(map[string]struct{}, n), ring: make([]string, n)}
}

func (r *recent) has(id string) bool { _, ok := r.ids[id]; return ok }

func (r *recent) add(id string) {
	if r.has(id) {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.ids, old)
	}
	r.ring[r.next] = id
	r.ids[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}

// Publish puts a on its subject with the alert id as Nats-Msg-Id, so a
// raiser that publishes the same alert twice (a retry, two instances)
// within the stream's duplicate window adds one message.
func Publish(ctx context.Context, js jetstream.JetStream, a alert.Alert) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("publish alert: %w", err)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("publish alert %s: %w", a.ID, err)
	}
	m := nats.NewMsg(call.AlertSubject(a.Project))
	m.Data = b
	m.Header.Set(jetstream.MsgIDHeader, a.ID)
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish alert %s to %s: %w", a.ID, m.Subject, err)
	}
	return nil
}
