package stream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/backoff"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
)

// StreamConfigs returns the JetStream configuration of minuted's streams
// (CALLS, ALERTS, CDR, DLQ, NODES) for cfg: storage, replicas, max age and
// duplicate window from config. The duplicate window is capped at the max
// age, as JetStream requires.
func StreamConfigs(cfg config.NATSConfig) ([]jetstream.StreamConfig, error) {
	storage := jetstream.FileStorage
	switch cfg.Storage {
	case "", "file":
	case "memory":
		storage = jetstream.MemoryStorage
	default:
		return nil, fmt.Errorf("nats.storage must be file or memory, got %q", cfg.Storage)
	}
	replicas := max(cfg.Replicas, 1)
	dup := cfg.DuplicateWindow
	if dup <= 0 {
		dup = config.Default().NATS.DuplicateWindow
	}
	if cfg.MaxAge > 0 && dup > cfg.MaxAge {
		dup = cfg.MaxAge
	}
	mk := func(name, subject, desc string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    []string{subject},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     storage,
			Replicas:    replicas,
			MaxAge:      cfg.MaxAge,
			Duplicates:  dup,
		}
	}
	// The last snapshot of each node (ingest publishes them on core NATS;
	// the stream captures them).
	nodes := mk(call.NodesStream, call.NodesSubjects, "minuted: last live-call snapshot of each node")
	nodes.MaxMsgsPerSubject = 1
	return []jetstream.StreamConfig{
		mk(call.CallsStream, call.CallsSubjects, "minuted call events (started/answered/ended) from ingest"),
		mk(call.AlertsStream, call.AlertsSubject, "minuted alerts for the operations channel"),
		mk(call.CDRStream, call.CDRSubjects, "minuted records of settled calls"),
		mk(call.DLQStream, call.DLQSubjects, "minuted dead letters: messages that could not be processed"),
		nodes,
	}, nil
}

// EnsureStreams creates minuted's streams or updates them to the current
// configuration.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfg config.NATSConfig) error {
	scs, err := StreamConfigs(cfg)
	if err != nil {
		return fmt.Errorf("stream configuration: %w", err)
	}
	var errs []error
	for _, sc := range scs {
		if err := createOrUpdate(ctx, js, sc); err != nil {
			hint := ""
			if strings.Contains(err.Error(), "change storage type") {
				hint = " (storage type cannot change in place: back up and delete the stream, or keep nats.storage as it was)"
			}
			errs = append(errs, fmt.Errorf("create or update stream %s on %s: %w%s", sc.Name, sc.Subjects[0], err, hint))
		}
	}
	return errors.Join(errs...)
}

// ConsumerOptions tune a durable pull consumer.
type ConsumerOptions struct {
	// FilterSubjects limits the consumer to these subjects (none: all).
	FilterSubjects []string
	// AckWait is how long a delivered message may stay unacknowledged
	// before it is redelivered (0: server default, 30s).
	AckWait time.Duration
	// MaxDeliver bounds deliveries of one message (0 or -1: unlimited).
	MaxDeliver int
	// MaxAckPending bounds unacknowledged messages in flight (0: server default).
	MaxAckPending int
}

// EnsureConsumer creates or updates the durable pull consumer name on
// stream, with explicit acks, delivering from the start of the stream.
// Several processes calling it with the same name share the consumer.
func EnsureConsumer(ctx context.Context, js jetstream.JetStream, stream, name string, o ConsumerOptions) (jetstream.Consumer, error) {
	cc := jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    o.MaxDeliver,
		MaxAckPending: o.MaxAckPending,
	}
	if cc.MaxDeliver == 0 {
		cc.MaxDeliver = -1
	}
	switch len(o.FilterSubjects) {
	case 0:
	case 1:
		cc.FilterSubject = o.FilterSubjects[0]
	default:
		cc.FilterSubjects = o.FilterSubjects
	}
	c, err := js.CreateOrUpdateConsumer(ctx, stream, cc)
	if err != nil {
		return nil, fmt.Errorf("create or update consumer %s on stream %s: %w", name, stream, err)
	}
	return c, nil
}

