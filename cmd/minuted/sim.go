package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/minuted/minuted/internal/sim"
)

// runSim runs the ARI double: a fake Asterisk that replays recorded traces or
// plays synthetic calls, then keeps serving until ctx ends.
func runSim(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("sim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8088", "address the fake ARI listens on")
	user := fs.String("user", envOr("ARI_USERNAME", "minuted"), "ARI user (ARI_USERNAME)")
	password := fs.String("password", envOr("MINUTED_SIM_PASSWORD", os.Getenv("ARI_PASSWORD")), "ARI password (MINUTED_SIM_PASSWORD or ARI_PASSWORD)")
	node := fs.String("node", sim.DefaultAsteriskID, "asterisk_id (entity id) of the fake Asterisk")
	appCheck := fs.String("app-check", "", "wait for a websocket of this ARI application before sending (default: any)")
	writeTimeout := fs.Duration("write-timeout", 100*time.Millisecond, "close a socket whose write stalls longer (ari.conf websocket_write_timeout)")
	speed := fs.Float64("speed", 1, "replay speed: 0 as fast as possible, 1 real time, N N times faster")
	calls := fs.Int("calls", 0, "synthetic calls to generate (0: none)")
	rate := fs.Float64("rate", 10, "new synthetic calls per second (0: as fast as -concurrency allows)")
	concurrency := fs.Int("concurrency", 100, "most synthetic calls up at once")
	projects := fs.String("projects", "proj-a", "comma-separated projects of synthetic calls")
	duration := fs.String("duration", "5s..60s", "talk time range min..max of synthetic calls")
	shapes := fs.String("shapes", "answered=6,two_leg=2,unanswered=1,busy=1,congestion=1", "weights of call shapes")
	attribute := fs.String("attribute-by", sim.AttributeVariable, "variable, accountcode or mixed")
	virtual := fs.Bool("virtual-time", false, "send synthetic calls as fast as possible with virtual timestamps")
	seed := fs.Uint64("seed", 1, "random seed of synthetic calls")
	dropEvery := fs.Duration("drop-every", 0, "crash the fake Asterisk (kill -9: sockets drop, channels vanish) this often (0: never)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	replays := fs.Args()
	if *password == "" {
		return usageError{errors.New("sim needs -password (or MINUTED_SIM_PASSWORD)")}
	}
	minTalk, maxTalk, err := parseRange(*duration)
	if err != nil {
		return usageError{err}
	}
	weights, err := parseShapes(*shapes)
	if err != nil {
		return usageError{err}
	}
	srv, err := sim.Start(ctx, sim.Options{Addr: *listen, Username: *user, Password: *password,
		AsteriskID: *node, WriteTimeout: *writeTimeout, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	log.Info("fake ARI listening", "url", srv.URL(), "node", *node)
	if *dropEvery > 0 {
		go func() {
			t := time.NewTicker(*dropEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					srv.Crash()
					log.Info("fake Asterisk crashed (sockets dropped, channels forgotten)")
				}
			}
		}()
	}
	if *appCheck != "" {
		if err := srv.WaitApp(ctx, *appCheck); err != nil {
			return err
		}
	}
	for _, path := range replays {
		drops, err := sim.ParseConnectionsFile(strings.TrimSuffix(path, ".jsonl") + ".connections.txt")
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		res, err := srv.ReplayFile(ctx, path, sim.ReplayOptions{Speed: *speed, DropAfter: drops})
		if err != nil {
			return fmt.Errorf("replay %s: %w", path, err)
		}
		log.Info("trace replayed", "file", path, "sent", res.Sent, "skipped", res.Skipped, "drops", len(drops))
	}
	if *calls > 0 {
		res, err := srv.Generate(ctx, sim.GenOptions{Calls: *calls, Rate: *rate, Concurrency: *concurrency, Seed: *seed,
			Shapes: weights, Projects: strings.Split(*projects, ","), MinTalk: minTalk, MaxTalk: maxTalk,
			AttributeBy: *attribute, VirtualTime: *virtual})
		if err != nil {
			return err
		}
		var talk int64
		for _, c := range res.Calls {
			talk += c.TalkMS
		}
		log.Info("synthetic calls done", "calls", len(res.Calls), "events", res.Events, "elapsed", res.Elapsed,
			"events_per_s", float64(res.Events)/res.Elapsed.Seconds(), "talk_ms", talk)
	}
	<-ctx.Done()
	st := srv.Stats()
	log.Info("fake ARI stopping", "emitted", st.Emitted, "delivered", st.Delivered, "lost", st.Lost,
		"connections", st.Connections, "stalled_closed", st.StalledClosed)
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// parseRange reads "min..max" durations (or one duration for both).
func parseRange(s string) (time.Duration, time.Duration, error) {
	lo, hi, ok := strings.Cut(s, "..")
	if !ok {
		hi = lo
	}
	a, err := time.ParseDuration(strings.TrimSpace(lo))
	if err != nil {
		return 0, 0, fmt.Errorf("-duration %q: %w", s, err)
	}
	b, err := time.ParseDuration(strings.TrimSpace(hi))
	if err != nil {
		return 0, 0, fmt.Errorf("-duration %q: %w", s, err)
	}
	if a <= 0 || b < a {
		return 0, 0, fmt.Errorf("-duration %q: want 0 < min <= max", s)
	}
	return a, b, nil
}

// parseShapes reads "answered=6,busy=1".
func parseShapes(s string) (map[sim.Shape]float64, error) {
	out := map[sim.Shape]float64{}
	for _, part := range strings.Split(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			w = "1"
		}
		sh, err := sim.ParseShape(name)
		if err != nil {
			return nil, fmt.Errorf("-shapes: %w", err)
		}
		x, err := strconv.ParseFloat(w, 64)
		if err != nil || x < 0 {
			return nil, fmt.Errorf("-shapes: weight %q of %s is not a non-negative number", w, name)
		}
		out[sh] = x
	}
	return out, nil
}
