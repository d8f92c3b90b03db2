package sim

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Expected is the truth about one generated call: what a correct biller bills.
type Expected struct {
	Index         int       // call number in generation order
	Node          string    // asterisk_id of the events
	Shape         Shape     // kind of call
	BilledChannel string    // the channel a correct biller bills (caller's ;2 half)
	Channels      []string  // every channel id of the call, in creation order
	Project       string    // project the call carries
	AttributedBy  string    // AttributeVariable or AttributeAccountcode
	Created       time.Time // creationtime of the billed channel
	Answered      time.Time // its ChannelStateChange to Up; zero if never answered
	Ended         time.Time // its ChannelDestroyed (or the crash time)
	TalkMS        int64     // Ended-Answered in ms; 0 if never answered
	Cause         int       // cause of the billed channel's ChannelDestroyed
	HungUpByREST  bool      // ended by DELETE /channels/{id} or LiveCall.Hangup
	Crashed       bool      // Crash() ended it: no ChannelDestroyed was sent
}

// GenOptions configure Generate.
type GenOptions struct {
	Calls       int     // calls to generate in total
	Rate        float64 // new calls per second; 0 = as fast as Concurrency allows
	Concurrency int     // most calls up at once; 0 = 1000
	Seed        uint64  // same seed, same calls
	// Shapes weights the kinds of call; empty means ShapeAnswered only.
	Shapes map[Shape]float64
	// Projects and their weights (equal if ProjectWeights is empty); default ["proj-a"].
	Projects       []string
	ProjectWeights []float64
	// Talk (or ring) time drawn uniformly in [MinTalk, MaxTalk]; defaults 1 s..60 s.
	// TalkDist, if set, draws it instead. Unanswered calls ring for the drawn time.
	MinTalk, MaxTalk time.Duration
	TalkDist         func(r *rand.Rand) time.Duration
	AttributeBy      string // AttributeVariable (default), AttributeAccountcode, AttributeMixed
	// VirtualTime sends events as fast as possible with timestamps from a
	// virtual clock that starts at Start (default now); otherwise every call
	// really lasts as long as its timestamps say.
	VirtualTime bool
	Start       time.Time
	Location    *time.Location   // UTC offset of the timestamps; default UTC
	OnCall      func(e Expected) // called as each call ends (from the generator's goroutine or a REST handler)
}

// GenResult is what Generate did.
type GenResult struct {
	Calls    []Expected // by Index
	Events   int64      // events emitted
	Elapsed  time.Duration
	ClockEnd time.Time // the generator's clock when the last call ended
}

func (s *Server) templates() (*templates, error) {
	s.tplOnce.Do(func() { s.tpl, s.tplErr = loadTemplates() })
	return s.tpl, s.tplErr
}

// genCall is one call being played from a template.
type genCall struct {
	s     *Server
	tpl   *template
	start time.Time // ms precision, in the timestamps' location
	loc   *time.Location
	clock func() time.Time

	ids     []string
	seqs    []string
	project string
	bridge  string

	mu      sync.Mutex
	holdMS  int64
	next    int
	lastAt  int64 // ms after start of the last scheduled event (emission order)
	cause   int   // -1: as recorded
	ended   bool
	exp     Expected
	onEnd   func(*genCall)
	wake    chan struct{}
	tsCache [2]struct {
		ms  int64
		buf []byte
	}
	key int64 // heap key: due time in unix ms (generator goroutine only)

	// Stasis authorisation (CallOptions.StasisApp): the billed channel enters
	// Stasis before event pauseIdx and waits there for continue or DELETE.
	stasisApp string
	pauseIdx  int           // -1: no Stasis
	pauseRel  int64         // recorded offset of event pauseIdx
	pauseMS   int64         // how long the call waited in Stasis (added after pauseRel)
	stasis    int           // stasisNone, stasisWaiting, stasisContinued
	inStasis  chan struct{} // closed once StasisStart is sent
}

const (
	stasisNone = iota
	stasisWaiting
	stasisContinued
)

