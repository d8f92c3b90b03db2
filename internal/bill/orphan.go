package bill

import (
	"sync"
	"time"

	"github.com/minuted/minuted/internal/call"
)

// nodeState is what bill remembers of one node's snapshots.
type nodeState struct {
	lastRecv   time.Time           // local clock when the last snapshot arrived
	lastAt     time.Time           // At of the last snapshot
	connected  bool                // of the last snapshot
	listed     map[string]struct{} // channels of the last snapshot
	lastListed map[string]time.Time
	times      []time.Time // At of recent snapshots, ascending
	interval   time.Duration
}

// orphans decides which live calls a node no longer reports (SPEC §6).
type orphans struct {
	mu     sync.Mutex
	nodes  map[string]*nodeState
	after  time.Duration // how long a call must stay unlisted (or the node silent)
	margin time.Duration // calls answered this close before a snapshot may be missing from it
}

func newOrphans(after, margin time.Duration) *orphans {
	return &orphans{nodes: make(map[string]*nodeState), after: after, margin: margin}
}

// Observe records a snapshot received at recv (local clock).
func (o *orphans) Observe(s *call.Snapshot, recv time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ns := o.nodes[s.Node]
	if ns == nil {
		ns = &nodeState{lastListed: make(map[string]time.Time)}
		o.nodes[s.Node] = ns
	}
	at := s.At.UTC()
	if !ns.lastAt.IsZero() && !at.After(ns.lastAt) {
		ns.lastRecv = recv // an old or repeated snapshot still proves the node alive
		return
	}
	if !ns.lastAt.IsZero() {
		ns.interval = at.Sub(ns.lastAt)
	}
	ns.lastRecv, ns.lastAt, ns.connected = recv, at, s.Connected
	if !s.Connected {
		return // ingest cannot see Asterisk: its list means nothing
	}
	ns.times = append(ns.times, at)
	keep := at.Add(-2*o.after - ns.interval)
	i := 0
	for i < len(ns.times)-1 && ns.times[i].Before(keep) {
		i++
	}
	ns.times = ns.times[i:]
	ns.listed = make(map[string]struct{}, len(s.Calls))
	for _, c := range s.Calls {
		ns.listed[c.Channel] = struct{}{}
		ns.lastListed[c.Channel] = at
	}
	for ch, t := range ns.lastListed {
		if t.Before(keep) {
			delete(ns.lastListed, ch)
		}
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

// Judge says whether the live call (node, channel) answered at answered is
// an orphan at local time now, and if so at which time it is taken to have
// ended: the last snapshot that listed it, or when unknown the later of its
// answer and the first snapshot that missed it minus the snapshot interval.
// Nodes never heard from since this process started are not judged.
func (o *orphans) Judge(node, channel string, answered, now time.Time) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ns := o.nodes[node]
	if ns == nil {
		return time.Time{}, false
	}
	last, listedBefore := ns.lastListed[channel]
	if now.Sub(ns.lastRecv) >= o.after {
		// The node is silent: close what it had.
		if listedBefore {
			return maxTime(last, answered), true
		}
		return maxTime(answered, ns.lastAt), true
	}
	if !ns.connected || len(ns.times) == 0 {
		return time.Time{}, false
	}
	if _, ok := ns.listed[channel]; ok {
		return time.Time{}, false
	}
	if !answered.Before(ns.lastAt.Add(-o.margin)) {
		return time.Time{}, false // too young to be expected in the snapshot
	}
	// First snapshot that missed the call.
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
