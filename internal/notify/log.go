package notify

import (
	"context"
	"log/slog"

	"github.com/minuted/minuted/internal/alert"
)

// LogSink writes each alert as one structured log line at WARN level.
type LogSink struct {
	log *slog.Logger
}

// NewLog returns a sink logging to l.
func NewLog(l *slog.Logger) *LogSink { return &LogSink{log: l} }

// Notify never fails.
func (s *LogSink) Notify(ctx context.Context, a alert.Alert, title, text string) (bool, error) {
	s.log.LogAttrs(ctx, slog.LevelWarn, "alert",
		slog.String("alert_id", a.ID), slog.String("kind", a.Kind), slog.String("project", a.Project),
		slog.String("node", a.Node), slog.Int64("balance_seconds", a.BalanceSeconds),
		slog.String("title", title), slog.String("text", text))
	return false, nil
}
