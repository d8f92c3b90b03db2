// Package call defines the messages minuted passes between its roles: the
// call events ingest publishes to the CALLS stream, node snapshots, control
// messages and CDRs, with their subjects and deterministic message ids.
// It does no I/O.
package call

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Schema is the version of every JSON body minuted publishes.
const Schema = 1

// Unbilled is the subject token used in place of a project for channels
// that no attribution rule matched.
const Unbilled = "_unbilled"

// Kind is the step of a call an Event reports.
type Kind string

const (
	Started  Kind = "started"
	Answered Kind = "answered"
	Ended    Kind = "ended"
)

// How a project was attributed to a channel (SPEC §3).
const (
	ByVariable    = "variable"
	ByAccountcode = "accountcode"
	ByRule        = "rule"
)

// ErrBadProject is returned for a project id outside ^[A-Za-z0-9_-]{1,64}$.
var ErrBadProject = errors.New("project id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")

// ValidProject reports whether id may be used as a project id.
// (A loop, not a regexp: bill checks the project of every message.)
func ValidProject(id string) bool {
	if len(id) == 0 || len(id) > 64 || id == Unbilled {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// CheckProject returns a wrapped ErrBadProject naming the bad id.
func CheckProject(id string) error {
	if !ValidProject(id) {
		return fmt.Errorf("invalid project id %q: %w", id, ErrBadProject)
	}
	return nil
}

// Event is one message of the CALLS stream. An Ended event alone carries
// everything needed to bill its call.
type Event struct {
	Schema       int        `json:"schema"`
	Kind         Kind       `json:"event"`
	Node         string     `json:"node"`
	Channel      string     `json:"channel"`
	Name         string     `json:"name,omitempty"`
	Project      string     `json:"project,omitempty"`
	AttributedBy string     `json:"attributed_by,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	AnsweredAt   *time.Time `json:"answered_at,omitempty"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	TalkMS       int64      `json:"talk_ms,omitempty"`
	Cause        int        `json:"cause,omitempty"`
	CauseTxt     string     `json:"cause_txt,omitempty"`
	// Estimated is set when EndedAt had to be guessed (the channel vanished
	// while minuted could not see it): it is the last time it was known alive.
	Estimated bool `json:"estimated,omitempty"`
	// AnswerEstimated is set when AnsweredAt is a guess: an ingest that
	// started while the call was already up adopts it without having seen
	// its answer. Bill then keeps the answer time it recorded first.
	AnswerEstimated bool `json:"answer_estimated,omitempty"`
	// EndReason says why minuted ended the call when it did so itself
	// ("exhausted"), empty for a normal hangup.
	EndReason string `json:"end_reason,omitempty"`
}

// Key identifies the call across minuted: node/channel-id.
func (e *Event) Key() string { return e.Node + "/" + e.Channel }

// Subject is the CALLS subject of e.
func (e *Event) Subject() string { return Subject(e.Project, e.Kind) }

// MsgID is the deterministic Nats-Msg-Id of e, so a republished event is
// dropped by JetStream's duplicate window.
func (e *Event) MsgID() string { return MsgID(e.Node, e.Channel, string(e.Kind)) }

// Talk returns the talk time in milliseconds, or 0 when the call was not
// answered or has not ended.
func (e *Event) Talk() int64 {
	if e.AnsweredAt == nil || e.EndedAt == nil {
		return 0
	}
	d := e.EndedAt.Sub(*e.AnsweredAt).Milliseconds()
	if d < 0 {
		return 0
	}
	return d
}

// Validate checks the fields every consumer relies on.
func (e *Event) Validate() error {
	var errs []error
	if e.Schema != Schema {
		errs = append(errs, fmt.Errorf("schema %d, want %d", e.Schema, Schema))
	}
	switch e.Kind {
	case Started, Answered, Ended:
	default:
		errs = append(errs, fmt.Errorf("unknown event %q", e.Kind))
	}
	if e.Node == "" || strings.ContainsAny(e.Node, " .*>") {
		errs = append(errs, fmt.Errorf("bad node %q", e.Node))
	}
	if e.Channel == "" {
		errs = append(errs, errors.New("missing channel"))
	}
	if e.Project != "" {
		if err := CheckProject(e.Project); err != nil {
			errs = append(errs, err)
		}
	}
	if e.Kind == Answered && e.AnsweredAt == nil {
		errs = append(errs, errors.New("answered event without answered_at"))
	}
	if e.Kind == Ended && e.EndedAt == nil {
		errs = append(errs, errors.New("ended event without ended_at"))
	}
	return errors.Join(errs...)
}

// Decode parses and validates a CALLS message body. The event's strings
// share one copy of b: a holder that keeps one for long should
// strings.Clone it.
func Decode(b []byte) (*Event, error) {
	e := decodeLean(b)
	if e == nil {
		var err error
		if e, err = decodeJSON(b); err != nil {
			return nil, err
		}
	}
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("invalid call event: %w", err)
	}
	return e, nil
}

// decodeJSON decodes b with encoding/json alone: Decode's fallback, and the
// reference its lean path is checked against.
func decodeJSON(b []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decode call event: %w", err)
	}
	return &e, nil
}

