// Package config loads minuted's YAML file, applies environment overrides
// and validates the result, naming the key and the fix in every error.
package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/notify"
	"github.com/minuted/minuted/internal/tariff"
)

// Secret is a string that prints as <secret> so it never reaches a log.
type Secret string

func (s Secret) String() string   { return "<secret>" }
func (s Secret) GoString() string { return "<secret>" }

// MarshalText redacts the secret when a config is dumped.
func (s Secret) MarshalText() ([]byte, error) { return []byte("<secret>"), nil }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue("<secret>") }

// Config is the whole file.
type Config struct {
	Node   string       `yaml:"node"`
	ARI    ARIConfig    `yaml:"ari"`
	NATS   NATSConfig   `yaml:"nats"`
	Redis  RedisConfig  `yaml:"redis"`
	Ingest IngestConfig `yaml:"ingest"`
	Bill   BillConfig   `yaml:"bill"`
	HTTP   HTTPConfig   `yaml:"http"`
	// Notify configures alert delivery (sinks, language, templates).
	Notify notify.Config `yaml:"notify"`
	// Defaults applies to projects created without their own settings.
	Defaults ProjectDefaults `yaml:"defaults"`
}

// ARIConfig says how ingest reaches Asterisk.
type ARIConfig struct {
	URL            string        `yaml:"url"`
	WSURL          string        `yaml:"ws_url"`
	Username       string        `yaml:"username"`
	Password       Secret        `yaml:"password"`
	PasswordFile   string        `yaml:"password_file"`
	Application    string        `yaml:"application"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
	ReconnectMin   time.Duration `yaml:"reconnect_min"`
	ReconnectMax   time.Duration `yaml:"reconnect_max"`
}

// NATSConfig: an empty URL means the embedded server.
type NATSConfig struct {
	URL             string        `yaml:"url"`
	StoreDir        string        `yaml:"store_dir"`
	Replicas        int           `yaml:"replicas"`
	Storage         string        `yaml:"storage"`
	MaxAge          time.Duration `yaml:"max_age"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	User            string        `yaml:"user"`
	Password        Secret        `yaml:"password"`
	PasswordFile    string        `yaml:"password_file"`
	CredsFile       string        `yaml:"creds_file"`
	// Token authenticates with a server authorization token.
	Token     Secret `yaml:"token"`
	TokenFile string `yaml:"token_file"`
	// NkeyFile is a file holding an nkey seed (SU...): the client signs
	// the server's nonce with it.
	NkeyFile string `yaml:"nkey_file"`
	// TLS verifies the servers with a private CA and/or presents a client
	// certificate; it turns TLS on (nats:// URLs included).
	TLS            TLSConfig `yaml:"tls"`
	EmbeddedListen string    `yaml:"embedded_listen"`
	// EmbeddedUser/EmbeddedPassword make the embedded server (when it
	// listens on embedded_listen) require these credentials of every client.
	EmbeddedUser         string `yaml:"embedded_user"`
	EmbeddedPassword     Secret `yaml:"embedded_password"`
	EmbeddedPasswordFile string `yaml:"embedded_password_file"`
	ConsumerName         string `yaml:"consumer"`
	PublishBufferSize    int    `yaml:"publish_buffer"`
}

// RedisConfig: a redis:// or rediss:// URL, cluster form with ?addr=,
// or Redis Sentinel (Sentinel.MasterName set).
type RedisConfig struct {
	URL string `yaml:"url"`
	// Username is the ACL user (Redis 6+); empty: "default".
	Username     string `yaml:"username"`
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// TLS adds a private CA, a client certificate or a server name to a
	// rediss:// URL.
	TLS          TLSConfig      `yaml:"tls"`
	Sentinel     SentinelConfig `yaml:"sentinel"`
	LedgerMaxLen int64          `yaml:"ledger_max_len"`
}

// SentinelConfig selects the master named MasterName through the sentinels
// at Addrs. redis.url then only gives the scheme (rediss: TLS), the
// database and the master's user/password; its host is ignored.
type SentinelConfig struct {
	MasterName   string   `yaml:"master_name"`
	Addrs        []string `yaml:"addrs"`
	Username     string   `yaml:"username"`
	Password     Secret   `yaml:"password"`
	PasswordFile string   `yaml:"password_file"`
}

