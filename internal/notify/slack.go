package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/minuted/minuted/internal/alert"
)

// SlackMessage is the incoming-webhook payload: text (the fallback shown
// in notifications) and blocks (a header and a section).
type SlackMessage struct {
	Text   string       `json:"text"`
	Blocks []SlackBlock `json:"blocks,omitempty"`
}

// SlackBlock is a Block Kit block with a text object.
type SlackBlock struct {
	Type string    `json:"type"`
	Text SlackText `json:"text"`
}

// SlackText is a Block Kit text object.
type SlackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Slack posts to an incoming webhook. Its URL is a credential: errors show
// only the host.
type Slack struct {
	url string
	p   poster
}

// NewSlack returns a Slack sink.
func NewSlack(url string) *Slack { return &Slack{url: url, p: newPoster(hostOf(url), url)} }

var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// Notify posts the alert.
func (s *Slack) Notify(ctx context.Context, a alert.Alert, title, text string) (bool, error) {
	t, x := slackEscaper.Replace(title), slackEscaper.Replace(text)
	body, err := json.Marshal(SlackMessage{
		Text: "*" + t + "*\n" + x,
		Blocks: []SlackBlock{
			{Type: "header", Text: SlackText{Type: "plain_text", Text: truncate(title, 150)}},
			{Type: "section", Text: SlackText{Type: "mrkdwn", Text: truncate(x, 3000)}},
		},
	})
	if err != nil {
		return false, fmt.Errorf("encode slack message: %w", err)
	}
	return s.p.post(ctx, s.url, body, nil)
}

// truncate cuts s to at most n runes (Slack rejects longer block texts).
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