// Subject of a call event: minuted.calls.<project|_unbilled>.<kind>.
func Subject(project string, k Kind) string {
	if project == "" {
		project = Unbilled
	}
	return "minuted.calls." + project + "." + string(k)
}

// MsgID joins its parts into a deterministic Nats-Msg-Id.
func MsgID(parts ...string) string { return strings.Join(parts, "/") }

// Subjects and stream names of SPEC §9.
const (
	CallsStream   = "CALLS"
	CallsSubjects = "minuted.calls.>"
	AlertsStream  = "ALERTS"
	AlertsSubject = "minuted.alerts.>"
	CDRStream     = "CDR"
	CDRSubjects   = "minuted.cdr.>"
	DLQStream     = "DLQ"
	DLQSubjects   = "minuted.dlq.>"
	// NodesStream keeps the last snapshot of every node, so a bill that
	// starts knows when each node last reported, even a dead one.
	NodesStream   = "NODES"
	NodesSubjects = "minuted.nodes.>"
)

// SnapshotSubject is where a node publishes its live billed calls: the
// whole snapshot, or its first part.
func SnapshotSubject(node string) string { return "minuted.nodes." + node + ".snapshot" }

// SnapshotPartSubject is where part i (from 1) of a node's snapshot goes:
// part 1 on SnapshotSubject, part i > 1 on minuted.nodes.<node>.snapshot.<i>.
// One subject per part, so that the NODES stream, which keeps the last
// message of each subject, keeps a whole snapshot however many parts it has.
func SnapshotPartSubject(node string, i int) string {
	if i <= 1 {
		return SnapshotSubject(node)
	}
	return SnapshotSubject(node) + "." + strconv.Itoa(i)
}

// SnapshotPartsOf matches the further parts (2, 3, ...) of one node's
// snapshot.
func SnapshotPartsOf(node string) string { return SnapshotSubject(node) + ".*" }

// SnapshotWildcard matches the snapshots (whole, or their first part) of
// every node; SnapshotPartsWildcard matches their further parts.
const (
	SnapshotWildcard      = "minuted.nodes.*.snapshot"
	SnapshotPartsWildcard = "minuted.nodes.*.snapshot.*"
)

// ControlSubject is where bill sends commands to one node's ingest.
func ControlSubject(node, verb string) string { return "minuted.control." + node + "." + verb }

// CDRSubject is where a settled call's record goes.
func CDRSubject(project string) string { return "minuted.cdr." + project }

// AlertSubject is the alert channel of a project, or "_system".
func AlertSubject(project string) string {
	if project == "" {
		project = "_system"
	}
	return "minuted.alerts." + project
}

// DLQSubject is where undecodable messages of a source go.
func DLQSubject(source string) string { return "minuted.dlq." + source }

