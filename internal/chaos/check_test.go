package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
)

// drain waits until every call is settled: bill's consumer has nothing
// pending or unacknowledged, no project has a live call, every answered
// call has a CDR and the garbage reached the dead-letter stream.
func (h *harness) drain(ctx context.Context) {
	h.t.Helper()
	want := 0
	gaps := h.gaps.list()
	h.mu.Lock()
	for _, e := range h.truth {
		if !e.Answered.IsZero() && !unseen(e, gaps) {
			want++
		}
	}
	nGarbage := len(h.garbage)
	h.mu.Unlock()
	began := time.Now()
	deadline := began.Add(drainDeadline)
	var status string
	for {
		status = h.drainStatus(ctx, want, nGarbage)
		if status == "" {
			h.t.Logf("drained in %v", time.Since(began).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			h.t.Errorf("not drained after %v: %s (the checks below say what is missing)", drainDeadline, status)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (h *harness) drainStatus(ctx context.Context, wantCDRs, nGarbage int) string {
	cons, err := h.js.Consumer(ctx, call.CallsStream, "bill")
	if err != nil {
		return "bill consumer: " + err.Error()
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return "bill consumer info: " + err.Error()
	}
	if ci.NumPending > 0 || ci.NumAckPending > 0 {
		return fmt.Sprintf("CALLS: %d pending, %d unacknowledged", ci.NumPending, ci.NumAckPending)
	}
	live, cdrs := 0, 0
	for _, p := range h.projects {
		l, err := h.led.Live(ctx, p)
		if err != nil {
			return "live calls: " + err.Error()
		}
		live += len(l)
		n, err := h.rdb.HLen(ctx, "minuted:{"+p+"}:cdrs").Result()
		if err != nil {
			return "CDRs: " + err.Error()
		}
		cdrs += int(n)
	}
	if live > 0 || cdrs < wantCDRs {
		return fmt.Sprintf("%d live calls, %d of %d CDRs", live, cdrs, wantCDRs)
	}
	if n := h.streamMsgs(ctx, call.DLQStream); n < nGarbage {
		return fmt.Sprintf("DLQ holds %d of %d garbage messages", n, nGarbage)
	}
	return ""
}

func (h *harness) streamMsgs(ctx context.Context, name string) int {
	s, err := h.js.Stream(ctx, name)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return int(info.State.Msgs)
}

// readStream returns every message of a stream.
func (h *harness) readStream(ctx context.Context, name string) ([]jetstream.Msg, error) {
	s, err := h.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	n := int(info.State.Msgs)
	if n == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", name, err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		batch, err := cons.Fetch(min(1000, n-len(out)), jetstream.FetchMaxWait(3*time.Second))
		if err != nil {
			return out, fmt.Errorf("read stream %s: %w", name, err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, m)
			got++
		}
		if got == 0 {
			return out, fmt.Errorf("read stream %s: %d of %d messages", name, len(out), n)
		}
	}
	return out, nil
}

// totals are the figures of a run.
type totals struct {
	calls, answered, vol, rt     int
	unseen                       int // answered calls wholly inside an ARI gap: never seen, not billable
	expectedSec, billedSec       int64
	lostSec, doubleSec           int64
	estimated                    int
	estimatedDelta               int64 // Σ billed − true billed over estimated calls
	ledgerEntries, alerts, dlq   int
	thresholdAlerts, cdrMessages int
	gaps, natsDown               []window
}

// check verifies every invariant and writes the report.
func (h *harness) check(ctx context.Context) {
	t := h.t
	t.Helper()
	var tot totals
	h.mu.Lock()
	truth := make(map[string]sim.Expected, len(h.truth))
	for k, v := range h.truth {
		truth[k] = v
	}
	garbage := make(map[string]bool, len(h.garbage))
	for k := range h.garbage {
		garbage[k] = true
	}
	topups := make(map[string]int64, len(h.topups))
	for k, v := range h.topups {
		topups[k] = v
	}
	h.mu.Unlock()
	tot.gaps = h.gaps.list()
	tot.natsDown = h.natsDown.list()
	tolerance := snapInterval + time.Second // beyond the gap itself
	// What the billing side could not see: the ARI gaps, and the NATS
	// outages during which ingest could not report (snapshots, ends), as
	// one window where less than a snapshot interval apart (no snapshot
	// need have gone out between).
	blind := mergeWindows(append(append([]window(nil), tot.gaps...), tot.natsDown...), snapInterval)

	// 1. Every call billed exactly billed(talk), or estimated within a gap.
	cdrs := map[string]call.CDR{}
	errs := 0
	suspects := map[string]bool{} // calls a check failed for: their history is printed
	report := func(format string, args ...any) {
		errs++
		if errs <= 30 {
			t.Errorf(format, args...)
		}
	}
	suspect := func(key string, format string, args ...any) {
		suspects[key] = true
		report(format, args...)
	}
	for _, p := range h.projects {
		list, err := h.led.CDRs(ctx, p, 10_000_000)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			cdrs[c.Node+"/"+c.Channel] = c
		}
	}
	perCall := map[string]int64{} // Σ billed of each call from the ledger
	for key, e := range truth {
		tot.calls++
		if e.Node == volNode {
			tot.vol++
		} else {
			tot.rt++
		}
		c, ok := cdrs[key]
		if e.Answered.IsZero() {
			if ok {
				suspect(key, "call %s was never answered but has a CDR billing %d s", key, c.BilledSeconds)
			}
			continue
		}
		tot.answered++
		tr := h.tariffs[e.Project]
		want := tr.BilledMS(e.TalkMS)
		if !ok && unseen(e, tot.gaps) {
			tot.unseen++ // no ingest listened to Asterisk during its whole life
			continue
		}
		tot.expectedSec += want
		if !ok {
			suspect(key, "LOST: answered call %s (%s, talk %d ms, billed %d s) has no CDR", key, e.Project, e.TalkMS, want)
			tot.lostSec += want
			continue
		}
		if c.Project != e.Project {
			suspect(key, "call %s billed to %s, want %s", key, c.Project, e.Project)
		}
		if c.BilledSeconds != tr.BilledMS(c.TalkMS) {
			suspect(key, "call %s: CDR bills %d s for talk %d ms, tariff says %d", key, c.BilledSeconds, c.TalkMS, tr.BilledMS(c.TalkMS))
		}
		if !c.Estimated {
			if c.TalkMS != e.TalkMS || !c.AnsweredAt.Equal(e.Answered) || !c.EndedAt.Equal(e.Ended) {
				suspect(key, "call %s (%s): CDR talk %d ms (%s..%s), truth %d ms (%s..%s), not flagged estimated", key, e.Project,
					c.TalkMS, c.AnsweredAt.UTC().Format(time.StampMilli), c.EndedAt.UTC().Format(time.StampMilli),
					e.TalkMS, e.Answered.UTC().Format(time.StampMilli), e.Ended.UTC().Format(time.StampMilli))
			}
			continue
		}
		tot.estimated++
		tot.estimatedDelta += c.BilledSeconds - want
		if e.Node == volNode {
			suspect(key, "call %s of the virtual-time node settled as estimated (talk %d ms, truth %d ms): no ARI fault touched that node", key, c.TalkMS, e.TalkMS)
			continue
		}
		// The window that hid its end, or else any that touched its life.
		g, near := nearGap(blind, e.Ended, e.Ended, tolerance)
		if !near {
			g, near = nearGap(blind, e.Created, e.Ended, tolerance)
		}
		switch {
		case !near:
			suspect(key, "call %s settled as estimated (talk %d ms, truth %d ms) but no ARI gap touched its life %s..%s", key, c.TalkMS, e.TalkMS,
				e.Created.Format(time.StampMilli), e.Ended.Format(time.StampMilli))
		case absDur(c.EndedAt.Sub(e.Ended)) > g.to.Sub(g.from)+tolerance:
			suspect(key, "call %s: estimated end %s is %v from the true end %s, more than its gap (%v) + %v", key,
				c.EndedAt.Format(time.StampMilli), c.EndedAt.Sub(e.Ended), e.Ended.Format(time.StampMilli), g.to.Sub(g.from), tolerance)
		case c.AnsweredAt.Before(e.Created.Add(-time.Millisecond)) || c.AnsweredAt.After(e.Answered.Add(g.to.Sub(g.from)+tolerance)):
			suspect(key, "call %s: estimated answer %s outside [creation %s, answer %s + gap]", key,
				c.AnsweredAt.Format(time.StampMilli), e.Created.Format(time.StampMilli), e.Answered.Format(time.StampMilli))
		}
	}
	for key, c := range cdrs {
		if _, ok := truth[key]; !ok {
			owner, ownerKey := "none", ""
			for k2, e := range truth {
				for _, ch := range e.Channels {
					if e.Node == c.Node && ch == c.Channel {
						o, has := cdrs[k2]
						ownerKey = k2
						owner = fmt.Sprintf("%s (shape %v, its billed channel %s, answered %v, talk %d, crashed %v, has CDR %v est %v billed %d)", k2, e.Shape, e.BilledChannel, !e.Answered.IsZero(), e.TalkMS, e.Crashed, has, o.Estimated, o.BilledSeconds)
					}
				}
			}
			if ownerKey != "" {
				suspects[ownerKey] = true
			}
			suspect(key, "CDR for a channel that is not the billed channel of its call: %s (%s, %d s, estimated %v, talk %d); call: %s", key, c.Project, c.BilledSeconds, c.Estimated, c.TalkMS, owner)
		}
	}

	// 2. Ledgers: balance = top-ups − Σ billed; entries add up, per project
	// and per call; thresholds fired exactly as the ledger crossed them.
	wantFired := map[string]int{} // project/threshold -> crossings
	for _, p := range h.projects {
		pr, err := h.led.Get(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := h.led.Entries(ctx, p, 10_000_000)
		if err != nil {
			t.Fatal(err)
		}
		tot.ledgerEntries += len(entries)
		var sum, top, billed int64
		for _, en := range entries {
			sum += en.Seconds
			switch en.Kind {
			case ledger.KindTopUp, ledger.KindAdjustment:
				top += en.Seconds
			default:
				perCall[en.Call] -= en.Seconds
			}
		}
		for key, c := range cdrs {
			if c.Project == p {
				billed += c.BilledSeconds
				tot.billedSec += c.BilledSeconds
				_ = key
			}
		}
		if sum != pr.BalanceSeconds {
			t.Errorf("project %s: ledger entries sum to %d s, balance is %d s", p, sum, pr.BalanceSeconds)
		}
		if top != topups[p] {
			t.Errorf("project %s: ledger has %d s of top-ups, the test applied %d s", p, top, topups[p])
		}
		if pr.BalanceSeconds != topups[p]-billed {
			t.Errorf("project %s: balance %d s, want top-ups %d − billed %d = %d", p, pr.BalanceSeconds, topups[p], billed, topups[p]-billed)
		}
		// Walk the ledger oldest first with ledger/lua/common.lua's rule.
		armed := map[float64]bool{}
		for _, th := range pr.ThresholdsMinutes {
			armed[th] = true
		}
		for i := len(entries) - 1; i >= 0; i-- {
			en := entries[i]
			old, nw := en.Balance-en.Seconds, en.Balance
			for _, th := range pr.ThresholdsMinutes {
				lim := int64(th * 60)
				switch {
				case nw >= lim:
					if nw > old {
						armed[th] = true
					}
				case old >= lim && armed[th]:
					armed[th] = false
					wantFired[fmt.Sprintf("%s/%g", p, th)]++
				}
			}
		}
	}
	for key, e := range truth {
		c, ok := cdrs[key]
		if e.Answered.IsZero() || !ok {
			continue
		}
		got := perCall[key]
		want := h.tariffs[e.Project].BilledMS(e.TalkMS)
		if got != c.BilledSeconds {
			report("call %s: ledger debits − refunds = %d s, its CDR bills %d s", key, got, c.BilledSeconds)
		}
		if !c.Estimated {
			if got < want {
				tot.lostSec += want - got
			} else {
				tot.doubleSec += got - want
			}
		}
		delete(perCall, key)
	}
	for key, n := range perCall {
		if n != 0 {
			report("ledger entries of %d s for %q, which is no billed call", n, key)
		}
	}

	// 3. Alerts: unique ids; threshold alerts exactly the ledger's crossings.
	msgs, err := h.readStream(ctx, call.AlertsStream)
	if err != nil {
		t.Error(err)
	}
	tot.alerts = len(msgs)
	ids := map[string]int{}
	gotFired := map[string]map[int64]int{}
	for _, m := range msgs {
		a, err := alert.Decode(m.Data())
		if err != nil {
			t.Errorf("undecodable alert on %s: %v", m.Subject(), err)
			continue
		}
		ids[a.ID]++
		if ids[a.ID] == 2 {
			t.Errorf("alert %s fired twice", a.ID)
		}
		if a.Kind == alert.Threshold && a.ThresholdMinutes != nil {
			tot.thresholdAlerts++
			k := fmt.Sprintf("%s/%g", a.Project, *a.ThresholdMinutes)
			if gotFired[k] == nil {
				gotFired[k] = map[int64]int{}
			}
			gen := a.ID[strings.LastIndexByte(a.ID, '/')+1:]
			var g int64
			fmt.Sscan(gen, &g)
			gotFired[k][g]++
		}
	}
	for k, n := range wantFired {
		if len(gotFired[k]) != n {
			t.Errorf("threshold %s: the ledger crossed it %d times, %d alerts (generations %v)", k, n, len(gotFired[k]), gotFired[k])
		}
	}
	for k, gens := range gotFired {
		if wantFired[k] == 0 {
			t.Errorf("threshold %s: %d alerts but the ledger never crossed it", k, len(gens))
		}
	}

	// 4. The dead-letter stream holds exactly the garbage injected.
	dlq, err := h.readStream(ctx, call.DLQStream)
	if err != nil {
		t.Error(err)
	}
	tot.dlq = len(dlq)
	seen := map[string]bool{}
	for _, m := range dlq {
		body := string(m.Data())
		switch {
		case m.Subject() != call.DLQSubject("calls"):
			t.Errorf("dead letter on %s (%q): only garbage on minuted.dlq.calls was injected", m.Subject(), trimQ(body))
		case !garbage[body]:
			t.Errorf("dead letter that is not injected garbage: %q", trimQ(body))
		case seen[body]:
			t.Errorf("garbage dead-lettered twice: %q", trimQ(body))
		}
		seen[body] = true
	}
	for g := range garbage {
		if !seen[g] {
			t.Errorf("garbage message not dead-lettered: %q", trimQ(g))
		}
	}

	// 5. CDR stream: one exact record per call at most (estimated ones have their own id).
	cdrMsgs, err := h.readStream(ctx, call.CDRStream)
	if err != nil {
		t.Error(err)
	}
	tot.cdrMessages = len(cdrMsgs)
	perKey := map[string]int{}
	for _, m := range cdrMsgs {
		c, err := decodeCDR(m.Data())
		if err != nil {
			t.Errorf("CDR message: %v", err)
			continue
		}
		if !c.Estimated {
			k := c.Node + "/" + c.Channel
			perKey[k]++
			if perKey[k] == 2 {
				report("two exact CDR messages for %s", k)
			}
		}
	}

	// 6. Logs: no panic, no secret.
	for name, path := range h.logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		s := string(b)
		for _, bad := range []string{"panic:", "fatal error:", "DATA RACE"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s log contains %q", name, bad)
			}
		}
		for _, secret := range []string{ariPassword, adminToken} {
			if strings.Contains(s, secret) {
				t.Errorf("%s log contains a secret", name)
			}
		}
	}
	if errs > 30 {
		t.Errorf("... %d call errors in all", errs)
	}
	h.history(ctx, suspects)
	if tot.lostSec != 0 || tot.doubleSec != 0 {
		t.Errorf("lost %d s, double-billed %d s: want 0 and 0", tot.lostSec, tot.doubleSec)
	}
	h.writeReport(tot)
}

// history logs, for the calls a check failed for (at most 10), every CALLS
// event and CDR message of theirs with its stream sequence and time, so a
// failed run says which process ended a call and when.
func (h *harness) history(ctx context.Context, keys map[string]bool) {
	if len(keys) == 0 {
		return
	}
	want := map[string]bool{}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		if len(want) == 10 {
			break
		}
		want[k] = true
	}
	lines := map[string][]string{}
	for _, name := range []string{call.CallsStream, call.CDRStream} {
		msgs, err := h.readStream(ctx, name)
		if err != nil {
			h.t.Logf("history: %v", err)
		}
		for _, m := range msgs {
			var head struct{ Node, Channel string }
			if json.Unmarshal(m.Data(), &head) != nil || !want[head.Node+"/"+head.Channel] {
				continue
			}
			var seq uint64
			var at time.Time
			if md, err := m.Metadata(); err == nil {
				seq, at = md.Sequence.Stream, md.Timestamp
			}
			k := head.Node + "/" + head.Channel
			lines[k] = append(lines[k], fmt.Sprintf("  %s #%d stored %s %s: %s", name, seq, at.UTC().Format(time.StampMilli), m.Subject(), m.Data()))
		}
	}
	for k := range want {
		h.mu.Lock()
		e := h.truth[k]
		h.mu.Unlock()
		h.t.Logf("history of %s (truth: created %s, answered %s, ended %s, crashed %v):\n%s", k,
			e.Created.UTC().Format(time.StampMilli), e.Answered.UTC().Format(time.StampMilli), e.Ended.UTC().Format(time.StampMilli), e.Crashed,
			strings.Join(lines[k], "\n"))
	}
}

