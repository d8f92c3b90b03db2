package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/bill"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

// startBill runs a real bill (authorisation responder included) on a real
// ledger, with the given projects: id → settings and balance.
func startBill(t *testing.T, h *harness, projects map[string]struct {
	s       ledger.Settings
	balance int64
}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rdb := testutil.StartRedis(t).Client(t)
	l := ledger.New(rdb, ledger.Options{})
	for id, p := range projects {
		if p.s.ThresholdsMinutes == nil {
			p.s.ThresholdsMinutes = []float64{}
		}
		if _, _, err := l.Put(ctx, id, p.s); err != nil {
			t.Fatal(err)
		}
		if p.balance > 0 {
			if _, err := l.TopUp(ctx, id, p.balance, "initial", ledger.KindTopUp); err != nil {
				t.Fatal(err)
			}
		}
	}
	b := bill.New(bill.Options{
		Config: config.BillConfig{UnknownProject: "create", Batch: 64, MaxInFlight: 64, AckWait: 2 * time.Second,
			MaxDeliver: -1, OrphanAfter: 5 * time.Second, TickSlack: 500 * time.Millisecond},
		Defaults: ledger.Settings{Tariff: tariff.Default, OnExhausted: ledger.Allow, ThresholdsMinutes: []float64{}},
	}, h.js, h.nc, l)
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("bill did not stop")
		}
	})
	req, _ := json.Marshal(bill.AuthRequest{Schema: call.Schema, Node: "n", Channel: "c", Project: "probe"})
	testutil.Eventually(t, 5*time.Second, func() bool {
		_, err := h.nc.Request(bill.AuthSubject("probe"), req, 200*time.Millisecond)
		return err == nil
	}, "bill answers authorisation requests")
}

func authHarness(t *testing.T, policy string) *harness {
	return startHarnessWith(t, sim.Options{}, func(o *Options, _ jetstream.JetStream) {
		o.Config = config.Default().Ingest
		o.Config.AuthTimeout = 2 * time.Second // -race on a loaded CI: bill reads Redis before answering
		o.Config.AuthPolicy = policy
		if policy == FailClosed {
			o.Config.AuthTimeout = 300 * time.Millisecond
		}
	})
}

func stasisCall(t *testing.T, h *harness, project, app string) *sim.LiveCall {
	t.Helper()
	l, err := h.sim.StartCall(context.Background(), sim.CallOptions{Project: project, StasisApp: app})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func waitUp(t *testing.T, l *sim.LiveCall) {
	t.Helper()
	select {
	case <-l.Up():
	case <-l.Done():
		t.Fatalf("call %s ended instead of being continued: %+v", l.BilledChannel(), l.Expected())
	case <-time.After(10 * time.Second):
		t.Fatalf("call %s not continued", l.BilledChannel())
	}
}

func waitRefused(t *testing.T, h *harness, l *sim.LiveCall, cause int) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("call %s not hung up", l.BilledChannel())
	}
	if e := l.Expected(); !e.Answered.IsZero() || e.Cause != cause || !e.HungUpByREST {
		t.Fatalf("refused call %+v, want unanswered, cause %d by REST", e, cause)
	}
	for _, c := range h.sim.Continues() {
		if c == l.BilledChannel() {
			t.Fatalf("refused call %s was also continued", c)
		}
	}
}

type proj = struct {
	s       ledger.Settings
	balance int64
}

// TestStasisAuthorisation: SPEC §8 against a real bill: balance → continued
// with MINUTED_MAX_SECONDS; no balance and on_exhausted hangup → hung up
// with the configured cause; on_exhausted allow → continued without a cap;
// another application's StasisStart → left alone.
func TestStasisAuthorisation(t *testing.T) {
	h := authHarness(t, FailClosed)
	cut := ledger.Settings{Tariff: tariff.Default, OnExhausted: ledger.Hangup}
	startBill(t, h, map[string]proj{
		"rich":  {cut, 600},
		"poor":  {cut, 0},
		"loose": {ledger.Settings{Tariff: tariff.Default, OnExhausted: ledger.Allow}, 0},
	})
	h.svc.authTimeout = 2 * time.Second // bill runs: no fail_closed by a slow CI

	other := stasisCall(t, h, "rich", "someone-else")

	rich := stasisCall(t, h, "rich", "ingest-test")
	waitUp(t, rich)
	if v, ok := h.sim.Variable(rich.BilledChannel(), MaxSecondsVar); !ok || v != "600" {
		t.Fatalf("%s = %q (set %v), want 600 (10 minutes at 60/60)", MaxSecondsVar, v, ok)
	}

	poor := stasisCall(t, h, "poor", "ingest-test")
	waitRefused(t, h, poor, 21) // auth_hangup_cause rejected = Q.850 21

	loose := stasisCall(t, h, "loose", "ingest-test")
	waitUp(t, loose)
	if v, ok := h.sim.Variable(loose.BilledChannel(), MaxSecondsVar); ok {
		t.Fatalf("%s set to %q for a project that is never cut", MaxSecondsVar, v)
	}

	// events are handled in order: the other application's StasisStart came first
	for _, c := range h.sim.Continues() {
		if c == other.BilledChannel() {
			t.Fatal("a channel in another application's Stasis was continued")
		}
	}
	for _, hu := range h.sim.Hangups() {
		if hu.ChannelID == other.BilledChannel() {
			t.Fatal("a channel in another application's Stasis was hung up")
		}
	}
	st := h.svc.Stats().Auth
	if st.Requests != 3 || st.Allowed != 2 || st.Denied != 1 || st.NoAnswer != 0 || st.Errors != 0 {
		t.Fatalf("auth stats %+v", st)
	}
	rich.Hangup(16)
	loose.Hangup(16)
	other.Hangup(16)
}

