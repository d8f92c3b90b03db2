package app

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/testutil"
)

// redisRoundTrip connects with cfg and proves the connection works: a
// write and a read back of the same key.
func redisRoundTrip(t *testing.T, cfg config.RedisConfig) error {
	t.Helper()
	rdb, err := RedisClient(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := t.Name()
	if err := rdb.Set(ctx, "{sec}:probe", want, 0).Err(); err != nil {
		return err
	}
	got, err := rdb.Get(ctx, "{sec}:probe").Result()
	if err != nil {
		return err
	}
	if got != want {
		t.Fatalf("read back %q, wrote %q", got, want)
	}
	return nil
}

// connectRedisErr runs the app's connect step (as `minuted bill` does) and
// returns its error and logs.
func connectRedisErr(t *testing.T, cfg config.RedisConfig) (error, string) {
	t.Helper()
	log, logs := testutil.NewLogger()
	c := config.Default()
	c.Redis = cfg
	a := &App{cfg: c, log: log}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := a.connectRedis(ctx)
	return err, logs.String()
}

func TestRedisTLSAndACL(t *testing.T) {
	ca := testutil.NewCA(t)
	srv := testutil.StartRedisTLS(t, ca, "--tls-auth-clients", "yes",
		"--requirepass", "default-s3cret",
		"--user", "billing", "on", ">billing-s3cret", "~{*", "+@all")
	client := ca.Issue(t, "minuted")
	otherCA := testutil.NewCA(t)
	otherClient := otherCA.Issue(t, "intruder")
	good := config.RedisConfig{
		URL: srv.URL(), Username: "billing", Password: "billing-s3cret",
		TLS: config.TLSConfig{CAFile: ca.CertFile, CertFile: client.CertFile, KeyFile: client.KeyFile},
	}
	if err := redisRoundTrip(t, good); err != nil {
		t.Fatalf("ACL user over mutual TLS: %v", err)
	}
	reqpass := good
	reqpass.Username, reqpass.Password = "", "default-s3cret"
	if err := redisRoundTrip(t, reqpass); err != nil {
		t.Fatalf("requirepass over mutual TLS: %v", err)
	}
	named := good
	named.TLS.ServerName = "localhost" // in the certificate's names too
	if err := redisRoundTrip(t, named); err != nil {
		t.Fatalf("server_name localhost: %v", err)
	}
	if err, logs := connectRedisErr(t, good); err != nil {
		t.Fatalf("connectRedis: %v (logs %s)", err, logs)
	}

	for _, tc := range []struct {
		name   string
		mutate func(*config.RedisConfig)
		want   []string
	}{
		{"wrong password", func(c *config.RedisConfig) { c.Password = "wrong-s3cret" },
			[]string{"WRONGPASS", "redis.username and redis.password"}},
		{"unknown user", func(c *config.RedisConfig) { c.Username = "nobody" },
			[]string{"WRONGPASS", "redis.username and redis.password"}},
		{"no password", func(c *config.RedisConfig) { c.Username, c.Password = "", "" },
			[]string{"NOAUTH", "redis.username and redis.password"}},
		{"wrong CA", func(c *config.RedisConfig) { c.TLS.CAFile = otherCA.CertFile },
			[]string{"certificate signed by unknown authority", "redis.tls.ca_file"}},
		{"system roots", func(c *config.RedisConfig) { c.TLS.CAFile = "" },
			[]string{"x509", "redis.tls.ca_file"}},
		{"wrong server name", func(c *config.RedisConfig) { c.TLS.ServerName = "redis.example" },
			[]string{"redis.example", "redis.tls.server_name"}},
		{"no client certificate", func(c *config.RedisConfig) { c.TLS.CertFile, c.TLS.KeyFile = "", "" },
			[]string{"tls", "redis.tls.cert_file/key_file"}},
		{"client certificate of another CA", func(c *config.RedisConfig) {
			c.TLS.CertFile, c.TLS.KeyFile = otherClient.CertFile, otherClient.KeyFile
		}, []string{"tls", "redis.tls.cert_file/key_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mutate(&cfg)
			err, logs := connectRedisErr(t, cfg)
			if err == nil {
				t.Fatal("connected")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			assertNoSecret(t, err.Error()+logs)
		})
	}

	plain := good
	plain.URL = strings.Replace(srv.URL(), "rediss://", "redis://", 1)
	if _, err := RedisClient(plain); err == nil || !strings.Contains(err.Error(), "use rediss://") {
		t.Errorf("redis.tls with redis://: error %v", err)
	}
	badCA := good
	badCA.TLS.CAFile = filepath.Join(t.TempDir(), "none.pem")
	if _, err := RedisClient(badCA); err == nil || !strings.Contains(err.Error(), "redis.tls.ca_file") {
		t.Errorf("missing CA file: error %v", err)
	}
}

// secrets used by these tests; none may appear in an error or a log line.
var testSecrets = []string{"default-s3cret", "billing-s3cret", "wrong-s3cret", "sentinel-s3cret", "master-s3cret", "url-s3cret", "embedded-s3cret"}

func assertNoSecret(t *testing.T, text string) {
	t.Helper()
	for _, s := range testSecrets {
		if strings.Contains(text, s) {
			t.Errorf("secret %q leaked into:\n%s", s, text)
		}
	}
}

func TestRedisURLPasswordNotInErrors(t *testing.T) {
	for _, u := range []string{
		"redis://:url-s3cret@127.0.0.1:1/0?bogus=1",
		"redis://:url-s3cret@127.0.0.1:1?addr=127.0.0.1:2&bogus=1",
		"redis://:url-s3cret@127.0.0.1:1?master_name=m&bogus=1",
		"redis://:url-s3cret@127.0.0.1:1/notadb",
		"redis://:url-s3cret@[::1:1/0",
	} {
		_, err := RedisClient(config.RedisConfig{URL: u})
		if err == nil {
			t.Errorf("%s: no error", u)
			continue
		}
		assertNoSecret(t, err.Error())
	}
	c := config.Default()
	c.Redis.URL = "http://:url-s3cret@h/0"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "redis.url") {
		t.Errorf("validate: %v", err)
	} else {
		assertNoSecret(t, err.Error())
	}
}

func TestRedisUnreachableIsNotFatal(t *testing.T) {
	err, logs := connectRedisErr(t, config.RedisConfig{URL: "redis://:url-s3cret@127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)) + "/0"})
	if err != nil {
		t.Fatalf("an unreachable Redis must not stop the process: %v", err)
	}
	if !strings.Contains(logs, "Redis unreachable") {
		t.Errorf("no log line says Redis is unreachable: %s", logs)
	}
	assertNoSecret(t, logs)
}

func TestRedisSentinel(t *testing.T) {
	master := testutil.StartRedis(t, "--requirepass", "master-s3cret")
	sent := testutil.StartSentinel(t, master, "billing",
		"sentinel auth-pass billing master-s3cret", "requirepass sentinel-s3cret")
	cfg := config.RedisConfig{
		URL: "redis://ignored:1/0", Password: "master-s3cret",
		Sentinel: config.SentinelConfig{MasterName: "billing", Addrs: []string{sent.Addr()}, Password: "sentinel-s3cret"},
	}
	// The sentinel learns of the master within its first ping; retry until then.
	var err error
	testutil.Eventually(t, 10*time.Second, func() bool { err = redisRoundTrip(t, cfg); return err == nil },
		"sentinel form: %v", err)
	// The key went to the master the sentinel names.
	if got, err := masterGet(t, master); err != nil || got != t.Name() {
		t.Fatalf("master holds %q, %v", got, err)
	}
	// go-redis's failover URL form selects the same.
	urlForm := config.RedisConfig{
		URL:      "redis://:sentinel-s3cret@" + sent.Addr() + "/0?master_name=billing",
		Password: "master-s3cret",
	}
	if err := redisRoundTrip(t, urlForm); err != nil {
		t.Fatalf("failover URL form: %v", err)
	}
	wrong := cfg
	wrong.Sentinel.Password = "wrong-s3cret"
	err, logs := connectRedisErr(t, wrong)
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") || !strings.Contains(err.Error(), "redis.sentinel.password") {
		t.Fatalf("wrong sentinel password: error %v, logs %s", err, logs)
	}
	assertNoSecret(t, err.Error()+logs)
}

func masterGet(t *testing.T, master *testutil.Redis) (string, error) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: master.Addr(), Password: "master-s3cret"})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Get(ctx, "{sec}:probe").Result()
}

