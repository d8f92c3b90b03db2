package ari

import "github.com/minuted/minuted/internal/leanjson"

// The lean scanner: Decode's fast path. encoding/json spends most of an
// event's decode in reflection and in one small string per field, and
// ingest decodes every event Asterisk sends (29 per simple call). The
// scanner (internal/leanjson) walks the frame once, converts it to a string
// once and takes every field as a substring of it, skipping what billing
// does not read. Whatever it does not fully understand makes it give up,
// and Decode then uses encoding/json: results and errors are
// encoding/json's in every case (FuzzDecodeLeanMatchesJSON checks it).
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
	// spare holds a map per channel to read channelvars into, cleared
	// (a Decoder's from its previous event): nil means make one.
	spare [3]map[string]string
}

// channel returns the i-th channel (channel, caller, peer), nil if absent.
func (le *leanEvent) channel(i int) *wireChannel {
	if !le.has[i] {
		return nil
	}
	return &le.chans[i]
}

// scanEvent fills ev from s; false means "use encoding/json".
func scanEvent(s string, ev *leanEvent) bool {
	sc := leanjson.New(s)
	w := &ev.w
	strs := [...]leanjson.Field{{Key: "type", Dst: &w.Type}, {Key: "timestamp", Dst: &w.Timestamp},
		{Key: "asterisk_id", Dst: &w.AsteriskID}, {Key: "application", Dst: &w.Application},
		{Key: "dialstatus", Dst: &w.DialStatus}, {Key: "cause_txt", Dst: &w.CauseTxt},
		{Key: "variable", Dst: &w.Variable}, {Key: "value", Dst: &w.Value}}
	sc.Object(func(key string) {
		switch key {
		case "cause":
			sc.Int(&w.Cause)
		case "channel":
			ev.has[0] = scanChannel(&sc, &ev.chans[0], ev.has[0], ev.spare[0])
		case "caller":
			ev.has[1] = scanChannel(&sc, &ev.chans[1], ev.has[1], ev.spare[1])
		case "peer":
			ev.has[2] = scanChannel(&sc, &ev.chans[2], ev.has[2], ev.spare[2])
		default:
			sc.Field(key, strs[:], "cause", "channel", "caller", "peer")
		}
	})
	return sc.Done()
}

// scanChannel reads a channel object into c, false for null; a repeated
// key merges into the channel read before (as encoding/json does with a
// non-nil pointer). spare, if not nil, is the map channelvars go into.
func scanChannel(sc *leanjson.Scanner, c *wireChannel, merge bool, spare map[string]string) bool {
	if sc.Null() {
		return false
	}
	if !merge {
		*c = wireChannel{}
	}
	strs := [...]leanjson.Field{{Key: "id", Dst: &c.ID}, {Key: "name", Dst: &c.Name}, {Key: "state", Dst: &c.State},
		{Key: "accountcode", Dst: &c.AccountCode}, {Key: "creationtime", Dst: &c.CreationTime}}
	dp := [...]leanjson.Field{{Key: "context", Dst: &c.Dialplan.Context}, {Key: "exten", Dst: &c.Dialplan.Exten},
		{Key: "app_name", Dst: &c.Dialplan.AppName}, {Key: "app_data", Dst: &c.Dialplan.AppData}}
	sc.Object(func(key string) {
		switch key {
		case "dialplan":
			if !sc.Null() {
				sc.Object(func(key string) { sc.Field(key, dp[:]) })
			}
		case "channelvars":
			scanVars(sc, c, spare)
		default:
			sc.Field(key, strs[:], "dialplan", "channelvars")
		}
	})
	return true
}

// scanVars reads channelvars into c.ChannelVars: null clears them, an
// object adds to them (as encoding/json does with a map), made from spare
// (emptied) when there is one.
func scanVars(sc *leanjson.Scanner, c *wireChannel, spare map[string]string) {
	if sc.Null() {
		c.ChannelVars = nil
		return
	}
	switch {
	case c.ChannelVars != nil:
	case spare != nil:
		clear(spare)
		c.ChannelVars = spare
	default:
		c.ChannelVars = make(map[string]string, 4)
	}
	sc.Object(func(key string) {
		var v string // a null element is stored as "" (encoding/json)
		sc.Str(&v)
		c.ChannelVars[key] = v
	})
}
