package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/minuted/minuted/internal/app"
	"github.com/minuted/minuted/internal/config"
	"github.com/minuted/minuted/internal/stream"
)

// loadConfig reads -config (or MINUTED_CONFIG) with environment overrides.
func loadConfig(fs *flag.FlagSet, args []string) (config.Config, error) {
	path := fs.String("config", os.Getenv("MINUTED_CONFIG"), "YAML configuration file (MINUTED_CONFIG)")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return config.Config{}, usageError{fmt.Errorf("unexpected arguments %v", fs.Args())}
	}
	return config.Load(*path, os.Getenv)
}

// roleCommand runs one role, or all of them for "run".
func roleCommand(role string) func(ctx context.Context, args []string, log *slog.Logger) error {
	return func(ctx context.Context, args []string, log *slog.Logger) error {
		fs := flag.NewFlagSet(role, flag.ContinueOnError)
		demo := false
		if role == "run" {
			fs.BoolVar(&demo, "demo", false, "also start the ARI double with synthetic calls and demo projects, and point ingest at it")
		}
		cfg, err := loadConfig(fs, args)
		if err != nil {
			return err
		}
		roles := []string{role}
		if role == "run" {
			roles = app.AllRoles
		}
		return app.Run(ctx, app.Options{Config: cfg, Roles: roles, Logger: log, Demo: demo})
	}
}

// runConfig implements `minuted config check`: exit 0 when valid, 1 with
// every problem listed when not, 2 on a bad command line.
func runConfig(ctx context.Context, args []string, log *slog.Logger) error {
	if len(args) == 0 || args[0] != "check" {
		return usageError{errors.New("usage: minuted config check [-config FILE]")}
	}
	fs := flag.NewFlagSet("config check", flag.ContinueOnError)
	cfg, err := loadConfig(fs, args[1:])
	if err != nil {
		return fmt.Errorf("configuration is invalid:\n%w", err)
	}
	nats := "embedded server"
	if cfg.NATS.URL != "" {
		nats = stream.RedactURLs(cfg.NATS.URL)
	}
	fmt.Printf("configuration is valid: ARI %s (app %s), NATS %s, Redis %s, API %s\n",
		cfg.ARI.URL, cfg.ARI.Application, nats, config.RedactURL(cfg.Redis.URL), cfg.HTTP.Addr)
	return nil
}
