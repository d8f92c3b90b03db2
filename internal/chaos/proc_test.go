package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// proc is one supervised child process: the supervisor restarts it when it
// exits, after the delay its killer asked for (like systemd's Restart=always
// with RestartSec); exits nobody asked for are counted.
type proc struct {
	name string
	path string
	args []string
	env  []string
	log  *os.File

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
	intended   bool          // the current process is being killed on purpose
	delay      time.Duration // restart delay asked by the killer
	starts     int
	unexpected []string // exits nobody asked for
	stopped    bool     // no more restarts
}

func newProc(name, path, logPath string, args, env []string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file of %s: %w", name, err)
	}
	return &proc{name: name, path: path, args: args, env: env, log: f}, nil
}

// start starts the process once; supervise keeps it running.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.path, p.args...)
	// A clean environment: nothing of the developer's MINUTED_* leaks in.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, p.env...)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	fmt.Fprintf(p.log, "\n=== chaos: start %s #%d at %s\n", p.name, p.starts+1, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	p.starts++
	p.cmd, p.done, p.intended, p.delay = cmd, make(chan struct{}), false, 0
	go func(cmd *exec.Cmd, done chan struct{}) {
		err := cmd.Wait()
		fmt.Fprintf(p.log, "\n=== chaos: %s exited at %s: %v\n", p.name, time.Now().Format(time.RFC3339Nano), err)
		close(done)
	}(cmd, p.done)
	return nil
}

// supervise restarts the process whenever it ends, until ctx ends or stop.
func (p *proc) supervise(ctx context.Context, errs chan<- error) {
	for {
		p.mu.Lock()
		done := p.done
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-done:
		}
		p.mu.Lock()
		if p.stopped {
			p.mu.Unlock()
			return
		}
		delay := p.delay
		if !p.intended {
			p.unexpected = append(p.unexpected, p.cmd.ProcessState.String())
			delay = 200 * time.Millisecond
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		if err := p.start(); err != nil {
			errs <- err
			return
		}
	}
}

// kill sends sig to the running process and waits until it has exited; the
// supervisor restarts it after delay.
func (p *proc) kill(sig syscall.Signal, delay time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.intended, p.delay = true, delay
	p.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	<-done
}

// restarted waits until the process runs again after a kill.
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop ends the process for good.
func (p *proc) stop() {
	p.mu.Lock()
	p.stopped = true
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	_ = p.log.Close()
}

func (p *proc) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// tail returns the last n bytes of a log file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// natsArgs are the arguments of a JetStream nats-server on port with its
// store in dir.
func natsArgs(port int, dir string) []string {
	return []string{"-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", dir, "-n", "chaos"}
}

// waitPort waits until something accepts TCP connections on addr.
func waitPort(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nothing listens on %s: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// keepLogs copies every process log into dir (MINUTED_CHAOS_LOGS), so a
// failed run can be read in full after the test's temporary directory is gone.
func (h *harness) keepLogs(dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		h.t.Logf("MINUTED_CHAOS_LOGS: %v", err)
		return
	}
	for name, path := range h.logs {
		b, err := os.ReadFile(path)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name+".log"), b, 0o644)
		}
		if err != nil {
			h.t.Logf("MINUTED_CHAOS_LOGS: keep %s: %v", name, err)
		}
	}
}
