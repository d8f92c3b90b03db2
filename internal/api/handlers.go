package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
)

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	if n, ok := w.(errorNoter); ok {
		n.noteError(msg)
	}
	writeJSON(w, code, errorBody{Error: msg})
}

// fail answers err: 400/413 for the client's mistakes, 404 for an unknown
// project, 409 for conflicts, 500 for the rest.
func (s *server) fail(w http.ResponseWriter, r *http.Request, id string, err error) {
	var (
		ie  *inputError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ie):
		writeError(w, http.StatusBadRequest, ie.msg)
	case errors.Is(err, ledger.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.As(err, &mbe):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
			"the request body is over %d bytes: send a smaller JSON object", mbe.Limit))
	case errors.Is(err, ledger.ErrConflict):
		writeError(w, http.StatusConflict, err.Error()+": nothing was changed; use a new reference for a new operation")
	case errors.Is(err, ledger.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf(
			"project %q does not exist: create it with PUT /v1/projects/%s (a JSON body of its settings, {} for the defaults)",
			id, url.PathEscape(id)))
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		writeError(w, 499, "the request was cancelled by the client")
	default:
		writeError(w, http.StatusInternalServerError, fmt.Sprintf(
			"the ledger failed: %v; check that Redis is reachable (GET /readyz) and retry", err))
	}
}

// projectID returns the validated {id} of the path, or answers 400.
func projectID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !call.ValidProject(id) {
		msg := fmt.Sprintf("invalid project id %q: %v", id, call.ErrBadProject)
		if id == call.Unbilled {
			msg = fmt.Sprintf("invalid project id %q: it is reserved for calls without a project", id)
		}
		writeError(w, http.StatusBadRequest, msg)
		return "", false
	}
	return id, true
}

// limitParam reads ?limit= (default DefaultLimit, 1..MaxLimit), or answers 400.
func limitParam(w http.ResponseWriter, r *http.Request) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return DefaultLimit, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxLimit {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(
			"query parameter limit=%q must be an integer from 1 to %d (default %d)", v, MaxLimit, DefaultLimit))
		return 0, false
	}
	return n, true
}

func minutes(seconds int64) float64 { return math.Round(float64(seconds)/60*100) / 100 }

