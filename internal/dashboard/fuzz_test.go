package dashboard

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
)

// FuzzDecodeSnapshot: any bytes on any subject are decoded or refused; an
// accepted snapshot names a node whose subject it came on.
func FuzzDecodeSnapshot(f *testing.F) {
	good, _ := json.Marshal(call.Snapshot{Schema: 1, Node: "pbx1", At: time.Unix(1, 0), Connected: true,
		Calls: []call.LiveCall{{}}})
	f.Add(call.SnapshotSubject("pbx1"), good)
	f.Add(call.SnapshotSubject("pbx2"), good)
	f.Add("minuted.nodes.a.b.snapshot", []byte(`{"node":"a.b"}`))
	f.Add(call.SnapshotSubject(""), []byte(`{"node":""}`))
	f.Add(call.SnapshotSubject("x"), []byte(`{"node":"x","calls":null,"connected":"yes"}`))
	f.Add(call.SnapshotSubject("x"), []byte(`[`))
	f.Add(call.SnapshotPartSubject("x", 2), []byte(`{"node":"x","part":2,"parts":2,"calls":[{}]}`))
	f.Add(call.SnapshotPartSubject("x", 2), []byte(`{"node":"x","part":3,"calls":[]}`))
	f.Fuzz(func(t *testing.T, subject string, b []byte) {
		n, err := decodeSnapshot(subject, b)
		if err != nil {
			return
		}
		if n.Node == "" || n.Part < 1 || subject != call.SnapshotPartSubject(n.Node, n.Part) || strings.ContainsAny(n.Node, ". *>") || n.Calls < 0 {
			t.Fatalf("accepted %+v on %q", n, subject)
		}
	})
}

// FuzzParseQueries: the query decoders of the data routes accept only
// what they document.
func FuzzParseQueries(f *testing.F) {
	for _, s := range [][3]string{{"", "", ""}, {"hour", "project", "p1"}, {"week", "system", ""}, {"year", "overview", "p1"},
		{"day", "project", "a.b"}, {"x", "project", "_unbilled"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, rng, view, project string) {
		if r, err := ParseRange(rng); err == nil && (r.Span <= 0 || (rng != "" && r.Name != rng)) {
			t.Fatalf("range %q gave %+v", rng, r)
		}
		q, err := ParseStreamQuery(view, project)
		if err != nil {
			return
		}
		switch q.View {
		case ViewProject:
			if !call.ValidProject(q.Project) || q.Project != project {
				t.Fatalf("project view of %q", project)
			}
		case ViewOverview, ViewSystem:
			if project != "" || q.Project != "" {
				t.Fatalf("view %s with project %q", q.View, project)
			}
		default:
			t.Fatalf("view %q", q.View)
		}
	})
}

// FuzzSeries: for any ledger, the series is in time order, within
// [from, to], at most maxPoints+2 long, ends at the current balance, and
// starts at from unless truncated.
func FuzzSeries(f *testing.F) {
	f.Add([]byte{10, 20, 30, 200, 5}, int64(100), uint16(60), true, uint8(10))
	f.Add([]byte{}, int64(0), uint16(1), false, uint8(0))
	f.Add([]byte{255, 255, 0, 1}, int64(-5), uint16(3600), false, uint8(3))
	f.Fuzz(func(t *testing.T, steps []byte, current int64, spanS uint16, cut bool, maxPoints uint8) {
		to := time.Unix(1_000_000, 0)
		from := to.Add(-time.Duration(spanS) * time.Second)
		// steps: seconds back from to, one entry each, newest first.
		es := make([]ledger.Entry, 0, len(steps))
		at, bal := to, current
		for i, s := range steps {
			at = at.Add(-time.Duration(s) * time.Second)
			es = append(es, ledger.Entry{At: at, Seconds: int64(i%3 - 1), Balance: bal})
			bal -= int64(i%3 - 1)
		}
		pts, truncated := Series(es, current, from, to, cut, int(maxPoints))
		if len(pts) == 0 || pts[len(pts)-1].BalanceSeconds != current || !pts[len(pts)-1].At.Equal(to) {
			t.Fatalf("series does not end at the current balance: %+v", pts)
		}
		if len(pts) > max(int(maxPoints), 3)+2 {
			t.Fatalf("%d points for max %d", len(pts), maxPoints)
		}
		if !truncated && !pts[0].At.Equal(from) {
			t.Fatalf("untruncated series starts at %v, not %v", pts[0].At, from)
		}
		if truncated && !cut {
			t.Fatal("truncated although the read was complete")
		}
		for i, p := range pts {
			if p.At.Before(from) || p.At.After(to) || (i > 0 && p.At.Before(pts[i-1].At)) {
				t.Fatalf("point %d %v out of order or range [%v, %v]: %+v", i, p.At, from, to, pts)
			}
		}
	})
}
