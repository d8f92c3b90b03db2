package notify

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/minuted/minuted/internal/alert"
)

// Secret is a string that prints as <secret>, so a webhook secret or a bot
// token never reaches a log or a config dump. (Not config.Secret: package
// config embeds this Config, so notify must not import it.)
type Secret string

func (s Secret) String() string   { return "<secret>" }
func (s Secret) GoString() string { return "<secret>" }

// MarshalText redacts the secret when a config is dumped.
func (s Secret) MarshalText() ([]byte, error) { return []byte("<secret>"), nil }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue("<secret>") }

// SecretURL is a URL that may carry a credential (a Slack webhook's path,
// a token in a query): it prints as scheme://host/<secret>.
type SecretURL string

func (u SecretURL) String() string   { return redactedURL(string(u)) }
func (u SecretURL) GoString() string { return redactedURL(string(u)) }

// MarshalText redacts the URL when a config is dumped.
func (u SecretURL) MarshalText() ([]byte, error) { return []byte(redactedURL(string(u))), nil }

// LogValue keeps slog from printing the credential.
func (u SecretURL) LogValue() slog.Value { return slog.StringValue(redactedURL(string(u))) }

func redactedURL(raw string) string {
	if raw == "" {
		return ""
	}
	return hostOf(raw) + "/<secret>"
}

// Sink types.
const (
	TypeLog      = "log"
	TypeWebhook  = "webhook"
	TypeSlack    = "slack"
	TypeTelegram = "telegram"
)

// DefaultTelegramBaseURL is the Bot API endpoint.
const DefaultTelegramBaseURL = "https://api.telegram.org"

// Config is the `notify:` section of minuted's YAML file.
type Config struct {
	// Language of the texts: en (default) or ru.
	Language string `yaml:"language"`
	// Templates override texts: keys [<lang>.]<kind>.title|text, values
	// Go text/template (see alert.NewTemplates).
	Templates map[string]string `yaml:"templates"`
	// BurnWindow is the span the burn rate is measured over (default 15m).
	BurnWindow time.Duration `yaml:"burn_window"`
	// StaleAfter: an alert older than this when first seen by a sink (a
	// sink added later, a long outage) is dropped with a log line instead of
	// being sent. Default 24h.
	StaleAfter time.Duration `yaml:"stale_after"`
	Sinks      []SinkConfig  `yaml:"sinks"`
	Retry      RetryConfig   `yaml:"retry"`
}

// SinkConfig is one destination. Secrets come from the value itself, a
// file (*_file, trimmed) or an environment variable (*_env, its name).
type SinkConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// URL of a webhook or Slack incoming webhook. A Slack URL is itself a
	// credential: it is never logged (only its host is).
	URL        SecretURL `yaml:"url"`
	Secret     Secret    `yaml:"secret"`
	SecretFile string    `yaml:"secret_file"`
	SecretEnv  string    `yaml:"secret_env"`
	Token      Secret    `yaml:"token"`
	TokenFile  string    `yaml:"token_file"`
	TokenEnv   string    `yaml:"token_env"`
	ChatID     string    `yaml:"chat_id"`
	BaseURL    string    `yaml:"base_url"`
	// Timeout of one delivery attempt (default 10s).
	Timeout time.Duration `yaml:"timeout"`
}

// RetryConfig: exponential backoff with jitter between attempts of one
// alert at one sink, from Initial doubling to Max, giving up after
// MaxElapsed.
type RetryConfig struct {
	Initial    time.Duration `yaml:"initial"`
	Max        time.Duration `yaml:"max"`
	MaxElapsed time.Duration `yaml:"max_elapsed"`
}

// DefaultConfig logs every alert and nothing else.
func DefaultConfig() Config {
	return Config{
		Language:   "en",
		BurnWindow: alert.DefaultWindow,
		StaleAfter: 24 * time.Hour,
		Sinks:      []SinkConfig{{Name: "log", Type: TypeLog}},
		Retry:      RetryConfig{Initial: time.Second, Max: time.Minute, MaxElapsed: time.Hour},
	}
}

// withDefaults fills zero fields, so a section that sets only sinks works.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Language == "" {
		c.Language = d.Language
	}
	if c.BurnWindow == 0 {
		c.BurnWindow = d.BurnWindow
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = d.StaleAfter
	}
	if c.Retry.Initial == 0 {
		c.Retry.Initial = d.Retry.Initial
	}
	if c.Retry.Max == 0 {
		c.Retry.Max = d.Retry.Max
	}
	if c.Retry.MaxElapsed == 0 {
		c.Retry.MaxElapsed = d.Retry.MaxElapsed
	}
	c.Sinks = append([]SinkConfig(nil), c.Sinks...)
	for i := range c.Sinks {
		s := &c.Sinks[i]
		if s.Timeout == 0 {
			s.Timeout = 10 * time.Second
		}
		if s.Type == TypeTelegram && s.BaseURL == "" {
			s.BaseURL = DefaultTelegramBaseURL
		}
	}
	return c
}

