package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TimeLayout is the format of every ARI timestamp: milliseconds and the PBX's
// local UTC offset.
const TimeLayout = "2006-01-02T15:04:05.000-0700"

// span is a half-open byte range [start, end) inside an event; start < 0 means absent.
type span struct{ start, end int }

func (s span) ok() bool { return s.start >= 0 }

// eventMeta is what the double needs to know about one raw ARI event, found by a
// lean scan of its top-level keys (no full decode on the hot path).
type eventMeta struct {
	typ       string
	timestamp span // the string content of "timestamp", without quotes
	channel   span // the whole "channel" object, braces included
	chanID    string
	app       span // the string content of "application", without quotes
	variable  span // "variable" value (raw JSON string, quotes included)
	value     span // "value" value (raw JSON string, quotes included)
}

var errSyntax = errors.New("malformed JSON event")

// scanEvent reads the top-level keys of one JSON event.
func scanEvent(b []byte) (eventMeta, error) {
	m := eventMeta{timestamp: span{-1, -1}, channel: span{-1, -1}, app: span{-1, -1}, variable: span{-1, -1}, value: span{-1, -1}}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return m, fmt.Errorf("event does not start with an object: %w", errSyntax)
	}
	i++
	for first := true; ; first = false {
		i = skipWS(b, i)
		if i >= len(b) {
			return m, fmt.Errorf("event ends inside the object: %w", errSyntax)
		}
		if b[i] == '}' {
			if j := skipWS(b, i+1); j != len(b) {
				return m, fmt.Errorf("trailing bytes after the event: %w", errSyntax)
			}
			break
		}
		if !first {
			if b[i] != ',' {
				return m, fmt.Errorf("missing comma at byte %d: %w", i, errSyntax)
			}
			i = skipWS(b, i+1)
		}
		ks, ke, err := scanString(b, i)
		if err != nil {
			return m, err
		}
		key := b[ks+1 : ke-1]
		i = skipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return m, fmt.Errorf("missing colon at byte %d: %w", i, errSyntax)
		}
		i = skipWS(b, i+1)
		vs := i
		ve, err := skipValue(b, i, 0)
		if err != nil {
			return m, err
		}
		i = ve
		isStr := b[vs] == '"'
		switch string(key) {
		case "type":
			if isStr {
				m.typ = string(b[vs+1 : ve-1])
			}
		case "timestamp":
			if isStr {
				m.timestamp = span{vs + 1, ve - 1}
			}
		case "application":
			if isStr {
				m.app = span{vs + 1, ve - 1}
			}
		case "variable":
			if isStr {
				m.variable = span{vs, ve}
			}
		case "value":
			if isStr {
				m.value = span{vs, ve}
			}
		case "channel":
			if b[vs] == '{' {
				m.channel = span{vs, ve}
				m.chanID = objectStringField(b[vs:ve], "id")
			}
		}
	}
	if m.typ == "" {
		return m, fmt.Errorf("event has no \"type\": %w", errSyntax)
	}
	return m, nil
}

// objectStringField returns the raw content of a top-level string field of a
// JSON object already known to be well formed, or "". Like encoding/json, the
// last of duplicate keys wins.
func objectStringField(obj []byte, name string) string {
	found := ""
	i := skipWS(obj, 1)
	for i < len(obj) && obj[i] != '}' {
		if obj[i] == ',' {
			i = skipWS(obj, i+1)
		}
		ks, ke, err := scanString(obj, i)
		if err != nil {
			return ""
		}
		i = skipWS(obj, ke)
		i = skipWS(obj, i+1) // colon
		ve, err := skipValue(obj, i, 0)
		if err != nil {
			return ""
		}
		if string(obj[ks+1:ke-1]) == name {
			found = ""
			if obj[i] == '"' {
				found = string(obj[i+1 : ve-1])
			}
		}
		i = skipWS(obj, ve)
	}
	return found
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the bounds of the JSON string starting at b[i] (quotes included).
func scanString(b []byte, i int) (int, int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, 0, fmt.Errorf("expected a string at byte %d: %w", i, errSyntax)
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return i, j + 1, nil
		default:
			if b[j] < 0x20 {
				return 0, 0, fmt.Errorf("control byte in string at %d: %w", j, errSyntax)
			}
		}
	}
	return 0, 0, fmt.Errorf("unterminated string at byte %d: %w", i, errSyntax)
}

