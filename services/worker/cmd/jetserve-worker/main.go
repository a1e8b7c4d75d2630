// Command jetserve-worker runs a jetserve worker with the example
// deployments compiled in.
package main

import (
	"context"
	"fmt"
	"io"

	"github.com/jetserve/jetserve/examples"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/rs/zerolog"
)

func main() { service.Exec("jetserve-worker", run) }

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	reg := serve.NewRegistry()
	if err := examples.Register(reg); err != nil {
		return fmt.Errorf("register deployments: %w", err)
	}
	cfg := worker.DefaultConfig()
	cfg.ChildEnv = environ // what process-runtime children inherit
	return service.Main(ctx, "worker", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return worker.Run(ctx, cfg, service.Deps{Log: log}, reg)
	})
}
