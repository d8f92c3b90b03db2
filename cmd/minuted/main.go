// Command minuted is the real-time minute billing daemon for Asterisk.
// One binary, several roles: `minuted run` runs them all in one process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand: its own flags, its own run function.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, log *slog.Logger) error
}

// usageError is a bad command line: exit code 2.
type usageError struct{ error }

func commands() map[string]command {
	return map[string]command{
		"run":    {"run every role in one process (embedded NATS unless nats.url is set)", roleCommand("run")},
		"ingest": {"watch one Asterisk over ARI and publish its calls to NATS", roleCommand("ingest")},
		"bill":   {"bill calls from NATS into Redis in real time", roleCommand("bill")},
		"notify": {"deliver alerts to the configured sinks", roleCommand("notify")},
		"api":    {"serve the admin HTTP API, /metrics, /healthz, /readyz", roleCommand("api")},
		"sim":    {"run the ARI test double: a fake Asterisk replaying traces or synthetic calls", runSim},
		"load":   {"load tool: synthetic calls at a set rate; -report runs the whole benchmark", runLoad},
		"config": {"config check: validate the configuration and exit", runConfig},

		"projects": {"list projects with balance, tariff and policy (admin API)", operatorCommand("projects")},
		"project":  {"project show ID | project set ID [flags]: tariff, thresholds, credit limit, policy", operatorCommand("project")},
		"topup":    {"topup ID (-minutes X | -seconds N) -ref REF: add talk time, once per reference", operatorCommand("topup")},
		"balance":  {"balance ID: a project's balance in minutes", operatorCommand("balance")},
		"calls":    {"calls ID: live calls with their running talk time", operatorCommand("calls")},
		"ledger":   {"ledger ID [-n 50]: the latest debits, refunds, top-ups and adjustments", operatorCommand("ledger")},
		"cdrs":     {"cdrs ID [-n 50]: the latest call records", operatorCommand("cdrs")},
		"alerts":   {"alerts [-project ID] [-n 50]: the latest alerts", operatorCommand("alerts")},
		"audit":    {"audit ID: check the project's ledger against its balance (exit 1 on a problem)", operatorCommand("audit")},
	}
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	level := new(slog.LevelVar)
	if os.Getenv("MINUTED_DEBUG") != "" {
		level.Set(slog.LevelDebug)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout, cmds)
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "minuted: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := c.run(ctx, args[1:], log.With("cmd", args[0]))
	switch {
	case err == nil, errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "minuted %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "minuted %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "minuted: real-time minute billing for Asterisk call centres")
	fmt.Fprintln(w, "\nusage: minuted <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nconfiguration: -config FILE or MINUTED_CONFIG; see configs/minuted.yaml")
}
