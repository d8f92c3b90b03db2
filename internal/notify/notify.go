// Package notify delivers the alerts of the ALERTS stream to the sinks an
// operator configured (log, generic webhook, Slack, Telegram), once per
// sink, each sink on its own durable consumer so a slow or dead one never
// holds up the others (nor billing, which only publishes to the stream).
package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

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
	return retry, p.redact(fmt.Errorf("POST %s: answered %s: %s", p.shown, resp.Status, strings.TrimSpace(string(snippet))))
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
