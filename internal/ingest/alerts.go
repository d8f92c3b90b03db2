package ingest

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/backoff"
	"github.com/minuted/minuted/internal/notify"
)

// ARI connection alerts (SPEC §7): ari_lost when Asterisk stays unreachable
// longer than the grace period (from a websocket drop, or from start when
// it was never reached), ari_restored when it is back after an ari_lost.
// Both are published on minuted.alerts._system with ids
// ari_lost/<node>/<unix s of the disconnect> and ari_restored/<same>, so a
// republished alert is dropped by JetStream's duplicate window.

// ariDown records that ARI became unreachable at `at` and arms the grace
// timer (once per outage).
func (s *Service) ariDown(ctx context.Context, at time.Time) {
	s.alertMu.Lock()
	defer s.alertMu.Unlock()
	if !s.lostAt.IsZero() {
		return
	}
	s.lostAt = at
	s.lostRaised = false
	s.lostTimer = time.AfterFunc(s.grace, func() { s.graceOver(ctx, at) })
}

func (s *Service) graceOver(ctx context.Context, at time.Time) {
	s.alertMu.Lock()
	if !s.lostAt.Equal(at) || s.lostRaised {
		s.alertMu.Unlock()
		return
	}
	s.lostRaised = true
	s.alertMu.Unlock()
	node := s.alertNode()
	s.raise(ctx, alert.Alert{
		Schema: alert.Schema, ID: alertID(alert.ARILost, node, at), Kind: alert.ARILost, Node: node, At: time.Now().UTC(),
		Detail: fmt.Sprintf("Asterisk ARI unreachable since %s (%s): calls are not seen until it is back",
			at.UTC().Format(time.RFC3339), s.o.ARI.URL),
	})
}

// ariUp records that ARI is reachable again; it raises ari_restored if an
// ari_lost was raised for this outage.
func (s *Service) ariUp(ctx context.Context, at time.Time) {
	s.alertMu.Lock()
	lost, raised := s.lostAt, s.lostRaised
	if s.lostTimer != nil {
		s.lostTimer.Stop()
	}
	s.lostAt, s.lostRaised, s.lostTimer = time.Time{}, false, nil
	s.alertMu.Unlock()
	if lost.IsZero() || !raised {
		return
	}
	node := s.alertNode()
	s.raise(ctx, alert.Alert{
		Schema: alert.Schema, ID: alertID(alert.ARIRestored, node, lost), Kind: alert.ARIRestored, Node: node, At: at.UTC(),
		Detail: fmt.Sprintf("Asterisk ARI reachable again after %s", at.Sub(lost).Round(time.Second)),
	})
}

// stopAlertTimer disarms a pending ari_lost at shutdown.
func (s *Service) stopAlertTimer() {
	s.alertMu.Lock()
	defer s.alertMu.Unlock()
	if s.lostTimer != nil {
		s.lostTimer.Stop()
	}
	s.lostAt = time.Time{}
}

func alertID(kind, node string, lost time.Time) string {
	return kind + "/" + node + "/" + strconv.FormatInt(lost.Unix(), 10)
}

func (s *Service) alertNode() string {
	if n := s.Node(); n != "" {
		return n
	}
	return "unknown"
}

// raise publishes an alert in the background, retrying until it is stored
// or ctx ends (NATS may be down too).
func (s *Service) raise(ctx context.Context, a alert.Alert) {
	if s.o.JS == nil {
		s.log.Warn("ARI alert not published: no JetStream", "kind", a.Kind, "detail", a.Detail)
		return
	}
	s.alertWG.Add(1)
	go func() {
		defer s.alertWG.Done()
		for attempt := 0; ; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := notify.Publish(pctx, s.o.JS, a)
			cancel()
			if err == nil {
				s.alerts.Add(1)
				s.log.Warn("alert raised", "kind", a.Kind, "id", a.ID, "detail", a.Detail)
				return
			}
			s.alertErr.Add(1)
			s.log.Warn("cannot publish alert; retrying", "kind", a.Kind, "id", a.ID, "err", err)
			if !backoff.Sleep(ctx, backoff.Delay(time.Second, 30*time.Second, attempt, 0.5)) {
				return
			}
		}
	}()
}
