// Command jetserve is the CLI: it runs the whole fleet in one process
// (dev) and talks to the admin API (deploy, status, delete) and the HTTP
// ingress (call, and the async-job endpoints: jobs).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetserve/jetserve/devfleet"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/worker"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "dev" {
		// dev stops in two stages (drain, then at once on a second Ctrl-C).
		reg, err := exampleRegistry()
		if err != nil {
			fmt.Fprintln(os.Stderr, "jetserve:", err)
			os.Exit(1)
		}
		devfleet.Main(reg, devOptions(os.Args[2:], os.Environ()))
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "jetserve:", err)
		os.Exit(1)
	}
}

const usage = `jetserve — model serving and long-running jobs on NATS JetStream

Usage:
  jetserve dev [flags]              run NATS, the five services, a worker with the
                                    example deployments, and deploy the example app
  jetserve build [APP...] [-o FILE] write the example applications' serve config from
                                    their declarations in code (examples/config.yaml)
  jetserve deploy FILE [--admin URL]  apply a serve config (YAML or JSON); apps absent
                                    from it are deleted
    --merge                         add or replace FILE's applications, keep the others
    --if-absent                     add FILE's applications that do not exist; change nothing else
  jetserve status [--admin URL] [-o table|json]
  jetserve delete APP|--all [--admin URL]
  jetserve call ROUTE [BODY] [--url URL] [-X METHOD] [--stream]
                                    send BODY (or stdin with "-") to the ingress
  jetserve jobs submit|status|result|cancel|list|watch ROUTE/METHOD ...
                                    async jobs (jetserve jobs help for details)
  jetserve workflows start|status|result|history|signal|cancel|list|watch ROUTE/WORKFLOW ...
                                    durable workflows (jetserve workflows help)

  jetserve keys new|hash ...        API keys for the ingress and the admin API
  jetserve version                  the version, VCS revision and Go version (also --version)

The admin URL defaults to $JETSERVE_ADMIN or http://127.0.0.1:8265, the ingress
URL to $JETSERVE_URL or http://127.0.0.1:8000. Keys: $JETSERVE_ADMIN_KEY for the
admin API, $JETSERVE_API_KEY for the ingress (or --admin-key, --api-key).
`

func run(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("a command is required")
	}
	env := envMap(environ)
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, environ, stdout, stderr)
	case "build":
		reg, err := exampleRegistry()
		if err != nil {
			return err
		}
		return worker.Build(reg, "jetserve", rest, stdout, stderr)
	case "deploy":
		return runDeploy(ctx, rest, env, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, env, stdout, stderr)
	case "delete":
		return runDelete(ctx, rest, env, stdout, stderr)
	case "call":
		return runCall(ctx, rest, env, stdin, stdout, stderr)
	case "jobs":
		return runJobs(ctx, rest, env, stdin, stdout, stderr)
	case "workflows":
		return runWorkflows(ctx, rest, env, stdin, stdout, stderr)
	case "keys":
		return runKeys(rest, stdin, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "jetserve", service.Version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func envMap(environ []string) map[string]string {
	m := map[string]string{}
	for _, kv := range environ {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				m[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	return m
}
