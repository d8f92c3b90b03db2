package bill

import (
	"container/heap"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minuted/minuted/internal/tariff"
)

// entry is one live call in the block scheduler.
type entry struct {
	key      string
	project  string
	node     string
	channel  string
	answered time.Time
	tariff   tariff.Tariff
	block    int       // next block to debit
	due      time.Time // when block falls due
	attempts int       // consecutive hangup or error retries of this block
	// exhausted is set while the ledger refuses this call's next block
	// (read by the message workers, written by the debit worker).
	exhausted atomic.Bool

	idx       int  // heap index, -1 when not queued
	busy      bool // handed to a worker
	cancelled bool // removed while busy: the worker must not requeue it
}

type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.idx = len(*h)
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
	return callInfo{answered: e.answered, tariff: e.tariff, exhausted: e.exhausted.Load()}, true
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
		heap.Remove(&s.h, e.idx)
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
		if top.due.After(now) {
			return out, top.due.Sub(now)
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

// Run hands due entries to out until ctx ends.
func (s *scheduler) Run(ctx context.Context, out chan<- *entry) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		due, wait := s.popDue(s.now(), 256)
		for _, e := range due {
			select {
			case out <- e:
			case <-ctx.Done():
				return
			}
		}
		if len(due) > 0 && wait == 0 {
			continue
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
