package ingest

import (
	"maps"
	"testing"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/call"
)

// listAt is GET /channels after the first n events of a trace.
func listAt(evs []ari.Event, n int) []ari.Channel {
	live := map[string]ari.Channel{}
	var order []string
	for _, ev := range evs[:n] {
		for _, c := range []*ari.Channel{ev.Channel, ev.Peer, ev.Caller} {
			if c == nil {
				continue
			}
			if _, ok := live[c.ID]; !ok {
				order = append(order, c.ID)
			}
			live[c.ID] = *c
		}
		if ev.Type == ari.ChannelDestroyed && ev.Channel != nil {
			live[ev.Channel.ID] = ari.Channel{}
		}
	}
	var out []ari.Channel
	for _, id := range order {
		if c := live[id]; c.ID != "" {
			out = append(out, c)
		}
	}
	return out
}

// TestRestartAnywhere: an ingest that starts at any point of a call (the
// first frames it gets are from event i on), whenever it takes the channel
// list (after event j) and however many frames of its new connection it
// applies before Reconcile (those before event k), bills the same channels
// as one that saw the whole call. Two-leg calls used to go wrong: the
// callee's Local ;2 half, seen before its dialled ;1 half, was billed by
// accountcode, instead of or besides the caller's leg.
func TestRestartAnywhere(t *testing.T) {
	const window = 12 // list and Reconcile within this many events of the start
	for _, name := range []string{"two_leg_dial", "two_leg_busy", "answered_short", "answered_long"} {
		evs := loadTrace(t, name)
		n := len(evs)
		want := billedChannels(run(NewTracker("", defaultAttr), evs, nil))
		lastEnd := 0 // index of the billed channels' last ChannelDestroyed
		for x, ev := range evs {
			if ev.Type == ari.ChannelDestroyed && ev.Channel != nil && want[ev.Channel.ID] > 0 {
				lastEnd = x
			}
		}
		bad := 0
		for i := 0; i <= n; i++ {
			for j := i; j <= min(n, i+window); j++ {
				for k := i; k <= min(n, i+window); k++ {
					tr := NewTracker("", defaultAttr)
					tr.Starting()
					var out []call.Event
					for _, ev := range evs[i:k] {
						out = append(out, tr.Handle(ev)...)
					}
					out = append(out, tr.Reconcile(listAt(evs, j), evs[min(j, n-1)].Timestamp)...)
					for _, ev := range evs[k:] {
						out = append(out, tr.Handle(ev)...)
					}
					if got := billedChannels(out); !maps.Equal(got, want) && (len(got) > 0 || i < lastEnd) {
						// (none billed: the call was over before the start)
						bad++
						if bad <= 5 {
							t.Errorf("%s: start after event %d, list after %d, %d frames before Reconcile: billed %v, want %v", name, i, j, k-i, got, want)
						}
					}
				}
			}
		}
		if bad > 5 {
			t.Errorf("%s: %d such starts in all", name, bad)
		}
	}
}

// billedChannels counts the answered, billed ended events per channel.
func billedChannels(out []call.Event) map[string]int {
	got := map[string]int{}
	for _, e := range out {
		if e.Kind == call.Ended && e.Project != "" && e.AnsweredAt != nil {
			got[e.Channel]++
		}
	}
	return got
}
