package bill

import (
	"strings"
	"sync"
	"time"

	"github.com/minuted/minuted/internal/call"
)

// maxPending bounds the complete snapshots a node may have waiting for
// bill's consumer to reach their calls_seq; beyond it the newest waiting
// one is replaced by the next, which only makes verdicts later.
const maxPending = 8

// pendingSnap is a complete connected snapshot not yet judged.
type pendingSnap struct {
	at    time.Time
	seq   uint64
	calls []call.LiveCall
}

// assembly gathers the parts of one multi-part snapshot.
type assembly struct {
	head    call.Snapshot // the first part received, without its calls (At, Gen, Parts)
	started time.Time     // local clock of the first part
	seq     uint64
	have    []bool // by part number − 1
	got     int
	calls   []call.LiveCall
}

// nodeState is what bill remembers of one node's snapshots.
//
// Snapshots are taken into account in two steps. Whatever is heard from a
// node (a complete snapshot, one part, a replayed last message) proves it
// alive: lastRecv, heardAt, and the calls it lists (lastListed). A call's
// absence is evidence only in a complete, connected snapshot, and only once
// bill's durable consumer has processed CALLS up to that snapshot's
// calls_seq (admitted): before that, the call's ended may simply be in
// bill's backlog.
type nodeState struct {
	lastRecv time.Time // local clock when anything last arrived from the node
	heardAt  time.Time // newest At the node reported, in any message
	eventAt  time.Time // newest time of a CALLS event of the node this instance processed
	maxSeq   uint64    // highest calls_seq heard

	silentRecv time.Time // start of the silence (see quietSince) when the node was found silent
	silentSeq  uint64    // CALLS sequence bill must have processed to judge it silent
	silentSet  bool

	discAt time.Time // At of the newest disconnected snapshot

	newest  time.Time // At of the newest complete snapshot admitted or pending
	pending []pendingSnap
	asm     *assembly

	// Admitted complete connected snapshots.
	lastAt time.Time
	listed map[string]struct{}
	// lastListed is, per call, the Unix nanoseconds of the newest message
	// (admitted or not) that listed it; 8 bytes a call where a time.Time
	// takes 24.
	lastListed map[string]int64
	times      []time.Time // At of recent admitted snapshots, ascending
	interval   time.Duration
}

// orphans decides which live calls a node no longer reports (SPEC §6).
type orphans struct {
	mu     sync.Mutex
	nodes  map[string]*nodeState
	after  time.Duration // how long a call must stay unlisted (or the node silent)
	margin time.Duration // calls answered this close before a snapshot may be missing from it
	floor  uint64        // CALLS sequence bill's consumer has processed (ack floor)
	// listening is when this process last (re)connected to NATS: a node's
	// silence counts only from then, since bill cannot hear snapshots while
	// it is itself cut off (its own outage is not the nodes').
	listening time.Time
}

func newOrphans(after, margin time.Duration) *orphans {
	return &orphans{nodes: make(map[string]*nodeState), after: after, margin: margin}
}

func (o *orphans) node(id string) *nodeState {
	ns := o.nodes[id]
	if ns == nil {
		ns = &nodeState{lastListed: make(map[string]int64)}
		o.nodes[id] = ns
	}
	return ns
}

// heard records what any message of a node proves: it was alive at At
// (received at recv, local clock), and so were the calls it lists.
func (ns *nodeState) heard(s *call.Snapshot, recv time.Time) {
	if recv.After(ns.lastRecv) {
		ns.lastRecv = recv
	}
	at := s.At.UTC()
	if at.After(ns.heardAt) {
		ns.heardAt = at
	}
	ns.maxSeq = max(ns.maxSeq, s.CallsSeq)
	if !s.Connected {
		return // ingest cannot see Asterisk: its list means nothing
	}
	atN := at.UnixNano()
	for _, c := range s.Calls {
		if t, ok := ns.lastListed[c.Channel]; !ok || atN > t {
			ns.lastListed[c.Channel] = atN
		}
	}
}

// quietSince is when the node's current silence began, as far as this
// process could hear it: its last message, or when bill last started
// listening (connected or reconnected to NATS), whichever is later.
func (ns *nodeState) quietSince(listening time.Time) time.Time {
	return maxTime(ns.lastRecv, listening)
}

// Listening records that bill (re)connected to NATS at now: a node's
// silence is judged only over the time since, so an outage of bill's own
// connection (or of the NATS server) never passes for the nodes' silence.
func (o *orphans) Listening(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if now.After(o.listening) {
		o.listening = now
	}
}

