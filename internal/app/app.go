// Package app wires minuted's roles together: it opens the connections
// (NATS, embedded or not; Redis), builds the chosen roles and runs them in
// one group, the first failure stopping all, SIGTERM draining them in order.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/minuted/minuted/internal/api"
	"github.com/minuted/minuted/internal/backoff"
	"github.com/minuted/minuted/internal/bill"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/dashboard"
	"github.com/minuted/minuted/internal/ingest"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/notify"
	"github.com/minuted/minuted/internal/stream"
)

// Roles.
const (
	RoleIngest = "ingest"
	RoleBill   = "bill"
	RoleNotify = "notify"
	RoleAPI    = "api"
)

// AllRoles is what `minuted run` runs.
var AllRoles = []string{RoleIngest, RoleBill, RoleNotify, RoleAPI}

// Options configure an App.
type Options struct {
	Config config.Config
	Roles  []string
	Logger *slog.Logger
	// Registry receives every metric; a fresh one when nil.
	Registry *prometheus.Registry
	// Demo starts the ARI double with synthetic calls and demo projects
	// and points ingest at it (see demo.go).
	Demo bool
	// Listener, if set, is used for the admin API instead of listening on
	// Config.HTTP.Addr (tests pass 127.0.0.1:0).
	Listener net.Listener
	// BillHooks are test fault hooks of the bill role.
	BillHooks bill.Hooks
	// DrainTimeout bounds the graceful shutdown (default 20s).
	DrainTimeout time.Duration
}

// App is a running set of roles.
type App struct {
	o   Options
	cfg config.Config
	log *slog.Logger
	reg *prometheus.Registry
	emb *stream.Embedded
	nc  *nats.Conn
	js  jetstream.JetStream
	rdb redis.UniversalClient
	led *ledger.Ledger
	pub *stream.Publisher
	// spool is ingest's outbox on disk (nil: ingest.spool_dir is "").
	spool *stream.Spool
	// streamsLater: the streams are created or checked in the background
	// once NATS answers (ingest runs without NATS), before bill and
	// notify start.
	streamsLater bool
	ing          *ingest.Service
	bil          *bill.Biller
	not          *notify.Dispatcher
	http         net.Listener
	addr         string
	demo         *demo
}

func (o Options) has(role string) bool { return slices.Contains(o.Roles, role) }

// New opens the connections and builds the roles of o; Run starts them.
// Close releases what New opened if Run is never called.
func New(ctx context.Context, o Options) (a *App, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 20 * time.Second
	}
	for _, r := range o.Roles {
		if !slices.Contains(AllRoles, r) {
			return nil, fmt.Errorf("unknown role %q (want one of %v)", r, AllRoles)
		}
	}
	a = &App{o: o, cfg: o.Config, log: o.Logger, reg: o.Registry}
	defer func(a *App) { // a, not the named result: a failed New returns nil
		if err != nil {
			a.Close()
		}
	}(a)
	if o.Demo {
		if a.demo, err = startDemo(ctx, &a.cfg, a.log); err != nil {
			return nil, err
		}
	}
	if o.has(RoleIngest) && a.cfg.Ingest.SpoolDir != "" {
		// Before NATS: what a crashed process left is published first.
		a.spool, err = stream.OpenSpool(SpoolPath(a.cfg), stream.SpoolOptions{Sync: a.cfg.Ingest.SpoolFsync, Logger: a.log})
		if err != nil {
			return nil, fmt.Errorf("ingest.spool_dir: %w", err)
		}
	}
	if err := a.connectNATS(ctx); err != nil {
		return nil, err
	}
	if o.has(RoleBill) || o.has(RoleAPI) || o.has(RoleNotify) {
		if err := a.connectRedis(ctx); err != nil {
			return nil, err
		}
	}
	if err := a.buildRoles(); err != nil {
		return nil, err
	}
	registerMetrics(a)
	return a, nil
}

