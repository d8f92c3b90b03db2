package cli

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minuted/minuted/internal/config"
)

// ConnOptions say where the admin API is and how to authenticate; they
// come from the flags -api, -token-file, -config and -timeout, which every
// operator command accepts anywhere on its command line.
type ConnOptions struct {
	API       string
	TokenFile string
	Config    string
	Timeout   time.Duration
}

// connFlags are the flags SplitConnFlags takes out of a command line.
var connFlags = map[string]bool{"api": true, "token-file": true, "config": true, "timeout": true}

// ConnUsage documents the connection flags for every command's -h.
const ConnUsage = `connection (any command):
  -api URL          admin API root (MINUTED_API_URL, else http://<http.addr> of -config, else ` + DefaultURL + `)
  -token-file FILE  file holding the admin token (else MINUTED_ADMIN_TOKEN, else http.admin_token of -config)
  -config FILE      minuted's YAML configuration (MINUTED_CONFIG), for http.addr and the token
  -timeout D        bound of each request (default 10s)
`

// SplitConnFlags takes the connection flags out of args (as -f v, -f=v,
// --f v or --f=v, anywhere before a "--") and returns them with the rest.
func SplitConnFlags(args []string) (ConnOptions, []string, error) {
	var o ConnOptions
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !strings.HasPrefix(a, "-") || !connFlags[name] {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return o, nil, &UsageError{fmt.Sprintf("flag -%s needs a value", name)}
			}
			i++
			val = args[i]
		}
		switch name {
		case "api":
			o.API = val
		case "token-file":
			o.TokenFile = val
		case "config":
			o.Config = val
		case "timeout":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return o, nil, &UsageError{fmt.Sprintf("-timeout %q must be a positive duration like 10s", val)}
			}
			o.Timeout = d
		}
	}
	return o, rest, nil
}

// Connect resolves the API URL and the token: flags first, then the
// environment (MINUTED_API_URL, MINUTED_ADMIN_TOKEN, MINUTED_CONFIG), then
// the configuration file, then the defaults.
func Connect(o ConnOptions, getenv func(string) string) (*Client, error) {
	if o.Config == "" {
		o.Config = getenv("MINUTED_CONFIG")
	}
	var cfg *config.Config
	if o.Config != "" {
		c, err := config.Load(o.Config, getenv)
		if err != nil {
			return nil, fmt.Errorf("configuration %s (from -config/MINUTED_CONFIG, read for the admin API's "+
				"address and token): %w", o.Config, err)
		}
		cfg = &c
	}
	base := o.API
	if base == "" {
		base = getenv("MINUTED_API_URL")
	}
	if base == "" && cfg != nil {
		base = AddrURL(cfg.HTTP.Addr)
	}
	if base == "" {
		base = DefaultURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &UsageError{fmt.Sprintf("admin API URL %q must look like %s (-api or MINUTED_API_URL)",
			base, DefaultURL)}
	}
	var token config.Secret
	switch {
	case o.TokenFile != "":
		b, err := os.ReadFile(o.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("-token-file: cannot read the admin token: %w", err)
		}
		token = config.Secret(strings.TrimSpace(string(b)))
	case getenv("MINUTED_ADMIN_TOKEN") != "":
		token = config.Secret(getenv("MINUTED_ADMIN_TOKEN"))
	case cfg != nil:
		token = cfg.HTTP.AdminToken
	}
	return NewClient(base, token, o.Timeout), nil
}

// AddrURL turns a listen address (http.addr) into the URL a local client
// dials: a wildcard or empty host becomes 127.0.0.1.
func AddrURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}
