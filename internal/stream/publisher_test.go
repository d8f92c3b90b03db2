package stream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/testutil"
)

const testSubjects = 37

// testMsg is message i: spread over subjects, with a per-subject sequence
// number in its body so the order per subject can be checked.
func testMsg(i int) (subject, id string, data []byte) {
	s := i % testSubjects
	return fmt.Sprintf("minuted.calls.p%d.started", s), "node/ch-" + strconv.Itoa(i) + "/started",
		[]byte(strconv.Itoa(s) + " " + strconv.Itoa(i/testSubjects) + " " + strconv.Itoa(i))
}

// runPublisher starts p.Run and stops it at test end, failing the test if
// Run returned an error.
func runPublisher(t *testing.T, p *Publisher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// checkCalls asserts the CALLS stream holds messages 0..n-1 exactly once,
// in order per subject.
func checkCalls(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	msgs := readAll(t, js, call.CallsStream)
	if len(msgs) != n {
		t.Errorf("stream holds %d messages, want %d", len(msgs), n)
	}
	seen := make(map[string]int, n)
	next := make([]int, testSubjects)
	disorder := 0
	for _, m := range msgs {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		seen[id]++
		var s, k, i int
		if _, err := fmt.Sscanf(string(m.Data()), "%d %d %d", &s, &k, &i); err != nil {
			t.Fatalf("body %q: %v", m.Data(), err)
		}
		if subj, wantID, _ := testMsg(i); subj != m.Subject() || wantID != id {
			t.Fatalf("message %d arrived as %s %s", i, m.Subject(), id)
		}
		if k != next[s] {
			disorder++
			if disorder <= 5 {
				t.Errorf("subject %d: got #%d, want #%d (out of order)", s, k, next[s])
			}
		}
		next[s] = k + 1
	}
	for i := range n {
		if _, id, _ := testMsg(i); seen[id] != 1 {
			t.Fatalf("message %s stored %d times", id, seen[id])
		}
	}
	if disorder > 0 {
		t.Errorf("%d messages out of order", disorder)
	}
}

func TestPublisherOrderedExactlyOnce(t *testing.T) {
	_, js := setupJS(t)
	const n = 20000
	var maxDepth atomic.Int64
	p := NewPublisher(js, PublisherOptions{Buffer: 4096, MaxPending: 512, OnDepth: func(d int) {
		if int64(d) > maxDepth.Load() {
			maxDepth.Store(int64(d))
		}
	}})
	runPublisher(t, p)
	ctx := testCtx(t, 30*time.Second)
	for i := range n {
		subj, id, data := testMsg(i)
		if err := p.Enqueue(ctx, subj, id, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	if st.Published != n || st.Depth != 0 || st.Retried != 0 {
		t.Fatalf("stats %+v", st)
	}
	if maxDepth.Load() < 1 || maxDepth.Load() > 4096 {
		t.Fatalf("depth hook saw max %d, want 1..4096", maxDepth.Load())
	}
	checkCalls(t, js, n)
	if err := p.Enqueue(ctx, "x", "", nil); err == nil {
		t.Fatal("empty msg id accepted")
	}
}

// TestPublisherSurvivesRestart restarts NATS (down ~1s) while messages keep
// being enqueued: none is lost, none duplicated, order per subject kept.
func TestPublisherSurvivesRestart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []nats.Option
		strict bool
	}{
		{"no reconnect buffer", []nats.Option{nats.ReconnectBufSize(-1)}, true},
		{"with reconnect buffer", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, js := setupJS(t, tc.opts...)
			log, logs := newLogger()
			p := NewPublisher(js, PublisherOptions{Buffer: 1 << 15, MaxPending: 256, AckTimeout: 2 * time.Second, MaxBackoff: 200 * time.Millisecond, Logger: log})
			runPublisher(t, p)
			const total = 20000
			ctx := testCtx(t, 45*time.Second)
			// The producer enqueues a quarter, waits for NATS to go down,
			// and keeps enqueuing (at about ingest's pace) during the outage:
			// the outage always has messages to retry, however slow the
			// machine (a timed outage alone could begin after the last one).
			var enqueued atomic.Int64
			down := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range total {
					if i == total/4 {
						select {
						case <-down:
						case <-ctx.Done():
							return
						}
					}
					subj, id, data := testMsg(i)
					if err := p.Enqueue(ctx, subj, id, data); err != nil {
						t.Error(err)
						return
					}
					enqueued.Add(1)
					if i%100 == 99 {
						time.Sleep(2 * time.Millisecond)
					}
				}
			}()
			testutil.Eventually(t, 20*time.Second, func() bool { return p.Stats().Published >= 3000 }, "3000 messages published")
			n.Stop()
			before := enqueued.Load()
			close(down)
			testutil.Eventually(t, 20*time.Second, func() bool { return enqueued.Load() >= total/2 }, "half the messages enqueued while NATS is down")
			time.Sleep(500 * time.Millisecond) // long enough for failed attempts and retries
			during := enqueued.Load() - before
			n.Start(t)
			wg.Wait()
			if err := p.Flush(ctx); err != nil {
				t.Fatalf("flush: %v (stats %+v)", err, p.Stats())
			}
			st := p.Stats()
			t.Logf("enqueued during outage: %d; stats %+v\n%s", during, st, logs.String())
			if during < 100 {
				t.Errorf("only %d messages enqueued while NATS was down: the test did not exercise the outage", during)
			}
			if st.Published != total || st.Depth != 0 || st.Retried == 0 {
				t.Errorf("stats %+v: want %d published, 0 depth, some retries", st, total)
			}
			if !strings.Contains(logs.String(), "retrying the same messages in order") || !strings.Contains(logs.String(), "publishing to NATS resumed") {
				t.Errorf("outage not logged:\n%s", logs.String())
			}
			if tc.strict {
				checkCalls(t, js, total)
				return
			}
			// With nats.go's reconnect buffer the order may break across the
			// crash (see Publisher doc); exactly-once must still hold.
			msgs := readAll(t, js, call.CallsStream)
			seen := map[string]bool{}
			for _, m := range msgs {
				id := m.Headers().Get(jetstream.MsgIDHeader)
				if seen[id] {
					t.Fatalf("%s stored twice", id)
				}
				seen[id] = true
			}
			if len(seen) != total {
				t.Fatalf("%d distinct messages stored, want %d", len(seen), total)
			}
		})
	}
}