// TLSConfig is a client's TLS: a CA bundle to verify the server with (empty:
// the system roots), a client certificate and key (mutual TLS), the name the
// server's certificate must carry (empty: the host dialled).
type TLSConfig struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate: tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Set reports whether any TLS setting is given.
func (t TLSConfig) Set() bool { return t != TLSConfig{} }

// Client builds the tls.Config of t (nil when nothing is set); key names
// the config section in errors, e.g. "redis.tls".
func (t TLSConfig) Client(key string) (*tls.Config, error) {
	if !t.Set() {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // opt-in, documented as tests only
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: cannot read the CA bundle: %w", key, err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", key, t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("%s.cert_file/key_file: set both (client certificate and its key) or neither", key)
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file/key_file: cannot load the client certificate: %w", key, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// IngestConfig: attribution and snapshots.
type IngestConfig struct {
	Variable         string        `yaml:"variable"`
	UseAccountcode   bool          `yaml:"use_accountcode"`
	Rules            []Rule        `yaml:"rules"`
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// Stasis authorisation (SPEC §8): how long to wait for bill's answer,
	// what to do without one (fail_open | fail_closed), and the ARI hangup
	// reason of a refused call.
	AuthTimeout     time.Duration `yaml:"auth_timeout"`
	AuthPolicy      string        `yaml:"auth_policy"`
	AuthHangupCause string        `yaml:"auth_hangup_cause"`
	// ARILostGrace: an ari_lost alert is raised when ARI stays unreachable
	// this long.
	ARILostGrace time.Duration `yaml:"ari_lost_grace"`
	// SpoolDir is where ingest keeps, in one file per node, every call
	// event until JetStream has acknowledged it, so that a crash (kill -9,
	// OOM) while NATS is slow or away loses none; "" disables the spool.
	SpoolDir string `yaml:"spool_dir"`
	// SpoolFsync fsyncs the spool after every event: it then survives a
	// power loss too, at the cost of one disk flush per event.
	SpoolFsync bool `yaml:"spool_fsync"`
}

// HangupReasons are the reasons DELETE /ari/channels/{id} accepts, with the
// Q.850 cause Asterisk gives each.
var HangupReasons = map[string]int{
	"normal": 16, "busy": 17, "congestion": 34, "no_answer": 19, "timeout": 19, "rejected": 21,
	"unallocated": 1, "normal_unspecified": 31, "number_incomplete": 28, "codec_mismatch": 58,
	"interworking": 127, "failure": 38, "answered_elsewhere": 26,
}

// Rule maps a dialplan context and/or extension pattern to a project.
type Rule struct {
	Context string `yaml:"context"`
	Exten   string `yaml:"exten"`
	Project string `yaml:"project"`
}

// BillConfig: the consumer and the clock.
type BillConfig struct {
	// UnknownProject is "create" (zero balance + alert) or "dead_letter".
	UnknownProject string        `yaml:"unknown_project"`
	Batch          int           `yaml:"batch"`
	MaxInFlight    int           `yaml:"max_in_flight"`
	AckWait        time.Duration `yaml:"ack_wait"`
	MaxDeliver     int           `yaml:"max_deliver"`
	// OrphanAfter is how long a node's snapshots must miss a live call (or
	// the node send none) before bill settles it as estimated.
	OrphanAfter time.Duration `yaml:"orphan_after"`
	// TickSlack is how late a block may be before another instance's
	// sweeper debits it.
	TickSlack time.Duration `yaml:"tick_slack"`
}

// HTTPConfig: the admin API.
type HTTPConfig struct {
	Addr           string `yaml:"addr"`
	AdminToken     Secret `yaml:"admin_token"`
	AdminTokenFile string `yaml:"admin_token_file"`
}

// ProjectDefaults are applied to new projects.
type ProjectDefaults struct {
	Tariff             tariff.Tariff `yaml:"tariff"`
	ThresholdsMinutes  []float64     `yaml:"thresholds_minutes"`
	CreditLimitSeconds int64         `yaml:"credit_limit_seconds"`
	OnExhausted        string        `yaml:"on_exhausted"`
}

// Default returns the configuration minuted runs with when nothing is set.
func Default() Config {
	return Config{
		ARI: ARIConfig{
			URL: "http://127.0.0.1:8088/ari", Username: "minuted", Application: "minuted",
			RequestTimeout: 5 * time.Second, ReconnectMin: 250 * time.Millisecond, ReconnectMax: 10 * time.Second,
		},
		NATS: NATSConfig{
			StoreDir: "/var/lib/minuted/nats", Replicas: 1, Storage: "file", MaxAge: 7 * 24 * time.Hour,
			DuplicateWindow: 10 * time.Minute, ConsumerName: "bill", PublishBufferSize: 1 << 20,
		},
		Redis: RedisConfig{URL: "redis://127.0.0.1:6379/0", LedgerMaxLen: 100000},
		Ingest: IngestConfig{Variable: "BILLING_PROJECT", UseAccountcode: true, SnapshotInterval: 10 * time.Second,
			AuthTimeout: 250 * time.Millisecond, AuthPolicy: "fail_open", AuthHangupCause: "rejected", ARILostGrace: 30 * time.Second,
			SpoolDir: "/var/lib/minuted/spool"},
		Bill: BillConfig{
			UnknownProject: "create", Batch: 256, MaxInFlight: 1024, AckWait: 30 * time.Second,
			MaxDeliver: -1, OrphanAfter: 35 * time.Second, TickSlack: 3 * time.Second,
		},
		HTTP:   HTTPConfig{Addr: "127.0.0.1:8090"},
		Notify: notify.DefaultConfig(),
		Defaults: ProjectDefaults{
			Tariff: tariff.Default, ThresholdsMinutes: []float64{60, 10, 0}, OnExhausted: "allow",
		},
	}
}

// Load reads path (may be empty: defaults only), applies env overrides,
// resolves *_file secrets and validates.
func Load(path string, getenv func(string) string) (Config, error) {
	c := Default()
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return c, fmt.Errorf("config %s: %w", path, err)
		}
	}
	c.applyEnv(getenv)
	if err := errors.Join(c.resolveSecrets(), c.Notify.Resolve(getenv)); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func (c *Config) applyEnv(getenv func(string) string) {
	set := func(dst *string, keys ...string) {
		for _, k := range keys {
			if v := getenv(k); v != "" {
				*dst = v
				return
			}
		}
	}
	set(&c.NATS.URL, "MINUTED_NATS_URL")
	set(&c.Redis.URL, "MINUTED_REDIS_URL")
	set(&c.HTTP.Addr, "MINUTED_HTTP_ADDR")
	set(&c.Node, "MINUTED_NODE")
	set(&c.Ingest.SpoolDir, "MINUTED_SPOOL_DIR")
	set(&c.ARI.URL, "ARI_URL")
	set(&c.ARI.WSURL, "ARI_WSURL")
	set(&c.ARI.Username, "ARI_USERNAME")
	set(&c.ARI.Application, "ARI_APPLICATION")
	if v := getenv("MINUTED_ADMIN_TOKEN"); v != "" {
		c.HTTP.AdminToken = Secret(v)
	}
	for _, s := range []struct {
		dst *Secret
		env string
	}{
		{&c.ARI.Password, "ARI_PASSWORD"},
		{&c.Redis.Password, "MINUTED_REDIS_PASSWORD"},
		{&c.Redis.Sentinel.Password, "MINUTED_REDIS_SENTINEL_PASSWORD"},
		{&c.NATS.Password, "MINUTED_NATS_PASSWORD"},
		{&c.NATS.Token, "MINUTED_NATS_TOKEN"},
		{&c.NATS.EmbeddedPassword, "MINUTED_NATS_EMBEDDED_PASSWORD"},
	} {
		if v := getenv(s.env); v != "" {
			*s.dst = Secret(v)
		}
	}
}

func readSecret(dst *Secret, file, key string) error {
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("%s: cannot read secret file: %w", key, err)
	}
	*dst = Secret(strings.TrimSpace(string(b)))
	return nil
}