func (a *App) connectNATS(ctx context.Context) error {
	var err error
	name := "minuted"
	if a.cfg.NATS.URL == "" {
		a.emb, err = stream.StartEmbedded(ctx, stream.EmbeddedOptions{
			StoreDir: a.cfg.NATS.StoreDir, Listen: a.cfg.NATS.EmbeddedListen, Logger: a.log.With("component", "nats-server"),
			User: a.cfg.NATS.EmbeddedUser, Password: string(a.cfg.NATS.EmbeddedPassword),
		})
		if err != nil {
			return fmt.Errorf("start embedded NATS (nats.store_dir %s): %w", a.cfg.NATS.StoreDir, err)
		}
		// Strict order of ingest's publishes across a server restart: no
		// reconnect buffer (see stream.Publisher).
		a.nc, err = a.emb.Connect(nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectBufSize(-1))
	} else if a.o.has(RoleIngest) {
		// Ingest must listen to Asterisk from the start, NATS or not: it
		// buffers (and spools) its events until NATS answers.
		a.nc, err = stream.ConnectInBackground(ctx, a.cfg.NATS, name, a.log, nats.ReconnectBufSize(-1))
	} else {
		a.nc, err = stream.Connect(ctx, a.cfg.NATS, name, a.log, nats.ReconnectBufSize(-1))
	}
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	if a.js, err = jetstream.New(a.nc); err != nil {
		return fmt.Errorf("JetStream: %w", err)
	}
	if a.o.has(RoleIngest) {
		// Not even a NATS that answers but then stalls or restarts may
		// hold ingest back from listening: the streams are created or
		// checked beside it (bill and notify wait for them).
		a.streamsLater = true
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := stream.EnsureStreams(sctx, a.js, a.cfg.NATS); err != nil {
		return fmt.Errorf("create or update the streams: %w", err)
	}
	return nil
}

// ensureStreamsLater creates or checks the streams as soon as NATS
// answers, retrying until it works or ctx ends; it closes ready when done.
func (a *App) ensureStreamsLater(ctx context.Context, ready chan<- struct{}) {
	failures := 0
	for {
		wait := 100 * time.Millisecond // until connected
		if a.nc.IsConnected() {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := stream.EnsureStreams(sctx, a.js, a.cfg.NATS)
			cancel()
			if err == nil {
				a.log.Info("streams created or checked")
				close(ready)
				return
			}
			failures++
			lvl := slog.LevelWarn
			if failures > 10 {
				lvl = slog.LevelError // not a passing outage: say it louder
			}
			a.log.Log(ctx, lvl, "cannot create or check the streams yet; bill and notify wait, ingest spools", "err", err, "attempt", failures)
			wait = backoff.Delay(100*time.Millisecond, 5*time.Second, failures-1, 0.5)
		}
		if !backoff.Sleep(ctx, wait) {
			return
		}
	}
}

// SpoolPath is the spool file of cfg's ingest: one per node (the node
// id, or the ARI URL and application when the node is learnt from ARI).
func SpoolPath(cfg config.Config) string {
	name := cfg.Node
	if name == "" {
		name = "ari-" + cfg.ARI.URL + "-" + cfg.ARI.Application
		if u, err := url.Parse(cfg.ARI.URL); err == nil {
			name = "ari-" + u.Host + u.Path + "-" + cfg.ARI.Application
		}
	}
	safe := []byte(name)
	for i, c := range safe {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			safe[i] = '_'
		}
	}
	return filepath.Join(cfg.Ingest.SpoolDir, "ingest-"+string(safe)+".spool")
}

// RedisClient builds a go-redis client from cfg, in every form a
// UniversalClient: a single server (redis://, rediss://, unix://), a cluster
// (redis://h1:p1?addr=h2:p2), or the master of a Sentinel group
// (redis.sentinel.master_name with redis.sentinel.addrs, or go-redis's
// failover URL redis://sentinel1:26379?master_name=m&addr=sentinel2:26379).
// redis.username/password (ACL or requirepass) and redis.tls apply to every
// form; with Sentinel, redis.url's user/password/db/scheme are the master's.
// Errors never quote the URL's password.
func RedisClient(cfg config.RedisConfig) (redis.UniversalClient, error) {
	tlsCfg, err := cfg.TLS.Client("redis.tls")
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url %s: %w", config.RedactURL(cfg.URL), stripURLError(err))
	}
	if tlsCfg != nil && u.Scheme != "rediss" {
		return nil, fmt.Errorf("redis.tls: set, but redis.url is %s:// (plain); use rediss:// to connect with TLS", u.Scheme)
	}
	// withTLS merges redis.tls into the config go-redis derived from a
	// rediss:// URL; serverName is the name to verify when redis.tls names
	// none ("" verifies each address dialled).
	withTLS := func(parsed *tls.Config, serverName string) *tls.Config {
		if parsed == nil {
			return nil
		}
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if tlsCfg != nil {
			c = tlsCfg.Clone()
		}
		if c.ServerName == "" {
			c.ServerName = serverName
		}
		c.InsecureSkipVerify = c.InsecureSkipVerify || parsed.InsecureSkipVerify //nolint:gosec // ?skip_verify=true or redis.tls.insecure_skip_verify
		return c
	}
	auth := func(user, pw *string) {
		if cfg.Username != "" {
			*user = cfg.Username
		}
		if cfg.Password != "" {
			*pw = string(cfg.Password)
		}
	}
	bad := func(err error) error {
		return fmt.Errorf("redis.url %s: %w", config.RedactURL(cfg.URL), stripURLError(err))
	}
	switch {
	case cfg.Sentinel.MasterName != "":
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, bad(err)
		}
		fo := &redis.FailoverOptions{
			MasterName: cfg.Sentinel.MasterName, SentinelAddrs: cfg.Sentinel.Addrs,
			SentinelUsername: cfg.Sentinel.Username, SentinelPassword: string(cfg.Sentinel.Password),
			Username: o.Username, Password: o.Password, DB: o.DB, ClientName: o.ClientName,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			PoolSize: o.PoolSize, MaxRetries: o.MaxRetries, TLSConfig: withTLS(o.TLSConfig, ""),
		}
		auth(&fo.Username, &fo.Password)
		return redis.NewFailoverClient(fo), nil
	case u.Query().Has("master_name"):
		fo, err := redis.ParseFailoverURL(cfg.URL)
		if err != nil {
			return nil, bad(err)
		}
		fo.TLSConfig = withTLS(fo.TLSConfig, "")
		if cfg.Sentinel.Password != "" {
			fo.SentinelPassword = string(cfg.Sentinel.Password)
		}
		auth(&fo.Username, &fo.Password)
		return redis.NewFailoverClient(fo), nil
	case isClusterURL(cfg.URL):
		o, err := redis.ParseClusterURL(cfg.URL)
		if err != nil {
			return nil, bad(err)
		}
		if o.TLSConfig != nil {
			o.TLSConfig = withTLS(o.TLSConfig, o.TLSConfig.ServerName)
		}
		auth(&o.Username, &o.Password)
		return redis.NewClusterClient(o), nil
	}
	o, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, bad(err)
	}
	if o.TLSConfig != nil {
		o.TLSConfig = withTLS(o.TLSConfig, o.TLSConfig.ServerName)
	}
	auth(&o.Username, &o.Password)
	return redis.NewClient(o), nil
}

// stripURLError drops the URL url.Parse quotes in its errors (it may hold a
// password).
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redisFix tells an operator what to check for a Redis error that will not
// heal by waiting (refused credentials, a TLS failure), or "" for others.
func redisFix(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	var verr *tls.CertificateVerificationError
	switch {
	case strings.Contains(msg, "WRONGPASS"), strings.Contains(msg, "NOAUTH"), strings.Contains(msg, "NOPERM"):
		return "Redis refused the credentials: check redis.username and redis.password (password_file, MINUTED_REDIS_PASSWORD) against the server's requirepass/ACL, and redis.sentinel.password when using sentinels"
	case errors.As(err, &verr), strings.Contains(msg, "x509:"), strings.Contains(msg, "tls:"):
		return "TLS with Redis failed: check redis.url (rediss://), redis.tls.ca_file (the CA that signed the server certificate), redis.tls.server_name and, if the server wants one, redis.tls.cert_file/key_file"
	}
	return ""
}

func (a *App) connectRedis(ctx context.Context) error {
	rdb, err := RedisClient(a.cfg.Redis)
	if err != nil {
		return err
	}
	a.rdb = rdb
	a.led = ledger.New(rdb, ledger.Options{LedgerMaxLen: a.cfg.Redis.LedgerMaxLen})
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.led.Ping(pctx); err != nil {
		if fix := redisFix(err); fix != "" {
			// Waiting will not help: say what to fix and stop.
			return fmt.Errorf("connect to Redis %s: %s: %w", config.RedactURL(a.cfg.Redis.URL), fix, err)
		}
		// Not fatal: bill waits (messages stay in JetStream), the API
		// answers 503 on /readyz. Say it plainly.
		a.log.Error("Redis unreachable; billing waits until it is back",
			"redis", config.RedactURL(a.cfg.Redis.URL), "err", err, "fix", "start redis-server or set MINUTED_REDIS_URL")
	}
	return nil
}

func (a *App) settings() ledger.Settings {
	d := a.cfg.Defaults
	return ledger.Settings{Tariff: d.Tariff, ThresholdsMinutes: d.ThresholdsMinutes,
		CreditLimitSeconds: d.CreditLimitSeconds, OnExhausted: d.OnExhausted}
}

func (a *App) buildRoles() error {
	var err error
	if a.o.has(RoleIngest) {
		a.pub = stream.NewPublisher(a.js, stream.PublisherOptions{
			Buffer: a.cfg.NATS.PublishBufferSize, Logger: a.log.With("component", "publisher"), Spool: a.spool,
		})
		a.ing = ingest.New(ingest.Options{
			Node: a.cfg.Node, ARI: a.cfg.ARI, SnapshotInterval: a.cfg.Ingest.SnapshotInterval,
			Attribution: ingest.Attribution{Variable: a.cfg.Ingest.Variable, UseAccountcode: a.cfg.Ingest.UseAccountcode, Rules: a.cfg.Ingest.Rules},
			Logger:      a.log.With("role", RoleIngest), Config: a.cfg.Ingest, JS: a.js,
		}, a.pub, a.nc)
	}
	if a.o.has(RoleBill) {
		a.bil = bill.New(bill.Options{
			Config: a.cfg.Bill, Defaults: a.settings(), Consumer: a.cfg.NATS.ConsumerName,
			Logger: a.log.With("role", RoleBill), Hooks: a.o.BillHooks,
		}, a.js, a.nc, a.led)
	}
	if a.o.has(RoleNotify) {
		a.not, err = notify.New(notify.Options{
			Config: a.cfg.Notify, Logger: a.log.With("role", RoleNotify), Enricher: a.led, Registerer: a.reg,
		}, a.js)
		if err != nil {
			return fmt.Errorf("notify: %w", err)
		}
	}
	if a.o.has(RoleAPI) {
		ln := a.o.Listener
		if ln == nil {
			var lc net.ListenConfig
			if ln, err = lc.Listen(context.Background(), "tcp", a.cfg.HTTP.Addr); err != nil {
				return fmt.Errorf("admin API: cannot listen on %s (http.addr / MINUTED_HTTP_ADDR): %w", a.cfg.HTTP.Addr, err)
			}
		}
		a.http = ln
		a.addr = ln.Addr().String()
	}
	return nil
}

// HTTPAddr is the admin API's address, once New has returned.
func (a *App) HTTPAddr() string {
	return a.addr
}

// Ledger gives tests and the demo the ledger of this app (nil without Redis).
func (a *App) Ledger() *ledger.Ledger { return a.led }

// JetStream is the app's JetStream context.
func (a *App) JetStream() jetstream.JetStream { return a.js }

// Run runs the roles until ctx ends or one fails, then drains: ingest stops
// reading, its pending publishes are flushed, bill finishes and
// acknowledges what is in flight, the API shuts down gracefully.
func (a *App) Run(ctx context.Context) error {
	defer a.Close()
	g, gctx := errgroup.WithContext(ctx)
	// The publisher outlives ingest so its buffer can be flushed.
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPub()
	pubDone := make(chan error, 1)
	// Bill, notify and the publisher need the streams; ingest runs without
	// NATS (its events wait in the publisher's buffer and the spool).
	streamsReady := make(chan struct{})
	if a.streamsLater {
		go a.ensureStreamsLater(gctx, streamsReady)
	} else {
		close(streamsReady)
	}
	afterStreams := func(run func(context.Context) error) func() error {
		return func() error {
			select {
			case <-streamsReady:
			case <-gctx.Done():
				return nil
			}
			return run(gctx)
		}
	}
	if a.pub != nil {
		// The publisher starts once the streams exist: publishing into a
		// stream being created fails for some messages of a batch while
		// later ones succeed, which would store them out of order.
		go func() {
			select {
			case <-streamsReady:
				pubDone <- a.pub.Run(pubCtx)
			case <-pubCtx.Done():
				pubDone <- nil
			}
		}()
		g.Go(func() error {
			err := a.ing.Run(gctx)
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.o.DrainTimeout)
			defer cancel()
			if ferr := a.pub.Flush(fctx); ferr != nil && a.spool != nil {
				a.log.Warn("shutdown: events not yet in NATS stay in the spool; the next start publishes them", "pending", a.pub.Depth(), "spool", a.spool.Path(), "err", ferr)
			} else if ferr != nil {
				a.log.Error("shutdown: events not yet in NATS are lost with this process (no ingest.spool_dir)", "pending", a.pub.Depth(), "err", ferr)
			} else {
				a.log.Info("shutdown: every event published")
			}
			stopPub()
			<-pubDone
			return roleErr(RoleIngest, err)
		})
	}
	if a.bil != nil {
		g.Go(afterStreams(func(ctx context.Context) error { return roleErr(RoleBill, a.bil.Run(ctx)) }))
	}
	if a.not != nil {
		g.Go(afterStreams(func(ctx context.Context) error { return roleErr(RoleNotify, a.not.Run(ctx)) }))
	}
	if a.http != nil {
		h, err := api.New(api.Options{
			Store: a.led, Token: a.cfg.HTTP.AdminToken, Logger: a.log.With("role", RoleAPI), Registry: a.reg,
			Ready: a.readyChecks(), Alerts: alertSource{js: a.js}, Defaults: a.settings(),
			OnCrossed: a.publishCrossings,
			Dashboard: dashboard.New(dashboard.Options{Store: a.led, Alerts: alertSource{js: a.js}, Checks: a.readyChecks(), System: dashboard.NewNATSSystem(a.nc, a.js, a.cfg.NATS.ConsumerName), Logger: a.log.With("role", "dashboard")}),
		})
		if err != nil {
			return fmt.Errorf("admin API: %w", err)
		}
		ln := a.http
		a.http = nil // ServeListener closes it
		g.Go(func() error { return roleErr(RoleAPI, api.ServeListener(gctx, ln, h, a.log)) })
	}
	if a.demo != nil {
		g.Go(func() error { return a.demo.run(gctx, a) })
	}
	a.log.Info("minuted running", "roles", a.o.Roles, "nats", a.natsDesc(), "redis", config.RedactURL(a.cfg.Redis.URL))
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		a.log.Info("minuted stopped")
		return nil
	}
	return err
}

func roleErr(role string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%s: %w", role, err)
}

func (a *App) natsDesc() string {
	if a.emb != nil {
		return "embedded (" + a.cfg.NATS.StoreDir + ")"
	}
	return stream.RedactURLs(a.cfg.NATS.URL)
}

// Close releases the connections (Run calls it).
func (a *App) Close() {
	if a.http != nil {
		_ = a.http.Close()
		a.http = nil
	}
	if a.nc != nil {
		_ = a.nc.Drain()
		a.nc = nil
	}
	if a.emb != nil {
		a.emb.Shutdown()
		a.emb = nil
	}
	if a.spool != nil {
		if err := a.spool.Close(); err != nil {
			a.log.Warn("cannot close the spool", "err", err)
		}
		a.spool = nil
	}
	if a.rdb != nil {
		_ = a.rdb.Close()
		a.rdb = nil
	}
	if a.demo != nil {
		a.demo.close()
	}
}

func (a *App) readyChecks() []api.Check {
	checks := []api.Check{{Name: "nats", Check: func(context.Context) error {
		if a.nc == nil || !a.nc.IsConnected() {
			return errors.New("not connected to NATS")
		}
		return nil
	}}}
	if a.led != nil {
		checks = append(checks, api.Check{Name: "redis", Check: a.led.Ping})
	}
	if a.ing != nil {
		checks = append(checks, api.Check{Name: "ari", Check: func(context.Context) error {
			if !a.ing.Connected() {
				return errors.New("ARI websocket not connected")
			}
			return nil
		}})
	}
	return checks
}

// Run builds an App from o and runs it until ctx ends.
func Run(ctx context.Context, o Options) error {
	a, err := New(ctx, o)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
