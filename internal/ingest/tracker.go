// Package ingest turns the ARI events of one Asterisk into CALLS messages:
// a pure Tracker decides which channel is billed to which project (SPEC
// §3), and a Service runs it against a live websocket, reconciles after
// gaps, publishes snapshots and obeys hangup commands.
//
// # Adopting live calls (start-up and every reconnect)
//
// After a gap, GET /channels is all ingest knows of the calls that went on
// meanwhile, and a channel snapshot does not say which call a channel
// belongs to. The rule, in order:
//
//  1. Channels already tracked keep their call, project and answer time.
//  2. At start-up, the node's last snapshot (NODES stream, the previous
//     process's, read with Service Options.JS) names the billed channels:
//     each that is still live is adopted as that billed call, with the
//     exact project and answer time it listed (flagged estimated only if
//     the previous process had estimated it, see EstimatedSubject), and no
//     other channel of its group is billed. A listed channel no longer live
//     hung up while nobody watched (its own ended may have been lost with
//     the previous process's publish buffer): it ends, estimated, at the
//     snapshot's time.
//  3. Any other live channel is attributed by the normal rules only when
//     that is unambiguous: a leg created by Dial()/Queue() (dialplan app
//     AppDial/AppQueue, data "(Outgoing Line)", which Asterisk shows for the
//     leg's whole life) is a dialled leg and never billed by accountcode,
//     although it inherits the caller's accountcode; the two halves of a
//     Local channel are one call; with CHANNEL(linkedid) in channelvars all
//     legs of one linkedid are one call. So an accountcode-only channel that
//     shares its accountcode with another adopted channel of the same
//     linkedid or Local pair is not billed twice.
//  4. An Up channel adopted this way was answered at an unknown time: the
//     earliest consistent with what was seen (its creation, its last event,
//     the disconnect, or the previous snapshot if it was listed unanswered),
//     flagged answer_estimated. The same holds when the answer event itself
//     fell in a gap and a later event first shows the channel Up.
package ingest

import (
	"path"
	"sort"
	"strings"
	"time"
	"unique"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
)

// Attribution says how a channel's project is found, first match wins:
// the channel variable, the accountcode, the context/exten rules.
type Attribution struct {
	Variable       string // "" disables mode 1
	UseAccountcode bool
	Rules          []config.Rule
}

// LinkedIDVar is the channelvars entry that groups all legs of one call
// when listed in ari.conf.
const LinkedIDVar = "CHANNEL(linkedid)"

// EndSuperseded is the end_reason of a candidate channel that lost its
// call to another channel of the same call that answered first.
const EndSuperseded = "superseded"

// TrackerStats counts what the tracker decided.
type TrackerStats struct {
	Unbilled       int64 // calls published to _unbilled
	InvalidProject int64 // channels whose project id failed call.ValidProject
	Estimated      int64 // ended events with an estimated end
	// Reattributed counts billed channels whose project or attribution
	// was upgraded by a higher-priority source before answer.
	Reattributed int64
	// LateProject counts channels whose attribution variable named another
	// project after the call was answered (the call stays where it is).
	LateProject int64
}

// channel is what the tracker keeps of one live channel: only the fields
// attribution and the CALLS messages read. With 100,000 calls up this is
// most of ingest's memory (docs/benchmarks.md), so it is kept to 128 bytes
// (TestChannelSize): of the channel variables it keeps only the two it
// reads, what attribution reads is one interned value (inputs), the
// project is interned, the mode a byte, and what few channels need is kept
// apart (rare).
type channel struct {
	id, name string
	// linkedID is the channel's CHANNEL(linkedid) when ari.conf lists it.
	linkedID string
	proj     unique.Handle[string] // the project (see project), 0 for none
	in       unique.Handle[inputs]
	created  stamp
	lastSeen stamp
	upAt     stamp // zero until Up
	g        *group
	next     *channel     // in g
	rare     *channelRare // nil for most channels
	// pair is the other half of a Local channel once both are seen; an
	// unpaired half waits in Tracker.byBase.
	pair        *channel
	by          byMode
	upEstimated bool
	dialled     bool
	// billing state of this channel
	started, answered, closed bool
}

// inputs is what attribution reads of a channel besides whether it was
// dialled: the attribution variable (Attribution.Variable), the
// accountcode and the dialplan location. The same few values repeat across
// thousands of live calls, so a channel holds one interned copy (package
// unique frees those nobody holds): 8 bytes where four strings take 64.
type inputs struct {
	attrVar, acct, context, exten string
}

// project is the project c is billed (or would be billed) to, "" for none.
func (c *channel) project() string {
	if c.proj == (unique.Handle[string]{}) {
		return ""
	}
	return c.proj.Value()
}

// setProject sets c's project and how it was found.
func (c *channel) setProject(p, by string) {
	c.by = modeOf(by)
	switch {
	case p == "":
		c.proj = unique.Handle[string]{}
	case p != c.project():
		c.proj = unique.Make(p)
	}
}

