package dashboard

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
)

// Threshold states of a project.
const (
	StateOK    = "ok"    // above every threshold
	StateBelow = "below" // below at least one threshold, balance > 0
	StateEmpty = "empty" // balance <= 0
)

// Row is one project of the overview.
type Row struct {
	ID                 string        `json:"id"`
	BalanceSeconds     int64         `json:"balance_seconds"`
	BalanceMinutes     float64       `json:"balance_minutes"`
	BurnMinutesPerHour float64       `json:"burn_minutes_per_hour"`
	Burning            bool          `json:"burning"`
	TimeToEmptySeconds *int64        `json:"time_to_empty_seconds"` // null when not burning
	LiveCalls          int           `json:"live_calls"`
	Tariff             tariff.Tariff `json:"tariff"`
	TariffText         string        `json:"tariff_text"`
	ThresholdsMinutes  []float64     `json:"thresholds_minutes"`
	State              string        `json:"state"`
	// BelowMinutes is the lowest threshold the balance is below (null if none).
	BelowMinutes       *float64 `json:"below_threshold_minutes"`
	OnExhausted        string   `json:"on_exhausted"`
	CreditLimitSeconds int64    `json:"credit_limit_seconds"`
}

// Overview is every project, the soonest to run dry first.
type Overview struct {
	At       time.Time `json:"at"`
	BurnAt   time.Time `json:"burn_measured_at"`
	Projects []Row     `json:"projects"`
	Totals   Totals    `json:"totals"`
}

