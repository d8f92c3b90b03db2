package testutil

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestProc(t *testing.T) {
	// A process that logs, then waits for SIGTERM and exits cleanly.
	p := StartProc(t, "term", "/bin/sh", []string{"-c", `trap 'echo bye; exit 0' TERM; echo "ready $GREETING"; while :; do sleep 0.05; done`}, []string{"GREETING=hi"})
	p.WaitLog(t, "ready hi", 10*time.Second)
	if err := p.Stop(); err != nil || p.Running() {
		t.Fatalf("Stop after SIGTERM: %v, running %v", err, p.Running())
	}
	if !strings.Contains(p.Log(), "bye") {
		t.Errorf("log %q: the process did not see SIGTERM", p.Log())
	}

	// Kill is asked for: Stop reports nothing.
	k := StartProc(t, "kill", "/bin/sh", []string{"-c", "echo up; exec sleep 60"}, nil)
	k.WaitLog(t, "up", 10*time.Second)
	k.Kill()
	if err := k.Stop(); err != nil || k.Running() {
		t.Fatalf("Stop after Kill: %v, running %v", err, k.Running())
	}

	// A process that exits on its own is reported, every time Stop is asked.
	e := StartProc(t, "exit", "/bin/sh", []string{"-c", "echo oops; exit 3"}, nil)
	if err := e.Wait(); err == nil {
		t.Fatal("Wait: no error for exit status 3")
	}
	for range 2 {
		if err := e.Stop(); err == nil || !strings.Contains(err.Error(), "exited by itself") {
			t.Errorf("Stop of a process that exited by itself: %v", err)
		}
	}
	// The environment is clean: nothing of the test's own leaks in.
	t.Setenv("MINUTED_LEAK", "x")
	c := StartProc(t, "env", "/bin/sh", []string{"-c", `echo "leak=[$MINUTED_LEAK]"; exec sleep 60`}, nil)
	c.WaitLog(t, "leak=[]", 10*time.Second)
	c.Kill() // sleep dies of SIGTERM, which Stop would report as unclean
}

// TestRedisOnATakenPort: a redis-server started on a port another one
// holds (taken between FreePort and the bind by a parallel test) is not
// taken for ready: the answering server is someone else's.
func TestRedisOnATakenPort(t *testing.T) {
	other := StartRedis(t)
	r := &Redis{Port: other.Port, Dir: t.TempDir()}
	err := r.start()
	r.Stop()
	if !errors.Is(err, errNotOurs) {
		t.Fatalf("start on the port of another redis-server: %v, want %v", err, errNotOurs)
	}
}
