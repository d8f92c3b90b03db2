package sim

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Shape is the kind of a generated call; each is built from one recorded trace.
type Shape int

// Shapes of generated calls.
const (
	ShapeAnswered   Shape = iota // answered_short: Local pair, ;2 answers and talks
	ShapeTwoLeg                  // two_leg_dial: caller Local pair Dial()s a callee Local pair
	ShapeUnanswered              // unanswered: rings, Hangup(19)
	ShapeBusy                    // busy: Busy(), cause 17
	ShapeCongestion              // congestion: Congestion(), cause 34
	numShapes
)

var shapeNames = [numShapes]string{"answered", "two_leg", "unanswered", "busy", "congestion"}
var shapeFiles = [numShapes]string{"answered_short", "two_leg_dial", "unanswered", "busy", "congestion"}

func (s Shape) String() string {
	if s >= 0 && s < numShapes {
		return shapeNames[s]
	}
	return "shape(" + strconv.Itoa(int(s)) + ")"
}

// ParseShape reads a shape name as printed by Shape.String.
func ParseShape(name string) (Shape, error) {
	for i, n := range shapeNames {
		if n == name {
			return Shape(i), nil
		}
	}
	return 0, fmt.Errorf("unknown call shape %q (want one of %v)", name, shapeNames)
}

// Attribution modes of generated calls.
const (
	AttributeVariable    = "variable"    // BILLING_PROJECT set on ;2 (and accountcode too, like the traces)
	AttributeAccountcode = "accountcode" // only CHANNEL(accountcode); BILLING_PROJECT stays empty
	AttributeMixed       = "mixed"       // each call picks one of the two at random
)

//go:embed traces/*.jsonl
var traceFS embed.FS

// TraceEvents returns the recorded events of the trace a shape is built from.
func TraceEvents(s Shape) ([][]byte, error) {
	if s < 0 || s >= numShapes {
		return nil, fmt.Errorf("unknown call shape %d", s)
	}
	f, err := traceFS.Open("traces/" + shapeFiles[s] + ".jsonl")
	if err != nil {
		return nil, fmt.Errorf("embedded trace of %s: %w", s, err)
	}
	defer f.Close()
	return ReadTraceFrom(f)
}

type holeKind uint8

const (
	hTS holeKind = iota
	hID
	hSeq
	hProject
	hBridge
	hNode
	hCause
	hCauseTxt
)

type hole struct {
	kind holeKind
	slot int    // channel slot (hID) or Local pair (hSeq)
	rel  int64  // hTS: recorded ms after the first event
	def  []byte // hCause, hCauseTxt: the recorded value
}

type tplEvent struct {
	lits  [][]byte // literal bytes around the holes: len(holes)+1
	holes []hole
	tsRel int64 // the event's own timestamp, ms after the first event
	typ   string
	slot  int // channel slot of "channel", -1 if none
}

// template is one shape in one attribution mode, ready to render.
type template struct {
	shape     Shape
	events    []tplEvent
	nChan     int
	nPair     int
	hasBridge bool
	// hold: the long silent gap (talk or ring). holdStart < 0: none.
	holdIdx      int
	holdStart    int64
	recordedHold int64 // talk ms of the billed channel (answered) or the gap (unanswered)
	answered     bool
	createdRel   int64
	upRel        int64
	endRel       int64
	upIdx        int // event index of the billed channel's Up, -1 if never
	cause        int // recorded cause of the billed channel's ChannelDestroyed
}

// billedSlot is the channel a correct biller bills in every shape: the ;2 half
// of the originating Local pair (it carries BILLING_PROJECT and the accountcode
// the dialplan set; the ;1 half only shows CHANNEL(peeraccount)).
const billedSlot = 1

const recordedProject = "proj-a"

var holeRe = regexp.MustCompile(`"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4})"` +
	`|"(\d{9,11}\.\d+)"` +
	`|-([0-9a-f]{8});` +
	`|(` + recordedProject + `)` +
	`|"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"` +
	`|"asterisk_id":"([^"]*)"` +
	`|"cause":(\d+)` +
	`|"cause_txt":"([^"]*)"`)

