// Package loadtest measures minuted on one machine: it stands up the whole
// pipeline (the ARI double in this process → `minuted ingest` and
// `minuted bill` as separate processes → a real nats-server → a private
// redis-server), drives synthetic calls through it at set rates, times the
// raw cost of the unavoidable parts of a call (the baseline), and writes
// the figures as Markdown and JSON (docs/benchmarks.md, .json).
package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/ledger"
	"github.com/minuted/minuted/internal/sim"
)

// MinutedPackage is the import path `go build` builds the binary from.
const MinutedPackage = "github.com/minuted/minuted/cmd/minuted"

// StackOptions configure Start.
type StackOptions struct {
	// Binary is the minuted executable; empty builds one into Dir with
	// `go build` (no -race).
	Binary string
	// Dir holds the stores, logs and config; empty makes a temp dir that
	// Close removes.
	Dir        string
	NATSServer string // default /usr/sbin/nats-server, else nats-server on PATH
	RedisFsync string // appendfsync of the AOF: always, everysec (default), no
	// SnapshotInterval of ingest (default 10s, as shipped).
	SnapshotInterval time.Duration
	// Env is added to the environment of ingest and bill, e.g.
	// GOMEMLIMIT=150MiB.
	Env    []string
	Logger *slog.Logger
}

// Proc is one process of the stack.
type Proc struct {
	Name string
	Pid  int
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Alive reports whether the process is still running.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stack is the running pipeline.
type Stack struct {
	Sim       *sim.Server
	NATSURL   string
	RedisAddr string
	App       string // ARI application name of ingest
	NC        *nats.Conn
	JS        jetstream.JetStream
	RDB       *redis.Client
	Ledger    *ledger.Ledger

	NATS, Redis, Ingest, Bill *Proc

	dir, binary string
	ownDir      bool
	log         *slog.Logger
}

// Procs are the processes with a pid, in a fixed order.
func (s *Stack) Procs() []*Proc { return []*Proc{s.Ingest, s.Bill, s.NATS, s.Redis} }

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Build compiles minuted (no -race) into dir and returns its path.
func Build(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "minuted")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, MinutedPackage)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", MinutedPackage, err, b)
	}
	return out, nil
}

// Start stands the pipeline up and returns once ingest listens on the
// double and bill's consumer exists.
func Start(ctx context.Context, o StackOptions) (s *Stack, err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RedisFsync == "" {
		o.RedisFsync = "everysec"
	}
	if o.SnapshotInterval <= 0 {
		o.SnapshotInterval = 10 * time.Second
	}
	s = &Stack{dir: o.Dir, log: o.Logger, App: "minuted-load"}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "minuted-load-"); err != nil {
			return nil, fmt.Errorf("make a work dir: %w", err)
		}
		s.ownDir = true
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.binary = o.Binary
	if s.binary == "" {
		if s.binary, err = Build(ctx, s.dir); err != nil {
			return s, err
		}
	}
	if err := s.startNATS(ctx, o.NATSServer); err != nil {
		return s, err
	}
	if err := s.startRedis(ctx, o.RedisFsync); err != nil {
		return s, err
	}
	if s.Sim, err = sim.Start(ctx, sim.Options{Password: "load-secret", WriteTimeout: 5 * time.Second, MaxQueue: 1 << 22}); err != nil {
		return s, fmt.Errorf("start the ARI double: %w", err)
	}
	env := []string{
		"MINUTED_CONFIG=", "MINUTED_NATS_URL=" + s.NATSURL, "MINUTED_REDIS_URL=redis://" + s.RedisAddr + "/0",
		"ARI_URL=" + s.Sim.URL(), "ARI_USERNAME=minuted", "ARI_PASSWORD=load-secret", "ARI_APPLICATION=" + s.App,
	}
	env = append(env, o.Env...)
	cfg := filepath.Join(s.dir, "minuted.yaml")
	yml := fmt.Sprintf("ingest:\n  snapshot_interval: %s\n  spool_dir: %s\n", o.SnapshotInterval, filepath.Join(s.dir, "spool"))
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		return s, fmt.Errorf("write %s: %w", cfg, err)
	}
	if s.Bill, err = s.spawn("bill", s.binary, env, "bill", "-config", cfg); err != nil {
		return s, err
	}
	if s.Ingest, err = s.spawn("ingest", s.binary, env, "ingest", "-config", cfg); err != nil {
		return s, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Sim.WaitApp(wctx, s.App); err != nil {
		return s, fmt.Errorf("ingest did not connect to the ARI double: %w (log: %s)", err, s.tail("ingest"))
	}
	for {
		if _, err := s.JS.Consumer(wctx, call.CallsStream, "bill"); err == nil {
			break
		}
		if !s.Bill.Alive() {
			return s, fmt.Errorf("minuted bill exited: %v (log: %s)", s.Bill.err, s.tail("bill"))
		}
		select {
		case <-wctx.Done():
			return s, fmt.Errorf("bill did not create its consumer: %w (log: %s)", wctx.Err(), s.tail("bill"))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return s, nil
}

func (s *Stack) startNATS(ctx context.Context, bin string) error {
	err := s.onFreePort("nats-server", func(port int) error { return s.startNATSOn(ctx, bin, port) })
	if err != nil {
		return err
	}
	if s.JS, err = jetstream.New(s.NC); err != nil {
		return fmt.Errorf("JetStream on %s: %w", s.NATSURL, err)
	}
	return nil
}

// startNATSOn starts nats-server on port and connects to it, checking by
// its name that the server answering there is this one.
func (s *Stack) startNATSOn(ctx context.Context, bin string, port int) (err error) {
	if bin == "" {
		bin = "/usr/sbin/nats-server"
		if _, err := os.Stat(bin); err != nil {
			bin = "nats-server"
		}
	}
	name := fmt.Sprintf("minuted-load-%d-%d", os.Getpid(), port)
	if s.NATS, err = s.spawn("nats-server", bin, nil, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", filepath.Join(s.dir, "nats"), "-n", name); err != nil {
		return err
	}
	s.NATSURL = fmt.Sprintf("nats://127.0.0.1:%d", port)
	return s.ready(ctx, s.NATS, 15*time.Second, func() error {
		nc, err := nats.Connect(s.NATSURL, nats.MaxReconnects(-1))
		if err != nil {
			return err
		}
		if got := nc.ConnectedServerName(); got != name {
			nc.Close()
			return fmt.Errorf("%w: %s answers as %q, not %q", errNotOurs, s.NATSURL, got, name)
		}
		s.NC = nc
		return nil
	})
}

func (s *Stack) startRedis(ctx context.Context, fsync string) error {
	dir := filepath.Join(s.dir, "redis")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make %s: %w", dir, err)
	}
	err := s.onFreePort("redis-server", func(port int) (err error) {
		s.RedisAddr = fmt.Sprintf("127.0.0.1:%d", port)
		if s.Redis, err = s.spawn("redis-server", "redis-server", nil, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--dir", dir, "--appendonly", "yes", "--appendfsync", fsync, "--save", ""); err != nil {
			return err
		}
		s.RDB = redis.NewClient(&redis.Options{Addr: s.RedisAddr, PoolSize: 32})
		err = s.ready(ctx, s.Redis, 10*time.Second, func() error {
			info, err := s.RDB.Info(ctx, "server").Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", s.Redis.Pid)) {
				return fmt.Errorf("%w: %s is another redis-server than process %d", errNotOurs, s.RedisAddr, s.Redis.Pid)
			}
			return nil
		})
		if err != nil {
			s.RDB.Close()
		}
		return err
	})
	if err != nil {
		return err
	}
	s.Ledger = ledger.New(s.RDB, ledger.Options{})
	return nil
}

