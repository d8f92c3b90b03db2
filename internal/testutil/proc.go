package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildMinuted compiles ./cmd/minuted (without -race) and returns the
// binary's path. Under `go test` the binary goes next to the test binary,
// in the go tool's work directory, which the go tool removes after the
// run: it is built once per test binary and reused by every test. A test
// binary run by hand (go test -c) builds into the test's temp dir instead.
func BuildMinuted(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if exe, err := os.Executable(); err == nil {
		// $WORK/bNNN/pkg.test: go test's own work directory.
		if d := filepath.Dir(exe); strings.HasPrefix(filepath.Base(filepath.Dir(d)), "go-build") {
			dir = d
		}
	}
	bin := filepath.Join(dir, "minuted")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	// Build under a temporary name and rename: parallel tests never run a
	// half-written binary.
	tmp := fmt.Sprintf("%s.%d.tmp", bin, time.Now().UnixNano())
	out, err := exec.Command("go", "build", "-o", tmp, "github.com/minuted/minuted/cmd/minuted").CombinedOutput()
	if err != nil {
		tb.Fatalf("go build minuted: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		tb.Fatalf("go build minuted: %v", err)
	}
	return bin
}

// Proc is a child process started by a test, its stdout and stderr
// captured in a log file. It is stopped when the test ends, and the end of
// its log is printed if the test failed.
type Proc struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, set before done closes

	mu       sync.Mutex
	intended bool // Stop or Kill was asked before it exited
	observed bool // the test called Stop or Wait: it has seen how it ended
}

// StartProc starts bin with args in a clean environment (PATH and HOME
// only, plus env: nothing of the developer's own settings leaks in). When
// the test ends it is stopped, and unless the test called Stop or Wait
// itself, an exit on its own or an unclean stop fails the test.
func StartProc(tb testing.TB, name, bin string, args, env []string) *Proc {
	tb.Helper()
	p := &Proc{Name: name, LogPath: filepath.Join(tb.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.LogPath)
	if err != nil {
		tb.Fatalf("log of %s: %v", name, err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		f.Close()
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		f.Close()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.mu.Lock()
		observed := p.observed
		p.mu.Unlock()
		if err := p.stop(); err != nil && !observed {
			tb.Errorf("%v", err)
		}
		if tb.Failed() {
			tb.Logf("---- last lines of %s ----\n%s", name, p.Tail(4000))
		}
	})
	return p
}

// Running reports whether the process has not exited yet.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Wait waits until the process exits and returns how it ended.
func (p *Proc) Wait() error {
	p.observe()
	<-p.done
	return p.err
}

// Kill sends SIGKILL (a crash) and waits until the process is gone.
func (p *Proc) Kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM, waits up to 30 s for a graceful exit, then kills.
// It returns an error if the process had exited before anyone asked, or
// did not exit cleanly; calling it again returns the same answer.
func (p *Proc) Stop() error {
	p.observe()
	return p.stop()
}

func (p *Proc) observe() {
	p.mu.Lock()
	p.observed = true
	p.mu.Unlock()
}

func (p *Proc) stop() error {
	early := !p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within 30s of SIGTERM (killed)", p.Name)
	}
	var ee *exec.ExitError
	switch {
	case early:
		return fmt.Errorf("%s exited by itself: %v", p.Name, p.err)
	case p.err != nil && !(errors.As(p.err, &ee) && p.killed()):
		return fmt.Errorf("%s: %w", p.Name, p.err)
	}
	return nil
}

// signal sends sig unless the process has already exited on its own; it
// reports whether the process was still running or had been asked to stop.
func (p *Proc) signal(sig syscall.Signal) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.intended && !p.Running() {
		return false
	}
	p.intended = true
	if p.Running() {
		_ = p.cmd.Process.Signal(sig)
	}
	return true
}

// killed reports whether the process died of SIGKILL (asked for by Kill).
func (p *Proc) killed() bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Log is everything the process wrote so far.
func (p *Proc) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// Tail is the last n bytes of the log, from a line start.
func (p *Proc) Tail(n int) string {
	b := []byte(p.Log())
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// WaitLog waits until the log contains s, failing the test after timeout
// or as soon as the process exits without having written it.
func (p *Proc) WaitLog(tb testing.TB, s string, timeout time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.Log(), s) {
		if !p.Running() {
			tb.Fatalf("%s exited (%v) before logging %q:\n%s", p.Name, p.err, s, p.Tail(4000))
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not log %q within %v:\n%s", p.Name, s, timeout, p.Tail(4000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
