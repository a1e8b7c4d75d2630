// Command jetserve-scheduler runs the jetserve scheduler (controller and
// admin API).
package main

import (
	"context"
	"io"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/rs/zerolog"
)

func main() { service.Exec("jetserve-scheduler", run) }

func run(ctx context.Context, args, environ []string, stderr io.Writer) error {
	cfg := scheduler.DefaultConfig()
	return service.Main(ctx, "scheduler", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return scheduler.Run(ctx, cfg, service.Deps{Log: log})
	})
}
