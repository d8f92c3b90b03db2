// Package stream is everything minuted does with NATS: the embedded
// server, client connections, the JetStream streams and consumers, the
// ordered never-losing publisher ingest uses, and dead letters.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedOptions configure the in-process NATS server `minuted run` starts
// when no NATS URL is configured.
type EmbeddedOptions struct {
	// StoreDir is where JetStream keeps its files (required).
	StoreDir string
	// Listen is host:port for other processes to connect; "" means no
	// port at all: clients of this process connect in-process.
	Listen string
	// User and Password, when set with Listen, are required of every
	// client (Connect passes them itself).
	User     string
	Password string
	// Logger receives the server's notices, warnings and errors (nil: discard).
	Logger *slog.Logger
}

// Embedded is a running in-process NATS server with JetStream on disk.
type Embedded struct {
	srv      *server.Server
	inProc   bool
	auth     []nats.Option
	shutdown func()
}

// defaultStartTimeout bounds start-up when ctx has no deadline.
const defaultStartTimeout = 30 * time.Second

// StartEmbedded starts a NATS server with JetStream storing in o.StoreDir and
// waits until it accepts connections and JetStream is enabled. ctx bounds the
// start only; call Shutdown to stop the server.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Embedded, error) {
	if o.StoreDir == "" {
		return nil, errors.New("embedded NATS: nats.store_dir must be set (JetStream stores on disk)")
	}
	opts := &server.Options{
		ServerName: "minuted",
		JetStream:  true,
		StoreDir:   o.StoreDir,
		NoSigs:     true,
		NoLog:      o.Logger == nil,
	}
	if o.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: nats.embedded_listen %q must be host:port: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("embedded NATS: nats.embedded_listen %q has a bad port", o.Listen)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		if o.User != "" {
			opts.Users = []*server.User{{Username: o.User, Password: o.Password}}
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(slogAdapter{o.Logger.With("component", "nats-server")}, false, false, false)
	}
	go srv.Start()

	wait := defaultStartTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	stop := func() { srv.Shutdown(); srv.WaitForShutdown() }
	if !srv.ReadyForConnections(wait) {
		stop()
		return nil, fmt.Errorf("embedded NATS: not ready for connections within %v (store %s)", wait.Round(time.Millisecond), o.StoreDir)
	}
	for !srv.JetStreamEnabled() {
		select {
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("embedded NATS: JetStream not enabled (store %s): %w", o.StoreDir, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	e := &Embedded{srv: srv, inProc: opts.DontListen, shutdown: stop}
	if len(opts.Users) > 0 {
		e.auth = []nats.Option{nats.UserInfo(o.User, o.Password)}
	}
	return e, nil
}

// Connect opens a client connection to the embedded server: in-process when
// it has no port, otherwise to its URL. It reconnects forever (the server
// only goes away with the process).
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	base := append([]nats.Option{nats.Name("minuted"), nats.MaxReconnects(-1)}, e.auth...)
	url := e.srv.ClientURL()
	if e.inProc {
		base = append(base, nats.InProcessServer(e.srv))
		url = ""
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return nc, nil
}

// ClientURL is the nats:// URL other processes can use, or "" when the
// server listens on no port.
func (e *Embedded) ClientURL() string {
	if e.inProc {
		return ""
	}
	return e.srv.ClientURL()
}

// Server gives access to the underlying server (tests, health checks).
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it has stopped.
func (e *Embedded) Shutdown() { e.shutdown() }

// slogAdapter feeds nats-server's logger interface into slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a slogAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