func (c *Config) resolveSecrets() error {
	return errors.Join(
		readSecret(&c.ARI.Password, c.ARI.PasswordFile, "ari.password_file"),
		readSecret(&c.NATS.Password, c.NATS.PasswordFile, "nats.password_file"),
		readSecret(&c.NATS.Token, c.NATS.TokenFile, "nats.token_file"),
		readSecret(&c.NATS.EmbeddedPassword, c.NATS.EmbeddedPasswordFile, "nats.embedded_password_file"),
		readSecret(&c.Redis.Password, c.Redis.PasswordFile, "redis.password_file"),
		readSecret(&c.Redis.Sentinel.Password, c.Redis.Sentinel.PasswordFile, "redis.sentinel.password_file"),
		readSecret(&c.HTTP.AdminToken, c.HTTP.AdminTokenFile, "http.admin_token_file"),
	)
}

// Validate returns every problem at once, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if c.Node != "" && strings.ContainsAny(c.Node, " .*>") {
		bad("node", "%q must not contain spaces, '.', '*' or '>' (it is a NATS subject token)", c.Node)
	}
	if u, err := url.Parse(c.ARI.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		bad("ari.url", "%q must be an http(s) URL like http://127.0.0.1:8088/ari", c.ARI.URL)
	}
	if c.ARI.Application == "" {
		bad("ari.application", "must be set (a distinct name per ingest; see ARI_APPLICATION)")
	}
	if c.ARI.RequestTimeout <= 0 {
		bad("ari.request_timeout", "must be positive, e.g. 5s")
	}
	if c.ARI.ReconnectMin <= 0 || c.ARI.ReconnectMax < c.ARI.ReconnectMin {
		bad("ari.reconnect_min/max", "need 0 < reconnect_min <= reconnect_max")
	}
	if c.NATS.Replicas < 1 || c.NATS.Replicas > 5 {
		bad("nats.replicas", "must be 1..5, got %d", c.NATS.Replicas)
	}
	if c.NATS.Storage != "file" && c.NATS.Storage != "memory" {
		bad("nats.storage", "must be file or memory, got %q", c.NATS.Storage)
	}
	if c.NATS.DuplicateWindow <= 0 {
		bad("nats.duplicate_window", "must be positive, e.g. 10m")
	}
	if c.NATS.PublishBufferSize < 1 {
		bad("nats.publish_buffer", "must be at least 1")
	}
	if err := c.NATS.ValidateAuth(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Redis.validate()...)
	if c.Ingest.Variable == "" && !c.Ingest.UseAccountcode && len(c.Ingest.Rules) == 0 {
		bad("ingest", "no attribution configured: set variable, use_accountcode or rules")
	}
	for i, r := range c.Ingest.Rules {
		if err := call.CheckProject(r.Project); err != nil {
			bad(fmt.Sprintf("ingest.rules[%d].project", i), "%v", err)
		}
		if r.Context == "" && r.Exten == "" {
			bad(fmt.Sprintf("ingest.rules[%d]", i), "needs context and/or exten")
		}
	}
	if c.Ingest.SnapshotInterval < time.Second {
		bad("ingest.snapshot_interval", "must be at least 1s")
	}
	if c.Ingest.AuthTimeout <= 0 {
		bad("ingest.auth_timeout", "must be positive, e.g. 250ms")
	}
	if c.Ingest.AuthPolicy != "fail_open" && c.Ingest.AuthPolicy != "fail_closed" {
		bad("ingest.auth_policy", "must be fail_open or fail_closed, got %q", c.Ingest.AuthPolicy)
	}
	if _, ok := HangupReasons[c.Ingest.AuthHangupCause]; !ok {
		bad("ingest.auth_hangup_cause", "must be an ARI hangup reason (rejected, congestion, busy, normal, ...), got %q", c.Ingest.AuthHangupCause)
	}
	if c.Ingest.ARILostGrace < 0 {
		bad("ingest.ari_lost_grace", "must not be negative")
	}
	if c.Bill.UnknownProject != "create" && c.Bill.UnknownProject != "dead_letter" {
		bad("bill.unknown_project", "must be create or dead_letter, got %q", c.Bill.UnknownProject)
	}
	if c.Bill.Batch < 1 || c.Bill.MaxInFlight < 1 {
		bad("bill.batch/max_in_flight", "must be at least 1")
	}
	if c.Bill.AckWait < time.Second {
		bad("bill.ack_wait", "must be at least 1s")
	}
	if c.Bill.OrphanAfter < c.Ingest.SnapshotInterval*2 {
		bad("bill.orphan_after", "must be at least twice ingest.snapshot_interval (%v)", c.Ingest.SnapshotInterval)
	}
	if err := c.Defaults.Tariff.Validate(); err != nil {
		bad("defaults.tariff", "%v", err)
	}
	if c.Defaults.OnExhausted != "allow" && c.Defaults.OnExhausted != "hangup" {
		bad("defaults.on_exhausted", "must be allow or hangup, got %q", c.Defaults.OnExhausted)
	}
	if c.Defaults.CreditLimitSeconds < 0 {
		bad("defaults.credit_limit_seconds", "must be >= 0")
	}
	if err := c.Notify.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ValidateAuth checks the authentication and TLS keys of the NATS section:
