// Command jetserve-router runs the router service.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/router"
	"github.com/rs/zerolog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "jetserve-router:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	cfg := router.DefaultConfig()
	return service.Main(ctx, "router", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return router.Run(ctx, cfg, service.Deps{Log: log})
	})
}