const maxDepth = 64

// skipValue returns the index just past the JSON value starting at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return 0, fmt.Errorf("nesting deeper than %d: %w", maxDepth, errSyntax)
	}
	if i >= len(b) {
		return 0, fmt.Errorf("missing value: %w", errSyntax)
	}
	switch c := b[i]; {
	case c == '"':
		_, e, err := scanString(b, i)
		return e, err
	case c == '{' || c == '[':
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		i = skipWS(b, i+1)
		if i < len(b) && b[i] == closing {
			return i + 1, nil
		}
		for {
			if c == '{' {
				_, ke, err := scanString(b, i)
				if err != nil {
					return 0, err
				}
				i = skipWS(b, ke)
				if i >= len(b) || b[i] != ':' {
					return 0, fmt.Errorf("missing colon at byte %d: %w", i, errSyntax)
				}
				i = skipWS(b, i+1)
			}
			e, err := skipValue(b, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = skipWS(b, e)
			if i >= len(b) {
				return 0, fmt.Errorf("unterminated container: %w", errSyntax)
			}
			if b[i] == closing {
				return i + 1, nil
			}
			if b[i] != ',' {
				return 0, fmt.Errorf("missing comma at byte %d: %w", i, errSyntax)
			}
			i = skipWS(b, i+1)
		}
	default:
		j := i
		for j < len(b) && bytes.IndexByte([]byte("-+.0123456789eEtrufalsn"), b[j]) >= 0 {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("unexpected byte %q at %d: %w", c, i, errSyntax)
		}
		return j, nil
	}
}

// isTimestamp says whether s has exactly the shape of TimeLayout.
func isTimestamp(s []byte) bool {
	if len(s) != len(TimeLayout) {
		return false
	}
	for i, c := range s {
		switch TimeLayout[i] {
		case '-', 'T', ':', '.':
			if i == 23 {
				if c != '+' && c != '-' {
					return false
				}
			} else if c != TimeLayout[i] {
				return false
			}
		default:
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// parseTimestamp parses an ARI timestamp.
func parseTimestamp(s []byte) (time.Time, error) {
	if !isTimestamp(s) {
		return time.Time{}, fmt.Errorf("timestamp %q is not in the form %s", s, TimeLayout)
	}
	t, err := time.Parse(TimeLayout, string(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: %w", s, err)
	}
	return t, nil
}

// RebaseTimestamps returns a copy of one raw event with every string value that
// is an ARI timestamp (the event's "timestamp", every "creationtime", those of
// nested channels such as "peer", "caller", "replace_channel") moved by shift,
// each keeping its own UTC offset and format. All other bytes are kept.
func RebaseTimestamps(event []byte, shift time.Duration) ([]byte, error) {
	out := make([]byte, 0, len(event))
	last := 0
	for i := 0; i < len(event); i++ {
		if event[i] != '"' {
			continue
		}
		s, e, err := scanString(event, i)
		if err != nil {
			return nil, err
		}
		content := event[s+1 : e-1]
		if isTimestamp(content) {
			t, err := parseTimestamp(content)
			if err != nil {
				return nil, err
			}
			nt := t.Add(shift)
			buf := nt.AppendFormat(make([]byte, 0, len(TimeLayout)), TimeLayout)
			if len(buf) != len(TimeLayout) {
				return nil, fmt.Errorf("timestamp %s moved by %s leaves the 4-digit year range", content, shift)
			}
			out = append(out, event[last:s+1]...)
			out = append(out, buf...)
			last = e - 1
		}
		i = e - 1
	}
	out = append(out, event[last:]...)
	return out, nil
}

// varValue decodes a raw JSON string value.
func varValue(raw []byte) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}
