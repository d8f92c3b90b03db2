package stream

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTestSpool(tb testing.TB, path string, o SpoolOptions) *Spool {
	tb.Helper()
	s, err := OpenSpool(path, o)
	if err != nil {
		tb.Fatalf("OpenSpool: %v", err)
	}
	return s
}

// crash releases the spool's file like a killed process: no Close logic.
func (s *Spool) crash() { _ = s.f.Close(); s.f = nil }

func appendN(tb testing.TB, s *Spool, from, n int) []int64 {
	tb.Helper()
	var sizes []int64
	for i := from; i < from+n; i++ {
		sz, err := s.Append("minuted.calls.acme.ended", fmt.Sprintf("pbx/c%d/ended", i), fmt.Appendf(nil, `{"n":%d}`, i))
		if err != nil {
			tb.Fatalf("Append %d: %v", i, err)
		}
		sizes = append(sizes, sz)
	}
	return sizes
}

func wantIDs(tb testing.TB, recs []SpoolRecord, from, n int) {
	tb.Helper()
	if len(recs) != n {
		tb.Fatalf("recovered %d messages, want %d", len(recs), n)
	}
	for k, r := range recs {
		i := from + k
		if r.ID != fmt.Sprintf("pbx/c%d/ended", i) || r.Subject != "minuted.calls.acme.ended" || string(r.Data) != fmt.Sprintf(`{"n":%d}`, i) {
			tb.Fatalf("record %d = %+v, want message %d", k, r, i)
		}
	}
}

func TestSpoolSurvivesCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "ingest-pbx.spool")
	s := openTestSpool(t, path, SpoolOptions{})
	if got := s.takeRecovered(); len(got) != 0 {
		t.Fatalf("a new spool recovered %d messages", len(got))
	}
	sizes := appendN(t, s, 0, 5)
	if err := s.Ack(sizes[0] + sizes[1]); err != nil {
		t.Fatal(err)
	}
	s.crash()
	s = openTestSpool(t, path, SpoolOptions{})
	// The acknowledged head is still in the file (it is dropped only when
	// the file empties or compacts): replayed, harmless by Msg-Id.
	wantIDs(t, s.takeRecovered(), 0, 5)
	appendN(t, s, 5, 1)
	s.crash()
	s = openTestSpool(t, path, SpoolOptions{})
	wantIDs(t, s.takeRecovered(), 0, 6)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a spool holding unacknowledged messages must stay on Close: %v", err)
	}
}

func TestSpoolEmptiesWhenAllAcked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.spool")
	s := openTestSpool(t, path, SpoolOptions{Sync: true})
	sizes := appendN(t, s, 0, 3)
	var all int64
	for _, n := range sizes {
		all += n
	}
	if s.Size() != int64(len(spoolHeader))+all {
		t.Fatalf("size %d, want header + %d", s.Size(), all)
	}
	if err := s.Ack(all); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != int64(len(spoolHeader)) {
		t.Fatalf("after every ack the file should hold only its header: %v %v", fi, err)
	}
	appendN(t, s, 3, 2)
	s.crash()
	s = openTestSpool(t, path, SpoolOptions{})
	wantIDs(t, s.takeRecovered(), 3, 2)
	if err := s.Ack(s.Size() - int64(len(spoolHeader))); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("an empty spool should be removed on Close: %v", err)
	}
}

func TestSpoolCompacts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.spool")
	s := openTestSpool(t, path, SpoolOptions{CompactAt: 100})
	sizes := appendN(t, s, 0, 10)
	var head int64
	for _, n := range sizes[:6] {
		head += n
	}
	before := s.Size()
	if err := s.Ack(head); err != nil {
		t.Fatal(err)
	}
	if s.Size() != before-head {
		t.Fatalf("compacted size %d, want %d", s.Size(), before-head)
	}
	appendN(t, s, 10, 1)
	s.crash()
	s = openTestSpool(t, path, SpoolOptions{})
	wantIDs(t, s.takeRecovered(), 6, 5)
	if _, err := os.Stat(path + spoolTmpExt); !os.IsNotExist(err) {
		t.Fatalf("compaction left its temporary file: %v", err)
	}
	s.crash()
}

func TestSpoolCorruptTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func([]byte) []byte
		keep int
	}{
		{"half a record", func(b []byte) []byte { return b[:len(b)-3] }, 2},
		{"half a header", func(b []byte) []byte { return append(b, 9, 0, 0) }, 3},
		{"flipped byte", func(b []byte) []byte { b[len(b)-2] ^= 0xff; return b }, 2},
		{"garbage after", func(b []byte) []byte { return append(b, bytes.Repeat([]byte{0xff}, 40)...) }, 3},
		{"zeros after", func(b []byte) []byte { return append(b, make([]byte, 4096)...) }, 3},
		{"only part of the file header", func([]byte) []byte { return []byte("MDSP") }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.spool")
			s := openTestSpool(t, path, SpoolOptions{})
			appendN(t, s, 0, 3)
			s.crash()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, tc.cut(b), 0o600); err != nil {
				t.Fatal(err)
			}
			log, logs := newLogger()
			s = openTestSpool(t, path, SpoolOptions{Logger: log})
			wantIDs(t, s.takeRecovered(), 0, tc.keep)
			if tc.keep > 0 && tc.keep < 3 && !strings.Contains(logs.String(), "corrupt tail") {
				t.Errorf("the cut-off tail was not logged: %s", logs)
			}
			// The bad tail is gone: what is appended now is read back.
			appendN(t, s, 100, 1)
			s.crash()
			s = openTestSpool(t, path, SpoolOptions{})
			recs := s.takeRecovered()
			if len(recs) != tc.keep+1 || recs[tc.keep].ID != "pbx/c100/ended" {
				t.Fatalf("after repair and one append: %d records, last %+v", len(recs), recs[len(recs)-1])
			}
			s.crash()
		})
	}
}

