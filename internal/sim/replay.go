package sim

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"time"
)

// ReplayOptions tune Replay.
type ReplayOptions struct {
	// Speed: 0 sends as fast as possible, 1 in real time, N N times faster.
	Speed float64
	// DropAfter lists message counts: after the first n messages have been sent
	// (indexes 0..n-1), Asterisk "restarts": every socket drops without a close
	// frame, the live channels are forgotten, and Replay waits for a client to
	// reconnect before it goes on. ParseConnections reads them from a
	// *.connections.txt file.
	DropAfter []int
	// Start is the time the first event is rebased to; zero means now.
	Start time.Time
}

// ReplayResult tells what a replay did.
type ReplayResult struct {
	Sent    int           // events emitted
	Skipped int           // events skipped because their channel had been hung up over REST
	Shift   time.Duration // added to every recorded timestamp
}

// ReadTrace reads a *.jsonl trace: one raw event a line, empty lines skipped.
func ReadTrace(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open ARI trace: %w", err)
	}
	defer f.Close()
	lines, err := ReadTraceFrom(f)
	if err != nil {
		return nil, fmt.Errorf("ARI trace %s: %w", path, err)
	}
	return lines, nil
}

// ReadTraceFrom reads trace lines from r.
func ReadTraceFrom(r io.Reader) ([][]byte, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	var lines [][]byte
	for sc.Scan() {
		l := bytes.TrimSpace(sc.Bytes())
		if len(l) == 0 {
			continue
		}
		lines = append(lines, bytes.Clone(l))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	return lines, nil
}

var closedRe = regexp.MustCompile(`websocket closed: .*\(messages so far: (\d+)\)`)

// ParseConnections reads a recorder's connections log (restart.connections.txt)
// and returns the message counts at which the socket closed, for
// ReplayOptions.DropAfter. A close after the last message is not a drop.
func ParseConnections(r io.Reader) ([]int, error) {
	sc := bufio.NewScanner(r)
	var out []int
	for sc.Scan() {
		m := closedRe.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		n, err := strconv.Atoi(string(m[1]))
		if err != nil {
			return nil, fmt.Errorf("connections log: bad message count %q: %w", m[1], err)
		}
		out = append(out, n)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read connections log: %w", err)
	}
	return out, nil
}

// ParseConnectionsFile is ParseConnections on a file.
func ParseConnectionsFile(path string) ([]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open connections log: %w", err)
	}
	defer f.Close()
	return ParseConnections(f)
}

// prepared is a trace line checked and with its timestamp parsed.
type prepared struct {
	raw  []byte
	at   time.Time
	meta eventMeta
}

func prepare(lines [][]byte) ([]prepared, error) {
	out := make([]prepared, len(lines))
	for i, l := range lines {
		m, err := scanEvent(l)
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", i+1, err)
		}
		if !m.timestamp.ok() {
			return nil, fmt.Errorf("trace line %d: event %s has no timestamp", i+1, m.typ)
		}
		at, err := parseTimestamp(l[m.timestamp.start:m.timestamp.end])
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", i+1, err)
		}
		out[i] = prepared{raw: l, at: at, meta: m}
	}
	return out, nil
}

// ReplayFile replays the trace at path (see Replay).
func (s *Server) ReplayFile(ctx context.Context, path string, opts ReplayOptions) (ReplayResult, error) {
	lines, err := ReadTrace(path)
	if err != nil {
		return ReplayResult{}, err
	}
	return s.Replay(ctx, lines, opts)
}

// Replay sends recorded events as Asterisk sent them. It waits for a client
// first. Timestamps are moved so the first event is opts.Start (default now,
// to the millisecond), keeping every recorded gap exact and each offset as
// recorded; pacing follows the gaps divided by Speed. Events of a channel
// hung up over REST meanwhile are skipped, as Asterisk would not send them.
func (s *Server) Replay(ctx context.Context, lines [][]byte, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	evs, err := prepare(lines)
	if err != nil {
		return res, err
	}
	if len(evs) == 0 {
		return res, nil
	}
	if err := s.WaitClients(ctx, 1); err != nil {
		return res, err
	}
	start := opts.Start
	if start.IsZero() {
		start = time.Now()
	}
	start = start.Truncate(time.Millisecond)
	res.Shift = start.Sub(evs[0].at)
	drops := map[int]bool{}
	for _, n := range opts.DropAfter {
		drops[n] = true
	}
	deleted := map[string]bool{}
	origin := time.Now()
	var timer *time.Timer
	for i, ev := range evs {
		if opts.Speed > 0 {
			target := origin.Add(time.Duration(float64(ev.at.Sub(evs[0].at)) / opts.Speed))
			if d := time.Until(target); d > 0 {
				if timer == nil {
					timer = time.NewTimer(d)
					defer timer.Stop()
				} else {
					timer.Reset(d)
				}
				select {
				case <-ctx.Done():
					return res, ctx.Err()
				case <-timer.C:
				}
			}
		} else if err := ctx.Err(); err != nil {
			return res, err
		}
		if ev.meta.chanID != "" && s.wasHungUp(ev.meta.chanID, deleted) {
			res.Skipped++
		} else {
			b, err := RebaseTimestamps(ev.raw, res.Shift)
			if err != nil {
				return res, fmt.Errorf("trace line %d: %w", i+1, err)
			}
			b = s.withNode(b)
			if err := s.Emit(b); err != nil {
				return res, fmt.Errorf("trace line %d: %w", i+1, err)
			}
			res.Sent++
		}
		if drops[i+1] && i+1 < len(evs) {
			s.Crash()
			waitStart := time.Now()
			if err := s.WaitClients(ctx, 1); err != nil {
				return res, err
			}
			origin = origin.Add(time.Since(waitStart)) // the reconnect gap does not count as late
		}
	}
	return res, nil
}

// wasHungUp says whether id was hung up over REST during this replay.
func (s *Server) wasHungUp(id string, deleted map[string]bool) bool {
	if deleted[id] {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hangups {
		if h.ChannelID == id && h.Found {
			deleted[id] = true
			return true
		}
	}
	return false
}

var recordedNode = []byte(`"asterisk_id":"` + DefaultAsteriskID + `"`)

// withNode rewrites the recorded asterisk_id to the double's own.
func (s *Server) withNode(b []byte) []byte {
	if s.opts.AsteriskID == DefaultAsteriskID {
		return b
	}
	return bytes.ReplaceAll(b, recordedNode, []byte(`"asterisk_id":"`+s.opts.AsteriskID+`"`))
}