// inputs returns what attribution reads of c.
func (c *channel) inputs() inputs {
	if c.in == (unique.Handle[inputs]{}) {
		return inputs{}
	}
	return c.in.Value()
}

// setInputs replaces what attribution reads of c (strings are copied: a
// decoded event's share its websocket frame).
func (c *channel) setInputs(in inputs) {
	switch {
	case in == inputs{}:
		c.in = unique.Handle[inputs]{}
	case in != c.inputs():
		c.in = unique.Make(in)
	}
}

// byMode is how a channel's project was found (call.ByVariable, ...) in
// the one byte a channel keeps of it; byNone for no project.
type byMode uint8

const (
	byNone byMode = iota
	byVariable
	byAccountcode
	byRule
)

func modeOf(by string) byMode {
	switch by {
	case call.ByVariable:
		return byVariable
	case call.ByAccountcode:
		return byAccountcode
	case call.ByRule:
		return byRule
	}
	return byNone
}

// String is the mode's attributed_by.
func (m byMode) String() string {
	switch m {
	case byVariable:
		return call.ByVariable
	case byAccountcode:
		return call.ByAccountcode
	case byRule:
		return call.ByRule
	}
	return ""
}

// channelRare is what only some channels need: a seeded call, a reported
// project problem, minuted's own hangup.
type channelRare struct {
	// seedProject is the project the node's last snapshot billed this
	// channel to (see Seed); it wins over every attribution rule.
	seedProject, seedBy string
	seedAnswered        bool
	badProject          string
	lateProject         string // last late variable value reported
	endReason           string // set by SetEndReason before minuted hangs up
}

// stamp is a time as the tracker keeps it: Unix milliseconds (ARI's
// precision), 0 for none; 8 bytes where a time.Time takes 24, three per
// channel.
type stamp int64

func stampOf(t time.Time) stamp {
	if t.IsZero() {
		return 0
	}
	return stamp(t.UnixMilli())
}

// Time is s in UTC (the zero time.Time for none).
func (s stamp) Time() time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(s)).UTC()
}

func (s stamp) IsZero() bool        { return s == 0 }
func (s stamp) Before(u stamp) bool { return s < u }
func (s stamp) After(u stamp) bool  { return s > u }
func (s stamp) Equal(u stamp) bool  { return s == u }

// more returns c's rare fields, creating them for a write.
func (c *channel) more() *channelRare {
	if c.rare == nil {
		c.rare = &channelRare{}
	}
	return c.rare
}

// seedProject is the project the node's last snapshot billed c to, "" if none.
func (c *channel) seedProject() string {
	if c.rare == nil {
		return ""
	}
	return c.rare.seedProject
}

// group is one call: the channels known to belong together, a list
// through channel.next in the order they joined (the first eligible one is
// billed when none has answered).
type group struct {
	head, tail   *channel
	billed       *channel // current billed channel (may have ended)
	n            int32    // members
	unbilledSent bool
}

// Tracker is a pure state machine: events in, CALLS messages out. It does
// no I/O and reads no clock; it is not safe for concurrent use.
type Tracker struct {
	node  string
	fixed bool
	attr  Attribution
	chans map[string]*channel
	// byBase holds the Local halves whose other half is not (or no
	// longer) tracked, by localBase: paired halves point at each other.
	byBase   map[string]*channel
	byLinked map[string]*channel
	gone     map[string]struct{} // recently destroyed ids, to ignore stragglers
	goneRing []string
	goneNext int

	connected      bool
	disconnectedAt time.Time
	// sinceConnect holds the channels an event named after the websocket
	// (re)connected and before Reconcile (while not connected, or
	// starting). They existed after the connection, so the list Reconcile
	// gets, which may have been taken before their first event, is no
	// evidence that they are gone: their own events tell their end.
	sinceConnect map[string]struct{}
	// seed is the previous process's last snapshot (Seed), consumed by the
	// next Reconcile; seedAt is its time.
	seed    map[string]call.LiveCall
	seedAt  time.Time
	seedEst map[string]bool // seeded calls whose answer was an estimate
	// exactUp is true while Handle applies an event whose "Up" state is the
	// answer itself (ChannelStateChange, ChannelCreated).
	exactUp bool
	// starting is set from Starting until the first Reconcile.
	starting bool
	stats    TrackerStats
	// OnInvalid, if set, is told about each channel with a bad project id.
	OnInvalid func(channel, project string)
	// OnLateProject, if set, is told when the attribution variable of an
	// answered, billed channel names another project than the one billed.
	OnLateProject func(channel, billed, late string)
}

const goneMemory = 4096

