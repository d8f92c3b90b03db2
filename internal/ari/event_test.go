package ari

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	upstream "github.com/CyCoreSystems/ari/v6"
)

// traceLines returns every line of every recorded trace.
func traceLines(tb testing.TB) [][]byte {
	tb.Helper()
	files, err := filepath.Glob("../../testdata/ari-traces/*.jsonl")
	if err != nil || len(files) == 0 {
		tb.Fatalf("no traces found: %v", err)
	}
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			out = append(out, append([]byte(nil), sc.Bytes()...))
		}
	}
	return out
}

func TestDecodeAllTraces(t *testing.T) {
	lines := traceLines(t)
	types := map[string]int{}
	for i, l := range lines {
		ev, err := Decode(l)
		if err != nil {
			t.Fatalf("line %d: %v\n%s", i, err, l)
		}
		if ev.Timestamp.Location() != time.UTC || ev.Timestamp.Year() != 2026 {
			t.Fatalf("line %d: timestamp %v not UTC 2026", i, ev.Timestamp)
		}
		types[ev.Type]++
		if strings.HasPrefix(ev.Type, "Channel") && ev.Type != ChannelVarset && ev.Channel == nil {
			t.Fatalf("line %d: %s without channel", i, ev.Type)
		}
	}
	for _, typ := range []string{ChannelCreated, ChannelDestroyed, ChannelStateChange, ChannelVarset, Dial} {
		raw := 0
		for _, l := range lines {
			raw += bytes.Count(l, []byte(`"type":"`+typ+`"`))
		}
		if raw == 0 || types[typ] != raw {
			t.Errorf("%s: decoded %d, raw lines have %d", typ, types[typ], raw)
		}
	}
}

