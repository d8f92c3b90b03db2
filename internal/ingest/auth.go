package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/minuted/minuted/internal/ari"
	"github.com/minuted/minuted/internal/bill"
	"github.com/minuted/minuted/internal/call"
)

// MaxSecondsVar is the channel variable that tells the dialplan how many
// seconds of talk the project's balance pays for (set only when the
// project cuts calls; see configs/asterisk/extensions.conf).
const MaxSecondsVar = "MINUTED_MAX_SECONDS"

// Authorisation policies when bill gives no usable answer in time, or the
// channel has no project.
const (
	FailOpen   = "fail_open"
	FailClosed = "fail_closed"
)

// authConcurrency bounds the authorisations in flight (NATS request plus
// ARI REST calls); more StasisStarts wait for a slot, never the event loop.
const authConcurrency = 64

// AuthStats count the Stasis authorisations (SPEC §8).
type AuthStats struct {
	Requests   int64 // channels that entered Stasis(<our app>)
	Allowed    int64 // bill allowed: continued
	Denied     int64 // bill refused: hung up with auth_hangup_cause
	NoAnswer   int64 // bill did not answer in time (or no responders): policy applied
	NoProject  int64 // the channel had no project: policy applied
	FailOpen   int64 // policy continued the channel
	FailClosed int64 // policy hung the channel up
	Errors     int64 // an ARI call (variable, continue, hangup) failed
}

// wantsAuth reports whether ev is a channel entering Stasis for ingest's
// own application. With subscribeAll a listener may see other
// applications' StasisStart: those channels are not ours to decide.
func (s *Service) wantsAuth(ev ari.Event) bool {
	return ev.Type == "StasisStart" && ev.Channel != nil && ev.Application == s.o.ARI.Application
}

// startAuth authorises a channel in a goroutine; the caller holds no lock.
func (s *Service) startAuth(ctx context.Context, node, ch, project string) {
	s.authReq.Add(1)
	s.authWG.Add(1)
	go func() {
		defer s.authWG.Done()
		select {
		case s.authSem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-s.authSem }()
		s.authorise(ctx, node, ch, project)
	}()
}

// authorise asks bill and applies its answer: allowed → MINUTED_MAX_SECONDS
// (when the answer carries a limit) and continue; refused → hang up; no
// answer in time, or no project → the configured policy.
func (s *Service) authorise(ctx context.Context, node, ch, project string) {
	log := s.log.With("channel", ch, "project", project)
	if project == "" {
		s.authNoProject.Add(1)
		s.authPolicy(ctx, ch, "the channel has no project", log)
		return
	}
	r, err := s.askBill(ctx, node, ch, project)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.authNoAnswer.Add(1)
		s.authPolicy(ctx, ch, err.Error(), log)
		return
	}
	if !r.Allow {
		s.authDenied.Add(1)
		log.Info("call refused by bill: hanging up", "reason", r.Reason, "balance_seconds", r.Balance, "cause", s.authCause)
		s.authHangup(ctx, ch, log)
		return
	}
	s.authAllowed.Add(1)
	if r.Seconds >= 0 {
		if err := s.cli.SetVariable(ctx, ch, MaxSecondsVar, strconv.FormatInt(r.Seconds, 10)); err != nil {
			s.authErr.Add(1)
			log.Warn("cannot set the call's allowed seconds; continuing without the cap", "variable", MaxSecondsVar, "err", err)
		}
	}
	if err := s.cli.Continue(ctx, ch); err != nil {
		s.authErr.Add(1)
		log.Error("cannot continue an authorised call in the dialplan", "err", err)
	}
}

// askBill sends the authorisation request; an error means no usable answer.
func (s *Service) askBill(ctx context.Context, node, ch, project string) (bill.AuthResponse, error) {
	var r bill.AuthResponse
	if s.nc == nil {
		return r, errors.New("no NATS connection")
	}
	data, err := json.Marshal(bill.AuthRequest{Schema: call.Schema, Node: node, Channel: ch, Project: project})
	if err != nil {
		return r, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.authTimeout)
	defer cancel()
	m, err := s.nc.RequestWithContext(rctx, bill.AuthSubject(project), data)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return r, errors.New("no bill instance answers authorisation requests")
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		return r, errors.New("bill did not answer within ingest.auth_timeout (" + s.authTimeout.String() + ")")
	case err != nil:
		return r, err
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return r, errors.New("unreadable answer from bill: " + err.Error())
	}
	if !r.Allow && r.Reason == bill.ReasonInvalid {
		return r, errors.New("bill rejected the request as invalid")
	}
	return r, nil
}

func (s *Service) authPolicy(ctx context.Context, ch, why string, log *slog.Logger) {
	if s.authFailClosed {
		s.authClosed.Add(1)
		log.Warn("call not authorised: "+why+"; ingest.auth_policy fail_closed hangs it up", "cause", s.authCause)
		s.authHangup(ctx, ch, log)
		return
	}
	s.authOpen.Add(1)
	log.Warn("call not authorised: " + why + "; ingest.auth_policy fail_open lets it continue")
	if err := s.cli.Continue(ctx, ch); err != nil {
		s.authErr.Add(1)
		log.Error("cannot continue a call in the dialplan", "err", err)
	}
}

func (s *Service) authHangup(ctx context.Context, ch string, log *slog.Logger) {
	if err := s.cli.Hangup(ctx, ch, s.authCause); err != nil {
		s.authErr.Add(1)
		log.Error("cannot hang up a refused call", "err", err)
	}
}

// defaultAuthTimeout etc. apply when Options.Config leaves them zero.
const (
	defaultAuthTimeout  = 250 * time.Millisecond
	defaultAuthCause    = "rejected"
	defaultARILostGrace = 30 * time.Second
)
