// Package notify delivers the alerts of the ALERTS stream to the sinks an
// operator configured (log, generic webhook, Slack, Telegram), once per
// sink, each sink on its own durable consumer so a slow or dead one never
// holds up the others (nor billing, which only publishes to the stream).
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/minuted/minuted/internal/alert"
)

// Notifier delivers one rendered alert. retry says whether the failure is
// worth another attempt (network error, 5xx, 429) or final (other 4xx).
type Notifier interface {
	Notify(ctx context.Context, a alert.Alert, title, text string) (retry bool, err error)
}

// poster is the HTTP part every HTTP sink shares: one POST of a JSON body,
// the status judged, errors stripped of the URL (it may hold a token) and of
// every secret.
type poster struct {
	client  *http.Client
	shown   string   // what errors call the endpoint (no credentials)
	secrets []string // never to appear in an error
}

func newPoster(shown string, secrets ...string) poster {
	var s []string
	for _, x := range secrets {
		if x != "" {
			s = append(s, x)
		}
	}
	return poster{client: &http.Client{}, shown: shown, secrets: s}
}

func (p poster) post(ctx context.Context, target string, body []byte, header http.Header) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return false, p.redact(fmt.Errorf("build request to %s: %w", p.shown, stripURL(err)))
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "minuted-notify")
	resp, err := p.client.Do(req)
	if err != nil {
		return true, p.redact(fmt.Errorf("POST %s: %w", p.shown, stripURL(err)))
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16)) // let the connection be reused
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, nil
	}
	retry = resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout
	err = p.redact(fmt.Errorf("POST %s: answered %s: %s", p.shown, resp.Status, strings.TrimSpace(string(snippet))))
	if wait, ok := retryAfter(resp.Header.Get("Retry-After"), snippet, time.Now()); ok && retry {
		err = &RetryAfterError{Wait: wait, Err: err}
	}
	return retry, err
}

// MaxRetryAfter caps the wait a sink may ask for with Retry-After.
const MaxRetryAfter = time.Hour

// RetryAfterError is a failure after which the sink asked to wait Wait
// before the next attempt (HTTP Retry-After, Telegram's
// parameters.retry_after).
type RetryAfterError struct {
	Wait time.Duration
	Err  error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (the sink asks to retry after %v)", e.Err, e.Wait)
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// retryAfter reads the wait a sink asked for: the Retry-After header
// (seconds or an HTTP date, RFC 9110 §10.2.3) or, as Telegram's Bot API
// answers 429, {"parameters":{"retry_after":N}} in the body. The result is
// capped at MaxRetryAfter.
func retryAfter(header string, body []byte, now time.Time) (time.Duration, bool) {
	var d time.Duration
	switch header = strings.TrimSpace(header); {
	case header != "":
		if n, err := strconv.ParseInt(header, 10, 64); err == nil {
			if n < 0 {
				return 0, false
			}
			d = time.Duration(min(n, int64(MaxRetryAfter/time.Second))) * time.Second // no overflow
		} else if t, err := http.ParseTime(header); err == nil {
			d = max(t.Sub(now), 0)
		} else {
			return 0, false
		}
	default:
		var tg struct {
			Parameters struct {
				RetryAfter *int64 `json:"retry_after"`
			} `json:"parameters"`
		}
		if json.Unmarshal(body, &tg) != nil || tg.Parameters.RetryAfter == nil || *tg.Parameters.RetryAfter < 0 {
			return 0, false
		}
		d = time.Duration(min(*tg.Parameters.RetryAfter, int64(MaxRetryAfter/time.Second))) * time.Second
	}
	return min(d, MaxRetryAfter), true // an HTTP date may be further away
}

// redact replaces every secret in err's text. The chain is kept only when
// no secret was in the text (so errors.Is still works for timeouts).
func (p poster) redact(err error) error {
	msg := err.Error()
	clean := msg
	for _, s := range p.secrets {
		clean = strings.ReplaceAll(clean, s, "<secret>")
	}
	if clean == msg {
		return err
	}
	return errors.New(clean)
}

// stripURL drops the URL net/http puts in its errors (*url.Error).
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// hostOf is a URL shown as scheme://host only: paths and queries of
// webhook URLs often carry credentials.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "<invalid url>"
	}
	return u.Scheme + "://" + u.Host
}