func (s *Server) newCall(t *template, idx int, start time.Time, loc *time.Location, project, mode string, holdMS int64, clock func() time.Time) *genCall {
	start = start.Truncate(time.Millisecond).In(loc)
	c := &genCall{s: s, tpl: t, start: start, loc: loc, clock: clock, project: project, holdMS: holdMS, cause: -1,
		ids: make([]string, t.nChan), seqs: make([]string, t.nPair), wake: make(chan struct{}, 1), pauseIdx: -1}
	for i := range c.ids {
		c.ids[i] = s.nextChannelID(start)
	}
	for i := range c.seqs {
		c.seqs[i] = fmt.Sprintf("%08x", s.seqCounter.Add(1))
	}
	if t.hasBridge {
		n := s.seqCounter.Add(1)
		c.bridge = fmt.Sprintf("%08x-5157-4d00-8000-%012x", uint32(start.Unix()), n)
	}
	c.exp = Expected{Index: idx, Node: s.opts.AsteriskID, Shape: t.shape, BilledChannel: c.ids[billedSlot],
		Channels: append([]string(nil), c.ids...), Project: project, AttributedBy: mode, Cause: t.cause}
	for i := range c.tsCache {
		c.tsCache[i].ms = -1 << 62
	}
	return c
}

// shifted maps a recorded offset to this call's offset: times at or after the
// hold move by the difference between this call's hold and the recorded one.
func (c *genCall) shifted(rel int64) int64 {
	t := c.tpl
	if t.holdStart < 0 {
		return rel
	}
	end := t.holdStart + c.holdMS - t.recordedHold
	if rel >= t.holdStart {
		return end + rel - t.holdStart
	}
	return min(rel, end)
}

func (c *genCall) shiftedStasis(rel int64) int64 {
	if c.pauseIdx >= 0 && c.stasis == stasisContinued && rel >= c.pauseRel {
		return c.shifted(rel) + c.pauseMS
	}
	return c.shifted(rel)
}

func (c *genCall) at(rel int64) time.Time {
	return c.start.Add(time.Duration(c.shiftedStasis(rel)) * time.Millisecond)
}

// nextRel is when event c.next is due (ms after start), never before the previous one.
func (c *genCall) nextRel() int64 {
	return max(c.shiftedStasis(c.tpl.events[c.next].tsRel), c.lastAt)
}

func (c *genCall) appendTS(dst []byte, rel int64) []byte {
	ms := c.shiftedStasis(rel)
	for i := range c.tsCache {
		if c.tsCache[i].ms == ms {
			return append(dst, c.tsCache[i].buf...)
		}
	}
	slot := &c.tsCache[0]
	if c.tsCache[0].ms > c.tsCache[1].ms {
		slot = &c.tsCache[1]
	}
	slot.ms = ms
	slot.buf = c.start.Add(time.Duration(ms)*time.Millisecond).AppendFormat(slot.buf[:0], TimeLayout)
	return append(dst, slot.buf...)
}

func (c *genCall) render(i int) []byte {
	e := &c.tpl.events[i]
	n := 0
	for _, l := range e.lits {
		n += len(l)
	}
	dst := make([]byte, 0, n+len(e.holes)*12)
	for k, h := range e.holes {
		dst = append(dst, e.lits[k]...)
		switch h.kind {
		case hTS:
			dst = c.appendTS(dst, h.rel)
		case hID:
			dst = append(dst, c.ids[h.slot]...)
		case hSeq:
			dst = append(dst, c.seqs[h.slot]...)
		case hProject:
			dst = append(dst, c.project...)
		case hBridge:
			dst = append(dst, c.bridge...)
		case hNode:
			dst = append(dst, c.s.opts.AsteriskID...)
		case hCause:
			if c.cause >= 0 {
				dst = strconv.AppendInt(dst, int64(c.cause), 10)
			} else {
				dst = append(dst, h.def...)
			}
		case hCauseTxt:
			if c.cause >= 0 {
				dst = append(dst, CauseText(c.cause)...)
			} else {
				dst = append(dst, h.def...)
			}
		}
	}
	return append(dst, e.lits[len(e.holes)]...)
}