func TestNATSEmbeddedAuthAndSecretsNotLogged(t *testing.T) {
	log, logs := testutil.NewLogger()
	c := config.Default()
	c.NATS.URL, c.NATS.StoreDir, c.NATS.Storage = "", t.TempDir(), "memory"
	c.NATS.EmbeddedListen, c.NATS.EmbeddedUser, c.NATS.EmbeddedPassword = "127.0.0.1:0", "minuted", "embedded-s3cret"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	a := &App{cfg: c, log: log}
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.connectNATS(ctx); err != nil {
		t.Fatalf("embedded server with a user: %v", err)
	}
	url := a.emb.ClientURL()
	if _, err := nats.Connect(url); err == nil {
		t.Fatal("another process connected to the embedded server without credentials")
	}
	nc, err := nats.Connect(url, nats.UserInfo("minuted", "embedded-s3cret"))
	if err != nil {
		t.Fatalf("another process with the credentials: %v", err)
	}
	nc.Close()

	// Another minuted process with the wrong password: a clear error, no secret.
	other := config.Default()
	other.NATS.URL, other.NATS.User, other.NATS.Password = url, "minuted", "wrong-s3cret"
	b := &App{cfg: other, log: log}
	defer b.Close()
	err = b.connectNATS(ctx)
	if err == nil || !strings.Contains(err.Error(), "credentials refused") || !strings.Contains(err.Error(), "nats.password") {
		t.Fatalf("wrong password: %v", err)
	}
	assertNoSecret(t, err.Error()+logs.String())
}

