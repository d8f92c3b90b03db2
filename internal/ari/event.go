// Package ari speaks the Asterisk REST Interface for minuted: a lean decoder
// of the websocket events billing needs, a websocket Listener that never
// blocks Asterisk, and a REST Client (list, hangup, continue, info).
package ari

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TimeLayout is the layout of ARI's "timestamp" and "creationtime":
// milliseconds and the PBX's local UTC offset (2026-11-27T14:30:39.021+0000).
const TimeLayout = "2006-01-02T15:04:05.000-0700"

// Event types the ingest tracker acts on.
const (
	ChannelCreated      = "ChannelCreated"
	ChannelDestroyed    = "ChannelDestroyed"
	ChannelStateChange  = "ChannelStateChange"
	ChannelVarset       = "ChannelVarset"
	Dial                = "Dial"
	ApplicationReplaced = "ApplicationReplaced"
)

// Event is one ARI websocket event, reduced to the fields billing needs.
// Unknown event types decode without error: only Type and the common fields
// are filled in.
type Event struct {
	Type        string
	Timestamp   time.Time // UTC, millisecond precision
	AsteriskID  string
	Application string
	// Channel is the subject of Channel* and Stasis* events; nil for a
	// global ChannelVarset and for events about other objects.
	Channel *Channel
	// Caller (nil for an originate) and Peer of a Dial event.
	Caller, Peer *Channel
	DialStatus   string
	// Cause and CauseTxt of ChannelDestroyed.
	Cause    int
	CauseTxt string
	// Variable and Value of ChannelVarset.
	Variable, Value string
	// Replaced is true for ApplicationReplaced: another websocket took the
	// application name and this connection will receive nothing more.
	Replaced bool
}

// Channel is the channel snapshot carried by an event or listed by
// GET /channels.
type Channel struct {
	ID, Name, State, AccountCode string
	Context, Exten               string // current dialplan location
	// AppName and AppData are the application the channel is running
	// (dialplan.app_name/app_data). The outgoing channel Dial() creates
	// shows AppDial "(Outgoing Line)" for its whole life: see Dialled.
	AppName, AppData string
	CreationTime     time.Time
	Vars             map[string]string // ari.conf channelvars
}

type wireDialplan struct {
	Context string `json:"context"`
	Exten   string `json:"exten"`
	AppName string `json:"app_name"`
	AppData string `json:"app_data"`
}

type wireChannel struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	State        string            `json:"state"`
	AccountCode  string            `json:"accountcode"`
	Dialplan     wireDialplan      `json:"dialplan"`
	CreationTime string            `json:"creationtime"`
	ChannelVars  map[string]string `json:"channelvars"`
}

type wireEvent struct {
	Type        string       `json:"type"`
	Timestamp   string       `json:"timestamp"`
	AsteriskID  string       `json:"asterisk_id"`
	Application string       `json:"application"`
	Channel     *wireChannel `json:"channel"`
	Caller      *wireChannel `json:"caller"`
	Peer        *wireChannel `json:"peer"`
	DialStatus  string       `json:"dialstatus"`
	Cause       int          `json:"cause"`
	CauseTxt    string       `json:"cause_txt"`
	Variable    string       `json:"variable"`
	Value       string       `json:"value"`
}

// channelRequired lists the event types that must carry a channel with an id.
var channelRequired = map[string]bool{
	ChannelCreated: true, ChannelDestroyed: true, ChannelStateChange: true,
	"ChannelDialplan": true, "ChannelHangupRequest": true, "ChannelCallerId": true,
	"ChannelConnectedLine": true, "ChannelEnteredBridge": true, "ChannelLeftBridge": true,
	"StasisStart": true, "StasisEnd": true,
}

// Decode parses one websocket frame. Errors say why the frame is unusable:
// malformed JSON, missing type, missing or bad timestamp, a channel event
// without channel.id, a Dial without peer.id.
func Decode(b []byte) (Event, error) { return DecodeString(string(b)) }

// DecodeString is Decode of a frame held as a string (as the Listener hands
// frames over): the event's strings are substrings of s, with no copy.
func DecodeString(s string) (Event, error) {
	var le leanEvent
	if scanEvent(s, &le) {
		return convert(&le.w, [3]*wireChannel{le.channel(0), le.channel(1), le.channel(2)}, nil)
	}
	return decodeJSON([]byte(s), nil)
}

// Decoder is DecodeString for a consumer done with each event before it
// decodes the next (ingest's event loop): the channels of the events it
// returns, and their Vars maps, live in the Decoder, which saves three
// allocations per channel, and are overwritten by its next DecodeString.
// Not for concurrent use.
type Decoder struct {
	chans [3]Channel
	vars  [3]map[string]string
}

