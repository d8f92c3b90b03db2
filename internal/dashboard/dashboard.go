// Package dashboard is minuted's live operations dashboard: a single page
// (embedded HTML, CSS and vanilla JavaScript, a hand-drawn SVG chart, no
// CDN) and the read-only JSON and Server-Sent Events it draws from.
//
// Routes (mounted by the admin API at /ui/, see api.Options.Dashboard):
//
//	GET /ui/                      the page (public: it holds no data)
//	GET /ui/assets/{file}         app.js, app.css, favicon.svg (public)
//	GET /ui/api/overview          projects sorted by time to empty
//	GET /ui/api/projects/{id}     one project, ?range=hour|day|week
//	GET /ui/api/system            readiness, ARI per node, consumer lag, dead letters
//	GET /ui/api/events            text/event-stream, ?view=overview|project|system&project=
//
// Everything under /ui/api/ must be served behind the admin token; the API
// does that. The page keeps the token in sessionStorage and sends it as a
// Bearer header on every fetch, including the event stream, which it reads
// with fetch streaming rather than EventSource (EventSource cannot send
// headers, and a token in a URL or a cookie would leak into logs or be sent
// by cross-site requests). Actions (top-ups) go through POST /v1.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/api"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
)

//go:embed assets
var assetFS embed.FS

// Store is the part of the ledger the dashboard reads; *ledger.Ledger
// satisfies it.
type Store interface {
	List(ctx context.Context) ([]ledger.Project, error)
	Get(ctx context.Context, id string) (ledger.Project, error)
	Live(ctx context.Context, project string) ([]ledger.Call, error)
	Entries(ctx context.Context, project string, limit int) ([]ledger.Entry, error)
}

// AlertSource gives the recent alerts of a project ("" for all, "_system"
// for system alerts), newest first (api.AlertSource).
type AlertSource interface {
	Recent(ctx context.Context, project string, limit int) ([]alert.Alert, error)
}

// System gives the figures of the system view that the ledger does not
// hold (NATSSystem reads them from NATS).
type System interface {
	Figures(ctx context.Context) (Figures, error)
}

// Options configure New. Store is required; the rest is optional.
type Options struct {
	Store  Store
	Alerts AlertSource
	// Checks are the readiness checks shown in the system view (the same
	// as the API's /readyz).
	Checks []api.Check
	System System
	Logger *slog.Logger
	Now    func() time.Time
	// Interval is the period of the event stream (default 1s).
	Interval time.Duration
	// BurnWindow is the span burn rates are measured over (default
	// alert.DefaultWindow).
	BurnWindow time.Duration
	// BurnEvery is how often the burn rates of the overview are measured
	// again (default 10s); balances are read every Interval.
	BurnEvery time.Duration
	// BurnEntries bounds the ledger entries read per project to measure a
	// burn rate (default 2000); past it the window shrinks to what was read.
	BurnEntries int
	// SeriesEntries bounds the entries read for a chart (default 20000).
	SeriesEntries int
	// Parallel bounds concurrent ledger reads (default 16).
	Parallel int
}

// Defaults of Options.
const (
	DefaultInterval      = time.Second
	DefaultBurnEvery     = 10 * time.Second
	DefaultBurnEntries   = 2000
	DefaultSeriesEntries = 20000
	DefaultParallel      = 16
	// MaxPoints is the most points of a chart's series.
	MaxPoints = 400
	// RecentItems is how many alerts and top-ups a project page lists.
	RecentItems  = 20
	checkTimeout = 2 * time.Second
	alertsTTL    = 5 * time.Second
)

// Handler serves the dashboard. Create it with New.
type Handler struct {
	o      Options
	log    *slog.Logger
	mux    *http.ServeMux
	static http.Handler

	overviewC cached[Overview]
	systemC   cached[SystemView]
	burn      burnCache
	alertsMu  sync.Mutex
	alertsC   map[string]*cached[[]alert.Alert]
}