func TestPublisherFlushWaitsForNATS(t *testing.T) {
	n, js := setupJS(t)
	p := NewPublisher(js, PublisherOptions{Buffer: 100, MaxBackoff: 50 * time.Millisecond})
	runPublisher(t, p)
	n.Stop()
	ctx := testCtx(t, 20*time.Second)
	for i := range 10 {
		subj, id, data := testMsg(i)
		if err := p.Enqueue(ctx, subj, id, data); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := p.Flush(short); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "10 messages") {
		t.Fatalf("Flush with NATS down: %v", err)
	}
	if d := p.Depth(); d != 10 {
		t.Fatalf("depth %d, want 10", d)
	}
	n.Start(t)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if d := p.Depth(); d != 0 {
		t.Fatalf("depth after flush %d", d)
	}
	checkCalls(t, js, 10)
}

func TestPublisherEnqueueBlocksWhenFull(t *testing.T) {
	n, js := setupJS(t)
	log, logs := newLogger()
	var depths []int
	var mu sync.Mutex
	p := NewPublisher(js, PublisherOptions{Buffer: 10, MaxBackoff: 50 * time.Millisecond, Logger: log, OnDepth: func(d int) {
		mu.Lock()
		depths = append(depths, d)
		mu.Unlock()
	}})
	n.Stop()
	runPublisher(t, p)
	ctx := testCtx(t, 20*time.Second)
	for i := range 10 {
		subj, id, data := testMsg(i)
		if err := p.Enqueue(ctx, subj, id, data); err != nil {
			t.Fatal(err)
		}
	}
	// The 11th blocks until ctx ends.
	subj, id, data := testMsg(10)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := p.Enqueue(short, subj, id, data); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "buffer full") {
		t.Fatalf("Enqueue on a full buffer: %v", err)
	}
	for _, want := range []string{"over 50% full", "over 90% full", "buffer full"} {
		if strings.Count(logs.String(), want) != 1 {
			t.Errorf("want one %q warning, logs:\n%s", want, logs.String())
		}
	}
	// Blocked again, it resumes once NATS is back.
	done := make(chan error, 1)
	go func() { done <- p.Enqueue(ctx, subj, id, data) }()
	select {
	case err := <-done:
		t.Fatalf("Enqueue returned %v while the buffer was full", err)
	case <-time.After(50 * time.Millisecond):
	}
	n.Start(t)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkCalls(t, js, 11)
	mu.Lock()
	defer mu.Unlock()
	if len(depths) == 0 || depths[len(depths)-1] != 0 || slicesMax(depths) != 10 {
		t.Fatalf("depth hook saw %v, want a peak of 10 and 0 at the end", depths)
	}
	if !strings.Contains(logs.String(), "drained below 40%") {
		t.Errorf("drain not logged")
	}
}

func slicesMax(s []int) int {
	m := s[0]
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

func TestPublisherRunTwice(t *testing.T) {
	_, js := setupJS(t)
	p := NewPublisher(js, PublisherOptions{})
	runPublisher(t, p)
	testutil.Eventually(t, 5*time.Second, func() bool { return p.running.Load() }, "Run started")
	if err := p.Run(context.Background()); err == nil {
		t.Fatal("second Run accepted")
	}
}

// TestPublisherLastSeq: LastSeq is the stream sequence of this Publisher's
// last acknowledged message, not the stream's last one, and a duplicate
// (retried) message does not move it past the original.
func TestPublisherLastSeq(t *testing.T) {
	_, js := setupJS(t)
	p := NewPublisher(js, PublisherOptions{})
	if p.LastSeq() != 0 {
		t.Fatalf("LastSeq %d before any ack, want 0", p.LastSeq())
	}
	runPublisher(t, p)
	ctx := testCtx(t, 20*time.Second)
	// Another writer on the same stream interleaves its messages.
	other := func(i int) {
		if _, err := js.Publish(ctx, "minuted.calls.other.started", []byte("x"), jetstream.WithMsgID("other-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	const n = 300
	for i := range n {
		if i%50 == 0 {
			other(i)
		}
		subj, id, data := testMsg(i)
		if err := p.Enqueue(ctx, subj, id, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Our last message is stream sequence n + 6 (6 foreign messages before it).
	want := uint64(n + (n+49)/50)
	if got := p.LastSeq(); got != want {
		t.Fatalf("LastSeq %d, want %d", got, want)
	}
	other(n)
	// Re-enqueue an old message: JetStream acks it as a duplicate with its
	// original sequence, which must not lower or raise LastSeq.
	subj, id, data := testMsg(0)
	if err := p.Enqueue(ctx, subj, id, data); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.LastSeq(); got != want || p.Stats().Duplicates != 1 {
		t.Fatalf("after a duplicate: LastSeq %d (want %d), stats %+v", got, want, p.Stats())
	}
	subj, id, data = testMsg(n)
	if err := p.Enqueue(ctx, subj, id, data); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.LastSeq(); got != want+2 {
		t.Fatalf("LastSeq %d after one more message, want %d", got, want+2)
	}
}
