// Command jetserve-scheduler runs the jetserve scheduler (controller and
// admin API).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/rs/zerolog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Environ(), os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jetserve-scheduler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	cfg := scheduler.DefaultConfig()
	return service.Main(ctx, "scheduler", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return scheduler.Run(ctx, cfg, service.Deps{Log: log})
	})
}
