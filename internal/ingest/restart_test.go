package ingest

import (
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

// TestRestartDuringTwoLegSetup: an ingest that (re)connects while a
// two-leg call is being set up, from the creation of the callee's Local
// pair up to the Dial that links it to the caller, bills the caller's leg
// (1795789857.19) exactly once and never the callee's, whenever the channel
// list is taken and however many frames of the new connection are applied
// before Reconcile. The callee's ;2 half, seen before its dialled ;1 half,
// was started by accountcode and then kept as the billed channel.
func TestRestartDuringTwoLegSetup(t *testing.T) {
	evs := loadTrace(t, "two_leg_dial")
	n := len(evs)
	bad := 0
	for i := 33; i <= 42; i++ { // a restarted ingest connects after event i: frames from i on
		for j := i; j <= min(n, i+15); j++ { // list taken after event j
			for k := i; k <= min(n, i+15); k++ { // frames i..k applied before Reconcile
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
				ends := 0
				for _, e := range out {
					if e.Kind == call.Ended && e.Project != "" && e.AnsweredAt != nil {
						if e.Channel != "1795789857.19" {
							bad++
							if bad < 10 {
								t.Errorf("i=%d j=%d k=%d: billed %s %s", i, j, k, e.Channel, e.Project)
							}
						} else {
							ends++
						}
					}
				}
				if ends != 1 {
					bad++
					if bad < 10 {
						t.Errorf("i=%d j=%d k=%d: .19 billed %d times", i, j, k, ends)
					}
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d interleavings bill the wrong leg or not once", bad)
	}
}