// NewTracker returns a tracker for node (empty: learnt from the events'
// asterisk_id).
func NewTracker(node string, a Attribution) *Tracker {
	return &Tracker{
		node: node, fixed: node != "", attr: a, connected: true,
		chans: map[string]*channel{}, byBase: map[string]*channel{}, byLinked: map[string]*channel{},
		gone: map[string]struct{}{}, goneRing: make([]string, goneMemory),
	}
}

// Node is the node id in use ("" until known).
func (t *Tracker) Node() string { return t.node }

// SetNode sets the node id if no override was configured (e.g. from
// GET /asterisk/info before any event arrived).
func (t *Tracker) SetNode(id string) {
	if !t.fixed && id != "" {
		t.node = id
	}
}

// Stats returns the counters.
func (t *Tracker) Stats() TrackerStats { return t.stats }

// Live is the number of tracked channels.
func (t *Tracker) Live() int { return len(t.chans) }

// Handle applies one event and returns the messages it causes.
func (t *Tracker) Handle(ev ari.Event) []call.Event {
	if !t.fixed && ev.AsteriskID != "" {
		t.node = keep(t.node, ev.AsteriskID, strings.Clone)
	}
	var out []call.Event
	t.exactUp = ev.Type == ari.ChannelStateChange || ev.Type == ari.ChannelCreated
	switch ev.Type {
	case ari.Dial:
		if ev.Peer == nil {
			return nil
		}
		peer := t.observe(ev.Peer, ev.Timestamp, &out)
		if peer == nil {
			return nil
		}
		if ev.Caller != nil {
			if caller := t.observe(ev.Caller, ev.Timestamp, &out); caller != nil {
				t.markDialled(peer)
				t.union(caller.g, peer.g, ev.Timestamp, &out)
			}
		}
		t.evaluate(peer.g, ev.Timestamp, &out)
	case ari.ChannelVarset:
		if ev.Channel == nil {
			return nil
		}
		c := t.observe(ev.Channel, ev.Timestamp, &out)
		if c == nil {
			return nil
		}
		t.setVar(c, ev.Variable, ev.Value)
		t.evaluate(c.g, ev.Timestamp, &out)
	case ari.ChannelDestroyed:
		if ev.Channel == nil {
			return nil
		}
		c := t.observe(ev.Channel, ev.Timestamp, &out)
		if c == nil {
			return nil
		}
		t.evaluate(c.g, ev.Timestamp, &out)
		t.end(c, ev.Timestamp, hangup{cause: ev.Cause, txt: ev.CauseTxt}, &out)
	default:
		if ev.Channel == nil {
			return nil
		}
		c := t.observe(ev.Channel, ev.Timestamp, &out)
		if c == nil {
			return nil
		}
		t.evaluate(c.g, ev.Timestamp, &out)
	}
	return out
}

// observe creates or refreshes the channel from an event's snapshot; nil
// for a channel already destroyed.
func (t *Tracker) observe(s *ari.Channel, at time.Time, out *[]call.Event) *channel {
	if _, dead := t.gone[s.ID]; dead {
		return nil
	}
	c := t.chans[s.ID]
	if c == nil {
		c = &channel{id: strings.Clone(s.ID), created: stampOf(s.CreationTime)}
		if c.created.IsZero() {
			c.created = stampOf(at)
		}
		c.g = &group{head: c, tail: c, n: 1}
		t.chans[c.id] = c // not s.ID: that would keep the whole frame alive
		if lc, ok := t.seed[s.ID]; ok {
			t.applySeed(c, s, lc)
		}
	}
	if !t.connected || t.starting {
		if t.sinceConnect == nil {
			t.sinceConnect = make(map[string]struct{})
		}
		t.sinceConnect[c.id] = struct{}{}
	}
	prevSeen := c.lastSeen
	if prevSeen.IsZero() {
		prevSeen = c.created
	}
	now := stampOf(at)
	if now.After(c.lastSeen) {
		c.lastSeen = now
	}
	in := c.inputs()
	in.acct = s.AccountCode
	if s.Context != "" || s.Exten != "" {
		in.context, in.exten = s.Context, s.Exten
	}
	c.setInputs(in)
	for _, k := range [...]string{t.attr.Variable, LinkedIDVar} {
		if v, ok := s.Vars[k]; ok && k != "" {
			t.setVar(c, k, v)
		}
	}
	if s.Name != "" && c.name != s.Name {
		old := c.name
		c.name = strings.Clone(s.Name)
		t.joinLocal(c, old, at, out)
	}
	if id := c.linkedID; id != "" {
		if other := t.byLinked[id]; other == nil {
			t.byLinked[id] = c
		} else if other != c {
			t.union(other.g, c.g, at, out)
		}
	}
	if s.Dialled() && !c.dialled {
		t.markDialled(c)
	}
	if s.State == "Up" && c.upAt.IsZero() {
		c.upAt = now
		if (!t.connected || t.starting) && !t.exactUp {
			// The answer fell in an ARI gap: this event only shows the
			// channel already Up. It was answered after it was last seen
			// (and after the disconnect): the earliest such time, flagged.
			c.upAt, c.upEstimated = prevSeen, true
			if d := stampOf(t.disconnectedAt); d.After(c.upAt) {
				c.upAt = d
			}
			if c.upAt.IsZero() || c.upAt.After(now) {
				c.upAt = now
			}
		}
	}
	return c
}

