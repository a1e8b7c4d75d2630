// Command jetserve-ingress runs the ingress service.
package main

import (
	"context"
	"io"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/ingress"
	"github.com/rs/zerolog"
)

func main() { service.Exec("jetserve-ingress", run) }

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	cfg := ingress.DefaultConfig()
	return service.Main(ctx, "ingress", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return ingress.Run(ctx, cfg, service.Deps{Log: log})
	})
}
