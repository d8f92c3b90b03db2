package call

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestSubjectsAndIDs(t *testing.T) {
	e := Event{Schema: Schema, Kind: Ended, Node: "02:fc:00:00:00:01", Channel: "1795789857.19", Project: "proj-a"}
	if got := e.Subject(); got != "minuted.calls.proj-a.ended" {
		t.Errorf("Subject = %q", got)
	}
	if got := e.MsgID(); got != "02:fc:00:00:00:01/1795789857.19/ended" {
		t.Errorf("MsgID = %q", got)
	}
	e.Project = ""
	if got := e.Subject(); got != "minuted.calls._unbilled.ended" {
		t.Errorf("unbilled Subject = %q", got)
	}
	if got := AlertSubject(""); got != "minuted.alerts._system" {
		t.Errorf("AlertSubject = %q", got)
	}
}

func TestValidProject(t *testing.T) {
	for id, want := range map[string]bool{
		"proj-a": true, "A_1": true, strings.Repeat("x", 64): true,
		"": false, "a.b": false, "a b": false, "../x": false, "a*": false, strings.Repeat("x", 65): false,
		"_unbilled": false, "проект": false,
	} {
		if got := ValidProject(id); got != want {
			t.Errorf("ValidProject(%q) = %v, want %v", id, got, want)
		}
	}
}

// FuzzValidProject: ValidProject is ^[A-Za-z0-9_-]{1,64}$ but _unbilled.
func FuzzValidProject(f *testing.F) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	for _, s := range []string{"proj-a", "A_1", strings.Repeat("x", 64), strings.Repeat("x", 65), "", "a.b", "a\n", "_unbilled", "проект"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if got, want := ValidProject(id), re.MatchString(id) && id != Unbilled; got != want {
			t.Fatalf("ValidProject(%q) = %v, want %v", id, got, want)
		}
	})
}

func TestDecodeRoundTripAndTalk(t *testing.T) {
	a := time.Date(2026, 11, 27, 14, 30, 57, 813e6, time.UTC)
	end := a.Add(20511 * time.Millisecond)
	in := Event{Schema: Schema, Kind: Ended, Node: "n1", Channel: "1.19", Project: "proj-a", AttributedBy: ByVariable,
		CreatedAt: a.Add(-time.Second), AnsweredAt: &a, EndedAt: &end, Cause: 16}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Talk() != 20511 || !out.AnsweredAt.Equal(a) || out.Key() != "n1/1.19" {
		t.Errorf("round trip: %+v talk %d", out, out.Talk())
	}
}

func TestDecodeRejects(t *testing.T) {
	for _, body := range []string{
		``, `{`, `[]`, `{"schema":2,"event":"ended","node":"n","channel":"c","ended_at":"2026-01-01T00:00:00Z"}`,
		`{"schema":1,"event":"hung","node":"n","channel":"c"}`,
		`{"schema":1,"event":"ended","node":"n","channel":"c"}`,
		`{"schema":1,"event":"answered","node":"n","channel":"c"}`,
		`{"schema":1,"event":"started","node":"n.x","channel":"c"}`,
		`{"schema":1,"event":"started","node":"n","channel":""}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","project":"a.b"}`,
	} {
		if _, err := Decode([]byte(body)); err == nil {
			t.Errorf("Decode(%s) = nil error", body)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"schema":1,"event":"ended","node":"n","channel":"c","project":"p","answered_at":"2026-11-27T14:30:57.813Z","ended_at":"2026-11-27T14:31:18.324Z"}`))
	f.Add([]byte(`{"schema":1,"event":"started","node":"n","channel":"c"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if e.Validate() != nil || e.Talk() < 0 {
			t.Fatalf("decoded an invalid event: %+v", e)
		}
		if e.Project != "" && !ValidProject(e.Project) {
			t.Fatalf("bad project passed: %q", e.Project)
		}
	})
}
