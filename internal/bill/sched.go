package bill

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/minuted/minuted/internal/tariff"
)

// entry is one live call in the block scheduler. With 100,000 calls up
// the entries are most of bill's memory (docs/benchmarks.md), so it is
// kept to 80 bytes: times as Unix nanoseconds, node and channel as parts of
// the key, the tariff (one of few) and the project interned, 32-bit counts.
type entry struct {
	key     string // node/channel
	project string // interned: many calls share it
	tariff  unique.Handle[tariff.Tariff]
	// answered and due (when block falls due) are Unix nanoseconds.
	answered, due int64
	block         int32 // next block to debit
	attempts      int32 // consecutive hangup or error retries of this block
	idx           int32 // heap index, -1 when not queued
	nodeLen       int32 // the node is key[:nodeLen]
	// exhausted is set while the ledger refuses this call's next block
	// (read by the message workers, written by the debit worker).
	exhausted atomic.Bool
	busy      bool // handed to a worker
	cancelled bool // removed while busy: the worker must not requeue it
}

// newEntry is the scheduler entry of a live call of node whose next block
// not yet debited is block. It keeps copies of the strings (a decoded
// message's share its memory): the key is built, the project interned.
func newEntry(project, node, channel string, answered time.Time, t tariff.Tariff, block int) *entry {
	e := &entry{
		key: node + "/" + channel, project: intern(project), tariff: unique.Make(t),
		answered: answered.UnixNano(), block: int32(block), idx: -1, nodeLen: int32(len(node)),
	}
	e.due = e.answered + int64(t.Block(block).Due)
	return e
}

func (e *entry) node() string    { return e.key[:e.nodeLen] }
func (e *entry) channel() string { return e.key[e.nodeLen+1:] }

// answeredAt is the call's answer time (UTC).
func (e *entry) answeredAt() time.Time { return time.Unix(0, e.answered).UTC() }

// dueIn is the time left until the entry's block falls due at now.
func (e *entry) dueIn(now time.Time) time.Duration { return time.Duration(e.due - now.UnixNano()) }

// intern returns the one shared copy of s: project ids repeat across
// thousands of live calls. Copies nobody holds any more are freed (package
// unique).
func intern(s string) string { return unique.Make(s).Value() }

type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = int32(i)
	h[j].idx = int32(j)
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.idx = int32(len(*h))
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}

// scheduler holds every live call this instance ticks in one min-heap keyed
// by the due time of its next block. One goroutine and one timer serve all
// calls: only calls whose block is due are handed out, so idle live calls
// cost nothing.
type scheduler struct {
	mu    sync.Mutex
	h     entryHeap
	byKey map[string]*entry
	wake  chan struct{}
	now   func() time.Time
}

func newScheduler(now func() time.Time) *scheduler {
	return &scheduler{byKey: make(map[string]*entry), wake: make(chan struct{}, 1), now: now}
}

func (s *scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Add queues e unless its call is already scheduled; it reports whether e
// was added.
func (s *scheduler) Add(e *entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.byKey[e.key]; ok {
		return false
	}
	s.byKey[e.key] = e
	heap.Push(&s.h, e)
	if e.idx == 0 {
		s.poke()
	}
	return true
}

// Has reports whether key is scheduled.
func (s *scheduler) Has(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.byKey[key]
	return ok
}

// callInfo is what the scheduler knows of a live call: enough to settle it
// without reading the ledger again.
type callInfo struct {
	answered  time.Time
	tariff    tariff.Tariff
	exhausted bool
}

// Lookup returns what is known of key's call if it is scheduled here.
func (s *scheduler) Lookup(key string) (callInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byKey[key]
	if !ok {
		return callInfo{}, false
	}
	return callInfo{answered: e.answeredAt(), tariff: e.tariff.Value(), exhausted: e.exhausted.Load()}, true
}

// Len is the number of scheduled calls.
func (s *scheduler) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byKey)
}

// Remove forgets key (the call ended); a worker holding it will drop it.
func (s *scheduler) Remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byKey[key]
	if !ok {
		return
	}
	delete(s.byKey, key)
	if e.busy {
		e.cancelled = true
		return
	}
	if e.idx >= 0 {
		heap.Remove(&s.h, int(e.idx))
	}
}

// Requeue puts a busy entry back with its (updated) block and due time,
// unless it was removed meanwhile.
func (s *scheduler) Requeue(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.busy = false
	if e.cancelled {
		return
	}
	heap.Push(&s.h, e)
	if e.idx == 0 {
		s.poke()
	}
}

// Done drops a busy entry for good.
func (s *scheduler) Done(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e.busy = false
	if !e.cancelled && s.byKey[e.key] == e {
		delete(s.byKey, e.key)
	}
	e.cancelled = true
}

// popDue returns the entries due at now (marking them busy) and the wait
// until the next one.
func (s *scheduler) popDue(now time.Time, max int) ([]*entry, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*entry
	for len(s.h) > 0 && len(out) < max {
		top := s.h[0]
		if wait := top.dueIn(now); wait > 0 {
			return out, wait
		}
		heap.Pop(&s.h)
		top.busy = true
		out = append(out, top)
	}
	if len(s.h) > 0 {
		return out, 0
	}
	return out, time.Hour
}

// Blocks falling due close together are debited together: the scheduler
// hands them out in batches of up to tickBatch (one Redis round trip each,
// ledger.DebitMany), and after handing some out it waits at least
// tickQuantum, so that the blocks falling due meanwhile make the next
// batch. A block is thus debited at most about tickQuantum after it fell
// due, never before (a hangup is billed from the ledger's own time,
// whatever the lateness).
const (
	tickBatch   = 64
	tickQuantum = 5 * time.Millisecond
)

// Run hands due entries to out, in batches of up to tickBatch, until ctx
// ends.
func (s *scheduler) Run(ctx context.Context, out chan<- []*entry) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		due, wait := s.popDue(s.now(), tickBatch)
		if len(due) > 0 {
			select {
			case out <- due:
			case <-ctx.Done():
				return
			}
			if wait == 0 {
				continue
			}
			wait = max(wait, tickQuantum)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}
