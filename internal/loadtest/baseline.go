package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"

	upstream "github.com/CyCoreSystems/ari/v6"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/sim"
)

// Per-call counts of the unavoidable work (issue 7): a recorded
// single-leg call is ~29 ARI events, 3 CALLS messages and 2–3 scripts; the
// baseline takes 3 scripts (open + first block, one more block, settle).
const (
	BaselineMessages = 3
	BaselineScripts  = 3
)

// Op is the raw cost of one operation: the CPU of the client (this
// process) and of the server per operation, and the wall time per
// operation at the throughput reached.
type Op struct {
	N            int     `json:"n"`
	ClientUS     float64 `json:"client_cpu_us"`
	ServerUS     float64 `json:"server_cpu_us"`
	WallUS       float64 `json:"wall_us"`
	PerSec       float64 `json:"ops_per_s"`
	PerCall      float64 `json:"per_call"`           // how many per call
	CallClientUS float64 `json:"call_client_cpu_us"` // ClientUS × PerCall
}

// Baseline is the raw cost of the unavoidable parts of one call, measured
// on this machine in the same run.
type Baseline struct {
	// DecodeMinimal: encoding/json into a minimal struct of the fields
	// billing uses; the baseline's decode.
	DecodeMinimal Op `json:"decode_minimal"`
	// DecodeUpstream: ari/v6 DecodeEvent (full library types), for reference.
	DecodeUpstream Op  `json:"decode_upstream"`
	Publish        Op  `json:"publish"`   // PublishAsync with Msg-Id, file stream
	FetchAck       Op  `json:"fetch_ack"` // pull Fetch(256) + Ack
	Script         Op  `json:"script"`    // EVALSHA of a ~4-write script, 16 clients
	EventsPerCall  int `json:"events_per_call"`
	// PerCallUS sums the client CPU of one call's decodes (minimal),
	// publishes, fetch+acks and scripts: the baseline.
	PerCallUS float64 `json:"per_call_client_cpu_us"`
	// PerCallUpstreamUS is the same with ari/v6 DecodeEvent.
	PerCallUpstreamUS float64 `json:"per_call_client_cpu_us_upstream_decode"`
	// PerCallWallUS sums the wall times per op (single stream), like the
	// issue's throughput figures.
	PerCallWallUS float64 `json:"per_call_wall_us"`
}

// minimalEvent holds only what billing reads from an ARI event.
type minimalEvent struct {
	Type      string `json:"type"`
	Timestamp string `json:"timestamp"`
	Channel   *struct {
		ID           string            `json:"id"`
		Name         string            `json:"name"`
		State        string            `json:"state"`
		AccountCode  string            `json:"accountcode"`
		CreationTime string            `json:"creationtime"`
		ChannelVars  map[string]string `json:"channelvars"`
	} `json:"channel"`
	Peer *struct {
		ID string `json:"id"`
	} `json:"peer"`
	Cause    int    `json:"cause"`
	Variable string `json:"variable"`
	Value    string `json:"value"`
}

// measure runs fn and returns its cost per op over n ops; server is the
// pid whose CPU counts as the server's (0: none).
func measure(n int, server int, fn func() error) (Op, error) {
	s0, _ := ProcCPU(server)
	c0, t0 := SelfCPU(), time.Now()
	if err := fn(); err != nil {
		return Op{}, err
	}
	wall, c1 := time.Since(t0), SelfCPU()
	s1, _ := ProcCPU(server)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(n) }
	return Op{N: n, ClientUS: us(c1 - c0), ServerUS: us(s1 - s0), WallUS: us(wall), PerSec: float64(n) / wall.Seconds()}, nil
}

func (o *Op) times(k float64) { o.PerCall, o.CallClientUS = k, o.ClientUS*k }

