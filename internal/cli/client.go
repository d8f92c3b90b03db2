// Package cli implements minuted's operator commands (projects, project
// show/set, topup, balance, calls, ledger, cdrs, alerts). Each command is a
// function of (ctx, *Client, args, stdout) that talks to the admin HTTP API
// and prints a table for people or, with -o json, the API's own JSON.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/minuted/minuted/internal/config"
)

// DefaultURL is where the admin API listens unless configured otherwise.
const DefaultURL = "http://127.0.0.1:8090"

// DefaultTimeout bounds one request to the admin API.
const DefaultTimeout = 10 * time.Second

// maxResponseBytes bounds what the client reads of one answer.
const maxResponseBytes = 32 << 20

// Client talks to the admin API.
type Client struct {
	// BaseURL is the API's root, like http://127.0.0.1:8090 (no /v1).
	BaseURL string
	// Token is the bearer token; empty sends no Authorization header.
	Token config.Secret
	// HTTP does the requests; its Timeout bounds each of them.
	HTTP *http.Client
	// Location is the time zone of the times shown in tables (nil: local).
	Location *time.Location
}

// NewClient returns a client of the API at baseURL with a request timeout
// (DefaultTimeout when timeout <= 0).
func NewClient(baseURL string, token config.Secret, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &Client{
		BaseURL: strings.TrimRight(baseURL, "/"),
		Token:   token,
		HTTP:    &http.Client{Timeout: timeout},
	}
}

// APIError is an answer of the API with a status of 400 or more.
type APIError struct {
	Status  int
	Message string // the API's {"error": ...}, or the start of the body
}

func (e *APIError) Error() string {
	return fmt.Sprintf("the admin API answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// ProjectNotFoundError says a project does not exist.
type ProjectNotFoundError struct{ ID string }

func (e *ProjectNotFoundError) Error() string {
	return fmt.Sprintf("project %s does not exist: create it with `minuted project set %s`", e.ID, e.ID)
}

// do sends one request and returns the body of a 2xx answer. body, when
// not nil, is sent as JSON. project names the project the path is about
// (for the message of a 404), or "".
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, project string) ([]byte, int, error) {
	u := c.BaseURL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, 0, fmt.Errorf("encode the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, 0, fmt.Errorf("the admin API URL %q is not usable: %w; set -api or MINUTED_API_URL to "+
			"a URL like %s", c.BaseURL, err, DefaultURL)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+string(c.Token))
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, 0, c.transportError(ctx, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("reading the answer of the admin API at %s: %w", c.BaseURL, err)
	}
	if resp.StatusCode >= 400 {
		return nil, resp.StatusCode, c.statusError(resp.StatusCode, b, project)
	}
	return b, resp.StatusCode, nil
}

// transportError words a failure to get any answer.
func (c *Client) transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	hint := "is `minuted run`/`minuted api` running? set MINUTED_API_URL (or -api) to its address"
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach the admin API at %s (connection refused): %s", c.BaseURL, hint)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("the admin API at %s did not answer in time (%w): is it overloaded or is Redis down? "+
			"check `curl %s/readyz`; raise -timeout if it is just slow", c.BaseURL, err, c.BaseURL)
	}
	return fmt.Errorf("cannot reach the admin API at %s (%w): %s", c.BaseURL, err, hint)
}

// statusError turns an error answer into a message that says what to do.
func (c *Client) statusError(status int, body []byte, project string) error {
	msg := DecodeError(body)
	switch {
	case status == http.StatusUnauthorized && c.Token == "":
		return fmt.Errorf("the admin API wants a token and none is set: set MINUTED_ADMIN_TOKEN " +
			"(or -token-file FILE, or http.admin_token in the file given by -config/MINUTED_CONFIG)")
	case status == http.StatusUnauthorized:
		return fmt.Errorf("the admin token was refused: set MINUTED_ADMIN_TOKEN (or -token-file FILE) to "+
			"the token minuted was started with (API: %s)", msg)
	case status == http.StatusForbidden:
		return fmt.Errorf("the admin API refused access (403): %s", msg)
	case status == http.StatusNotFound && project != "" && !strings.HasPrefix(msg, "no route"):
		return &ProjectNotFoundError{ID: project}
	case status == http.StatusNotFound:
		return fmt.Errorf("the admin API at %s has no such route (%s): is -api/MINUTED_API_URL the root "+
			"of a minuted admin API (without /v1), and is minuted the same version as this command?", c.BaseURL, msg)
	case status < 500:
		return &APIError{Status: status, Message: msg}
	}
	return &APIError{Status: status, Message: msg + " (a server-side failure: check minuted's log)"}
}

// DecodeError extracts the message of an error body {"error": "..."}; for
// a body of another shape it returns its beginning, printable and short.
func DecodeError(body []byte) string {
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err == nil && e.Error != nil && strings.TrimSpace(*e.Error) != "" {
		return printable(*e.Error, 2000)
	}
	s := strings.TrimSpace(printable(string(body), 200))
	if s == "" {
		return "(empty answer)"
	}
	return s
}

// printable replaces control characters (an answer could carry terminal
// escapes) and cuts s to at most n runes.
func printable(s string, n int) string {
	var b strings.Builder
	i := 0
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if i == n {
			b.WriteString("…")
			break
		}
		if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		b.WriteRune(r)
		i++
	}
	return b.String()
}

// getJSON GETs path and decodes the answer into out; it returns the raw body
// too, for -o json.
func (c *Client) getJSON(ctx context.Context, path string, query url.Values, project string, out any) ([]byte, error) {
	b, _, err := c.do(ctx, http.MethodGet, path, query, nil, project)
	if err != nil {
		return nil, err
	}
	if err := decodeBody(b, out); err != nil {
		return nil, err
	}
	return b, nil
}

// send sends body with method and decodes the answer into out.
func (c *Client) send(ctx context.Context, method, path string, body any, project string, out any) ([]byte, int, error) {
	b, status, err := c.do(ctx, method, path, nil, body, project)
	if err != nil {
		return nil, status, err
	}
	if err := decodeBody(b, out); err != nil {
		return nil, status, err
	}
	return b, status, nil
}

func decodeBody(b []byte, out any) error {
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the admin API answered something that is not the expected JSON (%w): "+
			"is minuted the same version as this command? answer: %s", err, printable(string(b), 200))
	}
	return nil
}

func projectPath(id, suffix string) string { return "/v1/projects/" + url.PathEscape(id) + suffix }
