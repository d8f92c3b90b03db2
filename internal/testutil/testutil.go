// Package testutil starts the real engines minuted's tests run against: an
// in-process NATS server with JetStream and a private redis-server process,
// each on its own free port, never the machine's standard ones.
package testutil

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

// NATS is an in-process NATS server with JetStream.
type NATS struct {
	Server *server.Server
	Dir    string
	Port   int
}

// StartNATS starts a JetStream server on a random port with its store in a
// test temp dir; it is shut down when the test ends.
func StartNATS(tb testing.TB) *NATS {
	tb.Helper()
	n := &NATS{Dir: tb.TempDir(), Port: -1}
	n.start(tb)
	tb.Cleanup(func() { n.Server.Shutdown(); n.Server.WaitForShutdown() })
	return n
}

func (n *NATS) start(tb testing.TB) {
	tb.Helper()
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      n.Port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: true,
		StoreDir:  n.Dir,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats server not ready within 10s")
	}
	n.Server = s
	n.Port = s.Addr().(*net.TCPAddr).Port
}

// URL is the client URL of the server.
func (n *NATS) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.Port) }

// Restart shuts the server down and starts it again on the same port and
// store, like a crash and restart of nats-server.
func (n *NATS) Restart(tb testing.TB, down time.Duration) {
	tb.Helper()
	n.Server.Shutdown()
	n.Server.WaitForShutdown()
	time.Sleep(down)
	n.start(tb)
}

// Stop shuts the server down; Start brings it back on the same port.
func (n *NATS) Stop() { n.Server.Shutdown(); n.Server.WaitForShutdown() }

// Start starts a stopped server again on the same port and store.
func (n *NATS) Start(tb testing.TB) { tb.Helper(); n.start(tb) }

// Connect opens a client connection closed at test end.
func (n *NATS) Connect(tb testing.TB) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatalf("connect nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Redis is a private redis-server process.
type Redis struct {
	Port int
	Dir  string
	Args []string
	cmd  *exec.Cmd
}

// StartRedis starts redis-server on a free port in a temp dir (AOF on), and
// kills it when the test ends. The test is skipped only if redis-server is
// not installed and CI is unset; under CI it fails.
func StartRedis(tb testing.TB, extra ...string) *Redis {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal("redis-server not installed: apt-get install -y redis-server")
		}
		tb.Skip("redis-server not installed")
	}
	r := &Redis{Port: FreePort(tb), Dir: tb.TempDir(), Args: extra}
	r.Start(tb)
	tb.Cleanup(r.Stop)
	return r
}

// Start (re)starts the server on its port and dir.
func (r *Redis) Start(tb testing.TB) {
	tb.Helper()
	args := []string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--dir", r.Dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--logfile", filepath.Join(r.Dir, "redis.log"),
	}
	args = append(args, r.Args...)
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		tb.Fatalf("start redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Ping(context.Background()).Err(); err == nil {
			return
		} else if time.Now().After(deadline) {
			tb.Fatalf("redis-server on %s not ready: %v", r.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: AOF keeps what was acknowledged).
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Addr is host:port of the server.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// URL is the redis:// URL of the server.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Client returns a client closed at test end.
func (r *Redis) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Eventually polls cond every 10ms until it is true or timeout passes.
func Eventually(tb testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
