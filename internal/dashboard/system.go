package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
)

// Figures are what System knows beyond the ledger.
type Figures struct {
	Nodes []Node `json:"nodes"`
	// Consumer is the bill consumer of CALLS (nil when unknown).
	Consumer *Consumer `json:"consumer"`
	// DeadLetters is the number of messages in the DLQ stream (nil when unknown).
	DeadLetters *uint64  `json:"dead_letters"`
	Errors      []string `json:"errors,omitempty"`
}

// Node is one Asterisk node as its ingest's snapshots describe it.
type Node struct {
	Node         string    `json:"node"`
	ARIConnected bool      `json:"ari_connected"`
	LastSnapshot time.Time `json:"last_snapshot"`
	// Stale: no snapshot for StaleAfter (the node's ingest is gone or cut off).
	Stale     bool `json:"stale"`
	LiveCalls int  `json:"live_calls"`
}

// Consumer is the state of a JetStream consumer.
type Consumer struct {
	Name        string `json:"name"`
	Pending     uint64 `json:"pending"`     // not yet delivered (the lag)
	AckPending  int    `json:"ack_pending"` // delivered, not acknowledged
	Redelivered int    `json:"redelivered"`
}

// SystemView is the system page.
type SystemView struct {
	At      time.Time `json:"at"`
	Checks  []Check   `json:"checks"`
	Figures Figures   `json:"figures"`
	// Alerts are the newest system alerts (ARI lost/restored, dead letters...).
	Alerts      []alert.Alert `json:"alerts"`
	AlertsError string        `json:"alerts_error,omitempty"`
}

// Check is the result of one readiness check.
type Check struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// System reads the system view; viewers within half an Interval share it.
func (h *Handler) System(ctx context.Context) (SystemView, error) {
	return h.systemC.get(ctx, h.o.Now(), h.o.Interval/2, h.system)
}

func (h *Handler) system(ctx context.Context) (SystemView, error) {
	sv := SystemView{At: h.o.Now().UTC(), Checks: make([]Check, len(h.o.Checks))}
	var wg sync.WaitGroup
	for i, c := range h.o.Checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, checkTimeout)
			defer cancel()
			sv.Checks[i] = Check{Name: c.Name, OK: true}
			if err := runCheck(cctx, c.Check); err != nil {
				sv.Checks[i].OK, sv.Checks[i].Error = false, err.Error()
			}
		})
	}
	if h.o.System != nil {
		wg.Go(func() {
			f, err := h.o.System.Figures(ctx)
			if err != nil {
				f.Errors = append(f.Errors, err.Error())
			}
			sv.Figures = f
		})
	}
	wg.Wait()
	if sv.Figures.Nodes == nil {
		sv.Figures.Nodes = []Node{}
	}
	sv.Alerts, sv.AlertsError = h.recentAlerts(ctx, "_system", sv.At)
	return sv, nil
}

func runCheck(ctx context.Context, f func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	if f == nil {
		return errors.New("no check function")
	}
	return f(ctx)
}

// NATSSystem reads the system figures from NATS: the nodes' snapshots
// (subscribed from creation on), the bill consumer and the DLQ stream.
type NATSSystem struct {
	js         jetstream.JetStream
	consumer   string
	staleAfter time.Duration
	now        func() time.Time

	mu     sync.Mutex
	nodes  map[string]Node
	parts  map[string]*partCounts // the newest snapshot's live calls per part, by node
	subErr error
}

// partCounts counts the live calls of one snapshot (At, Gen) part by part:
// a big snapshot comes in several messages, each listing some of its calls.
type partCounts struct {
	at     time.Time
	gen    uint64
	counts map[int]int
}

// add records part p of a snapshot and returns the live calls of the
// newest snapshot seen; a part of an older snapshot (late) changes
// nothing and add reports it with current false.
func (pc *partCounts) add(p snapshotPart) (live int, current bool) {
	switch {
	case pc.counts == nil || p.At.After(pc.at) || p.At.Equal(pc.at) && p.Gen > pc.gen:
		pc.at, pc.gen, pc.counts = p.At, p.Gen, map[int]int{}
	case !p.At.Equal(pc.at) || p.Gen != pc.gen:
		return pc.total(), false
	}
	pc.counts[p.Part] = p.Calls
	return pc.total(), true
}

func (pc *partCounts) total() int {
	n := 0
	for _, c := range pc.counts {
		n += c
	}
	return n
}

// DefaultStaleAfter is how long a node may go without a snapshot before it
// is shown stale (three of the default 10 s snapshot intervals).
const DefaultStaleAfter = 30 * time.Second

// maxNodes bounds the nodes remembered (snapshots name them).
const maxNodes = 1000

