package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bins are the binaries the suite runs, built once per test binary.
var bins struct {
	minuted string
	nats    string // a real nats-server binary (built from go.mod's version, or the system's)
	err     error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "minuted-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos: temp dir:", err)
		os.Exit(1)
	}
	bins.err = build(dir)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build compiles minuted and nats-server into dir. The nats-server is the
// version go.mod pins (what the in-process tests use); the system's
// nats-server is the fallback.
func build(dir string) error {
	bins.minuted = filepath.Join(dir, "minuted")
	out, err := exec.Command("go", "build", "-o", bins.minuted, "github.com/minuted/minuted/cmd/minuted").CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build minuted: %w: %s", err, out)
	}
	bins.nats = filepath.Join(dir, "nats-server")
	if out, err := exec.Command("go", "build", "-o", bins.nats, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		p, lerr := exec.LookPath("nats-server")
		if lerr != nil {
			return fmt.Errorf("go build nats-server: %w: %s (and no nats-server on PATH)", err, out)
		}
		bins.nats = p
	}
	return nil
}
