package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/sim"
	"github.com/minuted/minuted/internal/tariff"
)

// demo is `minuted run -demo`: the ARI double in-process, generating
// synthetic calls in real time for three demo projects, so a newcomer sees
// balances fall within a minute without an Asterisk.
type demo struct {
	srv *sim.Server
	log *slog.Logger
}

// demoProjects: one per tariff shape, so the effect of each is visible.
var demoProjects = []struct {
	id string
	t  tariff.Tariff
}{
	{"demo-a", tariff.Tariff{MinimumSeconds: 1, IncrementSeconds: 1}},
	{"demo-b", tariff.Tariff{MinimumSeconds: 30, IncrementSeconds: 6}},
	{"demo-c", tariff.Tariff{MinimumSeconds: 60, IncrementSeconds: 60, FreeSeconds: 5}},
}

func startDemo(ctx context.Context, cfg *config.Config, log *slog.Logger) (*demo, error) {
	var pw [12]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	password := hex.EncodeToString(pw[:])
	srv, err := sim.Start(ctx, sim.Options{Username: "demo", Password: password, WriteTimeout: time.Second,
		Logger: log.With("component", "ari-double")})
	if err != nil {
		return nil, fmt.Errorf("demo: start the ARI double: %w", err)
	}
	cfg.ARI.URL = srv.URL()
	cfg.ARI.WSURL = ""
	cfg.ARI.Username = "demo"
	cfg.ARI.Password = config.Secret(password)
	log.Info("demo mode: ingest watches the built-in ARI double instead of an Asterisk", "ari", srv.URL())
	return &demo{srv: srv, log: log}, nil
}

func (d *demo) run(ctx context.Context, a *App) error {
	if a.led == nil {
		return errors.New("demo needs the bill role and Redis")
	}
	for _, p := range demoProjects {
		s := a.settings()
		s.Tariff = p.t
		if _, err := a.led.Ensure(ctx, p.id, s); err != nil {
			return fmt.Errorf("demo: create project %s (is Redis running?): %w", p.id, err)
		}
		if _, err := a.led.TopUp(ctx, p.id, 30*60, "demo-initial-topup", "topup"); err != nil {
			return fmt.Errorf("demo: top up %s: %w", p.id, err)
		}
	}
	d.log.Info("demo mode: projects demo-a (1/1), demo-b (30/6), demo-c (60/60, 5 s free) have 30 minutes each; calls start now",
		"try", "minuted projects   or   curl -H 'Authorization: Bearer $MINUTED_ADMIN_TOKEN' "+a.HTTPAddr()+"/v1/projects")
	for seed := uint64(time.Now().UnixNano()); ctx.Err() == nil; seed++ {
		_, err := d.srv.Generate(ctx, sim.GenOptions{
			Calls: 500, Rate: 0.5, Concurrency: 12, Seed: seed,
			Shapes:   map[sim.Shape]float64{sim.ShapeAnswered: 6, sim.ShapeTwoLeg: 2, sim.ShapeUnanswered: 1, sim.ShapeBusy: 1},
			Projects: []string{"demo-a", "demo-b", "demo-c"}, MinTalk: 10 * time.Second, MaxTalk: 90 * time.Second,
			AttributeBy: sim.AttributeMixed,
		})
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("demo: synthetic calls: %w", err)
		}
	}
	return nil
}

func (d *demo) close() { _ = d.srv.Close() }