// NewNATSSystem subscribes to the nodes' snapshots on nc (the subscription
// ends when nc is drained or closed) and reads consumer (of CALLS) and the
// DLQ stream through js. A failed subscription is reported by Figures.
func NewNATSSystem(nc *nats.Conn, js jetstream.JetStream, consumer string) *NATSSystem {
	s := &NATSSystem{js: js, consumer: consumer, staleAfter: DefaultStaleAfter, now: time.Now, nodes: map[string]Node{}, parts: map[string]*partCounts{}}
	if nc == nil {
		s.subErr = errors.New("no NATS connection")
		return s
	}
	for _, subj := range []string{call.SnapshotWildcard, call.SnapshotPartsWildcard} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) { s.observe(m.Subject, m.Data) }); err != nil {
			s.subErr = fmt.Errorf("subscribe to node snapshots (%s): %w", subj, err)
		}
	}
	return s
}

// snapshotHead is the part of a call.Snapshot the system view shows.
type snapshotHead struct {
	Node      string            `json:"node"`
	At        time.Time         `json:"at"`
	Connected bool              `json:"connected"`
	Gen       uint64            `json:"gen"`
	Part      int               `json:"part"`
	Calls     []json.RawMessage `json:"calls"`
}

// snapshotPart is what the view keeps of one snapshot message.
type snapshotPart struct {
	Node      string
	At        time.Time
	Connected bool
	Gen       uint64
	Part      int // from 1
	Calls     int // live calls listed in this part
}

// decodeSnapshot reads a node snapshot message (a whole snapshot or one
// part of it); the node must be named and match the subject's, which must
// be its part's.
func decodeSnapshot(subject string, b []byte) (snapshotPart, error) {
	var s snapshotHead
	if err := json.Unmarshal(b, &s); err != nil {
		return snapshotPart{}, fmt.Errorf("node snapshot on %s: %w", subject, err)
	}
	part := max(s.Part, 1)
	if s.Node == "" || strings.ContainsAny(s.Node, ". *>") || subject != call.SnapshotPartSubject(s.Node, part) {
		return snapshotPart{}, fmt.Errorf("node snapshot on %s names node %q part %d", subject, s.Node, part)
	}
	return snapshotPart{Node: s.Node, At: s.At.UTC(), Connected: s.Connected, Gen: s.Gen, Part: part, Calls: len(s.Calls)}, nil
}

func (s *NATSSystem) observe(subject string, data []byte) {
	p, err := decodeSnapshot(subject, data)
	if err != nil {
		return // bill logs bad snapshots; the view just ignores them
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[p.Node]; !ok && len(s.nodes) >= maxNodes {
		return
	}
	pc := s.parts[p.Node]
	if pc == nil {
		pc = &partCounts{}
		s.parts[p.Node] = pc
	}
	live, current := pc.add(p)
	if !current {
		return
	}
	// The receiving clock judges staleness; any part of the newest
	// snapshot shows the node alive.
	s.nodes[p.Node] = Node{Node: p.Node, ARIConnected: p.Connected, LastSnapshot: s.now().UTC(), LiveCalls: live}
}

// Figures reads the consumer and the DLQ stream and lists the nodes.
func (s *NATSSystem) Figures(ctx context.Context) (Figures, error) {
	var f Figures
	now := s.now()
	s.mu.Lock()
	for _, n := range s.nodes {
		n.Stale = now.Sub(n.LastSnapshot) > s.staleAfter
		if n.Stale {
			n.ARIConnected = false
		}
		f.Nodes = append(f.Nodes, n)
	}
	if s.subErr != nil {
		f.Errors = append(f.Errors, s.subErr.Error())
	}
	s.mu.Unlock()
	slices.SortFunc(f.Nodes, func(a, b Node) int { return strings.Compare(a.Node, b.Node) })
	if s.js == nil {
		f.Errors = append(f.Errors, "no JetStream: consumer lag and dead letters unknown")
		return f, nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	if c, err := s.js.Consumer(ctx, call.CallsStream, s.consumer); err != nil {
		f.Errors = append(f.Errors, fmt.Sprintf("consumer %s of %s: %v", s.consumer, call.CallsStream, err))
	} else if info, err := c.Info(ctx); err != nil {
		f.Errors = append(f.Errors, fmt.Sprintf("consumer %s of %s: %v", s.consumer, call.CallsStream, err))
	} else {
		f.Consumer = &Consumer{Name: s.consumer, Pending: info.NumPending, AckPending: info.NumAckPending, Redelivered: info.NumRedelivered}
	}
	if st, err := s.js.Stream(ctx, call.DLQStream); err != nil {
		f.Errors = append(f.Errors, fmt.Sprintf("stream %s: %v", call.DLQStream, err))
	} else if info, err := st.Info(ctx); err != nil {
		f.Errors = append(f.Errors, fmt.Sprintf("stream %s: %v", call.DLQStream, err))
	} else {
		n := info.State.Msgs
		f.DeadLetters = &n
	}
	return f, nil
}