// Snapshot lists the live billed calls of one node at a moment.
type Snapshot struct {
	Schema int       `json:"schema"`
	Node   string    `json:"node"`
	At     time.Time `json:"at"`
	// Connected is false while ingest cannot see Asterisk: bill must not
	// close calls from such a snapshot.
	Connected bool `json:"connected"`
	// CallsSeq is a CALLS stream sequence up to which JetStream holds
	// every event of this node the snapshot reflects: bill judges a call
	// missing from the snapshot only once it has processed the stream up
	// to there, so a backlog never passes for a vanished call.
	CallsSeq uint64 `json:"calls_seq,omitempty"`
	// Pending is set when some event the snapshot reflects was not yet
	// acknowledged by JetStream when it was sent (NATS slow or away):
	// CallsSeq does not cover it, so a call the snapshot does not list may
	// have an ended still on its way. Such a snapshot proves the node and
	// the calls it lists alive, nothing more.
	Pending bool `json:"pending,omitempty"`
	// Gen identifies the snapshot among its node's: every part of one
	// snapshot carries the same Gen, a later snapshot a higher one.
	Gen uint64 `json:"gen,omitempty"`
	// A snapshot too big for one NATS message is sent in Parts parts
	// (numbered from 1, part i on SnapshotPartSubject(node, i)), all with
	// the same At and Gen; readers assemble them.
	Part  int        `json:"part,omitempty"`
	Parts int        `json:"parts,omitempty"`
	Calls []LiveCall `json:"calls"`
}

// Newer reports whether s is a later snapshot of its node than o.
func (s *Snapshot) Newer(o *Snapshot) bool {
	if !s.At.Equal(o.At) {
		return s.At.After(o.At)
	}
	return s.Gen > o.Gen
}

// SameGen reports whether s and o are parts of the same snapshot.
func (s *Snapshot) SameGen(o *Snapshot) bool {
	return s.At.Equal(o.At) && s.Gen == o.Gen && max(s.Parts, 1) == max(o.Parts, 1)
}

// LatestSnapshot assembles, from stored snapshot messages of one node (in
// any order, possibly of several snapshots: the NODES stream keeps the
// last message of each part's subject, so a part beyond a later, smaller
// snapshot's count is left from an older one), its latest snapshot: the
// calls of every part of it found, as one snapshot (Part and Parts zero),
// and whether all of its parts were there. ok is false when parts is empty.
func LatestSnapshot(parts []Snapshot) (whole Snapshot, complete, ok bool) {
	if len(parts) == 0 {
		return Snapshot{}, false, false
	}
	newest := &parts[0]
	for i := range parts {
		if parts[i].Newer(newest) {
			newest = &parts[i]
		}
	}
	whole = *newest
	whole.Part, whole.Parts, whole.Calls = 0, 0, nil
	n := max(newest.Parts, 1)
	have := make([]bool, n)
	got := 0
	for i := range parts {
		p := &parts[i]
		k := max(p.Part, 1) - 1
		if !p.SameGen(newest) || k >= n || have[k] {
			continue
		}
		have[k] = true
		got++
		whole.Calls = append(whole.Calls, p.Calls...)
		whole.CallsSeq = max(whole.CallsSeq, p.CallsSeq)
		whole.Pending = whole.Pending || p.Pending
	}
	if whole.Calls == nil {
		whole.Calls = []LiveCall{}
	}
	return whole, got == n, true
}

// LiveCall is one entry of a Snapshot.
type LiveCall struct {
	Channel    string     `json:"channel"`
	Project    string     `json:"project"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
}

// Hangup asks a node's ingest to hang up one channel.
type Hangup struct {
	Schema  int    `json:"schema"`
	Node    string `json:"node"`
	Channel string `json:"channel"`
	Project string `json:"project"`
	Reason  string `json:"reason"`
}

// CDR is the record of one settled call.
type CDR struct {
	Schema        int       `json:"schema"`
	Node          string    `json:"node"`
	Channel       string    `json:"channel"`
	Project       string    `json:"project"`
	AttributedBy  string    `json:"attributed_by,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	AnsweredAt    time.Time `json:"answered_at"`
	EndedAt       time.Time `json:"ended_at"`
	TalkMS        int64     `json:"talk_ms"`
	TalkSeconds   int64     `json:"talk_seconds"`
	BilledSeconds int64     `json:"billed_seconds"`
	Cause         int       `json:"cause,omitempty"`
	CauseTxt      string    `json:"cause_txt,omitempty"`
	Estimated     bool      `json:"estimated,omitempty"`
	EndReason     string    `json:"end_reason,omitempty"`
}

// UTCms returns t in UTC truncated to the millisecond, the precision of
// Asterisk's timestamps.
func UTCms(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }
