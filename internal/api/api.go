// Package api is minuted's admin HTTP API (SPEC §9): projects, balances,
// top-ups and adjustments, live calls, CDRs, the ledger and recent alerts
// under /v1 (bearer token, JSON), plus /metrics, /healthz and /readyz.
// api/openapi.yaml at the repository root documents every route.
package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/minuted/minuted/internal/alert"
	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/tariff"
)

// Store is the part of the ledger the API uses; *ledger.Ledger satisfies it.
type Store interface {
	List(ctx context.Context) ([]ledger.Project, error)
	Get(ctx context.Context, id string) (ledger.Project, error)
	Put(ctx context.Context, id string, s ledger.Settings) (ledger.Project, bool, error)
	TopUp(ctx context.Context, id string, seconds int64, reference, kind string) (ledger.TopUpResult, error)
	Live(ctx context.Context, project string) ([]ledger.Call, error)
	CDRs(ctx context.Context, project string, limit int) ([]call.CDR, error)
	Entries(ctx context.Context, project string, limit int) ([]ledger.Entry, error)
	Audit(ctx context.Context, project string) (ledger.Audit, error)
}

// AlertSource gives the recent alerts of a project ("" for every project),
// newest first.
type AlertSource interface {
	Recent(ctx context.Context, project string, limit int) ([]alert.Alert, error)
}

// Check is one named readiness check of /readyz (ARI, NATS, Redis...).
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Options configure New.
type Options struct {
	Store Store
	// Token is the bearer token every route but /healthz and /readyz
	// requires. New refuses an empty token unless Insecure is set.
	Token    config.Secret
	Insecure bool
	// PublicMetrics serves /metrics without the token (for scrapers that
	// cannot send one). By default /metrics requires it like /v1.
	PublicMetrics bool
	Logger        *slog.Logger
	// Registry is served on /metrics; the API's own metrics are registered
	// in it. A fresh registry is used when nil.
	Registry *prometheus.Registry
	// Ready are the checks of /readyz, run concurrently, each bounded by
	// ReadyTimeout (default 2s).
	Ready        []Check
	ReadyTimeout time.Duration
	// Alerts serves GET /v1/alerts; when nil that route answers 501.
	Alerts AlertSource
	// Defaults are the settings of a project created by PUT for the fields
	// its body leaves out (a zero tariff means tariff.Default, nil
	// thresholds the ledger's DefaultThresholds).
	Defaults ledger.Settings
	// OnCrossed, optional, is told of thresholds a negative adjustment
	// crossed so that alerts can be raised (bill raises those of calls).
	OnCrossed func(ctx context.Context, project string, crossed []ledger.Crossing)
	// Now is the clock of the running talk time of live calls (time.Now).
	Now func() time.Time
	// Dashboard, optional, is the web dashboard (internal/dashboard). It is
	// mounted at /ui/: its pages and assets (/ui/, no data) are public,
	// everything under /ui/api/ requires the token like /v1. When nil,
	// /ui/ answers 404.
	Dashboard http.Handler
}

// Limits of the API.
const (
	MaxBodyBytes = 64 << 10
	DefaultLimit = 100
	MaxLimit     = 1000
)

// route is one entry of the route table; openapi.yaml must list each.
type route struct {
	method, path string
	public       bool // no token required
	handle       http.HandlerFunc
}

type server struct {
	o         Options
	log       *slog.Logger
	tokenHash [32]byte
	metrics   *metrics
	routes    []route
	mux       *http.ServeMux
}