func TestDecodeTable(t *testing.T) {
	ts := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	cases := []struct {
		name, in string
		want     Event
		errHas   string
	}{
		{
			name: "destroyed +0000",
			in: `{"type":"ChannelDestroyed","timestamp":"2026-11-27T14:30:42.525+0000","cause":16,"cause_txt":"Normal Clearing",
				"channel":{"id":"1795789839.13","name":"Local/answer3@gen-00000006;2","state":"Up","accountcode":"proj-a",
				"dialplan":{"context":"gen","exten":"answer3"},"creationtime":"2026-11-27T14:30:39.021+0000",
				"channelvars":{"BILLING_PROJECT":"proj-a"}},"asterisk_id":"02:fc:00:00:00:01","application":"capture"}`,
			want: Event{Type: ChannelDestroyed, Timestamp: ts("2026-11-27T14:30:42.525Z"), AsteriskID: "02:fc:00:00:00:01",
				Application: "capture", Cause: 16, CauseTxt: "Normal Clearing",
				Channel: &Channel{ID: "1795789839.13", Name: "Local/answer3@gen-00000006;2", State: "Up", AccountCode: "proj-a",
					Context: "gen", Exten: "answer3", CreationTime: ts("2026-11-27T14:30:39.021Z"),
					Vars: map[string]string{"BILLING_PROJECT": "proj-a"}}},
		},
		{
			name: "moscow +0300 normalised to UTC",
			in:   `{"type":"ChannelStateChange","timestamp":"2026-11-27T17:30:39.022+0300","channel":{"id":"1.2","state":"Up","creationtime":"2026-11-27T17:30:39.021+0300"}}`,
			want: Event{Type: ChannelStateChange, Timestamp: ts("2026-11-27T14:30:39.022Z"),
				Channel: &Channel{ID: "1.2", State: "Up", CreationTime: ts("2026-11-27T14:30:39.021Z")}},
		},
		{
			name: "negative offset",
			in:   `{"type":"StasisStart","timestamp":"2026-11-27T09:30:39.999-0500","channel":{"id":"x"}}`,
			want: Event{Type: "StasisStart", Timestamp: ts("2026-11-27T14:30:39.999Z"), Channel: &Channel{ID: "x"}},
		},
		{
			name: "dial with caller and peer",
			in:   `{"type":"Dial","timestamp":"2026-11-27T14:30:57.813+0000","dialstatus":"ANSWER","caller":{"id":"a"},"peer":{"id":"b"}}`,
			want: Event{Type: Dial, Timestamp: ts("2026-11-27T14:30:57.813Z"), DialStatus: "ANSWER", Caller: &Channel{ID: "a"}, Peer: &Channel{ID: "b"}},
		},
		{
			name: "global varset",
			in:   `{"type":"ChannelVarset","timestamp":"2026-11-27T14:30:57.813+0000","variable":"G","value":"1"}`,
			want: Event{Type: ChannelVarset, Timestamp: ts("2026-11-27T14:30:57.813Z"), Variable: "G", Value: "1"},
		},
		{
			name: "unknown type is not an error",
			in:   `{"type":"FutureThing","timestamp":"2026-11-27T14:30:57.813+0000","whatever":[1,2]}`,
			want: Event{Type: "FutureThing", Timestamp: ts("2026-11-27T14:30:57.813Z")},
		},
		{
			name: "application replaced",
			in:   `{"type":"ApplicationReplaced","timestamp":"2026-11-27T14:30:57.813+0000","application":"minuted"}`,
			want: Event{Type: ApplicationReplaced, Timestamp: ts("2026-11-27T14:30:57.813Z"), Application: "minuted", Replaced: true},
		},
		{name: "malformed", in: `{"type":`, errHas: "malformed"},
		{name: "not an object", in: `[1]`, errHas: "malformed"},
		{name: "no type", in: `{"timestamp":"2026-11-27T14:30:57.813+0000"}`, errHas: "no type"},
		{name: "no timestamp", in: `{"type":"ChannelCreated","channel":{"id":"1"}}`, errHas: "no timestamp"},
		{name: "bad timestamp", in: `{"type":"ChannelCreated","timestamp":"27/11/2026","channel":{"id":"1"}}`, errHas: "bad timestamp"},
		{name: "channel event without channel", in: `{"type":"ChannelDestroyed","timestamp":"2026-11-27T14:30:57.813+0000"}`, errHas: "no channel"},
		{name: "channel without id", in: `{"type":"ChannelDestroyed","timestamp":"2026-11-27T14:30:57.813+0000","channel":{"name":"x"}}`, errHas: "channel has no id"},
		{name: "dial without peer", in: `{"type":"Dial","timestamp":"2026-11-27T14:30:57.813+0000"}`, errHas: "no peer"},
		{name: "bad creationtime", in: `{"type":"ChannelCreated","timestamp":"2026-11-27T14:30:57.813+0000","channel":{"id":"1","creationtime":"yesterday"}}`, errHas: "creationtime"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode([]byte(c.in))
			if c.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), c.errHas) {
					t.Fatalf("error %v, want one containing %q", err, c.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !eventEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
}

func eventEqual(a, b Event) bool {
	if a.Type != b.Type || !a.Timestamp.Equal(b.Timestamp) || a.Timestamp.Location() != time.UTC ||
		a.AsteriskID != b.AsteriskID || a.Application != b.Application || a.DialStatus != b.DialStatus ||
		a.Cause != b.Cause || a.CauseTxt != b.CauseTxt || a.Variable != b.Variable || a.Value != b.Value ||
		a.Replaced != b.Replaced {
		return false
	}
	return chanEqual(a.Channel, b.Channel) && chanEqual(a.Caller, b.Caller) && chanEqual(a.Peer, b.Peer)
}

func chanEqual(a, b *Channel) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.ID != b.ID || a.Name != b.Name || a.State != b.State || a.AccountCode != b.AccountCode ||
		a.Context != b.Context || a.Exten != b.Exten || a.AppName != b.AppName || a.AppData != b.AppData ||
		!a.CreationTime.Equal(b.CreationTime) || len(a.Vars) != len(b.Vars) || (a.Vars == nil) != (b.Vars == nil) {
		return false
	}
	for k, v := range a.Vars {
		if b.Vars[k] != v {
			return false
		}
	}
	return true
}

func TestDecodeChannels(t *testing.T) {
	cs, err := DecodeChannels([]byte(`[{"id":"1.1","name":"PJSIP/a-1","state":"Up","accountcode":"p","dialplan":{"context":"in","exten":"100"},"creationtime":"2026-11-27T17:00:00.000+0300"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].ID != "1.1" || cs[0].State != "Up" || cs[0].Context != "in" || cs[0].CreationTime.Hour() != 14 {
		t.Fatalf("got %+v", cs)
	}
	if _, err := DecodeChannels([]byte(`[{"name":"x"}]`)); err == nil {
		t.Fatal("entry without id accepted")
	}
}

func FuzzDecode(f *testing.F) {
	for _, l := range traceLines(f) {
		f.Add(l)
	}
	f.Add([]byte(`{"type":"Dial","timestamp":"2026-11-27T14:30:57.813+0300","peer":{"id":""}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := Decode(b)
		if err != nil {
			return
		}
		if ev.Type == "" || ev.Timestamp.IsZero() || ev.Timestamp.Location() != time.UTC {
			t.Fatalf("accepted event without type or UTC timestamp: %+v", ev)
		}
		if ev.Timestamp.Nanosecond()%int(time.Millisecond) != 0 {
			t.Fatalf("timestamp not truncated to ms: %v", ev.Timestamp)
		}
		if channelRequired[ev.Type] && (ev.Channel == nil || ev.Channel.ID == "") {
			t.Fatalf("accepted %s without channel id", ev.Type)
		}
		if ev.Type == Dial && (ev.Peer == nil || ev.Peer.ID == "") {
			t.Fatal("accepted Dial without peer id")
		}
	})
}

// FuzzDecodeLeanMatchesJSON: Decode (the lean scanner, falling back to
// encoding/json) gives exactly what encoding/json alone gives: the same
// event or the same error, for any input.
func FuzzDecodeLeanMatchesJSON(f *testing.F) {
	for _, l := range traceLines(f) {
		f.Add(l)
	}
	for _, s := range []string{
		`{"type":"X","timestamp":"2026-11-27T14:30:57.813+0300","type":null,"cause":null,"cause":-0}`,
		`{"type":"ChannelVarset","timestamp":"2026-11-27T14:30:57.813+0000","channel":{"id":"a","name":"x"},"channel":{"id":"b"}}`,
		`{"TYPE":"Dial","timestamp":"2026-11-27T14:30:57.813+0000"}`,
		`{"type":"Dial\u0041","timestamp":"2026-11-27T14:30:57.813+0000","x":[1,2e5,-0.5,{"a":[true,false,null]}]}`,
		`{"type":"ChannelCreated","timestamp":"2026-11-27T14:30:57.813+0000","channel":{"id":"1","channelvars":{"A":"1","A":null,"B":"é"}}}`,
		`{"type":"ChannelDestroyed","timestamp":"2026-11-27T14:30:57.813+0000","cause":1e1,"channel":{"id":"1"}}`,
		`{"type":"T","timestamp":"2026-11-27T14:30:57.813+0000"} x`,
		// Unicode folding: 'ſ' matches 's', the Kelvin sign 'k'.
		`{"type":"T","timestamp":"2026-11-27T14:30:57.813+0000","channel":{"id":"1","ſtate":"Up"}}`,
		"{\"type\":\"T\",\"timestamp\":\"2026-11-27T14:30:57.813+0000\",\"asteris\u212a_id\":\"x\"}",
	} {
		f.Add([]byte(s))
	}
	var dec Decoder // reused across inputs, as ingest does
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := Decode(b)
		want, werr := decodeJSON(b, nil)
		if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
			t.Fatalf("Decode error %v, encoding/json %v", gerr, werr)
		}
		if gerr == nil && !eventEqual(got, want) {
			t.Fatalf("Decode %+v\nencoding/json %+v", got, want)
		}
		dgot, derr := dec.DecodeString(string(b))
		if (derr == nil) != (gerr == nil) || derr != nil && derr.Error() != gerr.Error() {
			t.Fatalf("Decoder error %v, Decode %v", derr, gerr)
		}
		if derr == nil && !eventEqual(dgot, got) {
			t.Fatalf("Decoder %+v\nDecode %+v", dgot, got)
		}
	})
}

