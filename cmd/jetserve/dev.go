package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/jetserve/jetserve/examples"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler"
	"github.com/jetserve/jetserve/services/ingress"
	"github.com/jetserve/jetserve/services/router"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/jetserve/jetserve/services/worker"
	"golang.org/x/sync/errgroup"
)

// devOptions are jetserve dev's flags.
type devOptions struct {
	dataDir    string
	natsPort   int
	natsHTTP   int
	httpAddr   string
	adminAddr  string
	config     string
	logFormat  string
	logLevel   string
	opsEnabled bool
}

func runDev(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	var o devOptions
	fs := flags("dev", stderr)
	fs.StringVar(&o.dataDir, "data-dir", ".data", "where the embedded NATS keeps JetStream data")
	fs.IntVar(&o.natsPort, "nats-port", 4222, "NATS client port (-1: any free port)")
	fs.IntVar(&o.natsHTTP, "nats-http-port", 8222, "NATS monitoring port (0: off)")
	fs.StringVar(&o.httpAddr, "http-addr", ":8000", "HTTP ingress address")
	fs.StringVar(&o.adminAddr, "admin-addr", ":8265", "admin API address")
	fs.StringVar(&o.config, "config", "examples/config.yaml", "serve config to deploy once up (\"\" deploys nothing)")
	fs.StringVar(&o.logFormat, "log-format", "console", "json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "trace, debug, info, warn, error")
	fs.BoolVar(&o.opsEnabled, "ops", true, "serve each service's /metrics and /healthz on ports 9100-9104")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, service.ErrHelp) {
			return nil
		}
		return err
	}
	var deployBody []byte
	if o.config != "" {
		b, err := os.ReadFile(o.config)
		if err != nil {
			return fmt.Errorf("read %s: %w (run from the repository root, or pass --config)", o.config, err)
		}
		deployBody = b
	}
	dir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	ns, err := natsembed.Start(natsembed.Options{Port: o.natsPort, HTTPPort: o.natsHTTP, StoreDir: dir})
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	url := ns.ClientURL()
	common := []string{"--nats.url", url, "--log.format", o.logFormat, "--log.level", o.logLevel}
	ops := func(addr string) []string {
		if !o.opsEnabled {
			addr = ""
		}
		return []string{"--ops_addr", addr}
	}
	load := func(cfg service.Configurable, name string, extra ...string) error {
		a := append(append([]string{}, common...), extra...)
		if err := service.Load(cfg, name, a, nil, stderr); err != nil {
			return fmt.Errorf("%s config: %w", name, err)
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("%s config: %w", name, err)
		}
		return nil
	}
	icfg, rcfg, wcfg, scfg, acfg := ingress.DefaultConfig(), router.DefaultConfig(), worker.DefaultConfig(), scheduler.DefaultConfig(), autoscaler.DefaultConfig()
	for _, step := range []error{
		load(&icfg, "ingress", append(ops(":9100"), "--http_addr", o.httpAddr)...),
		load(&rcfg, "router", ops(":9101")...),
		load(&wcfg, "worker", ops(":9102")...),
		load(&scfg, "scheduler", append(ops(":9103"), "--admin_addr", o.adminAddr)...),
		load(&acfg, "autoscaler", ops(":9104")...),
	} {
		if step != nil {
			return step
		}
	}
	wcfg.ChildEnv = environ // what process-runtime children inherit
	reg := serve.NewRegistry()
	if err := examples.Register(reg); err != nil {
		return fmt.Errorf("register example deployments: %w", err)
	}
	logFor := func(name string) service.Deps {
		return service.Deps{Log: service.NewLogger(service.LogConfig{Level: o.logLevel, Format: o.logFormat}, stderr, name)}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return scheduler.Run(gctx, scfg, logFor("scheduler")) })
	g.Go(func() error { return router.Run(gctx, rcfg, logFor("router")) })
	g.Go(func() error { return worker.Run(gctx, wcfg, logFor("worker"), reg) })
	g.Go(func() error { return ingress.Run(gctx, icfg, logFor("ingress")) })
	g.Go(func() error { return autoscaler.Run(gctx, acfg, logFor("autoscaler")) })
	g.Go(func() error {
		admin := "http://" + localAddr(o.adminAddr)
		if err := waitHTTP(gctx, admin+"/api/serve/applications"); err != nil {
			return err
		}
		if deployBody != nil {
			if _, err := do(gctx, http.MethodPut, admin+"/api/serve/applications", deployBody, "application/yaml"); err != nil {
				return fmt.Errorf("deploy %s: %w", o.config, err)
			}
		}
		ingressURL := "http://" + localAddr(o.httpAddr)
		fmt.Fprintf(stdout, `
jetserve dev is up.
  HTTP ingress   %s        (routes: %s/-/routes)
  admin API      %s        (jetserve status)
  NATS           %s         (go tool nats --server %s stream ls)
  data           %s

Try:
  curl -s -X POST %s/text/analyze -d '{"text":"The new phone is wonderful, fast and the battery lasts for days."}'
  go run ./cmd/jetserve status

Ctrl-C stops everything (graceful drain).
`, ingressURL, ingressURL, admin, url, url, dir, ingressURL)
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// localAddr turns ":8000" into "127.0.0.1:8000".
func localAddr(addr string) string {
	if len(addr) > 0 && addr[0] == ':' {
		return "127.0.0.1" + addr
	}
	return addr
}

func waitHTTP(ctx context.Context, url string) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s did not answer within 30s", url)
		case <-t.C:
		}
	}
}
