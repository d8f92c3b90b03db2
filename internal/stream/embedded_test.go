package stream

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/minuted/minuted/internal/call"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/testutil"
)

func TestEmbeddedInProcessPersistsOnDisk(t *testing.T) {
	dir := t.TempDir()
	log, logs := newLogger()
	ctx := testCtx(t, 20*time.Second)
	publishOne := func(wantSeq uint64) {
		t.Helper()
		e, err := StartEmbedded(ctx, EmbeddedOptions{StoreDir: dir, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Shutdown()
		if e.ClientURL() != "" {
			t.Errorf("in-process server reports URL %q", e.ClientURL())
		}
		if e.Server().Addr() != nil {
			t.Errorf("in-process server listens on %v", e.Server().Addr())
		}
		nc, err := e.Connect()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if err := EnsureStreams(ctx, js, testNATSConfig()); err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(ctx, call.Subject("p1", call.Started), []byte("hello"), jetstream.WithMsgID("n/c/started"))
		if err != nil {
			t.Fatal(err)
		}
		if ack.Sequence != wantSeq || ack.Duplicate {
			t.Fatalf("ack %+v, want sequence %d", ack, wantSeq)
		}
	}
	publishOne(1)
	// Restart on the same store: the stream and its message survive, and
	// the same Msg-Id is recognised as a duplicate.
	e, err := StartEmbedded(ctx, EmbeddedOptions{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ack, err := js.Publish(ctx, call.Subject("p1", call.Started), []byte("hello"), jetstream.WithMsgID("n/c/started"))
	if err != nil || !ack.Duplicate || ack.Sequence != 1 {
		t.Fatalf("after restart: ack %+v err %v, want duplicate of seq 1", ack, err)
	}
	nc.Close()
	e.Shutdown()
	if !strings.Contains(logs.String(), "component=nats-server") {
		t.Errorf("server log not routed to slog: %s", logs.String())
	}
}

func TestEmbeddedListens(t *testing.T) {
	port := testutil.FreePort(t)
	e, err := StartEmbedded(testCtx(t, 20*time.Second), EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:" + strconv.Itoa(port)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	if want := "nats://127.0.0.1:" + strconv.Itoa(port); e.ClientURL() != want {
		t.Fatalf("ClientURL %q, want %q", e.ClientURL(), want)
	}
	nc, err := nats.Connect(e.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(testCtx(t, 5*time.Second)); err != nil {
		t.Fatalf("JetStream over TCP: %v", err)
	}
	nc2, err := e.Connect()
	if err != nil || nc2.ConnectedUrl() != e.ClientURL() {
		t.Fatalf("Connect: %v %q", err, nc2.ConnectedUrl())
	}
	nc2.Close()
}

func TestStartEmbeddedErrors(t *testing.T) {
	ctx := testCtx(t, 5*time.Second)
	if _, err := StartEmbedded(ctx, EmbeddedOptions{}); err == nil || !strings.Contains(err.Error(), "store_dir") {
		t.Errorf("no store dir: %v", err)
	}
	if _, err := StartEmbedded(ctx, EmbeddedOptions{StoreDir: t.TempDir(), Listen: "nohostport"}); err == nil || !strings.Contains(err.Error(), "embedded_listen") {
		t.Errorf("bad listen: %v", err)
	}
}

// startAuthNATS runs a server that requires user/password.
func startAuthNATS(t *testing.T, user, pass string) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

func TestConnectAuthAndSeeds(t *testing.T) {
	const pass = "s3cr3t-pa55"
	url := startAuthNATS(t, "minuted", pass)
	dead := "nats://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	log, logs := newLogger()
	cfg := config.NATSConfig{URL: dead + ", " + url, User: "minuted", Password: config.Secret(pass)}
	nc, err := Connect(testCtx(t, 10*time.Second), cfg, "test-client", log)
	if err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() || nc.Opts.Name != "test-client" || nc.Opts.MaxReconnect != -1 {
		t.Fatalf("connected %v name %q max reconnects %d", nc.IsConnected(), nc.Opts.Name, nc.Opts.MaxReconnect)
	}
	nc.Close()

	cfg.Password = "wrong-" + pass
	_, err = Connect(testCtx(t, 10*time.Second), cfg, "test-client", log)
	if err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("wrong password: %v", err)
	}
	if strings.Contains(err.Error(), pass) || strings.Contains(logs.String(), pass) {
		t.Fatalf("password leaked: err=%v logs=%s", err, logs.String())
	}

	cfg.CredsFile = "/nonexistent.creds"
	if _, err := Connect(context.Background(), cfg, "x", nil); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("user and creds: %v", err)
	}
}

func TestConnectRetriesUntilServerUpOrCtx(t *testing.T) {
	n := testutil.StartNATS(t)
	n.Stop()
	log, logs := newLogger()
	cfg := config.NATSConfig{URL: "nats://user:hunter2@127.0.0.1:" + strconv.Itoa(n.Port)}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Connect(ctx, cfg, "c", log)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline error, got %v", err)
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(logs.String(), "hunter2") {
		t.Fatalf("password in URL leaked: %v / %s", err, logs.String())
	}
	// The server comes up while Connect retries.
	done := make(chan error, 1)
	url := n.URL() // read before n.Start below changes n
	go func() {
		nc, err := Connect(testCtx(t, 20*time.Second), config.NATSConfig{URL: url}, "c", log)
		if err == nil {
			nc.Close()
		}
		done <- err
	}()
	testutil.Eventually(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "attempt=2") }, "no retry logged")
	n.Start(t)
	if err := <-done; err != nil {
		t.Fatalf("Connect after server start: %v", err)
	}
}

func TestRedactURLs(t *testing.T) {
	got := RedactURLs("nats://u:p@h1:4222, nats://tok@h2:4222,nats://h3:4222")
	if strings.Contains(got, "p@") || strings.Contains(got, "tok") || !strings.Contains(got, "h3:4222") {
		t.Fatalf("RedactURLs = %q", got)
	}
}
