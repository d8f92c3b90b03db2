package stream

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/testutil"
)

func newLogger() (*slog.Logger, *testutil.LogBuffer) { return testutil.NewLogger() }

func testNATSConfig() config.NATSConfig {
	c := config.Default().NATS
	c.MaxAge = time.Hour
	return c
}

func testCtx(tb testing.TB, d time.Duration) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// setupJS starts a NATS server with minuted's streams and returns a
// JetStream client on a connection made with opts.
func setupJS(tb testing.TB, opts ...nats.Option) (*testutil.NATS, jetstream.JetStream) {
	tb.Helper()
	n := testutil.StartNATS(tb)
	base := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond)}
	nc, err := nats.Connect(n.URL(), append(base, opts...)...)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatalf("jetstream: %v", err)
	}
	if err := EnsureStreams(testCtx(tb, 10*time.Second), js, testNATSConfig()); err != nil {
		tb.Fatalf("EnsureStreams: %v", err)
	}
	return n, js
}

// readAll reads every message of stream in order.
func readAll(tb testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	tb.Helper()
	ctx := testCtx(tb, 30*time.Second)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatalf("stream info: %v", err)
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		tb.Fatalf("ordered consumer: %v", err)
	}
	var out []jetstream.Msg
	for len(out) < want {
		batch, err := c.Fetch(min(want-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			tb.Fatalf("fetch: %v", err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, m)
			got++
		}
		if batch.Error() != nil {
			tb.Fatalf("fetch: %v", batch.Error())
		}
		if got == 0 {
			tb.Fatalf("fetch returned nothing after %d of %d messages", len(out), want)
		}
	}
	return out
}