// at most one way to authenticate, complete pairs, embedded credentials
// only with a listening embedded server.
func (n *NATSConfig) ValidateAuth() error {
	var errs []error
	var methods []string
	if n.User != "" || n.Password != "" {
		methods = append(methods, "nats.user/password")
		if n.User == "" || n.Password == "" {
			errs = append(errs, errors.New("nats.user/password: set both (password from nats.password_file or MINUTED_NATS_PASSWORD)"))
		}
	}
	for _, m := range []struct {
		set bool
		key string
	}{{n.Token != "", "nats.token"}, {n.NkeyFile != "", "nats.nkey_file"}, {n.CredsFile != "", "nats.creds_file"}} {
		if m.set {
			methods = append(methods, m.key)
		}
	}
	switch {
	case len(methods) == 2:
		errs = append(errs, fmt.Errorf("nats: choose one way to authenticate, not both %s", strings.Join(methods, " and ")))
	case len(methods) > 2:
		errs = append(errs, fmt.Errorf("nats: choose one way to authenticate, not all of %s", strings.Join(methods, ", ")))
	}
	if err := n.TLS.validate("nats.tls"); err != nil {
		errs = append(errs, err)
	}
	if n.EmbeddedUser != "" || n.EmbeddedPassword != "" {
		switch {
		case n.EmbeddedListen == "":
			errs = append(errs, errors.New("nats.embedded_user/embedded_password: only apply when nats.embedded_listen is set (in-process clients need none)"))
		case n.EmbeddedUser == "" || n.EmbeddedPassword == "":
			errs = append(errs, errors.New("nats.embedded_user/embedded_password: set both (password from nats.embedded_password_file or MINUTED_NATS_EMBEDDED_PASSWORD)"))
		}
	}
	return errors.Join(errs...)
}

