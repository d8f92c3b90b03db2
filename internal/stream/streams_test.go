package stream

import (
	"errors"
	"github.com/minuted/minuted/internal/testutil"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/call"
)

func TestEnsureStreamsCreatesAndUpdates(t *testing.T) {
	_, js := setupJS(t)
	ctx := testCtx(t, 10*time.Second)
	cfg := testNATSConfig()
	cfg.MaxAge, cfg.DuplicateWindow = 2*time.Hour, 3*time.Minute
	if err := EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		call.CallsStream: call.CallsSubjects, call.AlertsStream: call.AlertsSubject,
		call.CDRStream: call.CDRSubjects, call.DLQStream: call.DLQSubjects,
	}
	check := func(maxAge, dup time.Duration) {
		t.Helper()
		for name, subj := range want {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			c := s.CachedInfo().Config
			if len(c.Subjects) != 1 || c.Subjects[0] != subj {
				t.Errorf("%s subjects %v, want %s", name, c.Subjects, subj)
			}
			if c.Storage != jetstream.FileStorage || c.Replicas != 1 {
				t.Errorf("%s storage %v replicas %d", name, c.Storage, c.Replicas)
			}
			if c.MaxAge != maxAge || c.Duplicates != dup {
				t.Errorf("%s max age %v dup window %v, want %v %v", name, c.MaxAge, c.Duplicates, maxAge, dup)
			}
		}
	}
	check(2*time.Hour, 3*time.Minute)

	// A config change updates the existing streams in place.
	cfg.MaxAge, cfg.DuplicateWindow = 5*time.Hour, 20*time.Minute
	if err := EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	check(5*time.Hour, 20*time.Minute)

	// The duplicate window is capped at the max age (JetStream requires it).
	cfg.MaxAge, cfg.DuplicateWindow = 30*time.Second, 10*time.Minute
	if err := EnsureStreams(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	check(30*time.Second, 30*time.Second)
}

func TestEnsureStreamsRejectsStorageChange(t *testing.T) {
	_, js := setupJS(t)
	cfg := testNATSConfig()
	cfg.Storage = "memory"
	err := EnsureStreams(testCtx(t, 10*time.Second), js, cfg)
	if err == nil {
		t.Fatal("changing file storage to memory in place succeeded; JetStream should refuse")
	}
	if !strings.Contains(err.Error(), "stream CALLS") || !strings.Contains(err.Error(), "storage type cannot change") {
		t.Errorf("error does not tell the operator what to do: %v", err)
	}
	cfg.Storage = "tape"
	if err := EnsureStreams(testCtx(t, time.Second), js, cfg); err == nil || !strings.Contains(err.Error(), "nats.storage") {
		t.Errorf("bad storage not named: %v", err)
	}
}

func TestEnsureConsumer(t *testing.T) {
	_, js := setupJS(t)
	ctx := testCtx(t, 10*time.Second)
	o := ConsumerOptions{FilterSubjects: []string{"minuted.calls.>"}, AckWait: 7 * time.Second, MaxDeliver: 5, MaxAckPending: 99}
	c, err := EnsureConsumer(ctx, js, call.CallsStream, "bill", o)
	if err != nil {
		t.Fatal(err)
	}
	ci := c.CachedInfo().Config
	if ci.Durable != "bill" || ci.AckPolicy != jetstream.AckExplicitPolicy || ci.AckWait != 7*time.Second ||
		ci.MaxDeliver != 5 || ci.MaxAckPending != 99 || ci.FilterSubject != "minuted.calls.>" {
		t.Fatalf("consumer config %+v", ci)
	}
	// Update: two filters, new ack wait; same durable.
	o.FilterSubjects = []string{"minuted.calls.a.>", "minuted.calls.b.>"}
	o.AckWait, o.MaxDeliver = 11*time.Second, 0
	c, err = EnsureConsumer(ctx, js, call.CallsStream, "bill", o)
	if err != nil {
		t.Fatal(err)
	}
	ci = c.CachedInfo().Config
	if ci.AckWait != 11*time.Second || len(ci.FilterSubjects) != 2 || ci.MaxDeliver != -1 {
		t.Fatalf("updated consumer config %+v", ci)
	}
	// It really delivers with explicit acks.
	if _, err := js.Publish(ctx, "minuted.calls.b.started", []byte("x")); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range msgs.Messages() {
		n++
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if n != 1 {
		t.Fatalf("fetched %d messages, want 1", n)
	}
	if _, err := EnsureConsumer(ctx, js, "NOPE", "bill", o); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Fatalf("missing stream error: %v", err)
	}
}

func TestDeadLetter(t *testing.T) {
	_, js := setupJS(t)
	ctx := testCtx(t, 10*time.Second)
	data := []byte(`{"schema":1,"event":"bogus"}`)
	reason := errors.New("decode call event: unknown event \"bogus\"\nsecond line")
	for range 3 { // a redelivered message is dead-lettered once
		if err := DeadLetter(ctx, js, "calls", data, reason); err != nil {
			t.Fatal(err)
		}
	}
	if err := DeadLetter(ctx, js, "ari", data, reason); err != nil {
		t.Fatal(err)
	}
	if err := DeadLetter(ctx, js, "bad source", data, reason); err == nil {
		t.Fatal("source with a space accepted")
	}
	msgs := readAll(t, js, call.DLQStream)
	if len(msgs) != 2 {
		t.Fatalf("DLQ holds %d messages, want 2 (one per source)", len(msgs))
	}
	m := msgs[0]
	if m.Subject() != "minuted.dlq.calls" || string(m.Data()) != string(data) {
		t.Fatalf("dead letter %s %q", m.Subject(), m.Data())
	}
	h := m.Headers()
	if h.Get(HeaderSource) != "calls" || h.Get(HeaderReason) != `decode call event: unknown event "bogus" second line` {
		t.Fatalf("headers %v", h)
	}
	if h.Get(jetstream.MsgIDHeader) != DeadLetterID("calls", data) || DeadLetterID("calls", data) == DeadLetterID("ari", data) {
		t.Fatalf("msg id %q", h.Get(jetstream.MsgIDHeader))
	}
	if msgs[1].Subject() != "minuted.dlq.ari" || msgs[1].Headers().Get(HeaderSource) != "ari" {
		t.Fatalf("second dead letter %s %v", msgs[1].Subject(), msgs[1].Headers())
	}
}

// TestEnsureStreamsConcurrently: several instances starting at once on a
// fresh server all get their streams.
func TestEnsureStreamsConcurrently(t *testing.T) {
	n := testutil.StartNATS(t)
	ctx := testCtx(t, 30*time.Second)
	errs := make(chan error, 6)
	for range 6 {
		go func() {
			nc := n.Connect(t)
			js, err := jetstream.New(nc)
			if err == nil {
				err = EnsureStreams(ctx, js, testNATSConfig())
			}
			errs <- err
		}()
	}
	for range 6 {
		if err := <-errs; err != nil {
			t.Errorf("EnsureStreams: %v", err)
		}
	}
}