// Totals sum the overview.
type Totals struct {
	Projects           int     `json:"projects"`
	LiveCalls          int     `json:"live_calls"`
	BurnMinutesPerHour float64 `json:"burn_minutes_per_hour"`
	Below              int     `json:"below"`
	Empty              int     `json:"empty"`
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// TariffText is the usual "free/min/inc" notation, e.g. "0/60/60", with
// "+cis" when initiated seconds count.
func TariffText(t tariff.Tariff) string {
	s := strconv.FormatInt(t.FreeSeconds, 10) + "/" + strconv.FormatInt(t.MinimumSeconds, 10) + "/" +
		strconv.FormatInt(t.IncrementSeconds, 10)
	if t.CountInitiatedSeconds {
		s += "+cis"
	}
	return s
}

// rowOf builds a project's row from its burn rate.
func rowOf(p ledger.Project, rate float64) Row {
	r := Row{
		ID: p.ID, BalanceSeconds: p.BalanceSeconds, BalanceMinutes: p.BalanceMinutes,
		BurnMinutesPerHour: round2(rate), LiveCalls: p.LiveCalls, Tariff: p.Tariff, TariffText: TariffText(p.Tariff),
		ThresholdsMinutes: p.ThresholdsMinutes, State: StateOK, OnExhausted: p.OnExhausted,
		CreditLimitSeconds: p.CreditLimitSeconds,
	}
	if r.ThresholdsMinutes == nil {
		r.ThresholdsMinutes = []float64{}
	}
	if ttz, ok := alert.TimeToZero(p.BalanceSeconds, rate); ok {
		s := int64(ttz / time.Second)
		r.TimeToEmptySeconds, r.Burning = &s, true
	}
	for _, t := range r.ThresholdsMinutes {
		if float64(p.BalanceSeconds) < t*60 && (r.BelowMinutes == nil || t < *r.BelowMinutes) {
			r.BelowMinutes = &t
		}
	}
	switch {
	case p.BalanceSeconds <= 0:
		r.State = StateEmpty
	case r.BelowMinutes != nil:
		r.State = StateBelow
	}
	return r
}

// less orders rows the soonest empty first: empty projects, then burning
// ones by time to empty, then idle ones by balance; ties by id.
func less(a, b Row) int {
	rank := func(r Row) int {
		switch {
		case r.BalanceSeconds <= 0:
			return 0
		case r.TimeToEmptySeconds != nil:
			return 1
		}
		return 2
	}
	if c := cmp.Compare(rank(a), rank(b)); c != 0 {
		return c
	}
	if a.TimeToEmptySeconds != nil && b.TimeToEmptySeconds != nil {
		if c := cmp.Compare(*a.TimeToEmptySeconds, *b.TimeToEmptySeconds); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(a.BalanceSeconds, b.BalanceSeconds); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// Overview reads every project's balance (one pipelined read) and joins
// the burn rates, measured again every BurnEvery. Viewers within half an
// Interval share one read.
func (h *Handler) Overview(ctx context.Context) (Overview, error) {
	return h.overviewC.get(ctx, h.o.Now(), h.o.Interval/2, h.overview)
}

func (h *Handler) overview(ctx context.Context) (Overview, error) {
	ps, err := h.o.Store.List(ctx)
	if err != nil {
		return Overview{}, fmt.Errorf("list projects: %w", err)
	}
	now := h.o.Now()
	rates, at := h.burn.measure(ctx, h, ps, now)
	ov := Overview{At: now.UTC(), BurnAt: at.UTC(), Projects: make([]Row, 0, len(ps))}
	for _, p := range ps {
		r := rowOf(p, rates[p.ID])
		ov.Projects = append(ov.Projects, r)
		ov.Totals.LiveCalls += r.LiveCalls
		ov.Totals.BurnMinutesPerHour += r.BurnMinutesPerHour
		switch r.State {
		case StateBelow:
			ov.Totals.Below++
		case StateEmpty:
			ov.Totals.Empty++
		}
	}
	ov.Totals.Projects = len(ov.Projects)
	ov.Totals.BurnMinutesPerHour = round2(ov.Totals.BurnMinutesPerHour)
	slices.SortFunc(ov.Projects, less)
	return ov, nil
}

// burnCache keeps the burn rate of every project for BurnEvery.
type burnCache struct {
	mu    sync.Mutex
	at    time.Time
	rates map[string]float64
}

// measure returns the burn rates, measuring them again when older than
// BurnEvery: one bounded read of each project's newest entries, at most
// Parallel at a time. A project whose read fails keeps its last rate.
func (c *burnCache) measure(ctx context.Context, h *Handler, ps []ledger.Project, now time.Time) (map[string]float64, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fresh := c.rates != nil && now.Sub(c.at) < h.o.BurnEvery && now.Sub(c.at) >= 0
	if fresh {
		missing := false
		for _, p := range ps {
			if _, ok := c.rates[p.ID]; !ok {
				missing = true
				break
			}
		}
		if !missing {
			return c.rates, c.at
		}
	}
	next := make(map[string]float64, len(ps))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(h.o.Parallel)
	for _, p := range ps {
		g.Go(func() error {
			rate, err := h.burnRate(gctx, p.ID, now)
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				h.log.Warn("dashboard: cannot measure burn rate", "project", p.ID, "err", err)
				rate = c.rates[p.ID] // read only while the group runs
			}
			mu.Lock()
			next[p.ID] = rate
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil && c.rates != nil {
		return c.rates, c.at
	}
	c.rates, c.at = next, now
	return next, now
}

// burnRate measures one project's burn rate from at most BurnEntries of
// its newest entries.
func (h *Handler) burnRate(ctx context.Context, id string, now time.Time) (float64, error) {
	es, err := h.o.Store.Entries(ctx, id, h.o.BurnEntries)
	if err != nil {
		return 0, err
	}
	return burnOf(es, now, h.o.BurnWindow, h.o.BurnEntries), nil
}

// burnOf is alert.BurnRate over newest-first entries read with a limit:
// when the read was cut inside the window, the window shrinks to the span
// the entries cover (the rate of what was read, not an underestimate).
func burnOf(es []ledger.Entry, now time.Time, window time.Duration, limit int) float64 {
	if len(es) > 0 && len(es) >= limit {
		if span := now.Sub(es[len(es)-1].At); span < window {
			window = max(span, time.Second)
		}
	}
	return alert.BurnRate(es, now, window)
}

// ---- one project ----

// Range is the span of a chart.
type Range struct {
	Name string
	Span time.Duration
}

// Ranges a chart can show.
var ranges = []Range{{"hour", time.Hour}, {"day", 24 * time.Hour}, {"week", 7 * 24 * time.Hour}}

// ParseRange reads ?range= (hour, day or week; hour when empty).
func ParseRange(s string) (Range, error) {
	if s == "" {
		return ranges[0], nil
	}
	for _, r := range ranges {
		if r.Name == s {
			return r, nil
		}
	}
	return Range{}, fmt.Errorf("query parameter range=%q must be hour, day or week", s)
}

// Point is one point of a balance chart.
type Point struct {
	At             time.Time `json:"t"`
	BalanceSeconds int64     `json:"b"`
}

// LiveCall is a live call with its running talk time.
type LiveCall struct {
	ledger.Call
	TalkSeconds int64 `json:"talk_seconds"`
}

// ProjectView is the project page.
type ProjectView struct {
	At        time.Time `json:"at"`
	Project   Row       `json:"project"`
	CreatedAt time.Time `json:"created_at"`
	Range     string    `json:"range,omitempty"`
	From      time.Time `json:"from,omitzero"`
	// Series is the balance over the range (omitted in the event stream).
	Series          []Point        `json:"series,omitempty"`
	SeriesTruncated bool           `json:"series_truncated,omitempty"`
	Calls           []LiveCall     `json:"calls"`
	TopUps          []ledger.Entry `json:"topups"`
	Entries         []ledger.Entry `json:"entries"`
	Alerts          []alert.Alert  `json:"alerts"`
	AlertsError     string         `json:"alerts_error,omitempty"`
}

// Project reads one project's page: its row (burn rate measured now), live
// calls, newest entries, top-ups and alerts, and with series its balance
// over rng.
func (h *Handler) Project(ctx context.Context, id string, rng Range, series bool) (ProjectView, error) {
	p, err := h.o.Store.Get(ctx, id)
	if err != nil {
		return ProjectView{}, err
	}
	now := h.o.Now()
	limit := h.o.BurnEntries
	if series {
		limit = max(limit, h.o.SeriesEntries)
	}
	var (
		es    []ledger.Entry
		calls []ledger.Call
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { es, err = h.o.Store.Entries(gctx, id, limit); return err })
	g.Go(func() (err error) { calls, err = h.o.Store.Live(gctx, id); return err })
	if err := g.Wait(); err != nil {
		return ProjectView{}, fmt.Errorf("read project %q: %w", id, err)
	}
	pv := ProjectView{
		At: now.UTC(), Project: rowOf(p, burnOf(es, now, h.o.BurnWindow, limit)), CreatedAt: p.CreatedAt,
		Calls: make([]LiveCall, 0, len(calls)), TopUps: []ledger.Entry{}, Alerts: []alert.Alert{},
	}
	for _, c := range calls {
		talk := int64(0)
		if !c.AnsweredAt.IsZero() && now.After(c.AnsweredAt) {
			talk = int64(now.Sub(c.AnsweredAt) / time.Second)
		}
		pv.Calls = append(pv.Calls, LiveCall{Call: c, TalkSeconds: talk})
	}
	slices.SortFunc(pv.Calls, func(a, b LiveCall) int {
		return cmp.Or(a.AnsweredAt.Compare(b.AnsweredAt), cmp.Compare(a.Key(), b.Key()))
	})
	pv.Entries = es[:min(len(es), RecentItems)]
	for _, e := range es {
		if (e.Kind == ledger.KindTopUp || e.Kind == ledger.KindAdjustment) && len(pv.TopUps) < RecentItems {
			pv.TopUps = append(pv.TopUps, e)
		}
	}
	if series {
		// The chart starts with the range, or with the project if younger.
		from := now.Add(-rng.Span)
		if p.CreatedAt.After(from) && p.CreatedAt.Before(now) {
			from = p.CreatedAt
		}
		pv.Range, pv.From = rng.Name, from.UTC()
		pv.Series, pv.SeriesTruncated = Series(es, p.BalanceSeconds, from, now, len(es) >= limit, MaxPoints)
	}
	pv.Alerts, pv.AlertsError = h.recentAlerts(ctx, id, now)
	return pv, nil
}

// recentAlerts reads a project's alerts, kept for alertsTTL (the alert
// source scans a stream).
func (h *Handler) recentAlerts(ctx context.Context, id string, now time.Time) ([]alert.Alert, string) {
	if h.o.Alerts == nil {
		return []alert.Alert{}, "recent alerts are not available from this process"
	}
	h.alertsMu.Lock()
	c := h.alertsC[id]
	if c == nil {
		if len(h.alertsC) > 1000 {
			clear(h.alertsC)
		}
		c = &cached[[]alert.Alert]{}
		h.alertsC[id] = c
	}
	h.alertsMu.Unlock()
	as, err := c.get(ctx, now, alertsTTL, func(ctx context.Context) ([]alert.Alert, error) {
		return h.o.Alerts.Recent(ctx, id, RecentItems)
	})
	if err != nil {
		return []alert.Alert{}, "reading recent alerts failed: " + err.Error()
	}
	if as == nil {
		as = []alert.Alert{}
	}
	return as, ""
}

// Series is the balance between from and to from newest-first entries:
// a point at from (the balance then, when the entries reach back to it or
// were read complete), the last entry of each of maxPoints time buckets,
// and the current balance at to. truncated says the entries (cut at a
// limit: cut) do not reach back to from.
func Series(newestFirst []ledger.Entry, current int64, from, to time.Time, cut bool, maxPoints int) ([]Point, bool) {
	maxPoints = max(maxPoints, 3)
	pts := make([]Point, 0, min(len(newestFirst), maxPoints)+2)
	// The balance at from: after the newest entry at or before it, else
	// before the oldest entry read.
	start, known := current, false
	oldestIn := len(newestFirst) // index of the oldest entry after from
	for i, e := range newestFirst {
		if !e.At.After(from) {
			start, known = e.Balance, true
			break
		}
		oldestIn = i
		start = e.Balance - e.Seconds
	}
	if oldestIn == len(newestFirst) {
		oldestIn = -1 // no entry after from
	}
	truncated := !known && cut
	if !truncated {
		pts = append(pts, Point{At: from.UTC(), BalanceSeconds: start})
	}
	width := to.Sub(from) / time.Duration(maxPoints-2)
	if width <= 0 {
		width = time.Nanosecond
	}
	last := int64(-1)
	for i := oldestIn; i >= 0; i-- {
		e := newestFirst[i]
		if e.At.After(to) {
			continue
		}
		b := int64(e.At.Sub(from) / width)
		if b == last && len(pts) > 0 {
			pts[len(pts)-1] = Point{At: e.At.UTC(), BalanceSeconds: e.Balance}
			continue
		}
		last = b
		pts = append(pts, Point{At: e.At.UTC(), BalanceSeconds: e.Balance})
	}
	pts = append(pts, Point{At: to.UTC(), BalanceSeconds: current})
	return pts, truncated
}
