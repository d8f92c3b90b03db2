package bill

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/minuted/minuted/internal/call"
)

// unmarshalSnapshot is json.Unmarshal(b, s) for node snapshots, with a
// fast path. A snapshot lists every live call of its node (100,000 calls
// are a few MB every ingest.snapshot_interval), and encoding/json spends
// most of that in its scanner, in reflection, in one string per field and
// in parsing each answer time. scanSnapshot reads the snapshots ingest
// writes in one pass; whatever it does not fully understand makes the
// message go through encoding/json, so results and errors are
// encoding/json's in every case (FuzzUnmarshalSnapshotMatchesJSON checks
// it).
func unmarshalSnapshot(b []byte, s *call.Snapshot) error {
	if scanSnapshot(b, s) {
		return nil
	}
	*s = call.Snapshot{}
	return json.Unmarshal(b, s)
}

// scanSnapshot fills s from a snapshot as ingest writes it: the keys of
// call.Snapshot, exactly as spelled there, each once at most; numbers as
// plain digits; strings free of escapes; calls as objects with the keys
// channel, project and answered_at (a string or null). Anything else
// (another key or spelling, another value type, an escape, invalid UTF-8,
// a bad time, bad JSON) returns false.
func scanSnapshot(b []byte, s *call.Snapshot) bool {
	sc := callScanner{b: b}
	seen := map[string]bool{} // keys met: a repeated one gives up
	sc.ws()
	if !sc.consume('{') {
		return false
	}
	sc.ws()
	if !sc.consume('}') {
		for {
			k, ok := sc.key()
			if !ok || seen[string(k)] {
				return false
			}
			switch string(k) {
			case "schema":
				s.Schema, ok = sc.digits()
			case "node":
				var v []byte
				v, ok = sc.str()
				s.Node = string(v)
			case "at":
				start := sc.i
				if _, ok = sc.str(); ok {
					ok = s.At.UnmarshalJSON(b[start:sc.i]) == nil
				}
			case "connected":
				s.Connected, ok = sc.boolean()
			case "calls_seq":
				var n int
				n, ok = sc.digits()
				s.CallsSeq = uint64(n)
			case "pending":
				s.Pending, ok = sc.boolean()
			case "gen":
				s.Gen, ok = sc.uint64()
			case "part":
				s.Part, ok = sc.digits()
			case "parts":
				s.Parts, ok = sc.digits()
			case "calls":
				s.Calls, ok = sc.calls()
			default:
				return false
			}
			if !ok {
				return false
			}
			seen[string(k)] = true
			sc.ws()
			if sc.consume('}') {
				break
			}
			if !sc.consume(',') {
				return false
			}
			sc.ws()
		}
	}
	sc.ws()
	return sc.i == len(b)
}

// calls reads the calls array, or null (nil, as encoding/json leaves it).
func (sc *callScanner) calls() ([]call.LiveCall, bool) {
	if sc.literal("null") {
		return nil, true
	}
	if !sc.consume('[') {
		return nil, false
	}
	// Every object opens with '{': an upper bound, so the answer times
	// (pointed to by the calls) never move.
	n := bytes.Count(sc.b[sc.i:], []byte{'{'})
	calls := make([]call.LiveCall, 0, n)
	times := make([]time.Time, 0, n)
	var project string // consecutive calls mostly share one: one string for them
	sc.ws()
	if sc.consume(']') {
		return calls, true
	}
	for {
		var c call.LiveCall
		if !sc.liveCall(&c, &project, &times) {
			return nil, false
		}
		calls = append(calls, c)
		sc.ws()
		if sc.consume(']') {
			return calls, true
		}
		if !sc.consume(',') {
			return nil, false
		}
		sc.ws()
	}
}

// digits reads a non-negative integer of at most 18 digits (no sign,
// fraction or exponent).
func (sc *callScanner) digits() (int, bool) {
	start, n := sc.i, 0
	for sc.i < len(sc.b) && sc.b[sc.i] >= '0' && sc.b[sc.i] <= '9' && sc.i-start < 18 {
		n = n*10 + int(sc.b[sc.i]-'0')
		sc.i++
	}
	switch {
	case sc.i == start, sc.b[start] == '0' && sc.i-start > 1: // none, or a leading zero
		return 0, false
	case sc.i < len(sc.b) && (sc.b[sc.i] >= '0' && sc.b[sc.i] <= '9' || sc.b[sc.i] == '.' || sc.b[sc.i] == 'e' || sc.b[sc.i] == 'E'):
		return 0, false // longer, or not an integer
	}
	return n, true
}

