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
	benchPublisher(b, NewPublisher(js, PublisherOptions{Buffer: 1 << 16, MaxPending: 1024}))
}

// benchPublisher runs p, enqueues b.N messages and flushes them.
func benchPublisher(b *testing.B, p *Publisher) {
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

// BenchmarkPublisherSpool is BenchmarkPublisher with every message written
// to a spool file first (ingest's default): compare the two for the
// spool's cost.
func BenchmarkPublisherSpool(b *testing.B) {
	_, js := setupJS(b)
	sp, err := OpenSpool(b.TempDir()+"/bench.spool", SpoolOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	benchPublisher(b, NewPublisher(js, PublisherOptions{Buffer: 1 << 16, MaxPending: 1024, Spool: sp}))
}

// BenchmarkSpoolAppendAck is the spool alone: one append (encode + one
// write(2)) per message, acknowledged in batches of 64 as acks arrive.
func BenchmarkSpoolAppendAck(b *testing.B) {
	for _, sync := range []bool{false, true} {
		b.Run(map[bool]string{false: "write", true: "fsync"}[sync], func(b *testing.B) {
			sp, err := OpenSpool(b.TempDir()+"/bench.spool", SpoolOptions{Sync: sync})
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			b.SetBytes(int64(len(benchBody)))
			b.ReportAllocs()
			var pending int64
			for i := range b.N {
				n, err := sp.Append("minuted.calls.acme.answered", "pbx1/c"+strconv.Itoa(i)+"/answered", benchBody)
				if err != nil {
					b.Fatal(err)
				}
				pending += n
				if i%64 == 63 {
					if err := sp.Ack(pending); err != nil {
						b.Fatal(err)
					}
					pending = 0
				}
			}
		})
	}
}
