package bill

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/call"
)

// snapshotJSON is a snapshot as ingest encodes it.
func snapshotJSON(tb testing.TB, n int) []byte {
	tb.Helper()
	at := t0.Add(time.Hour)
	s := call.Snapshot{Schema: call.Schema, Node: "node-1", At: at, Connected: true, CallsSeq: 12345,
		Pending: true, Gen: uint64(at.UnixNano()), Part: 3, Parts: 20, Calls: []call.LiveCall{}}
	for i := range n {
		a := at.Add(-time.Duration(i) * 1234567 * time.Microsecond)
		c := call.LiveCall{Channel: fmt.Sprintf("PJSIP/trunk-%08x", i), Project: fmt.Sprint("proj-", i%3/2)}
		if i%5 != 4 {
			c.AnsweredAt = &a
		}
		s.Calls = append(s.Calls, c)
	}
	b, err := json.Marshal(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestUnmarshalSnapshotTakesTheFastPath: ingest's own encoding is decoded
// by scanSnapshot, not by the encoding/json fallback, and the result is
// encoding/json's.
func TestUnmarshalSnapshotTakesTheFastPath(t *testing.T) {
	b := snapshotJSON(t, 50)
	var fast call.Snapshot
	if !scanSnapshot(b, &fast) {
		t.Fatalf("scanSnapshot gives up on ingest's encoding: %s", b)
	}
	var got, want call.Snapshot
	if err := unmarshalSnapshot(b, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("unmarshalSnapshot = %+v\nencoding/json = %+v", got, want)
	}
}

// FuzzUnmarshalSnapshotMatchesJSON: unmarshalSnapshot returns what
// encoding/json returns, result and error, whatever the input.
func FuzzUnmarshalSnapshotMatchesJSON(f *testing.F) {
	f.Add(snapshotJSON(f, 3))
	f.Add(snapshotJSON(f, 0))
	for _, s := range []string{
		`{"schema":1,"node":"n","at":"2026-03-01T12:00:00Z","connected":true,"calls":null}`,
		`{"schema":1,"node":"n","at":"2026-03-01T12:00:00Z"}`,
		`{"gen":18446744073709551615,"pending":false,"calls":[]}`,
		`{"gen":18446744073709551616,"calls":[]}`,
		`{"gen":01,"pending":true}`,
		`{"calls":[{"channel":"a\u0041","project":"p"}]}`,
		`{"calls":[{"Channel":"a","project":"p","answered_at":null}]}`,
		`{"calls":[{"channel":"a","answered_at":"2026-03-01T12:00:00.5+02:00"},{}]}`,
		`{"calls":[{"channel":"a","answered_at":"2026-13-01T12:00:00Z"}]}`,
		`{"calls":[{"channel":"a","answered_at":17}]}`,
		`{"calls":[{"channel":"a","extra":1}]}`,
		`{"calls":[{"channel":"\xff"}]}`,
		`{"calls":[{"channel":"é"}] , "calls" : [ {"channel":"b"} ] }`,
		`{"calls":[{"channel":"a","answered_at":"2026-03-01T12:00:00Z"}],"calls":[{"channel":"b"}]}`,
		`{"calls":[{"channel":"a"},]}`,
		`{"calls":{"channel":"a"}}`,
		` { "calls" : [ { "channel" : "a" , "project" : "p" } , { "channel" : "b" } ] } `,
		`{"schema":"1","calls":[]}`,
		`{"schema":01,"calls":[]}`,
		`{"schema":1.5,"calls_seq":18446744073709551615,"parts":-1}`,
		`{"part":123456789012345678901,"connected":false}`,
		`{"connected":true,"connected":null,"node":"a","node":"b"}`,
		`{"at":null,"calls":[]}`,
		`{"abc\"calls":[]}`,
		`{}`,
		`[1]`,
		`{"calls":[`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var got, want call.Snapshot
		gerr := unmarshalSnapshot(b, &got)
		werr := json.Unmarshal(b, &want)
		if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
			t.Fatalf("%q: error %v, encoding/json %v", b, gerr, werr)
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", b, got, want)
		}
	})
}

// BenchmarkDecodeSnapshot decodes one part of a snapshot (5,000 calls, as
// ingest splits them).
func BenchmarkDecodeSnapshot(b *testing.B) {
	data := snapshotJSON(b, 5000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeSnapshot(data); err != nil {
			b.Fatal(err)
		}
	}
}
