package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestSampleConfigLoads(t *testing.T) {
	c, err := Load("../../configs/minuted.yaml", env(nil))
	if err != nil {
		t.Fatalf("configs/minuted.yaml: %v", err)
	}
	if d := Default(); c.Bill != d.Bill || c.ARI != d.ARI || c.Ingest.SnapshotInterval != d.Ingest.SnapshotInterval {
		t.Errorf("sample config differs from the defaults it documents:\n%+v\n%+v", c, d)
	}
}

func TestEnvOverrides(t *testing.T) {
	c, err := Load("", env(map[string]string{
		"MINUTED_NATS_URL": "nats://a:4222,nats://b:4222", "MINUTED_REDIS_URL": "redis://r:6379/1",
		"MINUTED_HTTP_ADDR": ":9999", "MINUTED_ADMIN_TOKEN": "tok", "MINUTED_NODE": "pbx1",
		"ARI_URL": "http://pbx:8088/ari", "ARI_USERNAME": "u", "ARI_PASSWORD": "p", "ARI_APPLICATION": "app1",
		"MINUTED_REDIS_PASSWORD": "rp", "MINUTED_NATS_TOKEN": "nt",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.URL != "nats://a:4222,nats://b:4222" || c.Redis.URL != "redis://r:6379/1" || c.HTTP.Addr != ":9999" ||
		c.HTTP.AdminToken != "tok" || c.Node != "pbx1" || c.ARI.URL != "http://pbx:8088/ari" ||
		c.ARI.Username != "u" || c.ARI.Password != "p" || c.ARI.Application != "app1" ||
		c.Redis.Password != "rp" || c.NATS.Token != "nt" {
		t.Errorf("env not applied: %+v", c)
	}
}

func TestErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"nats:\n  replicas: 9\n", "nats.replicas"},
		{"redis:\n  url: http://x\n", "redis.url"},
		{"ari:\n  url: ftp://x\n", "ari.url"},
		{"bill:\n  unknown_project: ignore\n", "bill.unknown_project"},
		{"defaults:\n  tariff:\n    increment_seconds: 0\n", "defaults.tariff"},
		{"defaults:\n  on_exhausted: maybe\n", "defaults.on_exhausted"},
		{"node: a.b\n", "node"},
		{"ingest:\n  rules:\n    - context: x\n      project: bad.id\n", "ingest.rules[0].project"},
		{"nats:\n  replicass: 3\n", "replicass"},
		{"nats:\n  user: u\n  password: p\n  token: t\n", "nats: choose one way"},
		{"nats:\n  nkey_file: /x\n  creds_file: /y\n", "nats.nkey_file and nats.creds_file"},
		{"nats:\n  user: u\n", "nats.user/password"},
		{"nats:\n  tls:\n    cert_file: /c\n", "nats.tls.cert_file/key_file"},
		{"nats:\n  embedded_user: u\n  embedded_password: p\n", "nats.embedded_user/embedded_password"},
		{"nats:\n  embedded_listen: 127.0.0.1:0\n  embedded_user: u\n", "nats.embedded_user/embedded_password"},
		{"redis:\n  tls:\n    ca_file: /ca.pem\n", "redis.tls"},
		{"redis:\n  url: rediss://h:6380\n  tls:\n    key_file: /k\n", "redis.tls.cert_file/key_file"},
		{"redis:\n  sentinel:\n    addrs: [h:26379]\n", "redis.sentinel.master_name"},
		{"redis:\n  sentinel:\n    master_name: m\n", "redis.sentinel.addrs"},
		{"redis:\n  sentinel:\n    master_name: m\n    addrs: [nohost]\n", "redis.sentinel.addrs[0]"},
		{"redis:\n  url: redis://a:1?addr=b:2\n  sentinel:\n    master_name: m\n    addrs: [h:1]\n", "redis.url"},
		{"redis:\n  tls:\n    cafile: /x\n", "cafile"},
		{"ari: [\n", "yaml"},
	} {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(p, env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to name %q", tc.yaml, err, tc.want)
		}
	}
}

