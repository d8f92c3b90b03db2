package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/minuted/minuted/internal/config"
)

// Reconnect tuning of client connections.
const (
	reconnectWait      = 250 * time.Millisecond
	reconnectJitter    = 250 * time.Millisecond
	reconnectJitterTLS = time.Second
	// ReconnectBuffer is how many bytes a connection keeps while it
	// reconnects (nats.go's own buffer; the Publisher keeps its own).
	ReconnectBuffer = 8 << 20
	connectRetryMax = 5 * time.Second
)

// Connect dials the external NATS servers of cfg.URL (comma-separated seed
// URLs) as client name, authenticating with cfg.User/cfg.Password or
// cfg.CredsFile. The connection reconnects forever with jittered waits and
// logs disconnects and reconnects (URLs redacted). If no server answers,
// Connect retries with capped backoff until ctx ends. Extra options are
// applied last (e.g. nats.ReconnectBufSize(-1) for a Publisher that must keep
// strict order across a server crash, see Publisher).
func Connect(ctx context.Context, cfg config.NATSConfig, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if strings.TrimSpace(cfg.URL) == "" {
		return nil, errors.New("connect to NATS: nats.url is empty (MINUTED_NATS_URL); leave it empty only to use the embedded server")
	}
	if cfg.CredsFile != "" && cfg.User != "" {
		return nil, errors.New("connect to NATS: set either nats.user/password or nats.creds_file, not both")
	}
	shown := RedactURLs(cfg.URL)
	log = log.With("component", "nats", "client", name)
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitterTLS),
		nats.ReconnectBufSize(ReconnectBuffer),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS connection lost, reconnecting", "server", nc.ConnectedUrlRedacted(), "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("NATS connection restored", "server", nc.ConnectedUrlRedacted(), "reconnects", nc.Stats().Reconnects)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				log.Warn("NATS connection closed", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("NATS asynchronous error", "subject", subj, "err", err)
		}),
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, string(cfg.Password)))
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	opts = append(opts, extra...)

	wait := reconnectWait
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err == nil {
			log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted())
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
			return nil, fmt.Errorf("connect to NATS %s: credentials refused (check nats.user/password or nats.creds_file): %w", shown, err)
		}
		log.Warn("NATS not reachable, retrying", "servers", shown, "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to NATS %s: %w (last error: %w)", shown, ctx.Err(), err)
		case <-time.After(jitter(wait)):
		}
		wait = min(wait*2, connectRetryMax)
	}
}

// jitter returns d plus up to 50 % of d at random.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d + rand.N(d/2+1)
}

// RedactURLs returns the comma-separated URL list with any user info
// (user:password@ or token@) replaced, so it can be logged.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := url.Parse(p)
		if err != nil {
			if strings.Contains(p, "@") {
				p = "<unparsable url with credentials>"
			}
			parts[i] = p
			continue
		}
		if u.User != nil {
			u.User = url.User("redacted")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
