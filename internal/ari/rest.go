package ari

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	upstream "github.com/CyCoreSystems/ari/v6"
	"github.com/CyCoreSystems/ari/v6/client/native"

	"github.com/minuted/minuted/internal/backoff"
	"github.com/minuted/minuted/internal/config"
)

// Client is minuted's ARI REST client. Hangup, Continue and Info go through
// the ari/v6 native client (created without Connect, so it opens no events
// websocket of its own). That client's http.Client is an unexported value
// field with no timeout and its calls take no context, so each call runs in
// a goroutine bounded by ctx and request_timeout (an abandoned request is
// left to finish in the background). ListChannels uses net/http directly:
// the native Channel().List returns ids only, and billing needs each
// channel's state, accountcode, dialplan and channelvars in one snapshot.
type Client struct {
	native  *native.Client
	http    *http.Client
	base    string
	user    string
	pass    config.Secret
	timeout time.Duration
	retries int
	backoff time.Duration
	log     *slog.Logger
}

// NewClient builds a REST client from the ARI settings.
func NewClient(c config.ARIConfig, log *slog.Logger) *Client {
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := strings.TrimRight(c.URL, "/")
	n := native.New(&native.Options{
		URL: base, Username: c.Username, Password: string(c.Password), Application: c.Application,
		WebsocketURL: "ws://unused.invalid/", // never dialled: Connect is not called
		// Logger: nil → the library logs to io.Discard (it wants x/exp/slog).
	})
	return &Client{
		native: n, http: &http.Client{Timeout: c.RequestTimeout},
		base: base, user: c.Username, pass: c.Password, timeout: c.RequestTimeout,
		retries: 3, backoff: max(c.ReconnectMin, 50*time.Millisecond), log: log,
	}
}

// StatusError is an HTTP error answer of ARI.
type StatusError struct {
	Op   string
	Code int
}

func (e *StatusError) Error() string { return fmt.Sprintf("ARI %s: HTTP %d", e.Op, e.Code) }

// statusOf extracts the HTTP status of a native client error, 0 for a
// transport error.
func statusOf(err error) int {
	var re native.RequestError
	if errors.As(err, &re) {
		return re.Code()
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

type result[T any] struct {
	v   T
	err error
}

// bounded runs f with the request timeout and ctx, whichever ends first.
func bounded[T any](ctx context.Context, timeout time.Duration, op string, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ch := make(chan result[T], 1)
	go func() { v, err := f(ctx); ch <- result[T]{v, err} }()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, fmt.Errorf("ARI %s: no answer within %v: %w", op, timeout, ctx.Err())
	}
}

// retry calls f up to c.retries+1 times while retryable says so.
func retry[T any](ctx context.Context, c *Client, op string, f func(context.Context) (T, error), retryable func(error) bool) (T, error) {
	for i := 0; ; i++ {
		v, err := bounded(ctx, c.timeout, op, f)
		if err == nil || !retryable(err) || i >= c.retries || ctx.Err() != nil {
			return v, err
		}
		c.log.Warn("ARI request failed; retrying", "op", op, "attempt", i+1, "err", err)
		if !backoff.Sleep(ctx, c.backoff<<i) {
			return v, err
		}
	}
}

func transportOr5xx(err error) bool { s := statusOf(err); return s == 0 || s >= 500 }

// ListChannels returns every live channel (GET /channels), retried on
// transport errors and 5xx.
func (c *Client) ListChannels(ctx context.Context) ([]Channel, error) {
	out, err := retry(ctx, c, "list channels", c.listOnce, transportOr5xx)
	if err != nil {
		return nil, fmt.Errorf("list ARI channels: %w", err)
	}
	return out, nil
}

func (c *Client) listOnce(ctx context.Context) ([]Channel, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/channels", nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(c.user, string(c.pass))
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close() //nolint:errcheck
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, &StatusError{Op: "GET /channels", Code: resp.StatusCode}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, err
	}
	return DecodeChannels(b)
}

// Hangup hangs channel id up (DELETE /channels/{id}?reason=). It retries on
// transport errors and 5xx; 404 means the channel is already gone, which
// is success.
func (c *Client) Hangup(ctx context.Context, id, reason string) error {
	if id == "" {
		return errors.New("hangup: empty channel id")
	}
	key := upstream.NewKey(upstream.ChannelKey, id)
	_, err := retry(ctx, c, "hangup "+id, func(context.Context) (struct{}, error) {
		return struct{}{}, c.native.Channel().Hangup(key, reason)
	}, transportOr5xx)
	if statusOf(err) == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("hang up ARI channel %s: %w", id, err)
	}
	return nil
}

// Continue sends a channel in Stasis back to the dialplan (POST
// /channels/{id}/continue). A transport error is retried; if a retry then
// finds the channel gone from Stasis (404/409) the first attempt is taken
// to have worked.
func (c *Client) Continue(ctx context.Context, id string) error {
	key := upstream.NewKey(upstream.ChannelKey, id)
	tries := 0
	_, err := retry(ctx, c, "continue "+id, func(context.Context) (struct{}, error) {
		return struct{}{}, c.native.Channel().Continue(key, "", "", 0)
	}, func(err error) bool { tries++; return statusOf(err) == 0 })
	if s := statusOf(err); tries > 1 && (s == http.StatusNotFound || s == http.StatusConflict) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("continue ARI channel %s in the dialplan: %w", id, err)
	}
	return nil
}

// Info returns Asterisk's entity id (the asterisk_id of its events).
func (c *Client) Info(ctx context.Context) (string, error) {
	id, err := retry(ctx, c, "asterisk info", func(context.Context) (string, error) {
		info, err := c.native.Asterisk().Info(nil)
		if err != nil {
			return "", err
		}
		return info.SystemInfo.EntityID, nil
	}, transportOr5xx)
	if err != nil {
		return "", fmt.Errorf("ARI asterisk info: %w", err)
	}
	return id, nil
}

// SetVariable sets a channel variable (POST
// /channels/{id}/variable?variable=&value=), retried on transport errors
// and 5xx (setting a variable twice is harmless).
func (c *Client) SetVariable(ctx context.Context, id, name, value string) error {
	key := upstream.NewKey(upstream.ChannelKey, id)
	_, err := retry(ctx, c, "set variable on "+id, func(context.Context) (struct{}, error) {
		return struct{}{}, c.native.Channel().SetVariable(key, name, value)
	}, transportOr5xx)
	if err != nil {
		return fmt.Errorf("set variable %s on ARI channel %s: %w", name, id, err)
	}
	return nil
}
