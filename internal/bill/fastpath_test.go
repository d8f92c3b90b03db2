package bill

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/stream"
	"github.com/minuted/minuted/internal/testutil"
)

// countingLedger is the real ledger, counting Open scripts.
type countingLedger struct {
	*ledger.Ledger
	opens atomic.Int64
}

func (c *countingLedger) Open(ctx context.Context, o ledger.Open) (ledger.Call, error) {
	c.opens.Add(1)
	return c.Ledger.Open(ctx, o)
}

// TestEndedOfScheduledCallSkipsOpen: a call this instance ticks is settled
// from its scheduler entry (one Open per call, on answer); an ended-only
// call is still opened. Both bill exactly, and the exhausted flag the
// debit worker saw still names the CDR's end reason.
func TestEndedOfScheduledCallSkipsOpen(t *testing.T) {
	e := setup(t)
	tr := tariffs["t306"]
	e.project("p", tr, topup, nil)
	e.project("poor", tr, 10, func(s *ledger.Settings) { s.OnExhausted = ledger.Hangup })
	cl := &countingLedger{Ledger: e.l}
	b := New(Options{Config: testConfig(), Logger: testLogger(t), RetryDelay: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond, OrphanCheck: 100 * time.Millisecond, HangupRetry: 100 * time.Millisecond,
		Defaults: ledger.Settings{Tariff: tr, OnExhausted: ledger.Allow}}, e.js, e.nc, cl)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	answered := time.Now().Add(-40 * time.Second)
	a, en := events("p", "n1", "both", answered, 40*time.Second)
	e.publish(a)
	testutil.Eventually(t, 5*time.Second, func() bool { return b.Stats().Scheduled == 1 }, "call scheduled")
	e.publish(en)
	_, only := events("p", "n1", "only", answered, 7*time.Second)
	e.publish(only)
	// Exhausted: 10 s cannot cover the 30 s minimum.
	pa, pen := events("poor", "n1", "cut", time.Now().Add(-time.Second), 3*time.Second)
	e.publish(pa)
	testutil.Eventually(t, 5*time.Second, func() bool { return b.Stats().Exhausted >= 1 }, "exhausted")
	e.publish(pen)
	e.waitSettled(10*time.Second, map[[3]string]int64{
		{"p", "n1", "both"}: tr.BilledMS(40000), {"p", "n1", "only"}: tr.BilledMS(7000), {"poor", "n1", "cut"}: 0,
	})
	if n := cl.opens.Load(); n != 3 {
		t.Fatalf("%d Open scripts, want 3 (one per call: answered twice, ended-only once)", n)
	}
	var cdrs [][]byte
	testutil.Eventually(t, 5*time.Second, func() bool {
		cdrs = e.readAll(call.CDRStream, "minuted.cdr.poor")
		return len(cdrs) == 1
	}, "CDR of the cut call")
	var c call.CDR
	if err := json.Unmarshal(cdrs[0], &c); err != nil {
		t.Fatal(err)
	}
	if c.EndReason != "exhausted" || c.BilledSeconds != 0 {
		t.Fatalf("CDR of the exhausted call %+v, want end_reason exhausted, billed 0", c)
	}
}

// TestEndedAckedOnlyOnceCDRStored: the CDR stream is gone, so no CDR can
// be stored: the call is settled but its ended message stays
// unacknowledged and comes back; once the stream exists again the CDR is
// stored exactly once and the message acknowledged. The balance is
// debited once.
func TestEndedAckedOnlyOnceCDRStored(t *testing.T) {
	e := setup(t)
	tr := tariffs["t11"]
	e.project("p", tr, 1000, nil)
	b, _ := e.start(nil)
	if err := e.js.DeleteStream(e.ctx, call.CDRStream); err != nil {
		t.Fatal(err)
	}
	a, en := events("p", "n1", "c1", time.Now().Add(-20*time.Second), 20*time.Second)
	e.publish(a)
	e.publish(en)
	e.waitSettled(5*time.Second, map[[3]string]int64{{"p", "n1", "c1"}: 20})
	cons, err := e.js.Consumer(e.ctx, call.CallsStream, "bill")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return b.Stats().Errors >= 2 }, "CDR failures retried")
	ci, err := cons.Info(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.AckFloor.Stream >= 2 {
		t.Fatalf("ended message acknowledged (ack floor %d) while its CDR could not be stored", ci.AckFloor.Stream)
	}
	nc := config.Default().NATS
	nc.MaxAge, nc.Storage = time.Hour, "memory"
	if err := stream.EnsureStreams(e.ctx, e.js, nc); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() bool {
		ci, err := cons.Info(e.ctx)
		return err == nil && ci.AckFloor.Stream == 2 && ci.NumAckPending == 0
	}, "ended acknowledged once its CDR is stored")
	if cdrs := e.readAll(call.CDRStream, "minuted.cdr.p"); len(cdrs) != 1 {
		t.Fatalf("%d CDRs, want 1", len(cdrs))
	}
	if got := e.balance("p"); got != 1000-20 {
		t.Fatalf("balance %d, want %d", got, 980)
	}
}