// errNotOurs: what answers on the port is another test's or program's
// server (it took the port between FreePort and the spawn).
var errNotOurs = errors.New("the port was taken by another server")

// onFreePort runs start with a free port, and again with another (at most
// three times in all) when the port turned out to be taken: the process
// exited (it could not bind) or another server answers there.
func (s *Stack) onFreePort(name string, start func(port int) error) error {
	var err error
	for range 3 {
		var port int
		if port, err = FreePort(); err != nil {
			return err
		}
		if err = start(port); err == nil || !errors.Is(err, errPortTaken) && !errors.Is(err, errNotOurs) {
			return err
		}
		s.log.Warn("port taken by another process; trying another", "server", name, "port", port, "err", err)
	}
	return err
}

// errPortTaken: the server exited while starting (on a free port, the
// likely cause is that something else bound it first).
var errPortTaken = errors.New("exited while starting")

// ready polls check until it succeeds, p exits or d passes. A p that
// exited (or was found not to be the one answering) is stopped and
// reported with its log.
func (s *Stack) ready(ctx context.Context, p *Proc, d time.Duration, check func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := check()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errNotOurs):
		case !p.Alive():
			err = fmt.Errorf("%s %w: %v", p.Name, errPortTaken, err)
		case time.Now().After(deadline) || ctx.Err() != nil:
		default:
			time.Sleep(20 * time.Millisecond)
			continue
		}
		_ = p.stop(2 * time.Second)
		return fmt.Errorf("%s not ready: %w (log: %s)", p.Name, err, s.tail(p.Name))
	}
}

// spawn starts a process whose output goes to <dir>/<name>.log.
func (s *Stack) spawn(name, bin string, env []string, args ...string) (*Proc, error) {
	logf, err := os.Create(filepath.Join(s.dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("create the log of %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Proc{Name: name, Pid: cmd.Process.Pid, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// tail is the end of a process's log, for error messages.
func (s *Stack) tail(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.dir, name+".log"))
	b = bytes.TrimSpace(b)
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return string(b)
}

// Logs returns the log of one process of the stack (its last 600 bytes).
func (s *Stack) Logs(name string) string { return s.tail(name) }

// stop sends SIGTERM and waits up to d, then kills.
func (p *Proc) stop(d time.Duration) error {
	if p == nil || !p.Alive() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		var ee *exec.ExitError
		if p.err != nil && !errors.As(p.err, &ee) {
			return p.err
		}
		return nil
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s after SIGTERM; killed", p.Name, d)
	}
}

// Close stops minuted (SIGTERM, drain), then the engines, and removes the
// work dir if Start made it.
func (s *Stack) Close() error {
	var errs []error
	errs = append(errs, s.Ingest.stop(20*time.Second), s.Bill.stop(20*time.Second))
	if s.Sim != nil {
		_ = s.Sim.Close()
	}
	if s.NC != nil {
		s.NC.Close()
	}
	if s.RDB != nil {
		_ = s.RDB.Close()
	}
	errs = append(errs, s.NATS.stop(10*time.Second), s.Redis.stop(10*time.Second))
	if s.ownDir {
		_ = os.RemoveAll(s.dir)
	}
	return errors.Join(errs...)
}

// versionOf runs `bin args` and returns its first line of output.
func versionOf(bin string, args ...string) string {
	b, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}