// ---- health ----

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type readyBody struct {
	Status  string            `json:"status"`
	Checks  map[string]string `json:"checks"`
	Failing []string          `json:"failing,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// readyz runs every check concurrently. The causes of failures are shown
// only to a caller with the token (they may name hosts); the log has them.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	results := make([]error, len(s.o.Ready))
	var wg sync.WaitGroup
	for i, c := range s.o.Ready {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), s.o.ReadyTimeout)
			defer cancel()
			results[i] = runCheck(ctx, c)
		})
	}
	wg.Wait()
	detail := s.o.Token == "" || s.tokenOK(r)
	body := readyBody{Status: "ready", Checks: map[string]string{}}
	for i, c := range s.o.Ready {
		if err := results[i]; err != nil {
			body.Failing = append(body.Failing, c.Name)
			body.Checks[c.Name] = "failing"
			if detail {
				body.Checks[c.Name] = "failing: " + err.Error()
			}
			s.log.Warn("readiness check failing", "check", c.Name, "error", err)
			continue
		}
		body.Checks[c.Name] = "ok"
	}
	if len(body.Failing) > 0 {
		body.Status = "not ready"
		body.Error = fmt.Sprintf("not ready: %v failing; the log (or this endpoint with the admin token) says why",
			body.Failing)
		if n, ok := w.(errorNoter); ok {
			n.noteError(body.Error)
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func runCheck(ctx context.Context, c Check) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	if c.Check == nil {
		return errors.New("no check function")
	}
	return c.Check(ctx)
}

// tokenOK reports whether r carries the right token, without answering.
func (s *server) tokenOK(r *http.Request) bool {
	return s.authorized(discard{}, r)
}

type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// ---- projects ----

type projectList struct {
	Projects []ledger.Project `json:"projects"`
}

func (s *server) listProjects(w http.ResponseWriter, r *http.Request) {
	ps, err := s.o.Store.List(r.Context())
	if err != nil {
		s.fail(w, r, "", err)
		return
	}
	if ps == nil {
		ps = []ledger.Project{}
	}
	writeJSON(w, http.StatusOK, projectList{Projects: ps})
}

func (s *server) getProject(w http.ResponseWriter, r *http.Request) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	p, err := s.o.Store.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// audit checks a project's ledger against its balance (200 with the
// findings either way: problems are data, not a failure of the request).
func (s *server) audit(w http.ResponseWriter, r *http.Request) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	a, err := s.o.Store.Audit(r.Context(), id)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	if !a.OK() {
		s.log.Warn("ledger audit found problems", "project", id, "problems", a.Problems)
	}
	writeJSON(w, http.StatusOK, a)
}

// putProject creates or updates a project's settings. Fields the body
// leaves out keep their current values, or take Options.Defaults for a new
// project. 201 when created, 200 when updated.
func (s *server) putProject(w http.ResponseWriter, r *http.Request) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	patch, err := decodeSettings(http.MaxBytesReader(w, r.Body, MaxBodyBytes), id)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	base := s.o.Defaults
	cur, err := s.o.Store.Get(r.Context(), id)
	switch {
	case err == nil:
		base = cur.Settings
	case !errors.Is(err, ledger.ErrNotFound):
		s.fail(w, r, id, err)
		return
	}
	settings, err := patch.apply(base)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	p, created, err := s.o.Store.Put(r.Context(), id, settings)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	s.log.Info("project settings saved", "project", id, "created", created, "tariff", settings.Tariff,
		"thresholds_minutes", settings.ThresholdsMinutes, "credit_limit_seconds", settings.CreditLimitSeconds,
		"on_exhausted", settings.OnExhausted)
	code := http.StatusOK
	if created {
		code = http.StatusCreated
		w.Header().Set("Location", "/v1/projects/"+url.PathEscape(id))
	}
	writeJSON(w, code, p)
}

// ---- top-ups and adjustments ----

type topUpResponse struct {
	BalanceSeconds int64   `json:"balance_seconds"`
	BalanceMinutes float64 `json:"balance_minutes"`
	// Applied is "now" when this request changed the balance, "before" when
	// the reference had already been applied (nothing changed).
	Applied string       `json:"applied"`
	Entry   ledger.Entry `json:"entry"`
	// Crossed lists the thresholds a negative adjustment took the balance below.
	Crossed []crossing `json:"crossed,omitempty"`
}

type crossing struct {
	ThresholdMinutes float64 `json:"threshold_minutes"`
	BalanceSeconds   int64   `json:"balance_seconds"`
}

func (s *server) topUp(w http.ResponseWriter, r *http.Request) {
	s.credit(w, r, ledger.KindTopUp, decodeTopUp)
}

func (s *server) adjust(w http.ResponseWriter, r *http.Request) {
	s.credit(w, r, ledger.KindAdjustment, decodeAdjustment)
}

// credit applies a top-up or an adjustment, idempotent by reference: 201
// when applied now, 200 when the reference was applied before with the same
// amount, 409 when it was used for another amount or kind.
func (s *server) credit(w http.ResponseWriter, r *http.Request, kind string, decode func(r io.Reader) (amount, error)) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	a, err := decode(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	if _, err := s.o.Store.Get(r.Context(), id); err != nil {
		s.fail(w, r, id, err)
		return
	}
	res, err := s.o.Store.TopUp(r.Context(), id, a.Seconds, a.Reference, kind)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	if len(res.Crossed) > 0 && s.o.OnCrossed != nil {
		// Replays return the same crossings, so a retry republishes an
		// alert lost here under the same id.
		s.o.OnCrossed(r.Context(), id, res.Crossed)
	}
	body := topUpResponse{BalanceSeconds: res.Balance, BalanceMinutes: minutes(res.Balance), Applied: "before", Entry: res.Entry}
	for _, c := range res.Crossed {
		body.Crossed = append(body.Crossed, crossing{ThresholdMinutes: c.ThresholdMinutes, BalanceSeconds: c.Balance})
	}
	code := http.StatusOK
	if res.Applied {
		body.Applied, code = "now", http.StatusCreated
		attrs := []any{"project", id, "kind", kind, "seconds", a.Seconds, "reference", a.Reference,
			"balance_seconds", res.Balance}
		if a.Reason != "" {
			attrs = append(attrs, "reason", a.Reason)
		}
		s.log.Info("balance credited", attrs...)
	}
	writeJSON(w, code, body)
}

// ---- calls, CDRs, ledger ----

// liveCall is a live call with its running talk time.
type liveCall struct {
	ledger.Call
	TalkSeconds int64 `json:"talk_seconds"`
}

type callList struct {
	Calls []liveCall `json:"calls"`
}

func (s *server) liveCalls(w http.ResponseWriter, r *http.Request) {
	id, ok := s.existing(w, r)
	if !ok {
		return
	}
	calls, err := s.o.Store.Live(r.Context(), id)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	now := s.o.Now()
	out := callList{Calls: make([]liveCall, 0, len(calls))}
	for _, c := range calls {
		talk := int64(0)
		if !c.AnsweredAt.IsZero() && now.After(c.AnsweredAt) {
			talk = int64(now.Sub(c.AnsweredAt) / time.Second)
		}
		out.Calls = append(out.Calls, liveCall{Call: c, TalkSeconds: talk})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) cdrs(w http.ResponseWriter, r *http.Request) {
	listRecent(s, w, r, "cdrs", s.o.Store.CDRs)
}

func (s *server) ledger(w http.ResponseWriter, r *http.Request) {
	listRecent(s, w, r, "entries", s.o.Store.Entries)
}

// listRecent answers {key: [...]} with the newest items of an existing
// project, at most ?limit=.
func listRecent[T any](s *server, w http.ResponseWriter, r *http.Request, key string,
	fetch func(ctx context.Context, project string, limit int) ([]T, error)) {
	id, ok := projectID(w, r)
	if !ok {
		return
	}
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	if _, err := s.o.Store.Get(r.Context(), id); err != nil {
		s.fail(w, r, id, err)
		return
	}
	items, err := fetch(r.Context(), id, limit)
	if err != nil {
		s.fail(w, r, id, err)
		return
	}
	if items == nil {
		items = []T{}
	}
	writeJSON(w, http.StatusOK, map[string][]T{key: items})
}

// existing returns the validated id of a project that exists, or answers.
func (s *server) existing(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, ok := projectID(w, r)
	if !ok {
		return "", false
	}
	if _, err := s.o.Store.Get(r.Context(), id); err != nil {
		s.fail(w, r, id, err)
		return "", false
	}
	return id, true
}

// ---- alerts ----

type alertList struct {
	Alerts []alert.Alert `json:"alerts"`
}

func (s *server) alerts(w http.ResponseWriter, r *http.Request) {
	if s.o.Alerts == nil {
		writeError(w, http.StatusNotImplemented,
			"recent alerts are not available from this process: query the API of a process that runs notify (minuted run)")
		return
	}
	project := r.URL.Query().Get("project")
	if project != "" && project != "_system" && !call.ValidProject(project) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter project=%q: %v (or _system)",
			project, call.ErrBadProject))
		return
	}
	limit, ok := limitParam(w, r)
	if !ok {
		return
	}
	as, err := s.o.Alerts.Recent(r.Context(), project, limit)
	if err != nil {
		s.log.Error("recent alerts failed", "project", project, "error", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("reading recent alerts failed: %v; retry", err))
		return
	}
	if as == nil {
		as = []alert.Alert{}
	}
	writeJSON(w, http.StatusOK, alertList{Alerts: as})
}

// ---- dashboard ----

// dashboard serves Options.Dashboard (its data routes, under /ui/api/, are
// behind the token by the route table).
func (s *server) dashboard(w http.ResponseWriter, r *http.Request) {
	if s.o.Dashboard == nil {
		writeError(w, http.StatusNotFound, "the web dashboard is not served by this process: open /ui/ on a process that runs the api role")
		return
	}
	s.o.Dashboard.ServeHTTP(w, r)
}
