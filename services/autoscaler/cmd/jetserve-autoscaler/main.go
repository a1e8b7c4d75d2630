// Command jetserve-autoscaler runs the autoscaler service.
package main

import (
	"context"
	"io"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler"
	"github.com/rs/zerolog"
)

func main() { service.Exec("jetserve-autoscaler", run) }

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	cfg := autoscaler.DefaultConfig()
	return service.Main(ctx, "autoscaler", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return autoscaler.Run(ctx, cfg, service.Deps{Log: log})
	})
}