// Heard records a message that only proves the node alive: what was read
// back from the NODES stream of a snapshot whose parts are not all there
// (the calls it does not list prove nothing).
func (o *orphans) Heard(s *call.Snapshot, recv time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.node(s.Node).heard(s, recv)
}

// Observe records a snapshot (or one part of it) received at recv (local
// clock). Parts are assembled per snapshot (At and Gen); a newer one drops
// an incomplete older assembly. A pending snapshot (events it reflects
// not yet in CALLS) only proves the node and its listed calls alive.
func (o *orphans) Observe(s *call.Snapshot, recv time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ns := o.node(s.Node)
	ns.heard(s, recv)
	if s.Pending {
		return
	}
	at := s.At.UTC()
	if !s.Connected {
		if at.After(ns.discAt) {
			ns.discAt = at // suspends verdicts until a newer connected snapshot is admitted
		}
		if ns.asm != nil && !ns.asm.head.Newer(s) {
			ns.asm = nil
		}
		return
	}
	calls, seq := s.Calls, s.CallsSeq
	if s.Parts > 1 {
		a := ns.assemble(s, at, recv)
		if a == nil {
			return
		}
		calls, seq = a.calls, a.seq
	}
	if !at.After(ns.newest) {
		return // old or repeated: it only proved the node alive
	}
	ns.newest = at
	if len(ns.pending) == maxPending {
		// Keep the oldest (they date a call's first miss) and the newest.
		ns.pending = ns.pending[:maxPending-1]
	}
	ns.pending = append(ns.pending, pendingSnap{at: at, seq: seq, calls: calls})
	o.admit(ns)
}

// assemble adds one part and returns the complete assembly, or nil.
func (ns *nodeState) assemble(s *call.Snapshot, at, recv time.Time) *assembly {
	a := ns.asm
	if a != nil && a.head.Newer(s) {
		return nil // part of a snapshot already superseded
	}
	if a == nil || !a.head.SameGen(s) {
		if !at.After(ns.newest) {
			return nil
		}
		a = &assembly{head: *s, started: recv, have: make([]bool, s.Parts)}
		a.head.Calls = nil // the calls are kept once, in a.calls
		// Sized for every part at once (parts but the last are full): at
		// 100k live calls, growing it part by part was a fifth of bill's
		// garbage per snapshot.
		a.calls = make([]call.LiveCall, 0, s.Parts*len(s.Calls))
		ns.asm = a
	}
	if a.have[s.Part-1] {
		return nil // repeated part
	}
	a.have[s.Part-1] = true
	a.got++
	a.seq = max(a.seq, s.CallsSeq)
	a.calls = append(a.calls, s.Calls...)
	if a.got < len(a.have) {
		return nil
	}
	ns.asm = nil
	return a
}

// admit moves the pending snapshots bill's consumer has caught up with
// (calls_seq ≤ floor, or 0 from an ingest that does not send it) into the
// judged state, oldest first. A pending snapshot older than an admissible
// one is dropped if not admissible itself.
func (o *orphans) admit(ns *nodeState) {
	last := -1
	for i, p := range ns.pending {
		if p.seq <= o.floor {
			last = i
		}
	}
	for i := 0; i <= last; i++ {
		if p := ns.pending[i]; p.seq <= o.floor {
			o.judgeable(ns, p)
		}
	}
	n := copy(ns.pending, ns.pending[last+1:])
	clear(ns.pending[n:])
	ns.pending = ns.pending[:n]
}

// judgeable makes p the node's latest admitted snapshot.
func (o *orphans) judgeable(ns *nodeState, p pendingSnap) {
	if !ns.lastAt.IsZero() {
		ns.interval = p.at.Sub(ns.lastAt)
	}
	ns.lastAt = p.at
	ns.times = append(ns.times, p.at)
	keep := p.at.Add(-2*o.after - ns.interval)
	i := 0
	for i < len(ns.times)-1 && ns.times[i].Before(keep) {
		i++
	}
	ns.times = ns.times[i:]
	if ns.listed == nil {
		ns.listed = make(map[string]struct{}, len(p.calls))
	}
	clear(ns.listed) // reused: at 100k live calls a new map per snapshot is most of bill's garbage
	for _, c := range p.calls {
		ns.listed[c.Channel] = struct{}{}
	}
	keepN := keep.UnixNano()
	for ch, t := range ns.lastListed {
		if t < keepN {
			delete(ns.lastListed, ch)
		}
	}
}