// TestDecoderReuse: a Decoder used for every trace line in turn gives
// each event as DecodeString does, and once warm allocates nothing (its
// channels and their channelvars maps are reused).
func TestDecoderReuse(t *testing.T) {
	var dec Decoder
	lines := traceLines(t)
	for i, l := range lines {
		got, err := dec.DecodeString(string(l))
		want, werr := DecodeString(string(l))
		if err != nil || werr != nil || !eventEqual(got, want) {
			t.Fatalf("line %d: Decoder %+v, %v\nDecodeString %+v, %v", i, got, err, want, werr)
		}
	}
	var dial string // one with a caller and a peer
	for _, l := range lines {
		if ev, err := DecodeString(string(l)); err == nil && ev.Caller != nil && ev.Peer != nil {
			dial = string(l)
			break
		}
	}
	if dial == "" {
		t.Fatal("no event with a caller and a peer in the traces")
	}
	fresh := testing.AllocsPerRun(50, func() { _, _ = DecodeString(dial) })
	reused := testing.AllocsPerRun(50, func() { _, _ = dec.DecodeString(dial) })
	if reused != 0 {
		t.Errorf("a Dial decoded with a warm Decoder takes %.0f allocations (DecodeString %.0f): want none", reused, fresh)
	}
}

// TestLeanPathTaken: every recorded event goes through the lean scanner
// (encoding/json is only the fallback).
func TestLeanPathTaken(t *testing.T) {
	for i, l := range traceLines(t) {
		var le leanEvent
		if !scanEvent(string(l), &le) {
			t.Fatalf("line %d falls back to encoding/json:\n%s", i, l)
		}
	}
}

func benchLines(b *testing.B, decode func([]byte) error) {
	lines := traceLines(b)
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; i < b.N; i++ {
		for _, l := range lines {
			if err := decode(l); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecode measures the lean decoder over every trace line.
func BenchmarkDecode(b *testing.B) {
	benchLines(b, func(l []byte) error { _, err := Decode(l); return err })
}

// BenchmarkUpstreamDecodeEvent measures ari/v6's DecodeEvent over the same lines.
func BenchmarkUpstreamDecodeEvent(b *testing.B) {
	benchLines(b, func(l []byte) error { _, err := upstream.DecodeEvent(l); return err })
}
