package ari

import (
	"strings"
	"unicode/utf8"
)

// The lean scanner: Decode's fast path. encoding/json spends most of an
// event's decode in reflection and in one small string per field, and
// ingest decodes every event Asterisk sends (29 per simple call). The
// scanner walks the frame once, converts it to a string once and takes
// every field as a substring of it, skipping what billing does not read.
// Whatever it does not fully understand (an escape in a field it keeps,
// invalid UTF-8, a key that differs from a known one only by case, a value
// of an unexpected type, malformed JSON) makes it give up, and Decode then
// uses encoding/json: results and errors are encoding/json's in every case
// (FuzzDecodeLeanMatchesJSON checks it).
//
// Strings of the result share the frame's memory: a holder that keeps one
// for long should strings.Clone it (the ingest tracker does).

// leanEvent is a wireEvent with its channel, caller and peer beside it
// (has: present) rather than pointed to from it: a decode then allocates
// none of them (a struct pointing into itself escapes to the heap).
type leanEvent struct {
	w     wireEvent
	chans [3]wireChannel
	has   [3]bool
}

// channel returns the i-th channel (channel, caller, peer), nil if absent.
func (le *leanEvent) channel(i int) *wireChannel {
	if !le.has[i] {
		return nil
	}
	return &le.chans[i]
}

type scanner struct {
	s   string
	i   int
	bad bool // give up: let encoding/json decide
}

// scanEvent fills ev from s; false means "use encoding/json".
func scanEvent(s string, ev *leanEvent) bool {
	sc := scanner{s: s}
	w := &ev.w
	strs := [...]field{{"type", &w.Type}, {"timestamp", &w.Timestamp}, {"asterisk_id", &w.AsteriskID},
		{"application", &w.Application}, {"dialstatus", &w.DialStatus}, {"cause_txt", &w.CauseTxt},
		{"variable", &w.Variable}, {"value", &w.Value}}
	sc.object(func(key string) {
		switch key {
		case "cause":
			sc.setInt(&w.Cause)
		case "channel":
			ev.has[0] = sc.channel(&ev.chans[0], ev.has[0])
		case "caller":
			ev.has[1] = sc.channel(&ev.chans[1], ev.has[1])
		case "peer":
			ev.has[2] = sc.channel(&ev.chans[2], ev.has[2])
		default:
			sc.field(key, strs[:], "cause", "channel", "caller", "peer")
		}
	})
	sc.ws()
	return !sc.bad && sc.i == len(sc.s)
}

// field is a string field of a JSON object the scanner fills.
type field struct {
	key string
	dst *string
}

// field reads the value of key into its field, or skips it. A key that
// only differs by case from a field or from one of others gives up:
// encoding/json matches keys case-insensitively.
func (sc *scanner) field(key string, fields []field, others ...string) {
	for _, f := range fields {
		if f.key == key {
			sc.setStr(f.dst)
			return
		}
	}
	for _, f := range fields {
		sc.unknownKey(key, f.key)
	}
	for _, k := range others {
		sc.unknownKey(key, k)
	}
	sc.skip(0)
}

func (sc *scanner) unknownKey(key, known string) {
	if len(known) == len(key) && strings.EqualFold(known, key) {
		sc.bad = true
	}
}

// channel reads a channel object into c, false for null; a repeated key
// merges into the channel read before (as encoding/json does with a
// non-nil pointer).
func (sc *scanner) channel(c *wireChannel, merge bool) bool {
	sc.ws()
	if sc.literal("null") {
		return false
	}
	if !merge {
		*c = wireChannel{}
	}
	strs := [...]field{{"id", &c.ID}, {"name", &c.Name}, {"state", &c.State}, {"accountcode", &c.AccountCode},
		{"creationtime", &c.CreationTime}}
	dp := [...]field{{"context", &c.Dialplan.Context}, {"exten", &c.Dialplan.Exten},
		{"app_name", &c.Dialplan.AppName}, {"app_data", &c.Dialplan.AppData}}
	sc.object(func(key string) {
		switch key {
		case "dialplan":
			sc.ws()
			if !sc.literal("null") {
				sc.object(func(key string) { sc.field(key, dp[:]) })
			}
		case "channelvars":
			sc.ws()
			if sc.literal("null") {
				c.ChannelVars = nil
				return
			}
			if c.ChannelVars == nil {
				c.ChannelVars = make(map[string]string, 4)
			}
			sc.object(func(key string) {
				var v string // a null element is stored as "" (encoding/json)
				sc.setStr(&v)
				c.ChannelVars[key] = v
			})
		default:
			sc.field(key, strs[:], "dialplan", "channelvars")
		}
	})
	return true
}