func TestSpoolNotASpoolMovedAside(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.spool")
	if err := os.WriteFile(path, []byte("this is somebody else's file"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openTestSpool(t, path, SpoolOptions{})
	if n := len(s.takeRecovered()); n != 0 {
		t.Fatalf("recovered %d messages from a foreign file", n)
	}
	if b, err := os.ReadFile(path + ".corrupt"); err != nil || string(b) != "this is somebody else's file" {
		t.Fatalf("foreign file not moved aside intact: %q %v", b, err)
	}
	s.crash()
}

func TestSpoolLockedByOneProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.spool")
	s := openTestSpool(t, path, SpoolOptions{})
	defer s.crash()
	if _, err := OpenSpool(path, SpoolOptions{}); err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("second open of a spool in use: %v", err)
	}
}

// FuzzDecodeSpool: the decoder never panics, stops at the first bad
// record, and what it accepts re-encodes to exactly the bytes it consumed.
func FuzzDecodeSpool(f *testing.F) {
	var b []byte
	b = appendSpoolRecord(b, "minuted.calls.acme.ended", "pbx/c1/ended", []byte(`{"schema":1}`))
	f.Add(b)
	b = appendSpoolRecord(b, "s", "i", nil)
	f.Add(b)
	f.Add(b[:len(b)-1])
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, good, err := DecodeSpool(b)
		if good < 0 || good > len(b) || (err == nil) != (good == len(b)) {
			t.Fatalf("good %d of %d bytes, err %v", good, len(b), err)
		}
		var re []byte
		for _, r := range recs {
			if r.Subject == "" || r.ID == "" {
				t.Fatalf("record with an empty subject or id: %+v", r)
			}
			re = appendSpoolRecord(re, r.Subject, r.ID, r.Data)
		}
		if !bytes.Equal(re, b[:good]) {
			t.Fatalf("re-encoding %d records gives %d bytes, decoder consumed %d", len(recs), len(re), good)
		}
		var total int64
		for _, r := range recs {
			total += r.encodedLen()
		}
		if total != int64(good) {
			t.Fatalf("encodedLen sums to %d, decoder consumed %d", total, good)
		}
	})
}

// TestPublisherReplaysSpool: messages enqueued while NATS is down and left
// in the spool by a crashed process are published by the next one, in
// order and exactly once, before what it enqueues itself; messages the
// stream already had (acknowledged, not yet dropped from the spool) come
// back as duplicates and are not stored twice.
func TestPublisherReplaysSpool(t *testing.T) {
	n, js := setupJS(t)
	path := filepath.Join(t.TempDir(), "ingest.spool")
	ctx := testCtx(t, 60*time.Second)

	// 1. Three messages published and acknowledged; the spool file is
	// copied before they are dropped from it (a crash between the ack
	// and the truncation).
	sp := openTestSpool(t, path, SpoolOptions{})
	p := NewPublisher(js, PublisherOptions{Spool: sp})
	for i := range 3 {
		if err := p.Enqueue(ctx, "minuted.calls.acme.ended", fmt.Sprintf("pbx/c%d/ended", i), fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	early, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if sp.Size() != int64(len(spoolHeader)) {
		t.Fatalf("spool holds %d bytes after every ack", sp.Size())
	}
	// 2. NATS goes away; five more messages wait in the spool; crash.
	n.Stop()
	for i := 3; i < 8; i++ {
		if err := p.Enqueue(ctx, "minuted.calls.acme.ended", fmt.Sprintf("pbx/c%d/ended", i), fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	<-done
	sp.crash()
	late, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// The file as it would be had the first three not been dropped yet.
	if err := os.WriteFile(path, append(early, late[len(spoolHeader):]...), 0o600); err != nil {
		t.Fatal(err)
	}

	// 3. Next process: NATS back; replay, then a new message.
	n.Start(t)
	sp = openTestSpool(t, path, SpoolOptions{})
	p = NewPublisher(js, PublisherOptions{Spool: sp})
	if got := p.Stats().Recovered; got != 8 {
		t.Fatalf("recovered %d messages, want 8", got)
	}
	if err := p.Enqueue(ctx, "minuted.calls.acme.ended", "pbx/c8/ended", []byte("m8")); err != nil {
		t.Fatal(err)
	}
	runCtx, stop = context.WithCancel(ctx)
	go func() { done <- p.Run(runCtx) }()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stop()
	<-done
	if st := p.Stats(); st.Duplicates != 3 || st.Published != 9 {
		t.Errorf("stats %+v: want 9 published of which 3 duplicates", st)
	}
	msgs := readAll(t, js, "CALLS")
	if len(msgs) != 9 {
		t.Fatalf("CALLS holds %d messages, want 9", len(msgs))
	}
	for i, m := range msgs {
		if string(m.Data()) != fmt.Sprintf("m%d", i) {
			t.Fatalf("message %d is %q: out of order or duplicated", i, m.Data())
		}
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("an emptied spool should be removed on Close: %v", err)
	}
}
