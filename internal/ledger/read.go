package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/call"
)

// Call returns the state of one call (live, or settled within CallTTL), or
// an error wrapping ErrNotFound.
func (l *Ledger) Call(ctx context.Context, project, node, channel string) (Call, error) {
	if err := checkCall(project, node, channel); err != nil {
		return Call{}, err
	}
	h, err := l.rdb.HGetAll(ctx, l.callKey(project, node, channel)).Result()
	if err != nil {
		return Call{}, fmt.Errorf("read call %s/%s of project %q from redis: %w", node, channel, project, err)
	}
	if len(h) == 0 {
		return Call{}, fmt.Errorf("call %s/%s of project %q: %w", node, channel, project, ErrNotFound)
	}
	return callFrom(project, h), nil
}

// Live returns the live calls of project, earliest next due first.
func (l *Ledger) Live(ctx context.Context, project string) ([]Call, error) {
	return l.liveRange(ctx, project, &redis.ZRangeBy{Min: "-inf", Max: "+inf"})
}

// LiveOf returns the live calls of project on one node (for orphan
// detection against that node's snapshot).
func (l *Ledger) LiveOf(ctx context.Context, project, node string) ([]Call, error) {
	all, err := l.Live(ctx, project)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, c := range all {
		if c.Node == node {
			out = append(out, c)
		}
	}
	return out, nil
}

// Overdue returns up to limit live calls whose next block fell due before
// `before`, earliest first (for sweepers that debit calls whose block
// timer was lost).
func (l *Ledger) Overdue(ctx context.Context, project string, before time.Time, limit int) ([]Call, error) {
	return l.liveRange(ctx, project, &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(before.UnixMilli(), 10), Count: int64(max(limit, 1)),
	})
}

func (l *Ledger) liveRange(ctx context.Context, project string, by *redis.ZRangeBy) ([]Call, error) {
	if err := call.CheckProject(project); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	keys, err := l.rdb.ZRangeByScore(ctx, l.key(project, "live"), by).Result()
	if err != nil {
		return nil, fmt.Errorf("read live calls of project %q from redis: %w", project, err)
	}
	return l.LiveCalls(ctx, project, keys)
}

// LiveKeys returns the keys (Call.Key: node/channel) of project's live
// calls, earliest next due first: a cheap listing for callers that read
// only some of the calls (LiveCalls).
func (l *Ledger) LiveKeys(ctx context.Context, project string) ([]string, error) {
	if err := call.CheckProject(project); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	keys, err := l.rdb.ZRange(ctx, l.key(project, "live"), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read live call keys of project %q from redis: %w", project, err)
	}
	return keys, nil
}

// LiveCalls returns the calls of project with the given keys (as LiveKeys
// returns them), in that order; a call whose record is gone is left out.
func (l *Ledger) LiveCalls(ctx context.Context, project string, keys []string) ([]Call, error) {
	if err := call.CheckProject(project); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(keys) == 0 {
		return []Call{}, nil
	}
	pipe := l.rdb.Pipeline()
	hs := make([]*redis.MapStringStringCmd, len(keys))
	for i, k := range keys {
		hs[i] = pipe.HGetAll(ctx, l.key(project, "call:"+k))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read live calls of project %q from redis: %w", project, err)
	}
	out := make([]Call, 0, len(keys))
	for _, h := range hs {
		if len(h.Val()) > 0 {
			out = append(out, callFrom(project, h.Val()))
		}
	}
	return out, nil
}

// CDRs returns up to limit records of settled calls of project, latest
// ended first.
func (l *Ledger) CDRs(ctx context.Context, project string, limit int) ([]call.CDR, error) {
	if err := call.CheckProject(project); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	keys, err := l.rdb.ZRevRange(ctx, l.key(project, "recent"), 0, int64(max(limit, 1))-1).Result()
	if err != nil {
		return nil, fmt.Errorf("read CDRs of project %q from redis: %w", project, err)
	}
	out := make([]call.CDR, 0, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	vals, err := l.rdb.HMGet(ctx, l.key(project, "cdrs"), keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("read CDRs of project %q from redis: %w", project, err)
	}
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		var c call.CDR
		if err := json.Unmarshal([]byte(s), &c); err != nil {
			return nil, fmt.Errorf("decode CDR %s of project %q: %w", keys[i], project, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Entries returns up to limit ledger entries of project, newest first.
func (l *Ledger) Entries(ctx context.Context, project string, limit int) ([]Entry, error) {
	if err := call.CheckProject(project); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	msgs, err := l.rdb.XRevRangeN(ctx, l.key(project, "ledger"), "+", "-", int64(max(limit, 1))).Result()
	if err != nil {
		return nil, fmt.Errorf("read ledger of project %q from redis: %w", project, err)
	}
	out := make([]Entry, len(msgs))
	for i, m := range msgs {
		out[i] = entryFrom(m)
	}
	return out, nil
}

func entryFrom(m redis.XMessage) Entry {
	s := func(k string) string { v, _ := m.Values[k].(string); return v }
	return Entry{
		ID:        m.ID,
		At:        time.UnixMilli(parseInt(s("at"))).UTC(),
		Kind:      s("kind"),
		Seconds:   parseInt(s("seconds")),
		Balance:   parseInt(s("balance")),
		Call:      s("call"),
		Block:     int(parseInt(s("block"))),
		Reference: s("ref"),
	}
}

func callFrom(project string, h map[string]string) Call {
	c := Call{
		Project:    project,
		Node:       h["node"],
		Channel:    h["channel"],
		AnsweredAt: time.UnixMilli(parseInt(h["answered"])).UTC(),
		Tariff:     tariffFrom(h),
		Debited:    parseInt(h["debited"]),
		NextBlock:  int(parseInt(h["next_block"])),
		NextDue:    time.UnixMilli(parseInt(h["next_due"])).UTC(),
		Settled:    h["settled"] == "1",
		Estimated:  h["estimated"] == "1",
		Exhausted:  h["exhausted"] == "1",
	}
	return c
}

// pairs turns a flat HGETALL reply of a script into a map.
func pairs(v any) map[string]string {
	a, _ := v.([]any)
	m := make(map[string]string, len(a)/2)
	for i := 0; i+1 < len(a); i += 2 {
		m[asStr(a[i])] = asStr(a[i+1])
	}
	return m
}

// parseCrossings decodes the "T balance generation ..." triples of a script.
func parseCrossings(s string) []Crossing {
	f := strings.Fields(s)
	var out []Crossing
	for i := 0; i+2 < len(f); i += 3 {
		t, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			continue
		}
		out = append(out, Crossing{ThresholdMinutes: t, Balance: parseInt(f[i+1]), Generation: parseInt(f[i+2])})
	}
	return out
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		return parseInt(x)
	}
	return 0
}

func asStr(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	}
	return ""
}

func parseInt(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }

func b01(b bool) int {
	if b {
		return 1
	}
	return 0
}
