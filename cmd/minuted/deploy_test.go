package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// There is no Docker engine on the CI machine: check the packaging files
// for what would break them, so they do not rot unseen.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image       string            `yaml:"image"`
			Build       string            `yaml:"build"`
			Command     []string          `yaml:"command"`
			Volumes     []string          `yaml:"volumes"`
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"asterisk", "nats", "redis", "minuted"} {
		if _, ok := c.Services[name]; !ok {
			t.Errorf("docker-compose.yml lacks service %s", name)
		}
	}
	if cmd := strings.Join(c.Services["nats"].Command, " "); !strings.Contains(cmd, "-js") {
		t.Errorf("nats must run with JetStream (-js): %q", cmd)
	}
	if cmd := strings.Join(c.Services["redis"].Command, " "); !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis must run with AOF: %q", cmd)
	}
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
					t.Errorf("service %s mounts %s, which is not in the repository", name, src)
				}
			}
		}
	}
	env := c.Services["minuted"].Environment
	for _, k := range []string{"MINUTED_NATS_URL", "MINUTED_REDIS_URL", "MINUTED_ADMIN_TOKEN", "ARI_URL"} {
		if env[k] == "" {
			t.Errorf("minuted service does not set %s", k)
		}
	}
}

func TestDockerfileAndUnit(t *testing.T) {
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	stages := 0
	for _, line := range strings.Split(df, "\n") {
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(line)), "FROM ") {
			stages++
		}
	}
	if stages < 2 {
		t.Errorf("Dockerfile has %d stage(s): it must be multi-stage (build, then a small runtime image)", stages)
	}
	for _, want := range []string{"CGO_ENABLED=0", "USER nonroot", "./cmd/minuted", "configs/minuted.yaml"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	u, err := os.ReadFile("../../deploy/minuted.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/usr/local/bin/minuted run", "KillSignal=SIGTERM", "User=minuted"} {
		if !strings.Contains(string(u), want) {
			t.Errorf("deploy/minuted.service lacks %q", want)
		}
	}
}
