package app

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/notify"
)

// maxAlertScan bounds how many ALERTS messages one request reads back.
const maxAlertScan = 5000

// alertSource reads the recent alerts back from the ALERTS stream, newest
// first, for GET /v1/alerts.
type alertSource struct{ js jetstream.JetStream }

func (s alertSource) Recent(ctx context.Context, project string, limit int) ([]alert.Alert, error) {
	st, err := s.js.Stream(ctx, call.AlertsStream)
	if err != nil {
		return nil, fmt.Errorf("read alerts: stream %s: %w", call.AlertsStream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read alerts: %w", err)
	}
	subject := ""
	if project != "" {
		subject = call.AlertSubject(project)
	}
	var out []alert.Alert
	for seq, n := info.State.LastSeq, 0; seq >= info.State.FirstSeq && seq > 0 && len(out) < limit && n < maxAlertScan; seq, n = seq-1, n+1 {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("read alert %d: %w", seq, err)
		}
		if subject != "" && m.Subject != subject {
			continue
		}
		a, err := alert.Decode(m.Data)
		if err != nil {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

// isClusterURL: go-redis's cluster URL form carries the other seeds as
// addr query parameters.
func isClusterURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	return u.Query().Has("addr") || strings.Contains(u.Host, ",")
}

// publishCrossings raises the threshold alerts of an API adjustment.
func (a *App) publishCrossings(ctx context.Context, project string, xs []ledger.Crossing) {
	for _, x := range xs {
		al := alert.ThresholdCrossed(project, x.ThresholdMinutes, x.Generation, x.Balance, time.Now().UTC())
		if err := notify.Publish(ctx, a.js, al); err != nil {
			a.log.Error("cannot publish threshold alert", "project", project, "alert", al.ID, "err", err)
		}
	}
}
