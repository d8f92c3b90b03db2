package notify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigYAMLAndDefaults(t *testing.T) {
	src := `
language: ru
templates:
  ru.threshold.title: "Мало минут: {{.Project}}"
burn_window: 30m
sinks:
  - {name: ops, type: log}
  - {name: hook, type: webhook, url: "https://ops.example.com/in", secret_env: HOOK_SECRET, timeout: 3s}
  - {name: slack, type: slack, url: "https://hooks.slack.com/services/T/B/XYZ"}
  - {name: tg, type: telegram, token_file: TOKENFILE, chat_id: "-100"}
retry: {initial: 2s, max: 30s, max_elapsed: 2h}
`
	tokenFile := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(tokenFile, []byte(" 1:tok \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(strings.Replace(src, "TOKENFILE", tokenFile, 1)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Resolve(func(k string) string { return map[string]string{"HOOK_SECRET": "hs"}[k] }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	d := c.withDefaults()
	if d.BurnWindow != 30*time.Minute || d.StaleAfter != 24*time.Hour || d.Sinks[1].Timeout != 3*time.Second ||
		d.Sinks[0].Timeout != 10*time.Second || d.Sinks[3].BaseURL != DefaultTelegramBaseURL ||
		d.Sinks[3].Token != "1:tok" || d.Sinks[1].Secret != "hs" || d.Retry.MaxElapsed != 2*time.Hour {
		t.Fatalf("decoded %#v", d)
	}
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"1:tok", "XYZ", "/in"} {
		if strings.Contains(string(out), leak) {
			t.Fatalf("config dump leaks %q:\n%s", leak, out)
		}
	}
	if !strings.Contains(string(out), "https://hooks.slack.com/<secret>") {
		t.Fatalf("dump lost the host:\n%s", out)
	}
}

func TestConfigValidateNamesKeys(t *testing.T) {
	c := Config{
		Language:  "de",
		Templates: map[string]string{"threshold.text": "{{.Nope}}"},
		Retry:     RetryConfig{Initial: time.Minute, Max: time.Second},
		Sinks: []SinkConfig{
			{Name: "a b", Type: TypeLog},
			{Name: "x", Type: "email"},
			{Name: "x", Type: TypeWebhook, URL: "ftp://x"},
			{Name: "s", Type: TypeSlack},
			{Name: "t", Type: TypeTelegram, Token: "a/b"},
			{Name: "t2", Type: TypeTelegram, BaseURL: "nope"},
		},
	}
	err := c.Validate()
	if err == nil {
		t.Fatal("accepted")
	}
	for _, key := range []string{"notify.language", "notify.templates.threshold.text", "notify.retry",
		"notify.sinks[0].name", "notify.sinks[1].type", "notify.sinks[2].name", "notify.sinks[2].url", "notify.sinks[2].secret",
		"notify.sinks[3].url", "notify.sinks[4].token", "notify.sinks[4].chat_id", "notify.sinks[5].base_url", "notify.sinks[5].token"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("no error for %s in:\n%v", key, err)
		}
	}
	if err := (Config{}).Validate(); err == nil || !strings.Contains(err.Error(), "notify.sinks: no sink") {
		t.Errorf("empty sinks: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("default: %v", err)
	}
	var c2 Config
	c2.Sinks = []SinkConfig{{Name: "h", Type: TypeWebhook, SecretEnv: "UNSET", SecretFile: "/nonexistent/x"}}
	err = c2.Resolve(func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "notify.sinks[0].secret_file") || !strings.Contains(err.Error(), "notify.sinks[0].secret_env") {
		t.Errorf("resolve: %v", err)
	}
}