// StoredMsg is a message read back from a stream.
type StoredMsg struct {
	Subject string
	Data    []byte
}

// LastPerSubject reads the last message of each subject of the stream
// that matches one of filters (the NODES stream's snapshots, say). A read
// that stops short returns what it got with the error.
func LastPerSubject(ctx context.Context, js jetstream.JetStream, streamName string, filters ...string) ([]StoredMsg, error) {
	st, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", streamName, err)
	}
	want := 0
	for _, f := range filters {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(f))
		if err != nil {
			return nil, fmt.Errorf("subjects %s of stream %s: %w", f, streamName, err)
		}
		want += len(info.State.Subjects)
	}
	if want == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: filters, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy})
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", streamName, err)
	}
	out := make([]StoredMsg, 0, want)
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return out, fmt.Errorf("read stream %s: %w", streamName, err)
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, StoredMsg{Subject: m.Subject(), Data: m.Data()})
			got++
		}
		if got == 0 {
			return out, fmt.Errorf("read stream %s: %d of its %d last messages of %v arrived (a subject purged meanwhile, or the server is away)",
				streamName, len(out), want, filters)
		}
	}
	return out, nil
}

// Dead-letter headers.
const (
	HeaderReason = "Minuted-Reason"
	HeaderSource = "Minuted-Source"
)

// DeadLetter publishes the original bytes of a message that cannot be
// processed to minuted.dlq.<source>, with the reason and source in headers.
// Its Nats-Msg-Id is a hash of source and data, so a redelivered message is
// dead-lettered once (within the duplicate window).
func DeadLetter(ctx context.Context, js jetstream.JetStream, source string, data []byte, reason error) error {
	if source == "" || strings.ContainsAny(source, " \t\r\n*>") || strings.HasPrefix(source, ".") || strings.HasSuffix(source, ".") {
		return fmt.Errorf("dead letter: source %q is not a valid subject token", source)
	}
	why := "unknown"
	if reason != nil {
		why = reason.Error()
	}
	// Headers are single-line; keep a long reason readable but bounded.
	why = strings.NewReplacer("\r", " ", "\n", " ").Replace(why)
	if len(why) > 1024 {
		why = why[:1024] + "..."
	}
	m := &nats.Msg{Subject: call.DLQSubject(source), Data: data, Header: nats.Header{}}
	m.Header.Set(HeaderReason, why)
	m.Header.Set(HeaderSource, source)
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(DeadLetterID(source, data))); err != nil {
		return fmt.Errorf("dead letter to %s (reason: %s): %w", m.Subject, why, err)
	}
	return nil
}

// DeadLetterID is the Nats-Msg-Id DeadLetter uses for data from source.
func DeadLetterID(source string, data []byte) string {
	h := sha256.New()
	h.Write([]byte(source))
	h.Write([]byte{0})
	h.Write(data)
	return "dlq/" + source + "/" + hex.EncodeToString(h.Sum(nil))
}

// createOrUpdate creates or updates one stream, each attempt bounded: on a
// fresh NATS cluster several instances starting at once can see a request
// go unanswered while the first one creates the stream, so an attempt that
// times out is tried again until ctx ends.
func createOrUpdate(ctx context.Context, js jetstream.JetStream, sc jetstream.StreamConfig) error {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.CreateOrUpdateStream(actx, sc)
		cancel()
		if err == nil || ctx.Err() != nil || !retryable(err) {
			return err
		}
		if !backoff.Sleep(ctx, backoff.Delay(100*time.Millisecond, 2*time.Second, attempt, rand.Float64())) {
			return err
		}
	}
}

// retryable: a timeout, no responders or a stream that another instance
// created meanwhile (the next attempt updates it).
func retryable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}
