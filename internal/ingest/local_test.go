package ingest

import (
	"testing"
	"time"
	"unsafe"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/call"
)

// localEv is an event about one Local half billed to p1 by accountcode.
func localEv(typ string, at time.Time, id, name string) ari.Event {
	ev := chanEv(typ, at, "Ring", "p1", "")
	ev.Channel.ID, ev.Channel.Name, ev.Channel.CreationTime = id, name, at
	return ev
}

// started lists the channels of the started messages in out.
func started(out []call.Event) []string {
	var ids []string
	for _, e := range out {
		if e.Kind == call.Started {
			ids = append(ids, e.Channel)
		}
	}
	return ids
}

// TestLocalHalvesPair: the two halves of a Local channel are one call, and
// a half whose other half ended pairs with the next channel of that name.
func TestLocalHalvesPair(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	tr := NewTracker("", defaultAttr)
	out := tr.Handle(localEv(ari.ChannelCreated, t0, "1", "Local/x@gen-00000001;1"))
	out = append(out, tr.Handle(localEv(ari.ChannelCreated, t0, "2", "Local/x@gen-00000001;2"))...)
	if got := started(out); len(got) != 1 || got[0] != "1" {
		t.Fatalf("a Local pair billed to p1 started %v, want [1] (one call)", got)
	}
	if len(tr.byBase) != 0 {
		t.Fatalf("byBase keeps %d paired halves, want none", len(tr.byBase))
	}
	tr.Handle(localEv(ari.ChannelDestroyed, t0.Add(time.Second), "2", "Local/x@gen-00000001;2"))
	if tr.byBase["Local/x@gen-00000001"] == nil {
		t.Fatal("the half left alone does not wait for a partner")
	}
	out = tr.Handle(localEv(ari.ChannelCreated, t0.Add(2*time.Second), "3", "Local/x@gen-00000001;2"))
	if got := started(out); len(got) != 0 {
		t.Fatalf("a new half joining a billed call started %v", got)
	}
	if tr.chans["3"].pair != tr.chans["1"] || tr.chans["1"].pair != tr.chans["3"] {
		t.Fatal("the new half is not paired with the one left")
	}
	for _, id := range []string{"1", "3"} {
		tr.Handle(localEv(ari.ChannelDestroyed, t0.Add(3*time.Second), id, "Local/x@gen-00000001;1"))
	}
	if tr.Live() != 0 || len(tr.byBase) != 0 {
		t.Fatalf("after both halves ended: %d live, %d halves waiting", tr.Live(), len(tr.byBase))
	}
}

// TestLocalThirdHalfNotJoined: a third channel named like a Local pair
// whose two halves are still tracked (a name reused, e.g. after Asterisk
// restarted its Local sequence) is not joined to that pair: it waits for
// a partner of its own, so here it is billed as a call of its own. (Before
// only unpaired halves were indexed, it joined the pair.)
func TestLocalThirdHalfNotJoined(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	tr := NewTracker("", defaultAttr)
	tr.Handle(localEv(ari.ChannelCreated, t0, "1", "Local/x@gen-00000001;1"))
	tr.Handle(localEv(ari.ChannelCreated, t0, "2", "Local/x@gen-00000001;2"))
	out := tr.Handle(localEv(ari.ChannelCreated, t0.Add(time.Second), "3", "Local/x@gen-00000001;1"))
	if got := started(out); len(got) != 1 || got[0] != "3" {
		t.Fatalf("the third channel started %v, want [3]", got)
	}
	if tr.chans["3"].g == tr.chans["1"].g || tr.byBase["Local/x@gen-00000001"] != tr.chans["3"] {
		t.Fatal("the third channel joined the pair instead of waiting for its own partner")
	}
}

// TestChannelSize keeps a tracked channel within its 128-byte size class:
// one more field takes every live channel to the next (144).
func TestChannelSize(t *testing.T) {
	if size := unsafe.Sizeof(channel{}); size > 128 {
		t.Errorf("a tracked channel takes %d bytes, want at most 128", size)
	}
}
