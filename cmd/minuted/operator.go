package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/minuted/minuted/internal/cli"
)

// operatorCommand returns the operator command name of internal/cli as an
// entry of the command table. It takes the connection flags (-api,
// -token-file, -config, -timeout) out of the command line, builds the admin
// API client from them and the environment, and maps a bad command line to
// exit code 2.
func operatorCommand(name string) func(ctx context.Context, args []string, log *slog.Logger) error {
	run := map[string]cli.Command{
		"projects": cli.Projects, "project": cli.Project, "topup": cli.TopUp, "balance": cli.Balance,
		"calls": cli.Calls, "ledger": cli.Ledger, "cdrs": cli.CDRs, "alerts": cli.Alerts,
		"audit": cli.Audit,
	}[name]
	return func(ctx context.Context, args []string, _ *slog.Logger) error {
		if run == nil {
			return fmt.Errorf("operator command %q is not implemented", name)
		}
		conn, rest, err := cli.SplitConnFlags(args)
		if err == nil {
			var c *cli.Client
			if c, err = cli.Connect(conn, os.Getenv); err == nil {
				err = run(ctx, c, rest, os.Stdout)
			}
		}
		var ue *cli.UsageError
		if errors.As(err, &ue) {
			return usageError{err}
		}
		return err
	}
}