// New builds the dashboard handler.
func New(o Options) *Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.BurnWindow <= 0 {
		o.BurnWindow = alert.DefaultWindow
	}
	if o.BurnEvery <= 0 {
		o.BurnEvery = DefaultBurnEvery
	}
	if o.BurnEntries <= 0 {
		o.BurnEntries = DefaultBurnEntries
	}
	if o.SeriesEntries <= 0 {
		o.SeriesEntries = DefaultSeriesEntries
	}
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	h := &Handler{o: o, log: o.Logger.With("component", "dashboard"), mux: http.NewServeMux(),
		alertsC: map[string]*cached[[]alert.Alert]{}}
	sub, err := fs.Sub(assetFS, "assets")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	h.static = http.StripPrefix("/ui/assets/", http.FileServerFS(sub))
	h.mux.HandleFunc("GET /ui/{$}", h.page)
	h.mux.HandleFunc("GET /ui/assets/{file}", h.asset)
	h.mux.HandleFunc("GET /ui/api/overview", h.getOverview)
	h.mux.HandleFunc("GET /ui/api/projects/{id}", h.getProject)
	h.mux.HandleFunc("GET /ui/api/system", h.getSystem)
	h.mux.HandleFunc("GET /ui/api/events", h.events)
	return h
}

// ServeHTTP dispatches; unknown paths answer 404 in JSON.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, p := h.mux.Handler(r); p == "" {
		fail(w, http.StatusNotFound, fmt.Sprintf("no dashboard route %s %s: open /ui/", r.Method, r.URL.Path))
		return
	}
	h.mux.ServeHTTP(w, r)
}

// securityHeaders: the page runs only its own script and talks only to its
// origin; it cannot be framed.
func securityHeaders(w http.ResponseWriter) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	b, err := assetFS.ReadFile("assets/index.html")
	if err != nil {
		fail(w, http.StatusInternalServerError, "dashboard page missing from the binary: "+err.Error())
		return
	}
	securityHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(b)
}

func (h *Handler) asset(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("file") == "index.html" { // FileServer would redirect it to ./
		fail(w, http.StatusNotFound, "no such asset: open /ui/")
		return
	}
	securityHeaders(w)
	w.Header().Set("Cache-Control", "no-cache")
	h.static.ServeHTTP(w, r)
}

// ---- JSON ----

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// failErr answers a read error: 404 for an unknown project, 400 for an
// invalid one, 500 for the ledger.
func (h *Handler) failErr(w http.ResponseWriter, r *http.Request, id string, err error) {
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		fail(w, http.StatusNotFound, fmt.Sprintf("project %q does not exist (create it with PUT /v1/projects/%s)", id, url.PathEscape(id)))
	case errors.Is(err, ledger.ErrInvalid):
		fail(w, http.StatusBadRequest, err.Error())
	case r.Context().Err() != nil:
		fail(w, 499, "the request was cancelled by the client")
	default:
		h.log.Error("dashboard read failed", "project", id, "err", err)
		fail(w, http.StatusInternalServerError, fmt.Sprintf("reading the ledger failed: %v; check Redis (GET /readyz)", err))
	}
}

func (h *Handler) getOverview(w http.ResponseWriter, r *http.Request) {
	ov, err := h.Overview(r.Context())
	if err != nil {
		h.failErr(w, r, "", err)
		return
	}
	writeJSON(w, http.StatusOK, ov)
}

func (h *Handler) getProject(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !call.ValidProject(id) {
		fail(w, http.StatusBadRequest, fmt.Sprintf("invalid project id %q: %v", id, call.ErrBadProject))
		return
	}
	rng, err := ParseRange(r.URL.Query().Get("range"))
	if err != nil {
		fail(w, http.StatusBadRequest, err.Error())
		return
	}
	pv, err := h.Project(r.Context(), id, rng, true)
	if err != nil {
		h.failErr(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, pv)
}

func (h *Handler) getSystem(w http.ResponseWriter, r *http.Request) {
	sv, err := h.System(r.Context())
	if err != nil {
		h.failErr(w, r, "", err)
		return
	}
	writeJSON(w, http.StatusOK, sv)
}

// cached holds one computed value for a short time, so that several
// viewers (and their event streams) share one ledger read per period.
type cached[T any] struct {
	mu  sync.Mutex
	at  time.Time
	ok  bool
	v   T
	err error
}

// get returns the value computed within ttl of now, or computes it (one
// caller at a time; the others wait and reuse it).
func (c *cached[T]) get(ctx context.Context, now time.Time, ttl time.Duration, f func(context.Context) (T, error)) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok && now.Sub(c.at) < ttl && now.Sub(c.at) >= 0 {
		return c.v, c.err
	}
	v, err := f(ctx)
	if err != nil && ctx.Err() != nil {
		return v, err // the caller left: do not keep its cancellation for the others
	}
	c.v, c.err, c.at, c.ok = v, err, now, true
	return v, err
}
