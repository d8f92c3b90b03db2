package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/sim"
)

// encodeCases are the call events of a recorded answered call replayed
// for several projects, and events whose strings JSON escapes.
func encodeCases(t *testing.T) []call.Event {
	t.Helper()
	lines, err := sim.TraceEvents(sim.ShapeAnswered)
	if err != nil {
		t.Fatal(err)
	}
	tr := NewTracker("", defaultAttr)
	var out []call.Event
	for k := range 5 {
		for _, l := range lines {
			l = bytes.ReplaceAll(l, []byte("1795789839."), []byte(fmt.Sprintf("17957%05d.", k)))
			l = bytes.ReplaceAll(l, []byte("proj-a"), []byte(fmt.Sprintf("proj-%d", k%3)))
			ev, err := ari.Decode(l)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, tr.Handle(ev)...)
		}
	}
	if len(out) < 10 {
		t.Fatalf("the replay gave %d call events", len(out))
	}
	at := time.Date(2026, 11, 27, 10, 0, 0, 123e6, time.UTC)
	out = append(out,
		call.Event{Schema: 1, Kind: call.Ended, Node: "n<1>&", Channel: "c\u2028\"x\"", Name: "bad \xff utf-8",
			CreatedAt: at, EndedAt: &at, CauseTxt: "<script>", EndReason: "exhausted"},
		call.Event{Schema: 1, Kind: call.Started, Node: "n", Channel: "c", CreatedAt: at.In(time.FixedZone("x", 3600))})
	return out
}

// TestCallEncoderMatchesMarshal: the encoder gives every event's
// json.Marshal bytes, Subject and message id, and a body stays as it was
// while later ones are encoded into the same chunks.
func TestCallEncoderMatchesMarshal(t *testing.T) {
	events := encodeCases(t)
	var c callEncoder
	var bodies, want [][]byte
	for round := range 60 { // enough bodies to fill several chunks
		for i := range events {
			e := &events[i]
			subject, id, body, err := c.encode(e)
			if err != nil {
				t.Fatal(err)
			}
			w, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body, w) || subject != e.Subject() || id != msgID(e) {
				t.Fatalf("round %d event %d: encoder %s %s %s\njson.Marshal %s %s %s", round, i, subject, id, body, e.Subject(), msgID(e), w)
			}
			bodies, want = append(bodies, body), append(want, w)
		}
	}
	for i := range bodies {
		if !bytes.Equal(bodies[i], want[i]) {
			t.Fatalf("body %d changed after later encodes: %s, want %s", i, bodies[i], want[i])
		}
	}
	seen := map[string]bool{}
	for i := range events {
		seen[events[i].Subject()] = true
	}
	if len(c.subjects) != len(seen) {
		t.Errorf("%d subjects remembered, want %d: one per project and kind seen", len(c.subjects), len(seen))
	}
}

// TestCallEncoderSubjectsBounded: the subjects remembered stay at most
// maxSubjects, whatever the number of projects.
func TestCallEncoderSubjectsBounded(t *testing.T) {
	var c callEncoder
	for i := range maxSubjects + 10 {
		e := call.Event{Kind: call.Answered, Project: fmt.Sprintf("p%d", i), Node: "n", Channel: "c"}
		subject, _, _, err := c.encode(&e)
		if err != nil || subject != e.Subject() {
			t.Fatalf("subject %q, %v; want %q", subject, err, e.Subject())
		}
	}
	if len(c.subjects) > maxSubjects {
		t.Errorf("%d subjects remembered, want at most %d", len(c.subjects), maxSubjects)
	}
}