func decodeCDR(b []byte) (call.CDR, error) {
	var c call.CDR
	err := json.Unmarshal(b, &c)
	return c, err
}

// mergeWindows sorts ws and joins those less than slack apart.
func mergeWindows(ws []window, slack time.Duration) []window {
	slices.SortFunc(ws, func(a, b window) int { return a.from.Compare(b.from) })
	var out []window
	for _, w := range ws {
		if n := len(out); n > 0 && !w.from.After(out[n-1].to.Add(slack)) {
			if w.to.After(out[n-1].to) {
				out[n-1].to = w.to
			}
			continue
		}
		out = append(out, w)
	}
	return out
}

// unseen reports whether the call lived entirely inside one ARI gap: no
// ingest listened to its Asterisk from its creation to its end, so no event
// of it exists (as with a real Asterisk) and nothing can bill it. The gaps
// are the real-time node's; the virtual-time node has none.
func unseen(e sim.Expected, gaps []window) bool {
	if e.Node == volNode {
		return false
	}
	for _, g := range gaps {
		if !e.Created.Before(g.from) && !e.Ended.After(g.to) {
			return true
		}
	}
	return false
}

func nearGap(gaps []window, from, to time.Time, tol time.Duration) (window, bool) {
	for _, g := range gaps {
		if !to.Before(g.from.Add(-tol)) && !from.After(g.to.Add(tol)) {
			return g, true
		}
	}
	return window{}, false
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func trimQ(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// writeReport logs the fault table and the totals, and writes them as
// Markdown to MINUTED_CHAOS_REPORT when set.
func (h *harness) writeReport(tot totals) {
	var b strings.Builder
	fmt.Fprintf(&b, "### minuted chaos run (seed %d, %d virtual-time calls, faults for %v)\n\n", h.k.seed, h.k.calls, h.k.duration)
	b.WriteString("| fault | injected |\n|---|---:|\n")
	unexpected := 0
	for _, p := range h.procs {
		unexpected += len(p.unexpectedExits())
	}
	h.faults.add(fUnexpectedRst, unexpected)
	for _, f := range faultOrder {
		fmt.Fprintf(&b, "| %s | %d |\n", f, h.faults.get(f))
	}
	var gapTotal, gapMax time.Duration
	for _, g := range tot.gaps {
		d := g.to.Sub(g.from)
		gapTotal += d
		gapMax = max(gapMax, d)
	}
	b.WriteString("\n| total | value |\n|---|---:|\n")
	rows := []struct {
		k string
		v any
	}{
		{"calls (virtual-time node + real-time node)", fmt.Sprintf("%d (%d + %d)", tot.calls, tot.vol, tot.rt)},
		{"answered calls", tot.answered},
		{"answered calls wholly inside an ARI gap (never seen by any ingest, not billable)", tot.unseen},
		{"seconds billed", tot.billedSec},
		{"seconds billed(talk) by the truth", tot.expectedSec},
		{"lost seconds", tot.lostSec},
		{"double-billed seconds", tot.doubleSec},
		{"calls settled as estimated (ARI gaps)", tot.estimated},
		{"net seconds of estimates vs truth", tot.estimatedDelta},
		{"ARI gaps on the real-time node (count, total, longest)", fmt.Sprintf("%d, %v, %v", len(tot.gaps), gapTotal.Round(time.Millisecond), gapMax.Round(time.Millisecond))},
		{"NATS outages (count; an estimate's window joins them with touching ARI gaps)", len(tot.natsDown)},
		{"ledger entries", tot.ledgerEntries},
		{"alerts (threshold alerts)", fmt.Sprintf("%d (%d)", tot.alerts, tot.thresholdAlerts)},
		{"dead letters (= garbage injected)", tot.dlq},
		{"CDR messages", tot.cdrMessages},
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %v |\n", r.k, r.v)
	}
	verdict := "held"
	if h.t.Failed() {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "\nInvariants %s: every call billed exactly billed(talk) or estimated within its ARI gap and flagged; "+
		"every balance = top-ups − Σ billed; ledger entries add up per call and per project; threshold alerts = ledger crossings, no alert id twice; "+
		"DLQ = the garbage injected.\n", verdict)
	for _, p := range h.procs {
		if u := p.unexpectedExits(); len(u) > 0 {
			fmt.Fprintf(&b, "\nUnexpected exits of %s (restarted): %v\n", p.name, u)
		}
	}
	h.t.Log("\n" + b.String())
	if path := h.k.report; path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			h.t.Errorf("write MINUTED_CHAOS_REPORT %s: %v", path, err)
		}
	}
}