func (r *RedisConfig) validate() []error {
	var errs []error
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
		return append(errs, fmt.Errorf("redis.url: %q must look like redis://host:6379/0 or rediss://host:6380/0 (MINUTED_REDIS_URL)", RedactURL(r.URL)))
	}
	if r.TLS.Set() && u.Scheme != "rediss" {
		errs = append(errs, fmt.Errorf("redis.tls: set, but redis.url is %s:// (plain); use rediss:// to connect with TLS", u.Scheme))
	}
	if err := r.TLS.validate("redis.tls"); err != nil {
		errs = append(errs, err)
	}
	s := r.Sentinel
	if s.MasterName == "" {
		if len(s.Addrs) > 0 || s.Password != "" || s.Username != "" {
			errs = append(errs, errors.New("redis.sentinel.master_name: must be set to use the sentinels of redis.sentinel.addrs"))
		}
		return errs
	}
	if len(s.Addrs) == 0 {
		errs = append(errs, errors.New("redis.sentinel.addrs: list at least one sentinel host:port"))
	}
	for i, a := range s.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("redis.sentinel.addrs[%d]: %q must be host:port", i, a))
		}
	}
	if u.Scheme == "unix" || u.Query().Has("addr") || u.Query().Has("master_name") {
		errs = append(errs, errors.New("redis.url: with redis.sentinel, use a plain redis:// or rediss:// URL (its host is ignored; scheme, user, password and /db apply)"))
	}
	return errs
}

func (t TLSConfig) validate(key string) error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return fmt.Errorf("%s.cert_file/key_file: set both (client certificate and its key) or neither", key)
	}
	return nil
}

// RedactURL hides the password of a URL (redis://:pw@host) for logs.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<unparsable url>"
	}
	return u.Redacted()
}
