package stream

import (
	"context"
	"crypto/tls"
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
// URLs) as client name, authenticating with one of cfg.User/cfg.Password,
// cfg.Token, cfg.NkeyFile (an nkey seed) or cfg.CredsFile, over TLS when
// cfg.TLS is set (private CA, client certificate, server name) or a URL says
// tls://. The connection reconnects forever with jittered waits and logs
// disconnects and reconnects (URLs redacted, secrets never). If no server
// answers, Connect retries with capped backoff until ctx ends; refused
// credentials and TLS failures end it at once with the keys to check. Extra options are
// applied last (e.g. nats.ReconnectBufSize(-1) for a Publisher that must keep
// strict order across a server crash, see Publisher).
func Connect(ctx context.Context, cfg config.NATSConfig, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	return connect(ctx, cfg, name, log, false, extra...)
}

// ConnectInBackground is Connect for a role that must run while NATS is
// away (ingest keeps listening to Asterisk and spools its events): when no
// server answers the first attempt, it returns a connection that goes on
// dialling in the background (nats.RetryOnFailedConnect; it reports
// CONNECTED once a server answers). Refused credentials and TLS failures
// still end it at once.
func ConnectInBackground(ctx context.Context, cfg config.NATSConfig, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	return connect(ctx, cfg, name, log, true, extra...)
}

func connect(ctx context.Context, cfg config.NATSConfig, name string, log *slog.Logger, background bool, extra ...nats.Option) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if strings.TrimSpace(cfg.URL) == "" {
		return nil, errors.New("connect to NATS: nats.url is empty (MINUTED_NATS_URL); leave it empty only to use the embedded server")
	}
	if err := cfg.ValidateAuth(); err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
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
	authOpts, authKeys, err := authOptions(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	opts = append(opts, authOpts...)
	opts = append(opts, extra...)

	wait := reconnectWait
	// With TLS 1.3 a server refusing the client's certificate may just
	// close the connection; once in a row could be a restart, three times
	// is a refusal.
	closedAfterTLS := 0
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err == nil {
			log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted())
			return nc, nil
		}
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
			return nil, fmt.Errorf("connect to NATS %s: credentials refused (check %s): %w", shown, authKeys, err)
		}
		if fix := tlsFix(err); fix != "" {
			return nil, fmt.Errorf("connect to NATS %s: %s: %w", shown, fix, err)
		}
		if strings.Contains(err.Error(), "closed by remote after TLS handshake") {
			if closedAfterTLS++; closedAfterTLS >= 3 {
				return nil, fmt.Errorf("connect to NATS %s: the server closed the connection after every TLS handshake: check nats.tls.cert_file/key_file (the server may want a client certificate of its CA): %w", shown, err)
			}
		} else {
			closedAfterTLS = 0
			if background {
				nc, berr := nats.Connect(cfg.URL, append(opts, nats.RetryOnFailedConnect(true))...)
				if berr == nil {
					log.Warn("NATS not reachable; starting without it and connecting in the background", "servers", shown, "err", err)
					return nc, nil
				}
				err = berr
			}
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

// authOptions turns the authentication and TLS keys of cfg into nats.go
// options; keys names the keys an operator should check when the server
// refuses them.
func authOptions(cfg config.NATSConfig) (opts []nats.Option, keys string, err error) {
	keys = "nats.user/password, nats.token, nats.nkey_file or nats.creds_file: none is set"
	switch {
	case cfg.User != "":
		opts, keys = append(opts, nats.UserInfo(cfg.User, string(cfg.Password))), "nats.user and nats.password (password_file, MINUTED_NATS_PASSWORD)"
	case cfg.Token != "":
		opts, keys = append(opts, nats.Token(string(cfg.Token))), "nats.token (token_file, MINUTED_NATS_TOKEN)"
	case cfg.NkeyFile != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NkeyFile)
		if err != nil {
			return nil, "", fmt.Errorf("nats.nkey_file: cannot use %s as an nkey seed file: %w", cfg.NkeyFile, err)
		}
		opts, keys = append(opts, o), "nats.nkey_file (its public key must be a user of the server)"
	case cfg.CredsFile != "":
		opts, keys = append(opts, nats.UserCredentials(cfg.CredsFile)), "nats.creds_file"
	}
	tc, err := cfg.TLS.Client("nats.tls")
	if err != nil {
		return nil, "", err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, keys, nil
}

// tlsFix tells an operator what to check for a TLS failure, which waiting
// will not cure, or returns "" for other errors.
func tlsFix(err error) string {
	var verr *tls.CertificateVerificationError
	msg := err.Error()
	switch {
	case errors.Is(err, nats.ErrSecureConnRequired):
		return "the server requires TLS: set nats.tls (ca_file for a private CA) or use tls:// URLs"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "the server does not offer TLS: remove nats.tls or point nats.url at a TLS-enabled server"
	case errors.As(err, &verr), strings.Contains(msg, "x509:"), strings.Contains(msg, "tls:"):
		return "TLS with NATS failed: check nats.tls.ca_file (the CA that signed the server certificate), nats.tls.server_name and, if the server verifies clients, nats.tls.cert_file/key_file"
	}
	return ""
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
