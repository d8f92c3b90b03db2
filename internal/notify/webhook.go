package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/minuted/minuted/internal/alert"
)

// Headers of the generic webhook.
const (
	SignatureHeader = "X-Minuted-Signature" // "sha256=" + hex HMAC-SHA256 of the body
	AlertIDHeader   = "X-Minuted-Alert-Id"  // the dedupe key, for receivers
)

// WebhookBody is what the generic webhook POSTs: the alert's fields plus
// the rendered title and text.
type WebhookBody struct {
	alert.Alert
	Title string `json:"title"`
	Text  string `json:"text"`
}

// Webhook POSTs WebhookBody signed with HMAC-SHA256.
type Webhook struct {
	url    string
	secret []byte
	p      poster
}

// NewWebhook returns a webhook sink; secret must not be empty.
func NewWebhook(url string, secret Secret) *Webhook {
	return &Webhook{url: url, secret: []byte(secret), p: newPoster(hostOf(url), url, string(secret))}
}

// Sign returns the value of SignatureHeader for body.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Notify POSTs the alert.
func (w *Webhook) Notify(ctx context.Context, a alert.Alert, title, text string) (bool, error) {
	body, err := json.Marshal(WebhookBody{Alert: a, Title: title, Text: text})
	if err != nil {
		return false, fmt.Errorf("encode webhook body: %w", err)
	}
	h := http.Header{}
	h.Set(SignatureHeader, Sign(w.secret, body))
	h.Set(AlertIDHeader, a.ID)
	return w.p.post(ctx, w.url, body, h)
}