type traceLine struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Channel   *struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"channel"`
	Cause    *int   `json:"cause"`
	Variable string `json:"variable"`
	AppData  string `json:"dialplan_app_data"`
}

var seqRe = regexp.MustCompile(`-([0-9a-f]{8});[12]$`)

func buildTemplate(shape Shape, accountcodeOnly bool) (*template, error) {
	lines, err := TraceEvents(shape)
	if err != nil {
		return nil, err
	}
	t := &template{shape: shape, holdIdx: -1, holdStart: -1, upIdx: -1}
	slots := map[string]int{}
	pairs := map[string]int{}
	var first time.Time
	type parsed struct {
		raw []byte
		tl  traceLine
		at  int64
	}
	var evs []parsed
	for i, raw := range lines {
		var tl traceLine
		if err := json.Unmarshal(raw, &tl); err != nil {
			return nil, fmt.Errorf("trace %s line %d: %w", shapeFiles[shape], i+1, err)
		}
		if accountcodeOnly && (tl.Type == "ChannelVarset" && tl.Variable == "BILLING_PROJECT" ||
			tl.Type == "ChannelDialplan" && bytes.Contains([]byte(tl.AppData), []byte("BILLING_PROJECT="))) {
			continue
		}
		at, err := time.Parse(TimeLayout, tl.Timestamp)
		if err != nil {
			return nil, fmt.Errorf("trace %s line %d: %w", shapeFiles[shape], i+1, err)
		}
		if first.IsZero() {
			first = at
		}
		if tl.Type == "ChannelCreated" && tl.Channel != nil {
			if _, ok := slots[tl.Channel.ID]; !ok {
				slots[tl.Channel.ID] = len(slots)
			}
			if m := seqRe.FindStringSubmatch(tl.Channel.Name); m != nil {
				if _, ok := pairs[m[1]]; !ok {
					pairs[m[1]] = len(pairs)
				}
			}
		}
		if accountcodeOnly {
			raw = bytes.ReplaceAll(raw, []byte(`"BILLING_PROJECT":"`+recordedProject+`"`), []byte(`"BILLING_PROJECT":""`))
		}
		evs = append(evs, parsed{raw: raw, tl: tl, at: at.Sub(first).Milliseconds()})
	}
	t.nChan, t.nPair = len(slots), len(pairs)
	var billedID string
	for id, s := range slots {
		if s == billedSlot {
			billedID = id
		}
	}
	// The hold is the longest silence between consecutive events, if long.
	var maxGap, prev int64
	for i, e := range evs {
		if i > 0 && e.at-prev > maxGap {
			maxGap, t.holdIdx = e.at-prev, i
		}
		prev = max(prev, e.at)
	}
	if maxGap < 100 {
		t.holdIdx = -1
	} else {
		t.holdStart = evs[t.holdIdx].at
	}
	for i, e := range evs {
		if e.tl.Channel == nil || e.tl.Channel.ID != billedID {
			continue
		}
		switch {
		case e.tl.Type == "ChannelCreated":
			t.createdRel = e.at
		case e.tl.Type == "ChannelStateChange" && bytes.Contains(e.raw, []byte(`"state":"Up"`)) && t.upIdx < 0:
			t.upIdx, t.upRel, t.answered = i, e.at, true
		case e.tl.Type == "ChannelDestroyed":
			t.endRel = e.at
			if e.tl.Cause != nil {
				t.cause = *e.tl.Cause
			}
		}
	}
	switch {
	case t.holdIdx < 0:
	case t.answered:
		t.recordedHold = t.endRel - t.upRel
	default:
		t.recordedHold = maxGap
	}
	for i, e := range evs {
		te := tplEvent{tsRel: e.at, typ: e.tl.Type, slot: -1}
		if e.tl.Channel != nil {
			if s, ok := slots[e.tl.Channel.ID]; ok {
				te.slot = s
			}
		}
		hangupPhase := t.holdIdx >= 0 && i >= t.holdIdx && (e.tl.Type == "ChannelHangupRequest" || e.tl.Type == "ChannelDestroyed")
		last := 0
		for _, m := range holeRe.FindAllSubmatchIndex(e.raw, -1) {
			var h hole
			g := 0
			for k := 1; k <= 8; k++ {
				if m[2*k] >= 0 {
					g = k
					break
				}
			}
			val := string(e.raw[m[2*g]:m[2*g+1]])
			switch g {
			case 1:
				at, err := time.Parse(TimeLayout, val)
				if err != nil {
					return nil, fmt.Errorf("trace %s: %w", shapeFiles[shape], err)
				}
				h = hole{kind: hTS, rel: at.Sub(first).Milliseconds()}
			case 2:
				s, ok := slots[val]
				if !ok {
					continue
				}
				h = hole{kind: hID, slot: s}
			case 3:
				p, ok := pairs[val]
				if !ok {
					continue
				}
				h = hole{kind: hSeq, slot: p}
			case 4:
				h = hole{kind: hProject}
			case 5:
				h, t.hasBridge = hole{kind: hBridge}, true
			case 6:
				h = hole{kind: hNode}
			case 7, 8:
				if !hangupPhase || val == "0" || val == "Unknown" {
					continue
				}
				h = hole{kind: hCause, def: []byte(val)}
				if g == 8 {
					h.kind = hCauseTxt
				}
			}
			te.lits = append(te.lits, e.raw[last:m[2*g]])
			te.holes = append(te.holes, h)
			last = m[2*g+1]
		}
		te.lits = append(te.lits, e.raw[last:])
		t.events = append(t.events, te)
	}
	return t, nil
}

// templates holds every shape in both attribution modes.
type templates struct {
	byMode [2][numShapes]*template // [0] variable, [1] accountcode only
}

func loadTemplates() (*templates, error) {
	ts := &templates{}
	for mode := range 2 {
		for s := range numShapes {
			t, err := buildTemplate(s, mode == 1)
			if err != nil {
				return nil, err
			}
			ts.byMode[mode][s] = t
		}
	}
	return ts, nil
}