// setVar records the channel variables the tracker reads (the attribution
// variable and CHANNEL(linkedid)); others are not kept.
func (t *Tracker) setVar(c *channel, name, value string) {
	if name == "" {
		return
	}
	if name == t.attr.Variable {
		in := c.inputs()
		in.attrVar = value
		c.setInputs(in)
	}
	if name == LinkedIDVar {
		c.linkedID = keep(c.linkedID, value, strings.Clone)
	}
}

// keep returns s for a field whose value was old: old itself when equal,
// else copy(s). Decoded events share the memory of their websocket frame
// (ari.Decode); a tracked channel must not keep whole frames alive.
func keep(old, s string, copy func(string) string) string {
	if old == s {
		return old
	}
	return copy(s)
}

// localBase returns "Local/x@ctx-0000000a" for a Local half, "" otherwise.
func localBase(name string) string {
	if !strings.HasPrefix(name, "Local/") || len(name) < 3 {
		return ""
	}
	if s := name[len(name)-2:]; s == ";1" || s == ";2" {
		return name[:len(name)-2]
	}
	return ""
}

// joinLocal pairs c, just named (formerly old), with the other half of its
// Local channel if that waits in byBase, else makes it wait there. Only
// unpaired halves are indexed: a third channel named like a pair whose two
// halves are still tracked waits for a partner of its own.
func (t *Tracker) joinLocal(c *channel, old string, at time.Time, out *[]call.Event) {
	if ob := localBase(old); ob != "" && t.byBase[ob] == c {
		delete(t.byBase, ob)
	}
	b := localBase(c.name)
	if b == "" || c.pair != nil {
		return
	}
	o := t.byBase[b]
	if o == nil || o == c {
		t.byBase[b] = c
		return
	}
	delete(t.byBase, b)
	c.pair, o.pair = o, c
	if o.dialled || c.dialled {
		o.dialled, c.dialled = true, true
	}
	t.union(o.g, c.g, at, out)
}

// unpair forgets c's Local pairing: its other half, still tracked, waits
// for a partner again.
func (t *Tracker) unpair(c *channel) {
	if b := localBase(c.name); b != "" && t.byBase[b] == c {
		delete(t.byBase, b)
	}
	if o := c.pair; o != nil {
		o.pair, c.pair = nil, nil
		if b := localBase(o.name); b != "" && t.byBase[b] == nil {
			t.byBase[b] = o
		}
	}
}

func (t *Tracker) markDialled(c *channel) {
	c.dialled = true
	if c.pair != nil {
		c.pair.dialled = true
	}
}

// union merges two groups.
func (t *Tracker) union(a, b *group, at time.Time, out *[]call.Event) {
	if a == b {
		return
	}
	if a.n < b.n {
		a, b = b, a
	}
	for m := b.head; m != nil; m = m.next {
		m.g = a
	}
	a.tail.next, a.tail, a.n = b.head, b.tail, a.n+b.n
	b.head, b.tail, b.n = nil, nil, 0
	a.unbilledSent = a.unbilledSent || b.unbilledSent
	switch {
	case a.billed == nil:
		a.billed = b.billed
	case b.billed == nil:
	default:
		// Two candidates in one call: keep the answered (or earlier) one;
		// the other is superseded if it has not answered, else both stay
		// billed (answered calls are never taken back).
		keep, drop := a.billed, b.billed
		if !keep.answered && (drop.answered || drop.created.Before(keep.created)) {
			keep, drop = drop, keep
		}
		a.billed = keep
		if !drop.answered && !drop.closed {
			t.supersede(drop, at, out)
		}
	}
}

// attribute finds c's project by the configured modes, first match wins.
func (t *Tracker) attribute(c *channel, callerSideHasProject bool) (project, by string) {
	if p := c.seedProject(); p != "" {
		return p, c.rare.seedBy
	}
	return t.attributeInputs(c.inputs(), c.dialled, callerSideHasProject)
}

// attributeInputs is attribute for a channel not seeded.
func (t *Tracker) attributeInputs(in inputs, dialled, callerSideHasProject bool) (project, by string) {
	if t.attr.Variable != "" {
		if v := in.attrVar; v != "" {
			if !dialled || !callerSideHasProject {
				return v, call.ByVariable
			}
			return "", ""
		}
	}
	if dialled {
		return "", ""
	}
	if t.attr.UseAccountcode && in.acct != "" {
		return in.acct, call.ByAccountcode
	}
	for _, r := range t.attr.Rules {
		if match(r.Context, in.context) && match(r.Exten, in.exten) && (r.Context != "" || r.Exten != "") {
			return r.Project, call.ByRule
		}
	}
	return "", ""
}