// MeasureBaseline times the raw operations against the stack's engines
// (run it while no load is running). scale multiplies the op counts
// (1 for the report; smaller for a smoke test).
func (s *Stack) MeasureBaseline(ctx context.Context, scale float64) (Baseline, error) {
	var b Baseline
	lines, err := sim.TraceEvents(sim.ShapeAnswered)
	if err != nil {
		return b, fmt.Errorf("baseline: %w", err)
	}
	b.EventsPerCall = len(lines)
	n := func(k int) int { return max(int(float64(k)*scale), 100) }

	calls := n(20000) / len(lines)
	decode := func(f func([]byte) error) func() error {
		for _, l := range lines { // warm up (type caches, first allocations)
			_ = f(l)
		}
		return func() error {
			for range calls {
				for _, l := range lines {
					if err := f(l); err != nil {
						return err
					}
				}
			}
			return nil
		}
	}
	if b.DecodeMinimal, err = measure(calls*len(lines), 0, decode(func(l []byte) error {
		var e minimalEvent
		return json.Unmarshal(l, &e)
	})); err != nil {
		return b, fmt.Errorf("baseline decode: %w", err)
	}
	if b.DecodeUpstream, err = measure(calls*len(lines), 0, decode(func(l []byte) error {
		_, err := upstream.DecodeEvent(l)
		return err
	})); err != nil {
		return b, fmt.Errorf("baseline ari/v6 decode: %w", err)
	}
	if err := s.baselineJetStream(ctx, n(30000), &b); err != nil {
		return b, err
	}
	if b.Script, err = s.baselineScript(ctx, n(30000)); err != nil {
		return b, err
	}
	b.DecodeMinimal.times(float64(len(lines)))
	b.DecodeUpstream.times(float64(len(lines)))
	b.Publish.times(BaselineMessages)
	b.FetchAck.times(BaselineMessages)
	b.Script.times(BaselineScripts)
	rest := b.Publish.CallClientUS + b.FetchAck.CallClientUS + b.Script.CallClientUS
	b.PerCallUS = b.DecodeMinimal.CallClientUS + rest
	b.PerCallUpstreamUS = b.DecodeUpstream.CallClientUS + rest
	b.PerCallWallUS = b.DecodeMinimal.WallUS*float64(len(lines)) +
		(b.Publish.WallUS+b.FetchAck.WallUS)*BaselineMessages + b.Script.WallUS*BaselineScripts
	return b, nil
}

// baselineBody is a CALLS message of the usual size.
var baselineBody = []byte(`{"schema":1,"event":"ended","node":"02:fc:00:00:00:01","channel":"1795789839.13","name":"Local/100@from-internal-00000001;2","project":"proj-a","attributed_by":"variable","created_at":"2026-11-27T14:30:39.021Z","answered_at":"2026-11-27T14:30:39.022Z","ended_at":"2026-11-27T14:30:42.525Z","talk_ms":3503,"cause":16,"cause_txt":"Normal Clearing"}`)

func (s *Stack) baselineJetStream(ctx context.Context, n int, b *Baseline) error {
	const name = "BASELINE"
	str, err := s.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"baseline.>"}, Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute,
	})
	if err != nil {
		return fmt.Errorf("baseline stream: %w", err)
	}
	defer func() { _ = s.JS.DeleteStream(context.WithoutCancel(ctx), name) }()
	js, err := jetstream.New(s.NC, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		return fmt.Errorf("baseline JetStream: %w", err)
	}
	if b.Publish, err = measure(n, s.NATS.Pid, func() error {
		for i := range n {
			id := "02:fc:00:00:00:01/" + strconv.Itoa(i) + "/ended"
			if _, err := js.PublishAsync("baseline.proj-a.ended", baselineBody, jetstream.WithMsgID(id), jetstream.WithStallWait(time.Minute)); err != nil {
				return err
			}
		}
		select {
		case <-js.PublishAsyncComplete():
			return nil
		case <-time.After(time.Minute):
			return fmt.Errorf("publish acks did not complete in a minute")
		}
	}); err != nil {
		return fmt.Errorf("baseline publish: %w", err)
	}
	cons, err := str.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "baseline", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
	if err != nil {
		return fmt.Errorf("baseline consumer: %w", err)
	}
	if b.FetchAck, err = measure(n, s.NATS.Pid, func() error {
		for got := 0; got < n; {
			batch, err := cons.Fetch(min(256, n-got), jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return err
			}
			for m := range batch.Messages() {
				if err := m.Ack(); err != nil {
					return err
				}
				got++
			}
			if err := batch.Error(); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("baseline fetch+ack: %w", err)
	}
	return nil
}

// baselineScript does the Redis work of one balance change in one script:
// balance, call hash, ledger entry, live set.
var baselineScript = redis.NewScript(`
local bal = redis.call('HINCRBY', KEYS[1], 'balance', -tonumber(ARGV[1]))
redis.call('HSET', KEYS[2], 'debited', ARGV[1], 'next', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'k', 'debit', 's', ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
return bal`)

func (s *Stack) baselineScript(ctx context.Context, n int) (Op, error) {
	const workers = 16
	keys := []string{"baseline:{p}:project", "baseline:{p}:call", "baseline:{p}:ledger", "baseline:{p}:live"}
	if err := baselineScript.Load(ctx, s.RDB).Err(); err != nil {
		return Op{}, fmt.Errorf("baseline script: %w", err)
	}
	defer s.RDB.Del(context.WithoutCancel(ctx), keys...)
	op, err := measure(n, s.Redis.Pid, func() error {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					if err := baselineScript.EvalSha(ctx, s.RDB, keys, 60, i, "c"+strconv.Itoa(i)).Err(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	})
	if err != nil {
		return op, fmt.Errorf("baseline EVALSHA: %w", err)
	}
	return op, nil
}
