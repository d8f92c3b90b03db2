// Package testutil starts the real engines minuted's tests run against: an
// in-process NATS server with JetStream and a private redis-server process,
// each on its own free port, never the machine's standard ones.
package testutil

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	// configure, if set, adjusts the server options (TLS, users, nkeys).
	configure func(*server.Options)
}

// StartNATS starts a JetStream server on a random port with its store in a
// test temp dir; it is shut down when the test ends.
func StartNATS(tb testing.TB) *NATS {
	tb.Helper()
	return StartNATSWith(tb, nil)
}

// StartNATSWith is StartNATS with configure applied to the server options
// before start (and on every restart): TLSConfig, Users, Nkeys,
// Authorization... Connect does not authenticate; tests of secured
// servers dial themselves.
func StartNATSWith(tb testing.TB, configure func(*server.Options)) *NATS {
	tb.Helper()
	n := &NATS{Dir: tb.TempDir(), Port: -1, configure: configure}
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
	if n.configure != nil {
		n.configure(opts)
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
	// TLS, if set, means the server listens with TLS only on Port (see
	// StartRedisTLS); it is the readiness probe's client config.
	TLS *tls.Config
	// conf, if set, is a sentinel config file: the process is a sentinel.
	conf string
	cmd  *exec.Cmd
}

// StartRedis starts redis-server on a free port in a temp dir (AOF on), and
// kills it when the test ends. The test is skipped only if redis-server is
// not installed and CI is unset; under CI it fails.
func StartRedis(tb testing.TB, extra ...string) *Redis {
	tb.Helper()
	needRedis(tb)
	r := &Redis{Dir: tb.TempDir(), Args: extra}
	r.startFree(tb)
	tb.Cleanup(r.Stop)
	return r
}

// startFree starts the server on a free port, and on another when the
// port was taken between FreePort and the server's bind (by another
// test's server: tests run in parallel), at most three times.
func (r *Redis) startFree(tb testing.TB) {
	tb.Helper()
	for i := 0; ; i++ {
		r.Port = FreePort(tb)
		err := r.start()
		if err == nil {
			return
		}
		r.Stop()
		if !errors.Is(err, errNotOurs) || i == 2 {
			tb.Fatal(err)
		}
	}
}

// errNotOurs: another process's server answers on the port.
var errNotOurs = errors.New("another server answers on the port")

// StartRedisTLS starts redis-server listening with TLS only (--port 0,
// --tls-port on a free port) with a certificate of ca for 127.0.0.1;
// clients need no certificate unless extra says "--tls-auth-clients", "yes".
// URL() is then rediss://.
func StartRedisTLS(tb testing.TB, ca *CA, extra ...string) *Redis {
	tb.Helper()
	needRedis(tb)
	srv := ca.Issue(tb, "redis-server")
	probe := ca.Issue(tb, "redis-probe")
	cert, err := tls.LoadX509KeyPair(probe.CertFile, probe.KeyFile)
	if err != nil {
		tb.Fatalf("probe certificate: %v", err)
	}
	port := FreePort(tb)
	args := []string{
		"--port", "0", "--tls-port", strconv.Itoa(port),
		"--tls-cert-file", srv.CertFile, "--tls-key-file", srv.KeyFile, "--tls-ca-cert-file", ca.CertFile,
		"--tls-auth-clients", "optional",
	}
	r := &Redis{Port: port, Dir: tb.TempDir(), Args: append(args, extra...),
		TLS: &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	r.Start(tb)
	tb.Cleanup(r.Stop)
	return r
}

// StartSentinel starts a Redis Sentinel on a free port monitoring master
// under name (quorum 1); confLines are added to its config file (e.g.
// "sentinel auth-pass <name> <pw>", "requirepass <pw>").
func StartSentinel(tb testing.TB, master *Redis, name string, confLines ...string) *Redis {
	tb.Helper()
	needRedis(tb)
	r := &Redis{Dir: tb.TempDir()}
	conf := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\n", name, master.Port)
	for _, l := range confLines {
		conf += l + "\n"
	}
	r.conf = filepath.Join(r.Dir, "sentinel.conf")
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		tb.Fatalf("sentinel config: %v", err)
	}
	r.startFree(tb)
	tb.Cleanup(r.Stop)
	return r
}

// needRedis skips the test if redis-server is not installed and CI is
// unset; under CI it fails.
func needRedis(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal("redis-server not installed: apt-get install -y redis-server")
		}
		tb.Skip("redis-server not installed")
	}
}

// Start (re)starts the server on its port and dir.
func (r *Redis) Start(tb testing.TB) {
	tb.Helper()
	if err := r.start(); err != nil {
		tb.Fatal(err)
	}
}

// start starts the server and waits until it answers; errNotOurs if
// another process's server answers on its port.
func (r *Redis) start() error {
	args := []string{
		"--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--dir", r.Dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--logfile", filepath.Join(r.Dir, "redis.log"),
	}
	if r.conf != "" {
		args = []string{r.conf, "--sentinel", "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
			"--dir", r.Dir, "--logfile", filepath.Join(r.Dir, "sentinel.log")}
	}
	args = append(args, r.Args...)
	r.cmd = exec.Command("redis-server", args...)
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: r.TLS, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Any reply, NOAUTH included, means the server is up; one that
		// tells its process id must be this one.
		var rerr redis.Error
		info, err := c.Info(context.Background(), "server").Result()
		switch {
		case err == nil:
			if !strings.Contains(info, fmt.Sprintf("process_id:%d\r\n", r.cmd.Process.Pid)) {
				return fmt.Errorf("redis-server on %s: %w", r.Addr(), errNotOurs)
			}
			return nil
		case errors.As(err, &rerr):
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("redis-server on %s not ready: %w", r.Addr(), err)
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

// URL is the redis:// (rediss:// with TLS) URL of the server.
func (r *Redis) URL() string {
	if r.TLS != nil {
		return "rediss://" + r.Addr() + "/0"
	}
	return "redis://" + r.Addr() + "/0"
}

// Client returns a client closed at test end.
func (r *Redis) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: r.TLS})
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