// DecodeString is the package's DecodeString, with the event's channel,
// caller and peer (Vars included) valid only until the next call.
func (d *Decoder) DecodeString(s string) (Event, error) {
	var le leanEvent
	le.spare = d.vars
	if !scanEvent(s, &le) {
		return decodeJSON([]byte(s), &d.chans)
	}
	for i := range le.chans {
		if v := le.chans[i].ChannelVars; v != nil {
			d.vars[i] = v
		}
	}
	return convert(&le.w, [3]*wireChannel{le.channel(0), le.channel(1), le.channel(2)}, &d.chans)
}

// decodeJSON is Decode with encoding/json alone (the reference the lean
// scanner is checked against).
func decodeJSON(b []byte, store *[3]Channel) (Event, error) {
	var w wireEvent
	if err := json.Unmarshal(b, &w); err != nil {
		return Event{}, fmt.Errorf("malformed ARI event JSON: %w", err)
	}
	return convert(&w, [3]*wireChannel{w.Channel, w.Caller, w.Peer}, store)
}

// convert checks and converts w, whose channel, caller and peer are given
// apart in chans (w's own are not read: see leanEvent); store is as for
// decodeString.
func convert(w *wireEvent, chans [3]*wireChannel, store *[3]Channel) (Event, error) {
	if w.Type == "" {
		return Event{}, errors.New("ARI event has no type")
	}
	ev := Event{
		Type: w.Type, AsteriskID: w.AsteriskID, Application: w.Application,
		DialStatus: w.DialStatus, Cause: w.Cause, CauseTxt: w.CauseTxt,
		Variable: w.Variable, Value: w.Value, Replaced: w.Type == ApplicationReplaced,
	}
	if w.Timestamp == "" {
		return ev, fmt.Errorf("ARI event %s has no timestamp", w.Type)
	}
	ts, err := ParseTime(w.Timestamp)
	if err != nil {
		return ev, fmt.Errorf("ARI event %s has a bad timestamp: %w", w.Type, err)
	}
	ev.Timestamp = ts
	dst := func(i int) *Channel {
		if store == nil {
			return nil
		}
		return &store[i]
	}
	if ev.Channel, err = convChannel(chans[0], "channel", dst(0)); err != nil {
		return ev, fmt.Errorf("ARI event %s: %w", w.Type, err)
	}
	if channelRequired[w.Type] && ev.Channel == nil {
		return ev, fmt.Errorf("ARI event %s has no channel", w.Type)
	}
	if w.Type == Dial {
		if ev.Caller, err = convChannel(chans[1], "caller", dst(1)); err != nil {
			return ev, fmt.Errorf("ARI event Dial: %w", err)
		}
		if ev.Peer, err = convChannel(chans[2], "peer", dst(2)); err != nil {
			return ev, fmt.Errorf("ARI event Dial: %w", err)
		}
		if ev.Peer == nil {
			return ev, errors.New("ARI event Dial has no peer")
		}
	}
	return ev, nil
}

// convChannel converts w into *dst (a new Channel if dst is nil) and
// returns it; nil for no channel.
func convChannel(w *wireChannel, field string, dst *Channel) (*Channel, error) {
	if w == nil {
		return nil, nil
	}
	if w.ID == "" {
		return nil, fmt.Errorf("%s has no id", field)
	}
	c := Channel{
		ID: w.ID, Name: w.Name, State: w.State, AccountCode: w.AccountCode,
		Context: w.Dialplan.Context, Exten: w.Dialplan.Exten, Vars: w.ChannelVars,
		AppName: w.Dialplan.AppName, AppData: w.Dialplan.AppData,
	}
	if w.CreationTime != "" {
		t, err := ParseTime(w.CreationTime)
		if err != nil {
			return nil, fmt.Errorf("%s %s has a bad creationtime: %w", field, w.ID, err)
		}
		c.CreationTime = t
	}
	if dst == nil {
		dst = new(Channel)
	}
	*dst = c
	return dst, nil
}

// OutgoingLine is the app_data Asterisk shows on a channel created by an
// application that dials out (AppDial for Dial(), AppQueue for Queue(),
// AppDial2 for an originate).
const OutgoingLine = "(Outgoing Line)"

// Dialled reports whether the channel is a leg created by Dial() or
// Queue() (app AppDial/AppQueue with data "(Outgoing Line)"), i.e. the
// callee side of another channel's call. An originated channel (AppDial2)
// is not: it is the call itself.
func (c *Channel) Dialled() bool {
	return c.AppData == OutgoingLine && c.AppName != "AppDial2" && c.AppName != ""
}

// DecodeChannels parses the body of GET /channels.
func DecodeChannels(b []byte) ([]Channel, error) {
	var ws []wireChannel
	if err := json.Unmarshal(b, &ws); err != nil {
		return nil, fmt.Errorf("malformed channel list JSON: %w", err)
	}
	out := make([]Channel, len(ws))
	for i := range ws {
		if _, err := convChannel(&ws[i], "channel", &out[i]); err != nil {
			return nil, fmt.Errorf("channel list entry %d: %w", i, err)
		}
	}
	return out, nil
}
