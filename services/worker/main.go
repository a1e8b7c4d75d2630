package worker

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/gcfloor"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/rs/zerolog"
)

// Main is the main function of a worker binary that runs the deployments
// registered in reg, with the stock worker's options — flags, JETSERVE_*
// environment variables and --config file (see docs/options.md) — signals
// (SIGINT/SIGTERM drain the replicas) and exit code. A user's own worker is
//
//	func main() {
//		reg := serve.NewRegistry()
//		if err := reg.Register("quickstart.Greeter", quickstart.NewGreeter); err != nil {
//			panic(err)
//		}
//		worker.Main(reg)
//	}
//
// `mybinary build [APP...] > config.yaml` writes the serve config of the
// applications declared in reg (Build) instead of running a worker.
func Main(reg *serve.Registry) {
	if len(os.Args) > 1 && os.Args[1] == "build" {
		name := filepath.Base(os.Args[0])
		service.Exec(name, func(_ context.Context, args, _ []string, stderr io.Writer) error {
			return Build(reg, name, args[1:], os.Stdout, stderr) // its errors start with "build:"
		})
		return
	}
	service.Exec("worker", Command(reg))
}

// Command returns what Main runs, for a program that handles signals and
// the exit code itself (or a test): it loads the configuration from args
// and environ, validates it and runs the worker until ctx ends.
func Command(reg *serve.Registry) func(ctx context.Context, args, environ []string, stderr io.Writer) error {
	return func(ctx context.Context, args, environ []string, stderr io.Writer) error {
		cfg := DefaultConfig()
		cfg.ChildEnv = environ // what process-runtime children inherit
		return service.Main(ctx, "worker", &cfg, args, environ, stderr, func(ctx context.Context, log zerolog.Logger) error {
			floor, err := config.ParseBytes(cfg.GCMinHeap) // validated
			if err != nil {
				return fmt.Errorf("gc_min_heap: %w", err)
			}
			defer gcfloor.Set(uint64(floor))()
			return Run(ctx, cfg, service.Deps{Log: log}, reg)
		})
	}
}