// New builds the admin API handler. It fails when Store is nil or when no
// token is configured and Insecure is not set.
func New(o Options) (http.Handler, error) {
	s, err := newServer(o)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func newServer(o Options) (*server, error) {
	if o.Store == nil {
		return nil, errors.New("api: Options.Store is nil: give the API a ledger")
	}
	if o.Token == "" && !o.Insecure {
		return nil, errors.New("api: no admin token configured: set http.admin_token, http.admin_token_file " +
			"or MINUTED_ADMIN_TOKEN (or start the API insecure, without authentication, on purpose)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 2 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Defaults.Tariff == (tariff.Tariff{}) {
		o.Defaults.Tariff = tariff.Default
	}
	s := &server{o: o, log: o.Logger.With("component", "api"), mux: http.NewServeMux()}
	s.tokenHash = sha256.Sum256([]byte(o.Token))
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	metricsHandler := promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn), Registry: o.Registry,
	})
	s.routes = []route{
		{"GET", "/healthz", true, s.healthz},
		{"GET", "/readyz", true, s.readyz},
		{"GET", "/metrics", o.PublicMetrics, metricsHandler.ServeHTTP},
		{"GET", "/v1/projects", false, s.listProjects},
		{"GET", "/v1/projects/{id}", false, s.getProject},
		{"PUT", "/v1/projects/{id}", false, s.putProject},
		{"POST", "/v1/projects/{id}/topups", false, s.topUp},
		{"POST", "/v1/projects/{id}/adjustments", false, s.adjust},
		{"GET", "/v1/projects/{id}/calls", false, s.liveCalls},
		{"GET", "/v1/projects/{id}/cdrs", false, s.cdrs},
		{"GET", "/v1/projects/{id}/ledger", false, s.ledger},
		{"GET", "/v1/projects/{id}/audit", false, s.audit},
		{"GET", "/v1/alerts", false, s.alerts},
		{"GET", "/ui/", true, s.dashboard},
		{"GET", "/ui/api/", false, s.dashboard},
	}
	for _, rt := range s.routes {
		h := rt.handle
		if !rt.public {
			h = s.authed(h)
		}
		s.mux.Handle(rt.method+" "+rt.path, h)
	}
	if o.Insecure && o.Token == "" {
		s.log.Warn("admin API runs WITHOUT authentication: anyone who reaches it can change balances; set an admin token")
	}
	return s, nil
}

// ServeHTTP records every request, answers unknown routes and unclean paths
// in JSON, and dispatches to the mux.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, code: http.StatusOK}
	s.dispatch(rec, r)
	route := r.Pattern
	if route == "" {
		route = "unmatched"
	}
	d := time.Since(start)
	s.metrics.observe(route, rec.code, d)
	level := slog.LevelDebug
	switch {
	case rec.code >= 500:
		level = slog.LevelError
	case rec.code == http.StatusUnauthorized:
		level = slog.LevelWarn
	case rec.code >= 400:
		level = slog.LevelInfo
	}
	attrs := []any{"method", r.Method, "path", r.URL.Path, "route", route, "code", rec.code,
		"duration", d, "remote", r.RemoteAddr}
	if rec.errMsg != "" {
		attrs = append(attrs, "error", rec.errMsg)
	}
	s.log.Log(r.Context(), level, "admin API request", attrs...)
}

func (s *server) dispatch(w http.ResponseWriter, r *http.Request) {
	// The mux would redirect /v1/projects/../x elsewhere; refuse such paths
	// instead (after the token, so nothing is answered without it).
	if p := r.URL.EscapedPath(); p != cleanPath(p) {
		if s.authorized(w, r) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf(
				"path %q is not canonical: it contains '.', '..' or empty segments; project ids: %v",
				r.URL.Path, call.ErrBadProject))
		}
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// noRoute answers 405 when the path exists with other methods, else 404.
func (s *server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{"GET", "PUT", "POST"} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use %s",
			r.Method, r.URL.Path, strings.Join(allowed, " or ")))
		return
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s; the routes are listed in api/openapi.yaml",
		r.Method, r.URL.Path))
}

func (s *server) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.authorized(w, r) {
			h(w, r)
		}
	}
}

// authorized checks the bearer token in constant time (of hashes, so the
// length of the token does not leak either) and answers 401 if it fails.
func (s *server) authorized(w http.ResponseWriter, r *http.Request) bool {
	if s.o.Token == "" && s.o.Insecure {
		return true
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
		w.Header().Set("WWW-Authenticate", `Bearer realm="minuted"`)
		writeError(w, http.StatusUnauthorized,
			"missing bearer token: send the header 'Authorization: Bearer <admin token>' (http.admin_token / MINUTED_ADMIN_TOKEN)")
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	if subtle.ConstantTimeCompare(got[:], s.tokenHash[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="minuted", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized,
			"wrong bearer token: use the admin token minuted was started with (http.admin_token / MINUTED_ADMIN_TOKEN)")
		return false
	}
	return true
}

// recorder keeps the status code and the error message for metrics and logs.
type recorder struct {
	http.ResponseWriter
	code    int
	wrote   bool
	errMsg  string
	written int64
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	n, err := r.ResponseWriter.Write(b)
	r.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// errorNoter is implemented by recorder: writeError leaves its message there
// so the access log says why a request failed.
type errorNoter interface{ noteError(string) }

func (r *recorder) noteError(msg string) { r.errMsg = msg }