func match(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}

// evaluate re-attributes the members of g and moves the billed channel:
// started when a candidate appears, answered when it is Up, a candidate
// superseded by another eligible channel of the call that answered first.
func (t *Tracker) evaluate(g *group, at time.Time, out *[]call.Event) {
	callerSide := false
	for m := g.head; m != nil; m = m.next {
		if !m.dialled && (m.project() != "" || t.nonDialledProject(m)) {
			callerSide = true
			break
		}
	}
	var eligible []*channel
	for m := g.head; m != nil; m = m.next {
		if m.started && !m.closed {
			t.reattribute(m, callerSide, out)
		}
		if !m.started && !m.closed {
			p, by := t.attribute(m, callerSide)
			if p != "" && !call.ValidProject(p) {
				if m.rare == nil || m.rare.badProject != p {
					m.more().badProject = p
					t.stats.InvalidProject++
					if t.OnInvalid != nil {
						t.OnInvalid(m.id, p)
					}
				}
				p, by = "", ""
			}
			m.setProject(p, by)
		}
		if m.project() != "" && !m.closed && (m.started || m.seedProject() != "" || !m.dialled || m.by == byVariable && !callerSide) &&
			!t.halfAlone(m) {
			eligible = append(eligible, m)
		}
	}
	b := g.billed
	if b != nil && !b.answered && !b.closed && b.dialled && !t.attributed(b, callerSide) {
		// A dialled leg that no longer gets a project loses it before
		// answer: to a caller side that got one, or, billed by accountcode
		// or rule, because it was started before it was known to be dialled
		// (an ingest that started mid-call saw its Local half, or the Dial,
		// only later).
		t.supersede(b, at, out)
		g.billed, b = nil, nil
	}
	if b != nil && !b.answered && !b.closed {
		// first answered eligible channel wins
		var first *channel
		for _, m := range eligible {
			if !m.upAt.IsZero() && (first == nil || m.upAt.Before(first.upAt)) {
				first = m
			}
		}
		if first != nil && first != b {
			t.supersede(b, at, out)
			b = nil
			g.billed = nil
			t.start(first, out)
			g.billed = first
			b = first
		}
	}
	if g.billed == nil {
		var pick *channel
		for _, m := range eligible {
			if m.started {
				continue
			}
			if m.seedProject() != "" {
				pick = m // billed by the previous process: it stays the call
				break
			}
			if pick == nil || (!m.upAt.IsZero() && (pick.upAt.IsZero() || m.upAt.Before(pick.upAt))) {
				pick = m
			}
		}
		if pick != nil {
			t.start(pick, out)
			g.billed = pick
		}
	}
	if b := g.billed; b != nil && b.started && !b.answered && !b.closed && !b.upAt.IsZero() {
		b.answered = true
		*out = append(*out, t.msg(b, call.Answered))
	}
}

// rank orders the attribution modes: lower wins (SPEC §3).
func rank(by string) int {
	switch by {
	case call.ByVariable:
		return 0
	case call.ByAccountcode:
		return 1
	case call.ByRule:
		return 2
	}
	return 3
}

// reattribute applies "first match wins" to a started channel whose
// attribution changed. Until the call is answered, a source of the same or
// higher priority moves it (accountcode X, then BILLING_PROJECT=Y: billed
// to Y by variable); when the project changes, started goes out again on
// the new project's subject (see msgID). After answer the project is fixed,
// since blocks are already being debited from it: a variable naming another
// project is only reported (OnLateProject, Stats.LateProject). An invalid
// or empty result never moves a started call.
func (t *Tracker) reattribute(m *channel, callerSide bool, out *[]call.Event) {
	p, by := t.attribute(m, callerSide)
	if p == "" || !call.ValidProject(p) || p == m.project() && modeOf(by) == m.by {
		return
	}
	if m.answered {
		if by == call.ByVariable && p != m.project() && (m.rare == nil || p != m.rare.lateProject) {
			m.more().lateProject = p
			t.stats.LateProject++
			if t.OnLateProject != nil {
				t.OnLateProject(m.id, m.project(), p)
			}
		}
		return
	}
	if rank(by) > rank(m.by.String()) {
		return
	}
	moved := p != m.project()
	m.setProject(p, by)
	t.stats.Reattributed++
	if moved {
		*out = append(*out, t.msg(m, call.Started))
	}
}

// halfAlone reports whether m is a Local half seen without its other half
// before the first Reconcile after a (re)connection, and not already billed
// or seeded. Its other half may be the dialled one (the ;1 half of a
// dialled Local channel), which would make it a dialled leg: it waits for
// the channel list (or the other half's events) before it can be billed.
// Connected, both halves are always seen, created together. (A call whose
// Local half alone this process sees, only at its hangup, and that the
// previous process's snapshot does not list, is thus left to bill's
// orphan judgement: ended, estimated, from the node's snapshots.)
func (t *Tracker) halfAlone(m *channel) bool {
	return (!t.connected || t.starting) && m.pair == nil && localBase(m.name) != "" && !m.started && m.seedProject() == ""
}

