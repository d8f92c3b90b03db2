package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/minuted/minuted/internal/alert"
)

// TelegramMessage is the sendMessage body (plain text: no parse_mode, so
// nothing in an alert can break the markup).
type TelegramMessage struct {
	ChatID                string `json:"chat_id"`
	Text                  string `json:"text"`
	DisableWebPagePreview bool   `json:"disable_web_page_preview"`
}

// Telegram calls the Bot API: POST {base}/bot<token>/sendMessage. The token
// is in the URL, so errors show base/bot<secret>/sendMessage.
type Telegram struct {
	url, chatID string
	p           poster
}

// NewTelegram returns a Telegram sink; baseURL "" means the public Bot API.
func NewTelegram(baseURL string, token Secret, chatID string) *Telegram {
	if baseURL == "" {
		baseURL = DefaultTelegramBaseURL
	}
	base := strings.TrimRight(baseURL, "/")
	u := base + "/bot" + string(token) + "/sendMessage"
	return &Telegram{url: u, chatID: chatID, p: newPoster(hostOf(base)+"/bot<secret>/sendMessage", u, string(token))}
}

// Notify sends the alert as one message (Telegram's limit: 4096 characters).
func (t *Telegram) Notify(ctx context.Context, a alert.Alert, title, text string) (bool, error) {
	body, err := json.Marshal(TelegramMessage{ChatID: t.chatID, Text: truncate(title+"\n\n"+text, 4096), DisableWebPagePreview: true})
	if err != nil {
		return false, fmt.Errorf("encode telegram message: %w", err)
	}
	return t.p.post(ctx, t.url, body, nil)
}
