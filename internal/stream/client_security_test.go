package stream

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/testutil"
)

// Secrets of these tests: none may reach an error or a log line.
const (
	secPassword = "nats-pa55-s3cret"
	secToken    = "nats-t0ken-s3cret"
)

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertNoSecrets fails if any secret appears in text.
func assertNoSecrets(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range append(secrets, secPassword, secToken) {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("secret %q leaked into:\n%s", s, text)
		}
	}
}

// useJetStream proves the connection can do minuted's work: create the
// streams and publish with a JetStream ack.
func useJetStream(t *testing.T, nc *nats.Conn) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 10*time.Second)
	if err := EnsureStreams(ctx, js, testNATSConfig()); err != nil {
		t.Fatalf("streams over the secured connection: %v", err)
	}
	if _, err := js.Publish(ctx, "minuted.alerts.test", []byte(`{}`)); err != nil {
		t.Fatalf("publish over the secured connection: %v", err)
	}
}

func TestConnectTLSUsersAndNkeys(t *testing.T) {
	ca := testutil.NewCA(t)
	srvCert := ca.Issue(t, "nats-server")
	client := ca.Issue(t, "minuted")
	other := testutil.NewCA(t)
	otherClient := other.Issue(t, "intruder")
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	seedFile := writeFile(t, "user.nk", seed)
	stranger, _ := nkeys.CreateUser()
	strangerSeed, _ := stranger.Seed()
	strangerFile := writeFile(t, "stranger.nk", strangerSeed)

	n := testutil.StartNATSWith(t, func(o *server.Options) {
		o.TLSConfig = ca.ServerTLS(t, srvCert, true)
		o.TLSVerify = true
		o.TLSTimeout = 2
		o.Users = []*server.User{{Username: "minuted", Password: secPassword}}
		o.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	})
	tlsCfg := config.TLSConfig{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile}
	base := testNATSConfig()
	base.URL, base.TLS = n.URL(), tlsCfg

	withPassword := base
	withPassword.User, withPassword.Password = "minuted", secPassword
	withNkey := base
	withNkey.NkeyFile = seedFile
	named := withPassword
	named.TLS.ServerName = "localhost"
	for name, cfg := range map[string]config.NATSConfig{"user/password": withPassword, "nkey": withNkey, "server_name": named} {
		t.Run(name, func(t *testing.T) {
			log, logs := testutil.NewLogger()
			nc, err := Connect(testCtx(t, 10*time.Second), cfg, "sec-"+name, log)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if !nc.TLSRequired() {
				t.Error("connection is not TLS")
			}
			useJetStream(t, nc)
			assertNoSecrets(t, logs.String(), string(seed))
		})
	}

	for _, tc := range []struct {
		name   string
		mutate func(*config.NATSConfig)
		want   []string
	}{
		{"wrong password", func(c *config.NATSConfig) { c.User, c.Password = "minuted", "wrong-"+secPassword },
			[]string{"credentials refused", "nats.user and nats.password"}},
		{"unknown nkey", func(c *config.NATSConfig) { c.NkeyFile = strangerFile }, []string{"credentials refused", "nats.nkey_file"}},
		{"no credentials", func(*config.NATSConfig) {}, []string{"credentials refused", "none is set"}},
		{"not a seed", func(c *config.NATSConfig) { c.NkeyFile = writeFile(t, "bad.nk", []byte("not a seed")) }, []string{"nats.nkey_file"}},
		{"wrong CA", func(c *config.NATSConfig) { c.NkeyFile, c.TLS.CAFile = seedFile, other.CertFile },
			[]string{"unknown authority", "nats.tls.ca_file"}},
		{"wrong server name", func(c *config.NATSConfig) { c.NkeyFile, c.TLS.ServerName = seedFile, "nats.example" },
			[]string{"nats.example", "nats.tls.server_name"}},
		{"no client certificate", func(c *config.NATSConfig) { c.NkeyFile, c.TLS.CertFile, c.TLS.KeyFile = seedFile, "", "" },
			[]string{"nats.tls.cert_file/key_file"}},
		{"client certificate of another CA", func(c *config.NATSConfig) {
			c.NkeyFile, c.TLS.CertFile, c.TLS.KeyFile = seedFile, otherClient.CertFile, otherClient.KeyFile
		}, []string{"nats.tls.cert_file/key_file"}},
		// nats.go upgrades to TLS when the server requires it, verifying
		// with the system roots.
		{"no TLS", func(c *config.NATSConfig) { c.NkeyFile, c.TLS = seedFile, config.TLSConfig{} }, []string{"unknown authority", "nats.tls.ca_file"}},
		{"two methods", func(c *config.NATSConfig) { c.NkeyFile, c.Token = seedFile, secToken }, []string{"not both nats.token and nats.nkey_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mutate(&cfg)
			log, logs := testutil.NewLogger()
			start := time.Now()
			// A refusal must end Connect at once, not after ctx's 20 s.
			_, err := Connect(testCtx(t, 20*time.Second), cfg, "sec", log)
			if err == nil {
				t.Fatal("connected")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v to give up on a refusal that waiting cannot cure", d)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			assertNoSecrets(t, err.Error()+logs.String(), string(seed), string(strangerSeed))
		})
	}
}

func TestConnectToken(t *testing.T) {
	n := testutil.StartNATSWith(t, func(o *server.Options) { o.Authorization = secToken })
	cfg := testNATSConfig()
	cfg.URL = n.URL()
	cfg.TokenFile = writeFile(t, "token", []byte(secToken+"\n"))
	// Through the config loader, as minuted reads it: token from the file.
	y := "nats:\n  url: " + n.URL() + "\n  token_file: " + cfg.TokenFile + "\n"
	full, err := config.Load(writeFile(t, "minuted.yaml", []byte(y)), func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	log, logs := testutil.NewLogger()
	nc, err := Connect(testCtx(t, 10*time.Second), full.NATS, "tok", log)
	if err != nil {
		t.Fatal(err)
	}
	useJetStream(t, nc)
	nc.Close()

	wrong := full.NATS
	wrong.Token = "wrong-" + secToken
	_, err = Connect(testCtx(t, 10*time.Second), wrong, "tok", log)
	if err == nil || !strings.Contains(err.Error(), "credentials refused") || !strings.Contains(err.Error(), "nats.token") {
		t.Fatalf("wrong token: %v", err)
	}
	// A token in the URL (nats://token@host) is redacted in what is logged.
	inURL := testNATSConfig()
	inURL.URL = strings.Replace(n.URL(), "nats://", "nats://wrong-"+secToken+"@", 1)
	_, err = Connect(testCtx(t, 10*time.Second), inURL, "tok", log)
	if err == nil {
		t.Fatal("wrong token in URL: connected")
	}
	assertNoSecrets(t, err.Error()+logs.String())
}

func TestEmbeddedRequiresCredentials(t *testing.T) {
	log, logs := testutil.NewLogger()
	e, err := StartEmbedded(testCtx(t, 20*time.Second), EmbeddedOptions{
		StoreDir: t.TempDir(), Listen: "127.0.0.1:0", User: "minuted", Password: secPassword, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect() // its own clients carry the credentials
	if err != nil {
		t.Fatal(err)
	}
	useJetStream(t, nc)
	nc.Close()
	if _, err := nats.Connect(e.ClientURL()); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("another process without credentials: %v", err)
	}
	cfg := testNATSConfig()
	cfg.URL, cfg.User, cfg.Password = e.ClientURL(), "minuted", secPassword
	nc, err = Connect(testCtx(t, 10*time.Second), cfg, "other-process", log)
	if err != nil {
		t.Fatalf("another process with the credentials: %v", err)
	}
	nc.Close()
	cfg.Password = "wrong-" + secPassword
	if _, err := Connect(testCtx(t, 10*time.Second), cfg, "other-process", log); err == nil {
		t.Fatal("wrong password accepted")
	}
	assertNoSecrets(t, logs.String())
}
