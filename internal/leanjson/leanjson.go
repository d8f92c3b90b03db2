// Package leanjson is a small JSON scanner for decoders' fast paths.
// encoding/json spends most of a small message's decode in reflection and
// in one small string per field; a decoder built on Scanner walks the text
// once and takes every string as a substring of it, skipping what it does
// not read.
//
// The scanner only accepts what it fully understands: an escape in a string
// it keeps, invalid UTF-8 in one, a key that encoding/json could match to a
// known field case-insensitively, a value of an unexpected type, a number
// that is not a small integer, malformed JSON: any of these makes it give
// up (Done reports false), and the caller then decodes with encoding/json,
// so that results and errors are always encoding/json's. Each decoder built
// on it keeps a fuzz test checking that.
//
// Strings it returns share the text's memory: a holder that keeps one for
// long should strings.Clone it.
package leanjson

import (
	"strings"
	"unicode/utf8"
)

// Scanner reads one JSON text. Its methods do nothing useful once it has
// given up; check Done at the end.
type Scanner struct {
	s   string
	i   int
	bad bool // give up: let encoding/json decide
}

// New returns a Scanner of s.
func New(s string) Scanner { return Scanner{s: s} }

// Done reports whether the whole text was read (trailing whitespace
// allowed) without giving up.
func (sc *Scanner) Done() bool {
	sc.ws()
	return !sc.bad && sc.i == len(sc.s)
}

// GiveUp makes the scan fail: for what the caller does not understand.
func (sc *Scanner) GiveUp() { sc.bad = true }

// Field is a string field of a JSON object the scanner fills.
type Field struct {
	Key string
	Dst *string
}

// Field reads the value of key into its field, or skips it. A key that
// encoding/json could match to a field or to one of others (keys of
// fields the caller reads itself) case-insensitively gives up: one that
// differs from it only by ASCII case, or any key with a non-ASCII byte
// (Unicode folding maps 'ſ' to 's' and the Kelvin sign to 'k').
func (sc *Scanner) Field(key string, fields []Field, others ...string) {
	for _, f := range fields {
		if f.Key == key {
			sc.Str(f.Dst)
			return
		}
	}
	for i := 0; i < len(key); i++ {
		if key[i] >= utf8.RuneSelf {
			sc.bad = true
			return
		}
	}
	for _, f := range fields {
		sc.unknownKey(key, f.Key)
	}
	for _, k := range others {
		sc.unknownKey(key, k)
	}
	sc.Skip()
}

func (sc *Scanner) unknownKey(key, known string) {
	if len(known) == len(key) && strings.EqualFold(known, key) {
		sc.bad = true
	}
}

// Object reads {"key": value, ...}, calling f at each value, which f must
// read (or Skip).
func (sc *Scanner) Object(f func(key string)) {
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
func (sc *Scanner) key() string {
	k := sc.rawString()
	sc.ws()
	if !sc.consume(':') {
		sc.bad = true
	}
	return k
}

// Null reads a null if one comes next.
func (sc *Scanner) Null() bool {
	sc.ws()
	return sc.literal("null")
}

// Str reads a string value into *dst; null leaves it as it is (as
// encoding/json does). Only plain strings.
func (sc *Scanner) Str(dst *string) {
	if sc.Null() {
		return
	}
	*dst = sc.rawString()
}

// Text reads a string value (not null): without escapes, of valid UTF-8.
func (sc *Scanner) Text() string {
	sc.ws()
	return sc.rawString()
}

// rawString reads a string without escapes and of valid UTF-8.
func (sc *Scanner) rawString() string {
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
		case c >= utf8.RuneSelf:
			ascii = false
		}
		sc.i++
	}
	sc.bad = true
	return ""
}

// Int reads a JSON integer of at most 15 digits into *dst; null leaves it.
func (sc *Scanner) Int(dst *int) {
	if sc.Null() {
		return
	}
	*dst = int(sc.integer())
}

// Int64 is Int for an int64.
func (sc *Scanner) Int64(dst *int64) {
	if sc.Null() {
		return
	}
	*dst = sc.integer()
}

// integer reads an integer of at most 15 digits, so that it fits an int
// (and a float64) whatever the platform; longer ones give up.
func (sc *Scanner) integer() int64 {
	neg := sc.consume('-')
	start := sc.i
	var n int64
	for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
		if sc.i-start >= 15 {
			sc.bad = true
			return 0
		}
		n = n*10 + int64(sc.s[sc.i]-'0')
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

// Bool reads true or false into *dst; null leaves it.
func (sc *Scanner) Bool(dst *bool) {
	switch {
	case sc.Null():
	case sc.literal("true"):
		*dst = true
	case sc.literal("false"):
		*dst = false
	default:
		sc.bad = true
	}
}

// Skip passes over any JSON value, checking its syntax.
func (sc *Scanner) Skip() { sc.skip(0) }

func (sc *Scanner) skip(depth int) {
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
		sc.Object(func(string) { sc.skip(depth + 1) })
	case c == '[':
		sc.skipArray(depth)
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

func (sc *Scanner) skipArray(depth int) {
	sc.i++ // [
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
}

// skipString passes over a string, escapes included.
func (sc *Scanner) skipString() {
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
			sc.skipEscape()
			if sc.bad {
				return
			}
		default:
			sc.i++
		}
	}
	sc.bad = true
}

// skipEscape passes over the escape at sc.i.
func (sc *Scanner) skipEscape() {
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
	}
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// skipNumber passes over a number with JSON's grammar.
func (sc *Scanner) skipNumber() {
	sc.consume('-')
	start := sc.i
	if n := sc.digits(); n == 0 || n > 1 && sc.s[start] == '0' {
		sc.bad = true
		return
	}
	if sc.consume('.') && sc.digits() == 0 {
		sc.bad = true
		return
	}
	if sc.consume('e') || sc.consume('E') {
		if !sc.consume('+') {
			sc.consume('-')
		}
		if sc.digits() == 0 {
			sc.bad = true
		}
	}
}

func (sc *Scanner) digits() int {
	n := 0
	for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
		sc.i++
		n++
	}
	return n
}

func (sc *Scanner) ws() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

func (sc *Scanner) consume(c byte) bool {
	if sc.i < len(sc.s) && sc.s[sc.i] == c {
		sc.i++
		return true
	}
	return false
}

func (sc *Scanner) literal(lit string) bool {
	if strings.HasPrefix(sc.s[sc.i:], lit) {
		sc.i += len(lit)
		return true
	}
	return false
}
