package call

import (
	"time"

	"github.com/minuted/minuted/internal/leanjson"
)

// The lean scanner: Decode's fast path. bill decodes every CALLS message,
// and encoding/json's reflection and per-field strings were a visible part
// of its CPU; the scanner (internal/leanjson) converts the body to a
// string once and takes every field as a substring of it. Whatever it does
// not fully understand, including a time encoding/json would reject, makes
// it give up and Decode uses encoding/json: results and errors are
// encoding/json's in every case (FuzzDecodeLeanMatchesJSON checks it).

// leanEvent holds an Event and the times its pointers point to, so that a
// decode allocates them together.
type leanEvent struct {
	e                 Event
	answered, endedAt time.Time
}

// decodeLean decodes b into an Event; nil means "use encoding/json".
func decodeLean(b []byte) *Event {
	le := new(leanEvent)
	sc := leanjson.New(string(b))
	e := &le.e
	strs := [...]leanjson.Field{{Key: "event", Dst: (*string)(&e.Kind)}, {Key: "node", Dst: &e.Node},
		{Key: "channel", Dst: &e.Channel}, {Key: "name", Dst: &e.Name}, {Key: "project", Dst: &e.Project},
		{Key: "attributed_by", Dst: &e.AttributedBy}, {Key: "cause_txt", Dst: &e.CauseTxt},
		{Key: "end_reason", Dst: &e.EndReason}}
	sc.Object(func(key string) {
		switch key {
		case "schema":
			sc.Int(&e.Schema)
		case "created_at":
			if !sc.Null() { // null: Time.UnmarshalJSON leaves it
				scanTime(&sc, &e.CreatedAt)
			}
		case "answered_at":
			e.AnsweredAt = scanTimePtr(&sc, e.AnsweredAt, &le.answered)
		case "ended_at":
			e.EndedAt = scanTimePtr(&sc, e.EndedAt, &le.endedAt)
		case "talk_ms":
			sc.Int64(&e.TalkMS)
		case "cause":
			sc.Int(&e.Cause)
		case "estimated":
			sc.Bool(&e.Estimated)
		case "answer_estimated":
			sc.Bool(&e.AnswerEstimated)
		default:
			sc.Field(key, strs[:], "schema", "created_at", "answered_at", "ended_at", "talk_ms",
				"cause", "estimated", "answer_estimated")
		}
	})
	if !sc.Done() {
		return nil
	}
	return e
}

// scanTimePtr reads a *time.Time field whose value is p: null makes it nil
// (as encoding/json does), a time is read into *p or, when p is nil, into
// *own, which it then returns.
func scanTimePtr(sc *leanjson.Scanner, p, own *time.Time) *time.Time {
	if sc.Null() {
		return nil
	}
	if p == nil {
		p = own
	}
	scanTime(sc, p)
	return p
}

// scanTime reads a time as time.Time's UnmarshalJSON does (its strict
// RFC 3339, which UnmarshalText shares) and gives up on any error, for
// encoding/json to report.
func scanTime(sc *leanjson.Scanner, t *time.Time) {
	s := sc.Text()
	if err := t.UnmarshalText([]byte(s)); err != nil {
		sc.GiveUp()
	}
}