// emitNextLocked sends event c.next; c.mu is held. It reports whether the call is over.
func (c *genCall) emitNextLocked() bool {
	c.lastAt = c.nextRel()
	e := &c.tpl.events[c.next]
	if e.typ == "ChannelCreated" && e.slot >= 0 {
		c.s.setOwner(c.ids[e.slot], c)
	}
	b := c.render(c.next)
	m, err := scanEvent(b)
	if err != nil {
		c.s.log.Error("generated event does not scan", "err", err)
	} else {
		c.s.emit(b, m)
	}
	c.next++
	if c.next == len(c.tpl.events) {
		c.finishLocked()
		return true
	}
	return false
}

func (c *genCall) finishLocked() {
	if c.ended {
		return
	}
	c.ended = true
	t := c.tpl
	c.exp.Created = c.at(t.createdRel)
	if c.exp.Crashed {
		c.exp.Ended = c.clock().Truncate(time.Millisecond).In(c.loc)
		if t.answered && c.next > t.upIdx {
			c.exp.Answered = c.at(t.upRel)
			c.exp.TalkMS = c.exp.Ended.Sub(c.exp.Answered).Milliseconds()
		}
	} else {
		c.exp.Ended = c.at(t.endRel)
		if t.answered {
			c.exp.Answered = c.at(t.upRel)
			c.exp.TalkMS = c.exp.Ended.Sub(c.exp.Answered).Milliseconds()
		}
	}
	if c.onEnd != nil {
		c.onEnd(c)
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// hangupRequested is a DELETE on one of the call's channels: the call plays
// its recorded hangup now, with the requested cause. A call waiting in
// Stasis is refused instead: it ends without ever being answered.
func (c *genCall) hangupRequested(cause int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	if c.stasis == stasisWaiting {
		c.refuseLocked(cause)
		return
	}
	t := c.tpl
	now := c.clock().Truncate(time.Millisecond).Sub(c.start).Milliseconds()
	if t.holdStart >= 0 && c.next <= t.holdIdx {
		c.holdMS = t.recordedHold + max(now, c.lastAt) - t.holdStart
	}
	c.cause = cause
	c.exp.Cause = cause
	c.exp.HungUpByREST = true
	for !c.emitNextLocked() {
	}
}

// enterStasisLocked sends StasisStart for the billed channel; c.mu is held.
// The event keeps its application (it is not rewritten per socket), so a
// listener of another application sees whose Stasis it is.
func (c *genCall) enterStasisLocked() {
	c.stasis = stasisWaiting
	c.lastAt = max(c.lastAt, c.shifted(c.pauseRel))
	c.s.mu.Lock()
	var snap []byte
	if ch := c.s.live[c.ids[billedSlot]]; ch != nil {
		snap = ch.snapshot
	}
	c.s.mu.Unlock()
	if snap == nil {
		return
	}
	b := fmt.Appendf(nil, `{"type":"StasisStart","timestamp":"%s","args":[],"channel":%s,"asterisk_id":%q,"application":%s}`,
		c.start.Add(time.Duration(c.lastAt)*time.Millisecond).Format(TimeLayout), snap, c.s.opts.AsteriskID, jsonString(c.stasisApp))
	m, err := scanEvent(b)
	if err != nil {
		c.s.log.Error("generated StasisStart does not scan", "err", err)
		return
	}
	m.app = span{-1, -1}
	c.s.emit(b, m)
	close(c.inStasis)
}

// continued is POST /channels/{id}/continue: the call leaves Stasis and goes
// on (answer, talk) with its later timestamps moved by the time it waited.
func (c *genCall) continued() {
	c.mu.Lock()
	if c.stasis == stasisWaiting {
		c.stasis = stasisContinued
		// the rest of the call is timed from now, however late the events
		// before the pause were sent
		c.pauseMS = max(c.clock().Sub(c.start).Milliseconds()-c.shifted(c.pauseRel), 0)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// refuseLocked hangs up a call waiting in Stasis: hangup request, StasisEnd
// and ChannelDestroyed of the billed channel, then of its Local ;1 half.
func (c *genCall) refuseLocked(cause int) {
	ts := c.clock().Truncate(time.Millisecond).In(c.loc).Format(TimeLayout)
	order := []int{billedSlot, 0}
	snaps := make([][]byte, 0, len(order))
	c.s.mu.Lock()
	for _, slot := range order {
		if ch := c.s.live[c.ids[slot]]; ch != nil {
			snaps = append(snaps, ch.snapshot)
		}
	}
	c.s.mu.Unlock()
	for i, snap := range snaps {
		c.s.emitBuilt(fmt.Appendf(nil, `{"type":"ChannelHangupRequest","timestamp":"%s","cause":%d,"channel":%s,"asterisk_id":%q,"application":"capture"}`,
			ts, cause, snap, c.s.opts.AsteriskID))
		if i == 0 {
			c.s.emitBuilt(fmt.Appendf(nil, `{"type":"StasisEnd","timestamp":"%s","channel":%s,"asterisk_id":%q,"application":"capture"}`,
				ts, snap, c.s.opts.AsteriskID))
		}
		c.s.emitBuilt(fmt.Appendf(nil, `{"type":"ChannelDestroyed","timestamp":"%s","cause":%d,"cause_txt":%q,"channel":%s,"asterisk_id":%q,"application":"capture"}`,
			ts, cause, CauseText(cause), snap, c.s.opts.AsteriskID))
	}
	c.exp.Cause, c.exp.HungUpByREST = cause, true
	c.exp.Created = c.at(c.tpl.createdRel)
	c.exp.Ended, _ = time.Parse(TimeLayout, ts)
	c.ended = true
	if c.onEnd != nil {
		c.onEnd(c)
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// kill ends the call silently (Asterisk crashed).
func (c *genCall) kill(time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.exp.Crashed = true
	c.finishLocked()
}

// ---- Generate ----

// callHeap orders calls by the due time of their next event; key is written
// only by the generator's goroutine.
type callHeap []*genCall

func (h callHeap) Len() int { return len(h) }
func (h callHeap) Less(i, j int) bool {
	if h[i].key != h[j].key {
		return h[i].key < h[j].key
	}
	return h[i].exp.Index < h[j].exp.Index
}
func (h callHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *callHeap) Push(x any)   { *h = append(*h, x.(*genCall)) }
func (h *callHeap) Pop() any {
	o := *h
	c := o[len(o)-1]
	*h = o[:len(o)-1]
	return c
}

// due is when the next event is due; c.mu is held.
func (c *genCall) due() time.Time { return c.start.Add(time.Duration(c.nextRel()) * time.Millisecond) }

type picker struct {
	cum []float64
}

func newPicker(w []float64) picker {
	p := picker{cum: make([]float64, len(w))}
	total := 0.0
	for i, x := range w {
		total += max(x, 0)
		p.cum[i] = total
	}
	return p
}

func (p picker) pick(r *rand.Rand) int {
	x := r.Float64() * p.cum[len(p.cum)-1]
	return min(sort.SearchFloat64s(p.cum, x), len(p.cum)-1)
}

func (o *GenOptions) normalize() error {
	if o.Calls < 0 || o.Rate < 0 || o.Concurrency < 0 {
		return fmt.Errorf("generator: calls, rate and concurrency must not be negative")
	}
	if o.Concurrency == 0 {
		o.Concurrency = 1000
	}
	if len(o.Shapes) == 0 {
		o.Shapes = map[Shape]float64{ShapeAnswered: 1}
	}
	for sh, w := range o.Shapes {
		if sh < 0 || sh >= numShapes || w < 0 {
			return fmt.Errorf("generator: bad shape weight %v=%v", sh, w)
		}
	}
	if len(o.Projects) == 0 {
		o.Projects = []string{recordedProject}
	}
	if len(o.ProjectWeights) == 0 {
		o.ProjectWeights = make([]float64, len(o.Projects))
		for i := range o.ProjectWeights {
			o.ProjectWeights[i] = 1
		}
	}
	if len(o.ProjectWeights) != len(o.Projects) {
		return fmt.Errorf("generator: %d project weights for %d projects", len(o.ProjectWeights), len(o.Projects))
	}
	for _, p := range o.Projects {
		if !validProject(p) {
			return fmt.Errorf("generator: project %q is not a valid project id", p)
		}
	}
	if o.MinTalk <= 0 && o.MaxTalk <= 0 {
		o.MinTalk, o.MaxTalk = time.Second, time.Minute
	}
	o.MinTalk = max(o.MinTalk, time.Millisecond)
	if o.MaxTalk < o.MinTalk {
		o.MaxTalk = o.MinTalk
	}
	switch o.AttributeBy {
	case "":
		o.AttributeBy = AttributeVariable
	case AttributeVariable, AttributeAccountcode, AttributeMixed:
	default:
		return fmt.Errorf("generator: attribute-by %q is not variable, accountcode or mixed", o.AttributeBy)
	}
	if o.Location == nil {
		o.Location = time.UTC
	}
	return nil
}

func validProject(p string) bool {
	if len(p) == 0 || len(p) > 64 {
		return false
	}
	for _, c := range []byte(p) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Generate plays synthetic calls built from the recorded traces and returns
// the truth about each. It waits for a client first. Events go to whoever is
// connected at the time (and are lost if nobody is, like Asterisk's).
func (s *Server) Generate(ctx context.Context, opts GenOptions) (GenResult, error) {
	var res GenResult
	if err := opts.normalize(); err != nil {
		return res, err
	}
	tpls, err := s.templates()
	if err != nil {
		return res, err
	}
	if err := s.WaitClients(ctx, 1); err != nil {
		return res, err
	}
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	var shapes []Shape
	var sw []float64
	for sh := range numShapes {
		if w, ok := opts.Shapes[sh]; ok && w > 0 {
			shapes, sw = append(shapes, sh), append(sw, w)
		}
	}
	if len(shapes) == 0 {
		return res, fmt.Errorf("generator: every shape weight is zero")
	}
	shapePick, projPick := newPicker(sw), newPicker(opts.ProjectWeights)

	began := time.Now()
	start := opts.Start
	if start.IsZero() || !opts.VirtualTime {
		start = began
	}
	start = start.Truncate(time.Millisecond)
	var vclock atomic.Int64 // virtual now, unix ms
	vclock.Store(start.UnixMilli())
	clock := time.Now
	if opts.VirtualTime {
		clock = func() time.Time { return time.UnixMilli(vclock.Load()) }
	}
	emitted0 := s.emitted.Load()

	res.Calls = make([]Expected, opts.Calls)
	var resMu sync.Mutex
	var live atomic.Int64
	wake := make(chan struct{}, 1)
	onEnd := func(c *genCall) {
		live.Add(-1)
		resMu.Lock()
		res.Calls[c.exp.Index] = c.exp
		resMu.Unlock()
		if opts.OnCall != nil {
			opts.OnCall(c.exp)
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	newCall := func(i int, at time.Time) *genCall {
		sh := shapes[shapePick.pick(rng)]
		proj := opts.Projects[projPick.pick(rng)]
		mode := opts.AttributeBy
		if mode == AttributeMixed {
			mode = AttributeVariable
			if rng.IntN(2) == 1 {
				mode = AttributeAccountcode
			}
		}
		var hold time.Duration
		if opts.TalkDist != nil {
			hold = max(opts.TalkDist(rng), time.Millisecond)
		} else {
			hold = opts.MinTalk + time.Duration(rng.Int64N(int64(opts.MaxTalk-opts.MinTalk)+1))
		}
		mi := 0
		if mode == AttributeAccountcode {
			mi = 1
		}
		c := s.newCall(tpls.byMode[mi][sh], i, at, opts.Location, proj, mode, hold.Milliseconds(), clock)
		c.onEnd = onEnd
		return c
	}
	arrival := func(i int) time.Time {
		if opts.Rate <= 0 {
			return start
		}
		return start.Add(time.Duration(float64(i) / opts.Rate * float64(time.Second)))
	}

	var h callHeap
	started := 0
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sleepUntil := func(t time.Time) error {
		d := time.Until(t)
		if d <= 0 {
			return nil
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		case <-wake:
			timer.Stop()
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("generator stopped after %d of %d calls: %w", started, opts.Calls, err)
		}
		now := clock()
		// Start every call whose arrival is due and that fits.
		for started < opts.Calls && live.Load() < int64(opts.Concurrency) {
			arr := arrival(started)
			if len(h) > 0 && h[0].key < arr.UnixMilli() {
				break
			}
			if !opts.VirtualTime && arr.After(now) {
				break
			}
			at := arr
			if now.After(at) {
				at = now
			}
			c := newCall(started, at)
			started++
			live.Add(1)
			c.key = c.due().UnixMilli()
			heap.Push(&h, c)
		}
		if len(h) == 0 {
			if started >= opts.Calls {
				if live.Load() == 0 {
					break
				}
				// calls hung up over REST are finishing elsewhere
				if err := sleepUntil(time.Now().Add(10 * time.Millisecond)); err != nil {
					return res, err
				}
				continue
			}
			if live.Load() >= int64(opts.Concurrency) {
				if err := sleepUntil(time.Now().Add(10 * time.Millisecond)); err != nil {
					return res, err
				}
				continue
			}
			arr := arrival(started)
			if opts.VirtualTime {
				vclock.Store(max(vclock.Load(), arr.UnixMilli()))
			} else if err := sleepUntil(arr); err != nil {
				return res, err
			}
			continue
		}
		c := h[0]
		c.mu.Lock()
		if c.ended {
			c.mu.Unlock()
			heap.Pop(&h)
			continue
		}
		due := c.due()
		c.mu.Unlock()
		if opts.VirtualTime {
			vclock.Store(max(vclock.Load(), due.UnixMilli()))
		} else if due.After(time.Now()) {
			next := due
			if started < opts.Calls && live.Load() < int64(opts.Concurrency) && arrival(started).Before(next) {
				next = arrival(started)
			}
			if err := sleepUntil(next); err != nil {
				return res, err
			}
			continue
		}
		c.mu.Lock()
		done := c.ended || c.emitNextLocked()
		if !done {
			c.key = c.due().UnixMilli()
		}
		c.mu.Unlock()
		if done {
			heap.Pop(&h)
		} else {
			heap.Fix(&h, 0)
		}
	}
	res.Events = s.emitted.Load() - emitted0
	res.Elapsed = time.Since(began)
	res.ClockEnd = clock()
	return res, nil
}

// ---- a single long call ----

// CallOptions configure StartCall.
type CallOptions struct {
	Shape       Shape          // ShapeAnswered (default) or ShapeTwoLeg
	Project     string         // default "proj-a"
	AttributeBy string         // AttributeVariable (default) or AttributeAccountcode
	Location    *time.Location // default UTC
	// StasisApp, if set (ShapeAnswered only), sends the billed channel into
	// Stasis(StasisApp) once its project is set, before it answers, as a
	// dialplan that asks minuted to authorise the call does. StartCall then
	// returns once StasisStart is sent; the call waits until POST
	// /channels/{id}/continue (StasisEnd, then answer and talk) or DELETE
	// (hung up unanswered with the requested cause).
	StasisApp string
}

// LiveCall is a call that stays up until it is hung up over REST or by Hangup.
type LiveCall struct {
	c    *genCall
	done chan struct{}
	up   chan struct{}
}

// stasisPause is where a Stasis call waits: before the billed channel's
// Answer (its last ChannelDialplan before Up), after its project is set.
func stasisPause(t *template) int {
	i := t.upIdx
	for j := t.upIdx - 1; j >= 0; j-- {
		if e := t.events[j]; e.slot == billedSlot {
			if e.typ == "ChannelDialplan" {
				i = j
			}
			break
		}
	}
	return i
}

// Up is closed once the billed channel is answered.
func (l *LiveCall) Up() <-chan struct{} { return l.up }

// StartCall plays the set-up of one answered call in real time and returns once
// the billed channel is Up. The call then stays up, silent like Asterisk,
// until DELETE /channels/{id} or Hangup; Crash ends it without events.
func (s *Server) StartCall(ctx context.Context, opts CallOptions) (*LiveCall, error) {
	if opts.Shape != ShapeAnswered && opts.Shape != ShapeTwoLeg {
		return nil, fmt.Errorf("a live call must be answered or two_leg, not %s", opts.Shape)
	}
	if opts.StasisApp != "" && opts.Shape != ShapeAnswered {
		return nil, fmt.Errorf("a Stasis call must be answered, not %s", opts.Shape)
	}
	if opts.Project == "" {
		opts.Project = recordedProject
	}
	if !validProject(opts.Project) {
		return nil, fmt.Errorf("project %q is not a valid project id", opts.Project)
	}
	mi := 0
	switch opts.AttributeBy {
	case "", AttributeVariable:
		opts.AttributeBy = AttributeVariable
	case AttributeAccountcode:
		mi = 1
	default:
		return nil, fmt.Errorf("attribute-by %q is not variable or accountcode", opts.AttributeBy)
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	tpls, err := s.templates()
	if err != nil {
		return nil, err
	}
	l := &LiveCall{done: make(chan struct{})}
	const forever = int64(100 * 365 * 24 * time.Hour / time.Millisecond)
	l.c = s.newCall(tpls.byMode[mi][opts.Shape], 0, time.Now(), opts.Location, opts.Project, opts.AttributeBy, forever, time.Now)
	l.c.onEnd = func(*genCall) { close(l.done) }
	l.c.inStasis = make(chan struct{})
	if opts.StasisApp != "" {
		l.c.stasisApp = opts.StasisApp
		l.c.pauseIdx = stasisPause(l.c.tpl)
		l.c.pauseRel = l.c.tpl.events[l.c.pauseIdx].tsRel
	}
	l.up = make(chan struct{})
	go l.run(ctx, l.up)
	select {
	case <-l.up:
		return l, nil
	case <-l.c.inStasis:
		return l, nil
	case <-l.done:
		return l, nil
	case <-ctx.Done():
		return l, fmt.Errorf("starting a live call: %w", ctx.Err())
	}
}

func (l *LiveCall) run(ctx context.Context, up chan struct{}) {
	c := l.c
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	upSent := false
	for {
		c.mu.Lock()
		if c.ended {
			c.mu.Unlock()
			return
		}
		if !upSent && c.next > c.tpl.upIdx {
			upSent = true
			close(up)
		}
		if c.next == c.pauseIdx && c.stasis == stasisNone {
			c.enterStasisLocked()
		}
		if c.stasis == stasisWaiting {
			c.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-c.wake:
			}
			continue
		}
		due := c.due()
		if !due.After(time.Now()) {
			c.emitNextLocked()
			c.mu.Unlock()
			continue
		}
		c.mu.Unlock()
		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
			timer.Stop()
		case <-timer.C:
		}
	}
}

// Hangup hangs the call up now (cause 16 if cause <= 0) and returns its truth.
func (l *LiveCall) Hangup(cause int) Expected {
	if cause <= 0 {
		cause = 16
	}
	l.c.hangupRequested(cause)
	return l.Expected()
}

// Done is closed when the call has ended.
func (l *LiveCall) Done() <-chan struct{} { return l.done }

// Expected returns the call's truth; Ended and TalkMS are set once Done is closed.
func (l *LiveCall) Expected() Expected {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	e := l.c.exp
	if !l.c.ended {
		e.Created = l.c.at(l.c.tpl.createdRel)
		if l.c.next > l.c.tpl.upIdx {
			e.Answered = l.c.at(l.c.tpl.upRel)
		}
	}
	return e
}

// BilledChannel is the id of the channel a correct biller bills.
func (l *LiveCall) BilledChannel() string { return l.c.ids[billedSlot] }

// Channels are the call's channel ids in creation order.
func (l *LiveCall) Channels() []string { return append([]string(nil), l.c.ids...) }
