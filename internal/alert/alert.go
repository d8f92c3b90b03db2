// Package alert defines the messages of the operations channel (stream
// ALERTS) and the pure logic around them: burn rate, time to zero, text.
package alert

import (
	"strconv"
	"time"
)

// Kinds of alert (SPEC §7).
const (
	Threshold      = "threshold"       // a balance crossed a threshold downward
	Exhausted      = "exhausted"       // a call was cut or refused for lack of balance
	UnknownProject = "unknown_project" // a call named a project minuted did not know
	ARILost        = "ari_lost"
	ARIRestored    = "ari_restored"
	Unbilled       = "unbilled"      // calls with no project were seen
	DeadLettered   = "dead_lettered" // a message could not be processed
	RedisDown      = "redis_down"
)

// Alert is one message on minuted.alerts.<project|_system>.
type Alert struct {
	Schema  int       `json:"schema"`
	ID      string    `json:"id"` // deterministic: also the Nats-Msg-Id, the dedupe key of every sink
	Kind    string    `json:"kind"`
	Project string    `json:"project,omitempty"`
	Node    string    `json:"node,omitempty"`
	At      time.Time `json:"at"`
	// Balance and threshold, for project alerts.
	BalanceSeconds   int64    `json:"balance_seconds"`
	ThresholdMinutes *float64 `json:"threshold_minutes,omitempty"`
	// Detail is free text from the raiser (a reason, a channel, a count).
	Detail string `json:"detail,omitempty"`
	Count  int    `json:"count,omitempty"`
}

// ThresholdCrossed is the alert of one downward crossing of a project's
// threshold. Its id names the crossing's generation, so however many
// instances or replays raise it, the stream and every sink keep it once.
func ThresholdCrossed(project string, thresholdMinutes float64, generation, balance int64, at time.Time) Alert {
	t := thresholdMinutes
	return Alert{
		Schema: Schema,
		ID: "threshold/" + project + "/" + strconv.FormatFloat(t, 'f', -1, 64) + "/" +
			strconv.FormatInt(generation, 10),
		Kind: Threshold, Project: project, At: at,
		BalanceSeconds: balance, ThresholdMinutes: &t,
	}
}