// Refresh is called before each round of verdicts with the consumer's
// ack floor (every CALLS message up to it is processed) and the stream's
// last sequence: it admits the snapshots the floor now covers, drops
// assemblies still incomplete after OrphanAfter, and notes, for a node
// found silent, the stream's end: the node is judged silent only once bill
// has processed up to there, so its last events are never still in the
// backlog.
func (o *orphans) Refresh(floor, streamLast uint64, now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.floor = max(o.floor, floor)
	for _, ns := range o.nodes {
		o.admit(ns)
		if ns.asm != nil && now.Sub(ns.asm.started) >= o.after {
			ns.asm = nil
		}
		quiet := ns.quietSince(o.listening)
		if now.Sub(quiet) >= o.after && (!ns.silentSet || !ns.silentRecv.Equal(quiet)) {
			ns.silentSet, ns.silentRecv, ns.silentSeq = true, quiet, max(streamLast, ns.maxSeq)
		}
	}
}

// Alive records that a CALLS event of node stamped at was processed. The
// node's ingest publishes in order, so every call of the node still live in
// the ledger once bill has processed the stream past that event was still
// up at that time: it bounds from below the end of a silent node's calls
// answered after its last snapshot.
func (o *orphans) Alive(node string, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ns := o.nodes[node]; ns != nil && at.After(ns.eventAt) {
		ns.eventAt = at
	}
}

// Any reports whether a snapshot was ever seen.
func (o *orphans) Any() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.nodes) > 0
}

// Forget drops what is known of a settled call.
func (o *orphans) Forget(node, channel string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if ns := o.nodes[node]; ns != nil {
		delete(ns.lastListed, channel)
	}
}

// Suspects returns the keys (node/channel, as the ledger lists live calls)
// of the calls Judge might find orphaned at now, whatever their answer
// time: all but those of nodes never heard from and those a node that is
// not silent lists in its latest admitted snapshot. Only these need to be
// read from the ledger and judged. A node id may itself contain "/", so a
// key is tried against every node it could belong to.
func (o *orphans) Suspects(keys []string, now time.Time) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, k := range keys {
		// Every "/" may end the node id: the key is a suspect if any node
		// it could belong to might close it.
		for i := strings.IndexByte(k, '/'); i >= 0; {
			if ns := o.nodes[k[:i]]; ns != nil {
				if _, listed := ns.listed[k[i+1:]]; !listed || now.Sub(ns.quietSince(o.listening)) >= o.after {
					out = append(out, k)
					break
				}
			}
			j := strings.IndexByte(k[i+1:], '/')
			if j < 0 {
				break
			}
			i += j + 1
		}
	}
	return out
}

// Judge says whether the live call (node, channel) answered at answered is
// an orphan at local time now, and if so at which time it is taken to have
// ended: the last time a message of the node listed it, or when it was
// never listed the later of its answer and the first admitted snapshot
// that missed it minus the snapshot interval (silent node: the latest of
// its answer, the node's newest report and its newest event processed).
// Nodes never heard from since this process started are not judged.
func (o *orphans) Judge(node, channel string, answered, now time.Time) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ns := o.nodes[node]
	if ns == nil {
		return time.Time{}, false
	}
	lastN, listedBefore := ns.lastListed[channel]
	last := time.Unix(0, lastN).UTC()
	if quiet := ns.quietSince(o.listening); now.Sub(quiet) >= o.after {
		// The node is silent: close what it had, once bill has processed
		// everything the node could have published.
		if !ns.silentSet || !ns.silentRecv.Equal(quiet) || o.floor < ns.silentSeq {
			return time.Time{}, false
		}
		if listedBefore {
			return maxTime(last, answered), true
		}
		// Last time the node was known alive: its newest report, or its
		// newest event processed (the silent verdict waits until bill
		// has processed everything it published).
		return maxTime(answered, maxTime(ns.heardAt, ns.eventAt)), true
	}
	if len(ns.times) == 0 || !ns.lastAt.After(ns.discAt) {
		return time.Time{}, false
	}
	if _, ok := ns.listed[channel]; ok {
		return time.Time{}, false
	}
	if !answered.Before(ns.lastAt.Add(-o.margin)) {
		return time.Time{}, false // too young to be expected in the snapshot
	}
	// First admitted snapshot that missed the call.
	from := answered.Add(o.margin)
	if listedBefore {
		from = last.Add(time.Nanosecond)
	}
	missed := ns.times[len(ns.times)-1]
	for _, t := range ns.times {
		if !t.Before(from) {
			missed = t
			break
		}
	}
	if ns.lastAt.Sub(missed) < o.after {
		return time.Time{}, false
	}
	if listedBefore {
		return maxTime(last, answered), true
	}
	return maxTime(answered, missed.Add(-ns.interval)), true
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
