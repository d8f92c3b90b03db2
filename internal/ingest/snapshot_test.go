package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/stream"
	"github.com/minuted/minuted/internal/testutil"
)

// snapshots collects the node's snapshot messages (every part), each
// checked to be exactly json.Marshal's bytes of what it holds (ingest
// encodes them into a reused buffer).
type snapshots struct {
	mu    sync.Mutex
	parts []call.Snapshot
}

func (s *snapshots) subscribe(t *testing.T, nc *nats.Conn, node string) {
	t.Helper()
	for _, subj := range []string{call.SnapshotSubject(node), call.SnapshotPartsOf(node)} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
			var p call.Snapshot
			if err := json.Unmarshal(m.Data, &p); err != nil {
				t.Errorf("snapshot on %s: %v: %q", m.Subject, err, m.Data)
				return
			}
			if b, _ := json.Marshal(p); string(b) != string(m.Data) {
				t.Errorf("snapshot on %s is not json.Marshal's bytes:\n%.300q\nwant\n%.300q", m.Subject, m.Data, b)
			}
			if m.Subject == call.SnapshotPartSubject(node, p.Part) {
				s.mu.Lock()
				s.parts = append(s.parts, p)
				s.mu.Unlock()
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// first returns the parts of the first snapshot, once they are all in.
func (s *snapshots) first() ([]call.Snapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.parts) == 0 {
		return nil, false
	}
	var out []call.Snapshot
	for _, p := range s.parts {
		if p.SameGen(&s.parts[0]) {
			out = append(out, p)
		}
	}
	return out, len(out) == max(s.parts[0].Parts, 1)
}

func (s *snapshots) all() []call.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]call.Snapshot(nil), s.parts...)
}

// TestSplitSnapshotAdoptedWhole: the previous process's last snapshot had
// 12,000 calls, stored in the NODES stream as 3 parts on 3 subjects, beside
// a 4th part left from an older, bigger snapshot. A restarted ingest seeds
// all 12,000 calls (its first snapshot lists them, in 3 parts of one
// generation) and ignores the stale part, which it then purges.
func TestSplitSnapshotAdoptedWhole(t *testing.T) {
	const node, n = "n-split", 12000
	answered := time.Now().Add(-time.Minute).UTC().Truncate(time.Millisecond)
	var got snapshots
	var js jetstream.JetStream
	startHarnessWith(t, sim.Options{}, func(o *Options, j jetstream.JetStream) {
		js = j
		o.Node, o.JS, o.SnapshotInterval = node, j, time.Hour
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		publish := func(s call.Snapshot) {
			b, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := j.Publish(ctx, call.SnapshotPartSubject(node, s.Part), b); err != nil {
				t.Fatal(err)
			}
		}
		stale := call.Snapshot{Schema: call.Schema, Node: node, At: answered.Add(10 * time.Second), Connected: true, Gen: 1, Part: 4, Parts: 4,
			Calls: []call.LiveCall{{Channel: "stale.1", Project: "proj-a", AnsweredAt: &answered}}}
		publish(stale)
		prev := call.Snapshot{Schema: call.Schema, Node: node, At: answered.Add(30 * time.Second), Connected: true, Gen: 2}
		for i := range n {
			prev.Calls = append(prev.Calls, call.LiveCall{Channel: fmt.Sprintf("1795789857.%05d", i), Project: "proj-a", AnsweredAt: &answered})
		}
		for _, p := range SplitSnapshot(prev, SnapshotPartCalls) {
			publish(p)
		}
		got.subscribe(t, j.Conn(), node)
	})
	var parts []call.Snapshot
	testutil.Eventually(t, 10*time.Second, func() bool {
		var ok bool
		parts, ok = got.first()
		return ok
	}, "the restarted ingest's first snapshot, all its parts")
	whole, complete, _ := call.LatestSnapshot(parts)
	if !complete || len(parts) != 3 || whole.Gen == 0 || len(whole.Calls) != n {
		t.Fatalf("first snapshot: %d parts (complete %v, gen %d), %d calls; want 3 parts listing the %d seeded calls", len(parts), complete, whole.Gen, len(whole.Calls), n)
	}
	for _, c := range whole.Calls {
		if c.Channel == "stale.1" {
			t.Fatal("a call of the stale part of an older snapshot was adopted")
		}
	}
	// The stale 4th part is purged once a smaller snapshot has gone out.
	testutil.Eventually(t, 10*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := js.Stream(ctx, call.NodesStream)
		if err != nil {
			return false
		}
		_, err = st.GetLastMsgForSubject(ctx, call.SnapshotPartSubject(node, 4))
		return errors.Is(err, jetstream.ErrMsgNotFound)
	}, "the stale part 4 purged from NODES")
}

// TestSnapshotPendingUntilEventsAcked: a call ends while JetStream cannot
// store its ended (the CALLS stream is gone): the snapshots taken then no
// longer list the call, so they go out pending (calls_seq does not cover
// the ended); once the ended is stored, a snapshot covers it again.
func TestSnapshotPendingUntilEventsAcked(t *testing.T) {
	var got snapshots
	h := startHarnessWith(t, sim.Options{}, func(o *Options, js jetstream.JetStream) {
		o.SnapshotInterval = 300 * time.Millisecond
	})
	node := h.svc.Node()
	got.subscribe(t, h.nc, node)
	ctx := context.Background()
	c, err := h.sim.StartCall(ctx, sim.CallOptions{Project: "proj-a"})
	if err != nil {
		t.Fatal(err)
	}
	<-c.Up()
	testutil.Eventually(t, 5*time.Second, func() bool { return h.svc.Stats().Published >= 2 }, "started and answered published")
	if err := h.js.DeleteStream(ctx, call.CallsStream); err != nil {
		t.Fatal(err)
	}
	c.Hangup(16)
	<-c.Done()
	mark := len(got.all())
	testutil.Eventually(t, 10*time.Second, func() bool {
		for _, s := range got.all()[mark:] {
			if len(s.Calls) == 0 && s.Connected {
				return true
			}
		}
		return false
	}, "a snapshot without the ended call")
	for _, s := range got.all()[mark:] {
		if len(s.Calls) == 0 && !s.Pending {
			t.Fatalf("snapshot %+v omits the ended call but is not pending: its ended is not in CALLS", s)
		}
	}
	nc := config.Default().NATS
	nc.Storage = "memory"
	if err := stream.EnsureStreams(ctx, h.js, nc); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, func() bool {
		all := got.all()
		s := all[len(all)-1]
		return !s.Pending && len(s.Calls) == 0 && s.CallsSeq > 0
	}, "a covering snapshot once the ended is stored")
	if e, ok := endedBilled(h.calls(t))[c.BilledChannel()]; !ok || e.EndedAt == nil {
		t.Fatalf("ended of %s not in CALLS", c.BilledChannel())
	}
}
