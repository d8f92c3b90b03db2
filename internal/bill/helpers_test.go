package bill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/stream"
	"github.com/minuted/minuted/internal/tariff"
	"github.com/minuted/minuted/internal/testutil"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial of the outage test to stderr.
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

type env struct {
	t     testing.TB
	nats  *testutil.NATS
	redis *testutil.Redis
	nc    *nats.Conn
	js    jetstream.JetStream
	l     *ledger.Ledger
	ctx   context.Context
}

func setup(t testing.TB, redisArgs ...string) *env {
	t.Helper()
	return setupStorage(t, "memory", redisArgs...)
}

// setupStorage is setup with the streams on storage ("file" for tests that
// restart the NATS server: memory streams die with it).
func setupStorage(t testing.TB, storage string, redisArgs ...string) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	t.Cleanup(cancel)
	e := &env{t: t, nats: testutil.StartNATS(t), redis: testutil.StartRedis(t, redisArgs...), ctx: ctx}
	e.nc = e.nats.Connect(t)
	var err error
	if e.js, err = jetstream.New(e.nc); err != nil {
		t.Fatal(err)
	}
	nc := config.Default().NATS
	nc.MaxAge, nc.Storage = time.Hour, storage
	if err := stream.EnsureStreams(ctx, e.js, nc); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: e.redis.Addr(), DialTimeout: 200 * time.Millisecond,
		ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1, PoolSize: 64,
	})
	t.Cleanup(func() { _ = rdb.Close() })
	e.l = ledger.New(rdb, ledger.Options{})
	return e
}

func testConfig() config.BillConfig {
	return config.BillConfig{
		UnknownProject: "create", Batch: 64, MaxInFlight: 256, AckWait: 2 * time.Second,
		MaxDeliver: -1, OrphanAfter: 2 * time.Second, TickSlack: 500 * time.Millisecond,
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BILL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// start runs a Biller until the returned stop is called (or the test ends).
func (e *env) start(mod func(*Options)) (*Biller, func()) {
	e.t.Helper()
	o := Options{Config: testConfig(), Logger: testLogger(e.t), RetryDelay: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond, OrphanCheck: 100 * time.Millisecond, OrphanMargin: 300 * time.Millisecond,
		Defaults: ledger.Settings{Tariff: tariff.Default, OnExhausted: ledger.Allow}}
	if mod != nil {
		mod(&o)
	}
	b := New(o, e.js, e.nc, e.l)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			e.t.Error("Run did not return within 10s of cancel")
		}
	}
	e.t.Cleanup(stop)
	return b, stop
}

func (e *env) project(id string, tr tariff.Tariff, topup int64, mod func(*ledger.Settings)) {
	e.t.Helper()
	s := ledger.Settings{Tariff: tr, OnExhausted: ledger.Allow, ThresholdsMinutes: []float64{}}
	if mod != nil {
		mod(&s)
	}
	if _, _, err := e.l.Put(e.ctx, id, s); err != nil {
		e.t.Fatal(err)
	}
	if topup > 0 {
		if _, err := e.l.TopUp(e.ctx, id, topup, "initial", ledger.KindTopUp); err != nil {
			e.t.Fatal(err)
		}
	}
}

func (e *env) publish(ev call.Event) {
	e.t.Helper()
	ev.Schema = call.Schema
	data, err := json.Marshal(ev)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.js.Publish(e.ctx, ev.Subject(), data, jetstream.WithMsgID(ev.MsgID())); err != nil {
		e.t.Fatal(err)
	}
}

// events returns the answered and ended events of a call.
func events(project, node, ch string, answered time.Time, talk time.Duration) (call.Event, call.Event) {
	ans := answered.UTC()
	end := ans.Add(talk)
	base := call.Event{Node: node, Channel: ch, Project: project, AttributedBy: call.ByVariable, CreatedAt: ans.Add(-2 * time.Second), AnsweredAt: &ans}
	a, en := base, base
	a.Kind = call.Answered
	en.Kind, en.EndedAt, en.TalkMS = call.Ended, &end, talk.Milliseconds()
	return a, en
}

func (e *env) callState(project, node, ch string) (ledger.Call, error) {
	return e.l.Call(e.ctx, project, node, ch)
}

func (e *env) balance(project string) int64 {
	e.t.Helper()
	p, err := e.l.Get(e.ctx, project)
	if err != nil {
		e.t.Fatal(err)
	}
	return p.BalanceSeconds
}

// readAll returns every message body of stream on subject filter.
func (e *env) readAll(streamName, filter string) [][]byte {
	e.t.Helper()
	c, err := e.js.OrderedConsumer(e.ctx, streamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		e.t.Fatal(err)
	}
	var out [][]byte
	for {
		batch, err := c.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			out = append(out, m.Data())
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			e.t.Fatal(err)
		}
		if n == 0 {
			return out
		}
	}
}

// waitSettled waits until every call is settled with its wanted total.
func (e *env) waitSettled(timeout time.Duration, calls map[[3]string]int64) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		bad := ""
		for k, want := range calls {
			c, err := e.callState(k[0], k[1], k[2])
			if err != nil || !c.Settled || c.Debited != want {
				bad = fmt.Sprintf("%s/%s of %s: %+v (err %v), want settled at %d", k[1], k[2], k[0], c, err, want)
				break
			}
		}
		if bad == "" {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("after %v: %s", timeout, bad)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
