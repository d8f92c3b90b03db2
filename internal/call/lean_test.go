package call

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"
)

// bodies returns the CALLS message bodies of testdata/events.jsonl (what
// ingest's tracker published for the ARI traces of testdata/ari-traces)
// and of a few events using the fields the traces leave out.
func bodies(tb testing.TB) [][]byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/events.jsonl")
	if err != nil {
		tb.Fatal(err)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		out = append(out, append([]byte(nil), sc.Bytes()...))
	}
	if len(out) < 40 {
		tb.Fatalf("%d bodies in testdata/events.jsonl", len(out))
	}
	at := time.Date(2026, 11, 27, 14, 30, 57, 813e6, time.UTC)
	end := at.Add(61 * time.Second)
	for _, e := range []Event{
		{Schema: Schema, Kind: Ended, Node: "n1", Channel: "c1", Project: "p", CreatedAt: at, AnsweredAt: &at, EndedAt: &end,
			TalkMS: 61000, Estimated: true, AnswerEstimated: true, EndReason: "exhausted"},
		{Schema: Schema, Kind: Answered, Node: "n1", Channel: "c2", Name: "PJSIP/alice-00000001", Project: "p",
			AttributedBy: ByRule, CreatedAt: at.In(time.FixedZone("", 3*3600)), AnsweredAt: &end},
	} {
		j, err := json.Marshal(e)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

// FuzzDecodeLeanMatchesJSON: Decode (the lean scanner, falling back to
// encoding/json) gives exactly what encoding/json alone gives: the same
// event or the same error, for any input.
func FuzzDecodeLeanMatchesJSON(f *testing.F) {
	for _, b := range bodies(f) {
		f.Add(b)
	}
	for _, s := range []string{
		`{"schema":1,"event":"started","node":"n","channel":"c","created_at":"2026-11-27T14:30:57.813Z","created_at":null}`,
		`{"schema":1,"event":"ended","node":"n","channel":"c","answered_at":"2026-11-27T14:30:57Z","answered_at":null,"ended_at":"2026-11-27T14:30:58+03:00","ended_at":"2026-11-27T14:30:59.5-01:00"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","created_at":"2026-11-27T14:30:57,813Z"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","created_at":"2026-11-27T24:00:00Z"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","created_at":"2026-11-27T14:30:57+24:00"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","created_at":"2026-11-27T4:30:57Z"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","created_at":"2026-11-27T14:30:57\u005a"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","created_at":5}`,
		`{"Schema":1,"event":"started","node":"n","channel":"c"}`,
		`{"schema":1,"event":"started","nodE":"n","channel":"c"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","ſchema":2}`,
		"{\"schema\":1,\"event\":\"started\",\"node\":\"n\",\"channel\":\"c\",\"talk_m\u212a\":\"x\"}",
		`{"schema":1.0,"event":"started","node":"n","channel":"c","talk_ms":1e3,"cause":-0,"estimated":"true"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","talk_ms":1234567890123456789012,"x":[1,{"y":null}]}`,
		`{"schema":1,"event":"started","node":"n\u00e9","channel":"c\xff"}`,
		`{"schema":1,"event":"started","node":"n","channel":"c","estimated":null,"answer_estimated":true} x`,
		`null`, `{}`, ` {"schema":1} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := Decode(b)
		want, werr := decodeJSON(b)
		if werr == nil {
			if err := want.Validate(); err != nil {
				want, werr = nil, err
			}
		}
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("Decode error %v, encoding/json %v", gerr, werr)
		}
		if gerr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("Decode %+v\nencoding/json %+v", got, want)
		}
		if e := decodeLean(b); e != nil {
			// What the lean path accepts, it decodes as encoding/json does.
			if w, err := decodeJSON(b); err != nil || !reflect.DeepEqual(e, w) {
				t.Fatalf("lean %+v\nencoding/json %+v, %v", e, w, err)
			}
		}
	})
}

// TestLeanPathTaken: every message ingest sends goes through the lean
// scanner (encoding/json is only the fallback).
func TestLeanPathTaken(t *testing.T) {
	for i, b := range bodies(t) {
		if decodeLean(b) == nil {
			t.Fatalf("body %d falls back to encoding/json:\n%s", i, b)
		}
	}
}

// TestLeanGivesUp: what the lean path must leave to encoding/json.
func TestLeanGivesUp(t *testing.T) {
	const head = `{"schema":1,"event":"started","node":"n","channel":"c",`
	for name, tail := range map[string]string{
		"escape in a kept string": `"project":"p\u0041"}`,
		"invalid UTF-8":           "\"project\":\"p\xff\"}",
		"key differing by case":   `"Project":"p"}`,
		"key folding to a field":  `"ſchema":1}`,
		"Kelvin sign":             "\"talk_m\u212a\":1}",
		"bad time":                `"created_at":"2026-11-27T24:00:00Z"}`,
		"time not a string":       `"created_at":1}`,
		"fraction":                `"talk_ms":1.5}`,
		"too long a number":       `"talk_ms":1234567890123456}`,
		"string for a bool":       `"estimated":"true"}`,
		"trailing garbage":        `"cause":1} 1`,
		"truncated":               `"cause":1`,
	} {
		if decodeLean([]byte(head+tail)) != nil {
			t.Errorf("%s: the lean path accepted %s", name, head+tail)
		}
	}
}

// TestLeanNullsAndRepeats: null and repeated keys as encoding/json has them.
func TestLeanNullsAndRepeats(t *testing.T) {
	b := []byte(`{"schema":1,"event":"ended","node":"n","channel":"c","project":"p","project":null,` +
		`"created_at":"2026-11-27T14:30:57.813Z","created_at":null,"answered_at":"2026-11-27T14:30:58Z","answered_at":null,` +
		`"ended_at":"2026-11-27T14:30:59Z","ended_at":"2026-11-27T14:31:00+01:00","estimated":true,"estimated":null,"x":{"y":[1,"z"]}}`)
	e := decodeLean(b)
	if e == nil {
		t.Fatal("lean path gave up")
	}
	if e.Project != "p" || e.CreatedAt.IsZero() || e.AnsweredAt != nil || e.EndedAt.Minute() != 31 || !e.Estimated {
		t.Fatalf("got %+v", e)
	}
	want, err := decodeJSON(b)
	if err != nil || !reflect.DeepEqual(e, want) {
		t.Fatalf("lean %+v\nencoding/json %+v (%v)", e, want, err)
	}
}

func benchDecode(b *testing.B, decode func([]byte) (*Event, error)) {
	bs := bodies(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := decode(bs[i%len(bs)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode: Decode per message body.
func BenchmarkDecode(b *testing.B) { benchDecode(b, Decode) }

// BenchmarkDecodeJSON: encoding/json alone (Decode before its lean path).
func BenchmarkDecodeJSON(b *testing.B) {
	benchDecode(b, func(m []byte) (*Event, error) {
		e, err := decodeJSON(m)
		if err == nil {
			err = e.Validate()
		}
		return e, err
	})
}
