package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.URL != "nats://a:4222,nats://b:4222" || c.Redis.URL != "redis://r:6379/1" || c.HTTP.Addr != ":9999" ||
		c.HTTP.AdminToken != "tok" || c.Node != "pbx1" || c.ARI.URL != "http://pbx:8088/ari" ||
		c.ARI.Username != "u" || c.ARI.Password != "p" || c.ARI.Application != "app1" {
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
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte("http:\n  admin_token_file: "+tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.AdminToken != "s3cr3t" {
		t.Fatalf("token from file = %q", string(c.HTTP.AdminToken))
	}
	if s := strings.Join([]string{c.HTTP.AdminToken.String(), fmtV(c)}, " "); strings.Contains(s, "s3cr3t") {
		t.Fatalf("secret printed: %s", s)
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