// attributed reports whether m gets a project now.
func (t *Tracker) attributed(m *channel, callerSide bool) bool {
	p, _ := t.attribute(m, callerSide)
	return p != ""
}

func (t *Tracker) nonDialledProject(m *channel) bool {
	if m.dialled {
		return false
	}
	p, _ := t.attribute(m, false)
	return p != "" && call.ValidProject(p)
}

func (t *Tracker) start(c *channel, out *[]call.Event) {
	c.started = true
	*out = append(*out, t.msg(c, call.Started))
}

func (t *Tracker) supersede(c *channel, at time.Time, out *[]call.Event) {
	c.closed = true
	e := t.msg(c, call.Ended)
	e.AnsweredAt = nil
	end := at
	e.EndedAt = &end
	e.TalkMS = 0
	e.EndReason = EndSuperseded
	*out = append(*out, e)
}

// hangup is how a channel ended: the cause of its ChannelDestroyed, or
// estimated when it vanished unseen.
type hangup struct {
	cause     int
	txt       string
	estimated bool
}

// end closes c at `at` (its ChannelDestroyed, or the estimate) and forgets it.
func (t *Tracker) end(c *channel, at time.Time, h hangup, out *[]call.Event) {
	g := c.g
	switch {
	case c.started && !c.closed:
		c.closed = true
		e := t.msg(c, call.Ended)
		end := at
		e.EndedAt = &end
		e.TalkMS = e.Talk()
		e.Cause, e.CauseTxt, e.Estimated = h.cause, h.txt, h.estimated
		if c.rare != nil {
			e.EndReason = c.rare.endReason
		}
		if h.estimated {
			t.stats.Estimated++
		}
		*out = append(*out, e)
	case !c.started && !c.closed && c.project() == "" && !c.dialled && g.billed == nil && !g.unbilledSent:
		g.unbilledSent = true
		t.stats.Unbilled++
		e := t.msg(c, call.Ended)
		e.Project, e.AttributedBy = "", ""
		end := at
		e.EndedAt = &end
		e.TalkMS = e.Talk()
		e.Cause, e.CauseTxt, e.Estimated = h.cause, h.txt, h.estimated
		*out = append(*out, e)
	}
	t.forget(c)
}

func (t *Tracker) forget(c *channel) {
	delete(t.chans, c.id)
	delete(t.seed, c.id)
	if t.goneRing[t.goneNext] != "" {
		delete(t.gone, t.goneRing[t.goneNext])
	}
	t.goneRing[t.goneNext] = c.id
	t.goneNext = (t.goneNext + 1) % goneMemory
	t.gone[c.id] = struct{}{}
	t.unpair(c)
	if id := c.linkedID; id != "" && t.byLinked[id] == c {
		delete(t.byLinked, id)
		for o := c.g.head; o != nil; o = o.next {
			if o != c && o.linkedID == id {
				t.byLinked[id] = o
				break
			}
		}
	}
	c.g.remove(c)
}

// remove takes c out of g.
func (g *group) remove(c *channel) {
	var prev *channel
	for m := g.head; m != nil; prev, m = m, m.next {
		if m != c {
			continue
		}
		if prev == nil {
			g.head = m.next
		} else {
			prev.next = m.next
		}
		if g.tail == m {
			g.tail = prev
		}
		g.n--
		m.next = nil
		return
	}
}

func (t *Tracker) msg(c *channel, k call.Kind) call.Event {
	e := call.Event{
		Schema: call.Schema, Kind: k, Node: t.node, Channel: c.id, Name: c.name,
		Project: c.project(), AttributedBy: c.by.String(), CreatedAt: c.created.Time(),
	}
	if !c.upAt.IsZero() {
		up := c.upAt.Time()
		e.AnsweredAt = &up
		e.AnswerEstimated = c.upEstimated
	}
	return e
}

// SetEndReason records why minuted itself is about to hang channel id up
// (e.g. "exhausted"): its ended message will carry it as end_reason. It
// reports whether the channel is tracked.
func (t *Tracker) SetEndReason(id, reason string) bool {
	c := t.chans[id]
	if c == nil {
		return false
	}
	if reason != "" || c.rare != nil {
		c.more().endReason = reason
	}
	return true
}

// ProjectOf resolves the project a channel's call is billed to, as the
// tracker attributes it: the project of the call's billed channel if any,
// else the channel's own attribution (variable, accountcode, rules; an
// invalid id counts as none). "" when the channel is unknown or has none.
func (t *Tracker) ProjectOf(id string) (project, by string) {
	c := t.chans[id]
	if c == nil {
		return "", ""
	}
	if b := c.g.billed; b != nil && !b.closed && b.proj != (unique.Handle[string]{}) {
		return b.project(), b.by.String()
	}
	p, by := t.attribute(c, false)
	if !call.ValidProject(p) {
		return "", ""
	}
	return p, by
}