// TestStasisAuthorisationWithoutBill: no answer → the policy decides.
func TestStasisAuthorisationWithoutBill(t *testing.T) {
	for _, policy := range []string{FailOpen, FailClosed} {
		t.Run(policy, func(t *testing.T) {
			h := authHarness(t, policy)
			l := stasisCall(t, h, "rich", "ingest-test")
			if policy == FailOpen {
				waitUp(t, l)
				l.Hangup(16)
			} else {
				waitRefused(t, h, l, 21)
			}
			st := h.svc.Stats().Auth
			if st.Requests != 1 || st.NoAnswer != 1 || st.FailOpen+st.FailClosed != 1 ||
				(policy == FailOpen) != (st.FailOpen == 1) {
				t.Fatalf("auth stats %+v", st)
			}
		})
	}
}

// TestWantsAuth: only our application's StasisStart with a channel.
func TestWantsAuth(t *testing.T) {
	s := &Service{o: Options{ARI: config.ARIConfig{Application: "minuted"}}}
	ch := &ari.Channel{ID: "1"}
	for _, c := range []struct {
		ev   ari.Event
		want bool
	}{
		{ari.Event{Type: "StasisStart", Application: "minuted", Channel: ch}, true},
		{ari.Event{Type: "StasisStart", Application: "other", Channel: ch}, false},
		{ari.Event{Type: "StasisEnd", Application: "minuted", Channel: ch}, false},
		{ari.Event{Type: "StasisStart", Application: "minuted"}, false},
	} {
		if got := s.wantsAuth(c.ev); got != c.want {
			t.Errorf("%s/%s: %v, want %v", c.ev.Type, c.ev.Application, got, c.want)
		}
	}
}

// TestARIAlerts: a drop longer than the grace period raises one ari_lost,
// then one ari_restored, on minuted.alerts._system.
func TestARIAlerts(t *testing.T) {
	h := startHarnessWith(t, sim.Options{}, func(o *Options, js jetstream.JetStream) {
		o.JS = js
		o.Config.ARILostGrace = 300 * time.Millisecond
	})
	h.sim.SetDown(true)
	h.sim.DropWebsockets()
	testutil.Eventually(t, 10*time.Second, func() bool { return h.svc.Stats().Alerts >= 1 }, "ari_lost published")
	h.sim.SetDown(false)
	testutil.Eventually(t, 10*time.Second, func() bool { return h.svc.Connected() && h.svc.Stats().Alerts >= 2 }, "ari_restored published")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.js.OrderedConsumer(ctx, call.AlertsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var got []alert.Alert
	for len(got) < 3 {
		batch, err := c.Fetch(3, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var a alert.Alert
			if err := json.Unmarshal(m.Data(), &a); err != nil || m.Subject() != call.AlertSubject("") {
				t.Fatalf("alert %s %s: %v", m.Subject(), m.Data(), err)
			}
			got = append(got, a)
		}
		if n == 0 {
			break
		}
	}
	node := h.sim.AsteriskID()
	if len(got) != 2 || got[0].Kind != alert.ARILost || got[1].Kind != alert.ARIRestored ||
		got[0].Node != node || got[1].Node != node {
		t.Fatalf("alerts %s, want ari_lost then ari_restored of node %s", fmt.Sprint(got), node)
	}
	if got[0].ID[len(alert.ARILost):] != got[1].ID[len(alert.ARIRestored):] {
		t.Fatalf("ids %q %q should name the same outage", got[0].ID, got[1].ID)
	}
	if st := h.svc.Stats(); st.Alerts != 2 {
		t.Fatalf("stats %+v", st)
	}
}
