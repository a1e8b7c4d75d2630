package worker

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/spf13/pflag"
)

// BuildUsage describes the build subcommand.
const BuildUsage = `Usage: %s build [APP...] [-o FILE]

Writes the serve config of the applications declared in code
(serve.Registry.DeclareApp) — all of them, or those named — as YAML:
each deployment's code defaults (replicas, limits, resources,
user_config, autoscaling, async methods) and edges (uses). Operators edit
it and apply it without a rebuild: jetserve deploy FILE.
`

// Build is the build subcommand (Main runs it for "build"): it writes
// reg's declared applications as serve-config YAML to stdout, or to the
// file -o names.
func Build(reg *serve.Registry, name string, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet(name+" build", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.StringP("output", "o", "", "write to FILE instead of stdout")
	fs.Usage = func() {
		fmt.Fprintf(stderr, BuildUsage, name)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	y, err := reg.BuildYAML(fs.Args()...)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = stdout.Write(y)
		return err
	}
	if err := os.WriteFile(*out, y, 0o644); err != nil {
		return fmt.Errorf("build: %w", err)
	}
	return nil
}
