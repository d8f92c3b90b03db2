package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `minuted config check`: 0 for a valid file, 1 naming every bad key, 2 for
// a bad command line.
func TestConfigCheckExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("nats:\n  replicas: 7\nbill:\n  unknown_project: ignore\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MINUTED_CONFIG", "")
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"config", "check", "-config", "../../configs/minuted.yaml"}, 0, nil},
		{[]string{"config", "check", "-config", bad}, 1, []string{"nats.replicas", "bill.unknown_project", "configuration is invalid"}},
		{[]string{"config", "check", "-config", filepath.Join(dir, "missing.yaml")}, 1, []string{"read config"}},
		{[]string{"config"}, 2, []string{"usage: minuted config check"}},
		{[]string{"config", "check", "extra"}, 2, []string{"unexpected arguments"}},
		{[]string{"nonsense"}, 2, []string{`unknown command "nonsense"`}},
	} {
		var stdout, stderr bytes.Buffer
		code := realMain(tc.args, &stdout, &stderr)
		if code != tc.code {
			t.Errorf("minuted %q: exit %d, want %d (stderr %s)", tc.args, code, tc.code, stderr.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr.String(), w) {
				t.Errorf("minuted %q: stderr %q lacks %q", tc.args, stderr.String(), w)
			}
		}
	}
}