func TestSecretFilesAndRedaction(t *testing.T) {
	dir := t.TempDir()
	file := func(name, v string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	y := "http:\n  admin_token_file: " + file("token", "s3cr3t-admin") + "\n" +
		"ari:\n  password_file: " + file("ari", "s3cr3t-ari") + "\n" +
		"nats:\n  token_file: " + file("nats", "s3cr3t-nats-token") + "\n" +
		"  embedded_listen: 127.0.0.1:0\n  embedded_user: e\n  embedded_password_file: " + file("emb", "s3cr3t-embedded") + "\n" +
		"redis:\n  password_file: " + file("redis", "s3cr3t-redis") + "\n" +
		"  sentinel:\n    master_name: m\n    addrs: [127.0.0.1:26379]\n    password_file: " + file("sent", "s3cr3t-sentinel") + "\n"
	p := file("c.yaml", y)
	c, err := Load(p, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	for key, got := range map[string]Secret{
		"http.admin_token": c.HTTP.AdminToken, "ari.password": c.ARI.Password, "nats.token": c.NATS.Token,
		"nats.embedded_password": c.NATS.EmbeddedPassword, "redis.password": c.Redis.Password,
		"redis.sentinel.password": c.Redis.Sentinel.Password,
	} {
		if !strings.HasPrefix(string(got), "s3cr3t-") || strings.HasSuffix(string(got), "\n") {
			t.Errorf("%s from file = %q", key, string(got))
		}
	}
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "cfg", c, "redis", c.Redis, "nats", c.NATS)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", c)
	dump, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join([]string{c.HTTP.AdminToken.String(), fmtV(c), logs.String(), string(dump), string(js)}, " "); strings.Contains(s, "s3cr3t") {
		t.Fatalf("secret printed: %s", s)
	}
	if !strings.Contains(string(dump), "<secret>") {
		t.Fatalf("YAML dump does not show the redaction marker:\n%s", dump)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), env(nil)); err == nil {
		t.Fatal("missing file: no error")
	}
}

func FuzzLoad(f *testing.F) {
	b, _ := os.ReadFile("../../configs/minuted.yaml")
	f.Add(string(b))
	f.Add("nats:\n  replicas: 3\n")
	f.Fuzz(func(t *testing.T, y string) {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p, env(nil))
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Load accepted a config Validate rejects: %v", verr)
			}
		}
	})
}

func fmtV(c Config) string { return fmt.Sprintf("%v %+v %#v", c, c, c.HTTP.AdminToken) }

func TestRedactURL(t *testing.T) {
	if got := RedactURL("redis://user:pw@h:6379/0"); strings.Contains(got, "pw") {
		t.Errorf("RedactURL leaked the password: %s", got)
	}
}

func TestTLSClient(t *testing.T) {
	dir := t.TempDir()
	if c, err := (TLSConfig{}).Client("redis.tls"); c != nil || err != nil {
		t.Fatalf("empty TLS config built %v, %v", c, err)
	}
	c, err := TLSConfig{ServerName: "redis.internal"}.Client("redis.tls")
	if err != nil || c.ServerName != "redis.internal" || c.RootCAs != nil {
		t.Fatalf("server name only: %+v, %v", c, err)
	}
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		t    TLSConfig
		want string
	}{
		{TLSConfig{CAFile: filepath.Join(dir, "missing.pem")}, "nats.tls.ca_file: cannot read"},
		{TLSConfig{CAFile: notPEM}, "nats.tls.ca_file: " + notPEM + " holds no PEM"},
		{TLSConfig{CertFile: notPEM}, "nats.tls.cert_file/key_file: set both"},
		{TLSConfig{CertFile: notPEM, KeyFile: notPEM}, "nats.tls.cert_file/key_file: cannot load"},
	} {
		if _, err := tc.t.Client("nats.tls"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.t, err, tc.want)
		}
	}
}

// TestSampleDocumentsEveryKey: configs/minuted.yaml shows every key of the
// configuration (a key added to Config without documenting it fails here).
func TestSampleDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../configs/minuted.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var sample map[string]any
	if err := yaml.Unmarshal(b, &sample); err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var walk func(prefix string, v reflect.Type, in map[string]any)
	walk = func(prefix string, v reflect.Type, in map[string]any) {
		for i := range v.NumField() {
			f := v.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if key == "" || key == "-" {
				continue
			}
			val, ok := in[key]
			if !ok && !strings.Contains(text, key+":") {
				t.Errorf("configs/minuted.yaml does not document %s%s", prefix, key)
				continue
			}
			if f.Type.Kind() == reflect.Struct && f.Type.NumField() > 0 && f.Type.PkgPath() != "time" {
				sub, _ := val.(map[string]any)
				walk(prefix+key+".", f.Type, sub)
			}
		}
	}
	walk("", reflect.TypeFor[Config](), sample)
}
