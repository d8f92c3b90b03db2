package stream

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

var benchBody = []byte(`{"schema":1,"event":"answered","node":"pbx1","channel":"1732700000.1234","project":"acme","created_at":"2026-11-27T10:00:00.000Z","answered_at":"2026-11-27T10:00:03.120Z"}`)

// BenchmarkPublisher measures the Publisher end to end: Enqueue b.N
// messages and Flush until all are acknowledged.
func BenchmarkPublisher(b *testing.B) {
	_, js := setupJS(b)
	p := NewPublisher(js, PublisherOptions{Buffer: 1 << 16, MaxPending: 1024})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	b.SetBytes(int64(len(benchBody)))
	b.ResetTimer()
	for i := range b.N {
		if err := p.Enqueue(ctx, "minuted.calls.acme.answered", "pbx1/c"+strconv.Itoa(i)+"/answered", benchBody); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkRawPublishAsync is the baseline: js.PublishAsync with the same
// Msg-Id and window, then wait for all acks (no ordering, no retry).
func BenchmarkRawPublishAsync(b *testing.B) {
	_, js0 := setupJS(b)
	js, err := jetstream.New(js0.Conn(), jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchBody)))
	b.ResetTimer()
	for i := range b.N {
		if _, err := js.PublishAsync("minuted.calls.acme.answered", benchBody, jetstream.WithMsgID("pbx1/c"+strconv.Itoa(i)+"/answered"), jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("acks did not complete")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}