// object reads {"key": value, ...}, calling f at each value.
func (sc *scanner) object(f func(key string)) {
	sc.ws()
	if !sc.consume('{') {
		sc.bad = true
		return
	}
	first := true
	for !sc.bad {
		sc.ws()
		if sc.consume('}') {
			return
		}
		if !first && !sc.consume(',') {
			sc.bad = true
			return
		}
		first = false
		sc.ws()
		key := sc.key()
		if sc.bad {
			return
		}
		f(key)
	}
}

// key reads `"name":`.
func (sc *scanner) key() string {
	k := sc.rawString()
	sc.ws()
	if !sc.consume(':') {
		sc.bad = true
	}
	return k
}

// setStr reads a string value into *dst; null leaves it as it is (as
// encoding/json does). Only plain strings.
func (sc *scanner) setStr(dst *string) {
	sc.ws()
	if sc.literal("null") {
		return
	}
	*dst = sc.rawString()
}

// rawString reads a string without escapes and of valid UTF-8.
func (sc *scanner) rawString() string {
	if !sc.consume('"') {
		sc.bad = true
		return ""
	}
	start := sc.i
	ascii := true
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		switch {
		case c == '"':
			v := sc.s[start:sc.i]
			sc.i++
			if !ascii && !utf8.ValidString(v) {
				sc.bad = true
			}
			return v
		case c == '\\' || c < 0x20:
			sc.bad = true
			return ""
		case c >= 0x80:
			ascii = false
		}
		sc.i++
	}
	sc.bad = true
	return ""
}

// setInt reads a JSON integer that fits an int into *dst; null leaves it.
func (sc *scanner) setInt(dst *int) {
	sc.ws()
	if sc.literal("null") {
		return
	}
	*dst = sc.integer()
}

func (sc *scanner) integer() int {
	neg := sc.consume('-')
	start := sc.i
	n := 0
	for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
		if sc.i-start >= 15 {
			sc.bad = true
			return 0
		}
		n = n*10 + int(sc.s[sc.i]-'0')
		sc.i++
	}
	d := sc.i - start
	if d == 0 || d > 1 && sc.s[start] == '0' {
		sc.bad = true
		return 0
	}
	if sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case '.', 'e', 'E':
			sc.bad = true
			return 0
		}
	}
	if neg {
		n = -n
	}
	return n
}

// skip passes over any JSON value, checking its syntax.
func (sc *scanner) skip(depth int) {
	if depth > 64 {
		sc.bad = true
		return
	}
	sc.ws()
	if sc.i >= len(sc.s) {
		sc.bad = true
		return
	}
	switch c := sc.s[sc.i]; {
	case c == '"':
		sc.skipString()
	case c == '{':
		sc.object(func(string) { sc.skip(depth + 1) })
	case c == '[':
		sc.i++
		sc.ws()
		if sc.consume(']') {
			return
		}
		for !sc.bad {
			sc.skip(depth + 1)
			sc.ws()
			if sc.consume(']') {
				return
			}
			if !sc.consume(',') {
				sc.bad = true
			}
		}
	case c == 't':
		sc.bad = sc.bad || !sc.literal("true")
	case c == 'f':
		sc.bad = sc.bad || !sc.literal("false")
	case c == 'n':
		sc.bad = sc.bad || !sc.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		sc.skipNumber()
	default:
		sc.bad = true
	}
}

// skipString passes over a string, escapes included.
func (sc *scanner) skipString() {
	sc.i++ // opening quote
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		switch {
		case c == '"':
			sc.i++
			return
		case c < 0x20:
			sc.bad = true
			return
		case c == '\\':
			if sc.i+1 >= len(sc.s) {
				sc.bad = true
				return
			}
			switch sc.s[sc.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				sc.i += 2
			case 'u':
				if sc.i+6 > len(sc.s) {
					sc.bad = true
					return
				}
				for _, h := range []byte(sc.s[sc.i+2 : sc.i+6]) {
					if !isHex(h) {
						sc.bad = true
						return
					}
				}
				sc.i += 6
			default:
				sc.bad = true
				return
			}
		default:
			sc.i++
		}
	}
	sc.bad = true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// skipNumber passes over a number with JSON's grammar.
func (sc *scanner) skipNumber() {
	sc.consume('-')
	digits := func() int {
		n := 0
		for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
			sc.i++
			n++
		}
		return n
	}
	start := sc.i
	if n := digits(); n == 0 || n > 1 && sc.s[start] == '0' {
		sc.bad = true
		return
	}
	if sc.consume('.') && digits() == 0 {
		sc.bad = true
		return
	}
	if sc.consume('e') || sc.consume('E') {
		if !sc.consume('+') {
			sc.consume('-')
		}
		if digits() == 0 {
			sc.bad = true
		}
	}
}

func (sc *scanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

func (sc *scanner) consume(c byte) bool {
	if sc.i < len(sc.s) && sc.s[sc.i] == c {
		sc.i++
		return true
	}
	return false
}

func (sc *scanner) literal(lit string) bool {
	if strings.HasPrefix(sc.s[sc.i:], lit) {
		sc.i += len(lit)
		return true
	}
	return false
}
