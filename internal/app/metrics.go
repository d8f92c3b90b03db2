package app

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/minuted/minuted/internal/bill"
)

// registerMetrics exposes the roles' counters under minuted_*. The roles
// keep plain counters (Stats); the registry reads them at scrape time, so
// no role depends on Prometheus.
func registerMetrics(a *App) {
	reg := a.reg
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "minuted_" + name, Help: help}, f))
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "minuted_" + name, Help: help}, f))
	}
	if a.ing != nil {
		s := a.ing.Stats
		counter("ari_events_received_total", "ARI events read from the websocket.", func() float64 { return float64(s().EventsReceived) })
		counter("ari_decode_errors_total", "ARI frames that could not be decoded (dead-lettered).", func() float64 { return float64(s().DecodeErrors) })
		counter("ari_reconnects_total", "ARI websocket reconnections.", func() float64 { return float64(s().Reconnects) })
		counter("ingest_published_total", "Call events handed to the publisher.", func() float64 { return float64(s().Published) })
		counter("ingest_unbilled_total", "Calls with no project, published as unbilled.", func() float64 { return float64(s().Tracker.Unbilled) })
		counter("ingest_estimated_total", "Calls whose end had to be estimated.", func() float64 { return float64(s().Tracker.Estimated) })
		counter("ingest_hangups_total", "Channels hung up on bill's request.", func() float64 { return float64(s().Hangups) })
		gauge("ari_connected", "1 while the ARI websocket is up and reconciled.", func() float64 { return b2f(a.ing.Connected()) })
		gauge("ari_frame_queue", "ARI frames read from the websocket, not yet processed (unbounded; logged at 10k/100k/1M).", func() float64 { return float64(s().FrameQueue) })
		p := a.pub.Stats
		counter("nats_published_total", "Messages acknowledged by JetStream.", func() float64 { return float64(p().Published) })
		counter("nats_publish_retries_total", "Messages sent again after a NATS failure.", func() float64 { return float64(p().Retried) })
		gauge("publish_backlog", "Events waiting to be acknowledged by JetStream.", func() float64 { return float64(p().Depth) })
		counter("ingest_spool_errors_total", "Events that could not be written to the spool (kept in memory only) and failed spool truncations.", func() float64 { return float64(p().SpoolErrors) })
	}
	if a.bil != nil {
		s := a.bil.Stats
		counter("bill_messages_total", "CALLS messages processed.", func() float64 { return float64(s().Processed) })
		counter("bill_redeliveries_total", "CALLS messages seen more than once.", func() float64 { return float64(s().Redeliveries) })
		counter("bill_debits_total", "Debits applied (blocks and settlement differences).", func() float64 { return float64(s().Debits) })
		counter("bill_refunds_total", "Settlements that refunded.", func() float64 { return float64(s().Refunds) })
		counter("bill_settled_total", "Calls settled.", func() float64 { return float64(s().Settled) })
		counter("bill_estimated_total", "Orphan calls settled with an estimated end.", func() float64 { return float64(s().Estimated) })
		counter("bill_exhausted_total", "Blocks refused for lack of balance.", func() float64 { return float64(s().Exhausted) })
		counter("bill_dead_lettered_total", "Messages sent to the dead-letter subject.", func() float64 { return float64(s().DeadLettered) })
		counter("bill_errors_total", "Processing errors (message left for redelivery).", func() float64 { return float64(s().Errors) })
		gauge("bill_live_calls", "Live calls scheduled in this instance.", func() float64 { return float64(s().Scheduled) })
		reg.MustRegister(consumerLag{a: a}, settleLag{s: s})
	}
	if a.led != nil {
		reg.MustRegister(balances{a: a})
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	balanceDesc = prometheus.NewDesc("minuted_project_balance_seconds", "Balance of each project in seconds.", []string{"project"}, nil)
	liveDesc    = prometheus.NewDesc("minuted_project_live_calls", "Live billed calls of each project.", []string{"project"}, nil)
	lagDesc     = prometheus.NewDesc("minuted_consumer_pending_messages", "CALLS messages not yet delivered to bill.", nil, nil)
	ackDesc     = prometheus.NewDesc("minuted_consumer_ack_pending_messages", "CALLS messages delivered to bill, not yet acknowledged.", nil, nil)
)

// balances reads every project's balance at scrape time.
type balances struct{ a *App }

func (b balances) Describe(ch chan<- *prometheus.Desc) { ch <- balanceDesc; ch <- liveDesc }

func (b balances) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ps, err := b.a.led.List(ctx)
	if err != nil {
		b.a.log.Warn("metrics: cannot list projects", "err", err)
		return
	}
	for _, p := range ps {
		ch <- prometheus.MustNewConstMetric(balanceDesc, prometheus.GaugeValue, float64(p.BalanceSeconds), p.ID)
		ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, float64(p.LiveCalls), p.ID)
	}
}

var settleLagDesc = prometheus.NewDesc("minuted_bill_settle_lag_seconds",
	"Time from a call's hangup (Asterisk's clock) to its settlement committed in Redis (bill's clock), exact settlements applied by this instance.", nil, nil)

// settleLag exposes bill's hangup → settlement histogram.
type settleLag struct{ s func() bill.Stats }

func (l settleLag) Describe(ch chan<- *prometheus.Desc) { ch <- settleLagDesc }

func (l settleLag) Collect(ch chan<- prometheus.Metric) {
	h := l.s().SettleLag
	ch <- prometheus.MustNewConstHistogram(settleLagDesc, h.Count, h.SumSeconds, h.Buckets)
}

// consumerLag reads the bill consumer's state at scrape time.
type consumerLag struct{ a *App }

func (c consumerLag) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc; ch <- ackDesc }

func (c consumerLag) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	cons, err := c.a.js.Consumer(ctx, "CALLS", c.a.cfg.NATS.ConsumerName)
	if err != nil {
		return
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(info.NumPending))
	ch <- prometheus.MustNewConstMetric(ackDesc, prometheus.GaugeValue, float64(info.NumAckPending))
}
