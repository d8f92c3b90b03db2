package app

import (
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/testutil"
)

// TestIngestWithoutNATSSpoolsAcrossRestart: ingest starts while NATS is
// down and listens to Asterisk at once; calls start and end; it is stopped
// without getting them into NATS (its flush fails) and started again, still
// without NATS, and more calls come; then NATS comes back. Every answered
// call's ended message is in CALLS exactly once with its exact times, the
// first process's before the second's.
func TestIngestWithoutNATSSpoolsAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := testutil.StartNATS(t)
	n.Stop() // NATS is down from the start
	srv, err := sim.Start(ctx, sim.Options{Password: "ari-secret", WriteTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := config.Default()
	cfg.NATS.URL = n.URL()
	cfg.ARI.URL, cfg.ARI.Username, cfg.ARI.Password, cfg.ARI.Application = srv.URL(), "minuted", "ari-secret", "minuted-spool"
	cfg.Ingest.SnapshotInterval = time.Second
	cfg.Ingest.SpoolDir = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	log, logs := testutil.NewLogger()

	// run starts an ingest-only minuted; New must not wait for NATS.
	run := func() (*App, func()) {
		t.Helper()
		nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
		defer ncancel()
		a, err := New(nctx, Options{Config: cfg, Roles: []string{RoleIngest}, Logger: log, DrainTimeout: 200 * time.Millisecond})
		if err != nil {
			t.Fatalf("ingest could not start while NATS is down: %v", err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(rctx) }()
		return a, func() {
			rcancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}
	gen := func(a *App, seed uint64) []sim.Expected {
		t.Helper()
		d0, r0 := srv.Stats().Delivered, a.ing.Stats().EventsReceived
		res, err := srv.Generate(ctx, sim.GenOptions{
			Calls: 30, Concurrency: 8, Seed: seed, VirtualTime: true, Projects: []string{"acme", "beta"},
			Shapes:      map[sim.Shape]float64{sim.ShapeAnswered: 4, sim.ShapeTwoLeg: 2, sim.ShapeUnanswered: 1},
			AttributeBy: sim.AttributeMixed,
		})
		if err != nil {
			t.Fatal(err)
		}
		// Every event read and handed to the publisher (ingest holds its
		// frames until it has given up reading its last snapshot).
		testutil.Eventually(t, 60*time.Second, func() bool {
			st := a.ing.Stats()
			return st.EventsReceived-r0 >= srv.Stats().Delivered-d0 && st.FrameQueue == 0
		}, "ingest processed the calls")
		return res.Calls
	}

	a1, stop1 := run()
	if err := srv.WaitApp(ctx, "minuted-spool"); err != nil {
		t.Fatal(err)
	}
	calls := gen(a1, 1)
	if a1.pub.Depth() == 0 {
		t.Fatal("no event waits for NATS")
	}
	stop1()
	path := SpoolPath(cfg)
	if fi, err := os.Stat(path); err != nil || fi.Size() < 1000 {
		t.Fatalf("the first process left no spool with its events: %v %v", fi, err)
	}

	a2, stop2 := run()
	defer stop2()
	if got := a2.pub.Stats().Recovered; got == 0 {
		t.Fatal("the second process found nothing in the spool")
	}
	calls = append(calls, gen(a2, 2)...)
	n.Start(t)
	testutil.Eventually(t, 60*time.Second, func() bool { return a2.pub.Depth() == 0 }, "every event acknowledged by JetStream")

	nc := n.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ended := map[string][]call.Event{}
	order := map[string]int{}
	msgs := readStream(t, js, call.CallsStream)
	for i, m := range msgs {
		var ev call.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatalf("CALLS message %q: %v", m.Data(), err)
		}
		if ev.Kind == call.Ended {
			ended[ev.Channel] = append(ended[ev.Channel], ev)
			order[ev.Channel] = i
		}
	}
	answered, last1 := 0, -1
	for i, c := range calls {
		if c.Answered.IsZero() {
			continue
		}
		answered++
		evs := ended[c.BilledChannel]
		if len(evs) != 1 {
			t.Errorf("call %s: %d ended messages, want 1", c.BilledChannel, len(evs))
			continue
		}
		ev := evs[0]
		if ev.Estimated || ev.AnswerEstimated || ev.AnsweredAt == nil || ev.EndedAt == nil ||
			!ev.AnsweredAt.Equal(c.Answered) || !ev.EndedAt.Equal(c.Ended) || ev.Project != c.Project {
			t.Errorf("call %s: ended %+v, want project %s answered %s ended %s exactly", c.BilledChannel, ev, c.Project, c.Answered, c.Ended)
		}
		if i < 30 {
			last1 = max(last1, order[c.BilledChannel])
		} else if order[c.BilledChannel] < last1 {
			t.Errorf("call %s of the second process was published before a call of the first", c.BilledChannel)
		}
	}
	if answered < 20 {
		t.Fatalf("only %d answered calls: the workload is too small to show anything", answered)
	}
	if t.Failed() {
		t.Logf("logs:\n%s", logs)
	}
}

// readStream returns every message of a stream in order.
func readStream(t *testing.T, js jetstream.JetStream, name string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < info.State.Msgs {
		batch, err := c.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, m)
			got++
		}
		if got == 0 {
			t.Fatalf("read %d of %d messages of %s", len(out), info.State.Msgs, name)
		}
	}
	return out
}
