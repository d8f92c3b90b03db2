package loadtest

import (
	"context"
	"log/slog"
	"testing"

	"github.com/minuted/minuted/internal/testutil"
)

// TestPortTakenByAnotherServer: FreePort's port can be taken before the
// stack's nats-server binds it (tests run in parallel). Spawned on a port
// another NATS server holds, ours exits or the other answers: either way
// the start is reported as a taken port (so onFreePort tries another),
// never as ready.
func TestPortTakenByAnotherServer(t *testing.T) {
	needEngines(t)
	other := testutil.StartNATS(t)
	s := &Stack{dir: t.TempDir(), log: slog.New(slog.DiscardHandler)}
	calls := 0
	err := s.onFreePort("nats-server", func(port int) error {
		calls++
		if calls == 1 {
			port = other.Port // as if another test had bound it first
		}
		return s.startNATSOn(context.Background(), "", port)
	})
	if err != nil {
		t.Fatalf("the second port should have worked: %v", err)
	}
	if calls != 2 {
		t.Fatalf("start ran %d times, want 2 (the taken port, then a free one)", calls)
	}
	if s.NATSURL == other.URL() || s.NC.ConnectedServerName() == other.Server.Name() {
		t.Fatalf("the stack uses the other server (%s)", s.NATSURL)
	}
	if !s.NATS.Alive() {
		t.Fatal("the stack's nats-server is not running")
	}
	s.NC.Close()
	if err := s.NATS.stop(5e9); err != nil {
		t.Error(err)
	}
}