// TestRedisClusterTLS forms a 3-master Redis Cluster that speaks only TLS
// (client and bus) and requires a password, and proves the cluster URL form
// with rediss://, redis.password and redis.tls reaches every master.
func TestRedisClusterTLS(t *testing.T) {
	ca := testutil.NewCA(t)
	var nodes []*testutil.Redis
	for range 3 {
		nodes = append(nodes, testutil.StartRedisTLS(t, ca,
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
			"--cluster-port", strconv.Itoa(testutil.FreePort(t)), "--tls-cluster", "yes", "--tls-replication", "yes",
			"--requirepass", "default-s3cret", "--masterauth", "default-s3cret"))
	}
	create := []string{"--tls", "--cacert", ca.CertFile, "--no-auth-warning", "-a", "default-s3cret", "--cluster", "create"}
	for _, n := range nodes {
		create = append(create, n.Addr())
	}
	create = append(create, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", create...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	cfg := config.RedisConfig{
		URL:      nodes[0].URL() + "?addr=" + nodes[1].Addr() + "&addr=" + nodes[2].Addr(),
		Password: "default-s3cret", TLS: config.TLSConfig{CAFile: ca.CertFile},
	}
	rdb, err := RedisClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("cluster URL gave a %T", rdb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Keys of many projects land on every master once the slots are agreed.
	testutil.Eventually(t, 20*time.Second, func() bool {
		for i := range 30 {
			if cc.Set(ctx, fmt.Sprintf("{p%d}:probe", i), i, 0).Err() != nil {
				return false
			}
		}
		return true
	}, "cluster over TLS never accepted writes")
	var mu sync.Mutex // ForEachMaster runs the masters in parallel
	masters := map[string]bool{}
	err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		n, err := m.DBSize(ctx).Result()
		mu.Lock()
		defer mu.Unlock()
		if err == nil && n > 0 {
			masters[m.Options().Addr] = true
		}
		return err
	})
	if err != nil || len(masters) != 3 {
		t.Fatalf("keys on %d masters (%v), want 3: %v", len(masters), masters, err)
	}
	wrongCA := cfg
	wrongCA.TLS.CAFile = testutil.NewCA(t).CertFile
	if err, logs := connectRedisErr(t, wrongCA); err == nil || !strings.Contains(err.Error(), "redis.tls.ca_file") {
		t.Fatalf("cluster with the wrong CA: %v", err)
	} else {
		assertNoSecret(t, err.Error()+logs)
	}
	wrongPW := cfg
	wrongPW.Password = "wrong-s3cret"
	if err, logs := connectRedisErr(t, wrongPW); err == nil || !strings.Contains(err.Error(), "redis.password") {
		t.Fatalf("cluster with the wrong password: %v", err)
	} else {
		assertNoSecret(t, err.Error()+logs)
	}
}