// msgID is the Nats-Msg-Id of a CALLS message: call.Event.MsgID
// (node/channel/kind), except that started carries its project too
// (node/channel/started/project). A channel whose project is upgraded
// before answer (§3: variable over accountcode) sends started again on the
// new project; with the plain id JetStream would drop it as a duplicate of
// the first. The id stays deterministic: the same started for the same
// project always has the same id. bill only counts started, so a call
// seen started on two projects is billed once, on the project its
// answered and ended messages carry.
func msgID(e *call.Event) string {
	if e.Kind == call.Started {
		return call.MsgID(e.Node, e.Channel, string(e.Kind), e.Project)
	}
	return e.MsgID()
}

// Starting tells a new tracker that calls may already be up: until the
// first Reconcile, an event that shows a channel Up without being its
// answer (ChannelStateChange) gives an estimated answer, not an exact one.
func (t *Tracker) Starting() { t.starting = true }

// Disconnected records that the websocket dropped at `at`: events are
// lost until Reconcile.
func (t *Tracker) Disconnected(at time.Time) {
	if t.connected {
		t.connected = false
		t.disconnectedAt = call.UTCms(at)
	}
}

// Connected reports whether the tracker sees Asterisk (no gap pending).
func (t *Tracker) Connected() bool { return t.connected }

// Reconcile applies the list of live channels fetched after (re)connecting
// at `at`. Tracked channels missing from live vanished in the gap: they end
// at the last time they were known alive (the later of their last event
// and the disconnect), Estimated. Live channels not tracked are adopted;
// if already Up they are answered at the earliest time consistent with
// what was seen (their creation, or the disconnect), Estimated.
//
// Events that arrived after the connection and were applied before (see
// sinceConnect) may be newer than the list: a channel one of them named is
// neither vanished when the list lacks it (it may have been created after
// the list was taken) nor brought back when the list has it but an event
// since destroyed it.
func (t *Tracker) Reconcile(live []ari.Channel, at time.Time) []call.Event {
	at = call.UTCms(at)
	var out []call.Event
	seen := make(map[string]bool, len(live))
	for _, c := range live {
		seen[c.ID] = true
	}
	var vanished []*channel
	for _, c := range t.chans {
		if _, heard := t.sinceConnect[c.id]; !seen[c.id] && !heard {
			vanished = append(vanished, c)
		}
	}
	sort.Slice(vanished, func(i, j int) bool {
		return vanished[i].created.Before(vanished[j].created) || vanished[i].created.Equal(vanished[j].created) && vanished[i].id < vanished[j].id
	})
	for _, c := range vanished {
		end := c.lastSeen.Time()
		if !t.connected && t.disconnectedAt.After(end) {
			end = t.disconnectedAt
		}
		t.end(c, end, hangup{estimated: true}, &out)
	}
	sorted := append([]ari.Channel(nil), live...)
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		return a.CreationTime.Before(b.CreationTime) || a.CreationTime.Equal(b.CreationTime) && a.ID < b.ID
	})
	var groups []*group
	for i := range sorted {
		s := &sorted[i]
		if _, heard := t.sinceConnect[s.ID]; heard && t.chans[s.ID] == nil {
			continue // destroyed by an event newer than the list
		}
		delete(t.gone, s.ID)
		prev := t.chans[s.ID]
		wasUp := prev != nil && !prev.upAt.IsZero()
		earliest := s.CreationTime
		if prev != nil {
			earliest = prev.lastSeen.Time()
		}
		if !t.connected && t.disconnectedAt.After(earliest) {
			earliest = t.disconnectedAt
		}
		c := t.observe(s, at, &out)
		if c == nil {
			continue
		}
		if c.seedProject() != "" {
			if c.rare.seedAnswered {
				wasUp = true
			} else if t.seedAt.After(earliest) {
				earliest = t.seedAt // it was not answered when the snapshot was taken
			}
		}
		if s.State == "Up" && !wasUp {
			c.upAt = stampOf(earliest)
			if c.upAt.IsZero() || c.upAt.After(stampOf(at)) {
				c.upAt = stampOf(at)
			}
			c.upEstimated = true
		}
		groups = append(groups, c.g)
	}
	out = t.endVanishedSeed(seen, out)
	t.seed, t.seedAt, t.seedEst = nil, time.Time{}, nil
	t.sinceConnect = nil
	t.starting = false
	for _, g := range groups {
		if g.head != nil && g.head.g == g {
			t.evaluate(g, at, &out)
		}
	}
	t.connected = true
	t.disconnectedAt = time.Time{}
	return out
}