// Resolve reads the secrets of every sink from their *_file and *_env
// sources (env wins over file, file over the inline value).
func (c *Config) Resolve(getenv func(string) string) error {
	var errs []error
	for i := range c.Sinks {
		s := &c.Sinks[i]
		key := fmt.Sprintf("notify.sinks[%d]", i)
		errs = append(errs,
			resolveSecret(&s.Secret, s.SecretFile, s.SecretEnv, key+".secret", getenv),
			resolveSecret(&s.Token, s.TokenFile, s.TokenEnv, key+".token", getenv))
	}
	return errors.Join(errs...)
}

func resolveSecret(dst *Secret, file, env, key string, getenv func(string) string) error {
	var errs []error
	if file != "" {
		if b, err := os.ReadFile(file); err != nil {
			errs = append(errs, fmt.Errorf("%s_file: cannot read secret file: %w", key, err))
		} else {
			*dst = Secret(strings.TrimSpace(string(b)))
		}
	}
	if env != "" {
		if v := getenv(env); v != "" {
			*dst = Secret(v)
		} else {
			errs = append(errs, fmt.Errorf("%s_env: environment variable %s is empty or unset", key, env))
		}
	}
	return errors.Join(errs...)
}

var sinkNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,48}$`)

// Validate returns every problem at once, each naming its key under
// notify. It checks the config as New will use it (defaults applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("notify.%s: "+format, append([]any{key}, args...)...))
	}
	if err := alert.CheckLanguage(c.Language); err != nil {
		bad("language", "%v", err)
	}
	if _, err := alert.NewTemplates(c.Templates); err != nil {
		errs = append(errs, fmt.Errorf("notify.%w", err))
	}
	if c.BurnWindow < time.Minute {
		bad("burn_window", "must be at least 1m, got %v", c.BurnWindow)
	}
	if c.StaleAfter < time.Minute {
		bad("stale_after", "must be at least 1m, got %v", c.StaleAfter)
	}
	if c.Retry.Initial <= 0 || c.Retry.Max < c.Retry.Initial || c.Retry.MaxElapsed < c.Retry.Initial {
		bad("retry", "need 0 < initial <= max and initial <= max_elapsed (got %v, %v, %v)", c.Retry.Initial, c.Retry.Max, c.Retry.MaxElapsed)
	}
	if len(c.Sinks) == 0 {
		bad("sinks", "no sink configured: add at least {name: log, type: log}")
	}
	seen := map[string]bool{}
	for i, s := range c.Sinks {
		key := fmt.Sprintf("sinks[%d]", i)
		if !sinkNameRE.MatchString(s.Name) {
			bad(key+".name", "%q must be 1-48 characters of A-Z, a-z, 0-9, '_' or '-' (it names the consumer notify-<name>)", s.Name)
		} else if seen[s.Name] {
			bad(key+".name", "%q is used by two sinks", s.Name)
		}
		seen[s.Name] = true
		if s.Timeout <= 0 {
			bad(key+".timeout", "must be positive, e.g. 10s")
		}
		switch s.Type {
		case TypeLog:
		case TypeWebhook:
			checkURL(bad, key+".url", string(s.URL), "https://ops.example.com/minuted")
			if s.Secret == "" {
				bad(key+".secret", "a webhook needs an HMAC secret: set secret, secret_file or secret_env")
			}
		case TypeSlack:
			checkURL(bad, key+".url", string(s.URL), "https://hooks.slack.com/services/…")
		case TypeTelegram:
			checkURL(bad, key+".base_url", s.BaseURL, DefaultTelegramBaseURL)
			if s.Token == "" {
				bad(key+".token", "a telegram sink needs the bot token: set token, token_file or token_env")
			} else if strings.ContainsAny(string(s.Token), "/?# \t\n") {
				bad(key+".token", "the bot token must not contain '/', '?', '#' or spaces")
			}
			if s.ChatID == "" {
				bad(key+".chat_id", "must be set (a numeric chat id or @channelname)")
			}
		default:
			bad(key+".type", "%q must be log, webhook, slack or telegram", s.Type)
		}
	}
	return errors.Join(errs...)
}

// checkURL reports a bad URL without printing it (it may hold a credential).
func checkURL(bad func(string, string, ...any), key, raw, example string) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad(key, "must be an http(s) URL like %s", example)
	}
}
