// Command jetserve-router runs the router service.
package main

import (
	"context"
	"io"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/router"
	"github.com/rs/zerolog"
)

func main() { service.Exec("jetserve-router", run) }

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	cfg := router.DefaultConfig()
	return service.Main(ctx, "router", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return router.Run(ctx, cfg, service.Deps{Log: log})
	})
}