// key reads an object's member name and the colon after it.
func (sc *callScanner) key() ([]byte, bool) {
	k, ok := sc.str()
	if !ok {
		return nil, false
	}
	sc.ws()
	if !sc.consume(':') {
		return nil, false
	}
	sc.ws()
	return k, true
}

// boolean reads true or false.
func (sc *callScanner) boolean() (v, ok bool) {
	if sc.literal("true") {
		return true, true
	}
	return false, sc.literal("false")
}

// uint64 reads an unsigned integer of up to 20 digits (a snapshot's Gen is
// Unix nanoseconds: 19 digits, beyond digits' 18).
func (sc *callScanner) uint64() (uint64, bool) {
	start := sc.i
	for sc.i < len(sc.b) && sc.b[sc.i] >= '0' && sc.b[sc.i] <= '9' && sc.i-start < 20 {
		sc.i++
	}
	switch {
	case sc.i == start, sc.b[start] == '0' && sc.i-start > 1:
		return 0, false
	case sc.i < len(sc.b) && (sc.b[sc.i] >= '0' && sc.b[sc.i] <= '9' || sc.b[sc.i] == '.' || sc.b[sc.i] == 'e' || sc.b[sc.i] == 'E'):
		return 0, false
	}
	n, err := strconv.ParseUint(string(sc.b[start:sc.i]), 10, 64)
	return n, err == nil
}

// callScanner walks the calls array of a snapshot.
type callScanner struct {
	b []byte
	i int
}

// liveCall reads one {"key": value, ...} object into c. project is the
// previous call's project; times holds the answer times (never grown past
// its capacity, so pointers into it stay valid).
func (sc *callScanner) liveCall(c *call.LiveCall, project *string, times *[]time.Time) bool {
	if !sc.consume('{') {
		return false
	}
	sc.ws()
	if sc.consume('}') {
		return true
	}
	for {
		k, ok := sc.key()
		if !ok {
			return false
		}
		switch string(k) {
		case "channel":
			v, ok := sc.str()
			if !ok {
				return false
			}
			c.Channel = string(v)
		case "project":
			v, ok := sc.str()
			if !ok {
				return false
			}
			if string(v) != *project {
				*project = string(v)
			}
			c.Project = *project
		case "answered_at":
			if sc.literal("null") {
				c.AnsweredAt = nil
				break
			}
			start := sc.i
			if _, ok := sc.str(); !ok || len(*times) == cap(*times) {
				return false
			}
			var t time.Time
			if t.UnmarshalJSON(sc.b[start:sc.i]) != nil {
				return false
			}
			*times = append(*times, t)
			c.AnsweredAt = &(*times)[len(*times)-1]
		default:
			return false
		}
		sc.ws()
		if sc.consume('}') {
			return true
		}
		if !sc.consume(',') {
			return false
		}
		sc.ws()
	}
}

// str reads a string without escapes and returns its contents.
func (sc *callScanner) str() ([]byte, bool) {
	if !sc.consume('"') {
		return nil, false
	}
	start := sc.i
	for sc.i < len(sc.b) {
		switch c := sc.b[sc.i]; {
		case c == '"':
			v := sc.b[start:sc.i]
			sc.i++
			return v, utf8.Valid(v)
		case c == '\\' || c < 0x20:
			return nil, false
		}
		sc.i++
	}
	return nil, false
}

func (sc *callScanner) ws() {
	for sc.i < len(sc.b) {
		switch sc.b[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

func (sc *callScanner) consume(c byte) bool {
	if sc.i < len(sc.b) && sc.b[sc.i] == c {
		sc.i++
		return true
	}
	return false
}

func (sc *callScanner) literal(lit string) bool {
	if bytes.HasPrefix(sc.b[sc.i:], []byte(lit)) {
		sc.i += len(lit)
		return true
	}
	return false
}