// Seed hands the tracker its node's last snapshot as the previous ingest
// process published it (read back from the NODES stream at start-up). The
// next Reconcile adopts the live channels it lists as the billed calls they
// were, with their exact project and answer time; until then Snapshot keeps
// listing them (the calls are still billed, ingest just cannot see them
// yet). Parts of a split snapshot may be seeded one after the other.
func (t *Tracker) Seed(s call.Snapshot) {
	if t.seed == nil {
		t.seed = make(map[string]call.LiveCall, len(s.Calls))
	}
	for _, c := range s.Calls {
		if c.Channel != "" && call.ValidProject(c.Project) {
			t.seed[c.Channel] = c
		}
	}
	if s.At.After(t.seedAt) {
		t.seedAt = call.UTCms(s.At)
	}
}

// applySeed makes c the billed call the previous process's snapshot says
// it was: same project, and its answer time exactly as that process saw it.
func (t *Tracker) applySeed(c *channel, s *ari.Channel, lc call.LiveCall) {
	sd := c.more()
	sd.seedProject, sd.seedBy = lc.Project, call.ByVariable
	probe := inputs{attrVar: s.Vars[t.attr.Variable], acct: s.AccountCode, context: s.Context, exten: s.Exten}
	if p, by := t.attributeInputs(probe, false, false); p == lc.Project {
		sd.seedBy = by
	}
	if lc.AnsweredAt != nil {
		c.upAt, c.upEstimated, sd.seedAnswered = stampOf(*lc.AnsweredAt), t.seedEst[c.id], true
	}
}

// endVanishedSeed ends the seeded calls that are no longer live: they hung
// up while no ingest watched (their own ended may have died with the
// previous process's publish buffer). They end estimated at the seed's
// time, the last moment they were known alive.
func (t *Tracker) endVanishedSeed(live map[string]bool, out []call.Event) []call.Event {
	var ids []string
	for id := range t.seed {
		if _, dead := t.gone[id]; !live[id] && !dead && t.chans[id] == nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		lc := t.seed[id]
		end := t.seedAt
		e := call.Event{Schema: call.Schema, Kind: call.Ended, Node: t.node, Channel: id, Project: lc.Project,
			CreatedAt: end, EndedAt: &end, Estimated: true}
		if lc.AnsweredAt != nil {
			up := call.UTCms(*lc.AnsweredAt)
			e.AnsweredAt, e.CreatedAt, e.AnswerEstimated = &up, up, t.seedEst[id]
			if end.Before(up) {
				e.EndedAt = &up
			}
			e.TalkMS = e.Talk()
		}
		t.stats.Estimated++
		out = append(out, e)
	}
	return out
}

// SeedEstimatedAnswers tells the tracker which seeded calls had an
// estimated answer (EstimatedAnswers of the previous process): they keep
// the answer_estimated flag. Call it before Reconcile; ids of calls that
// have ended meanwhile are ignored.
func (t *Tracker) SeedEstimatedAnswers(ids []string) {
	if t.seedEst == nil {
		t.seedEst = make(map[string]bool, len(ids))
	}
	for _, id := range ids {
		t.seedEst[id] = true
	}
}

// EstimatedAnswers lists the live billed calls whose answer time is an
// estimate, sorted. A snapshot's answered_at does not say so; ingest keeps
// this list beside it for the next process (see Service).
func (t *Tracker) EstimatedAnswers() []string {
	var ids []string
	for _, c := range t.chans {
		if c.started && !c.closed && c.answered && c.upEstimated {
			ids = append(ids, c.id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Seeded is the number of seeded calls waiting for the next Reconcile.
func (t *Tracker) Seeded() int { return len(t.seed) }

// Snapshot lists the live billed calls at `at`.
func (t *Tracker) Snapshot(at time.Time) call.Snapshot {
	// Sized once, answer times in one array: at 100k live calls this runs
	// every snapshot_interval, and its garbage is most of ingest's.
	s := call.Snapshot{Schema: call.Schema, Node: t.node, At: call.UTCms(at), Connected: t.connected,
		Calls: make([]call.LiveCall, 0, len(t.seed)+len(t.chans))}
	ups := make([]time.Time, 0, len(t.chans))
	for id, lc := range t.seed {
		if c := t.chans[id]; c == nil || !c.started {
			s.Calls = append(s.Calls, lc)
		}
	}
	for _, c := range t.chans {
		if !c.started || c.closed {
			continue
		}
		lc := call.LiveCall{Channel: c.id, Project: c.project()}
		if c.answered {
			ups = append(ups, c.upAt.Time()) // within its capacity: never moved
			lc.AnsweredAt = &ups[len(ups)-1]
		}
		s.Calls = append(s.Calls, lc)
	}
	sort.Slice(s.Calls, func(i, j int) bool { return s.Calls[i].Channel < s.Calls[j].Channel })
	return s
}
