// Package devfleet runs a whole jetserve fleet in one process, for the
// development loop: an embedded NATS JetStream server, the five services
// (scheduler, router, worker, ingress, autoscaler), each with its own NATS
// connection exactly as they run apart, a worker with the deployments of a
// serve.Registry compiled in, and a serve config deployed once it is up.
//
// `jetserve dev` is Main with the example deployments. A user's own
// deployments get the same loop from a main of their own:
//
//	func main() {
//		reg := serve.NewRegistry()
//		_ = reg.Register("quickstart.Greeter", quickstart.NewGreeter)
//		devfleet.Main(reg, devfleet.Options{Config: "config.yaml"})
//	}
//
// Run owns every goroutine it starts and returns when ctx ends and every
// service has drained.
package devfleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler"
	"github.com/jetserve/jetserve/services/ingress"
	"github.com/jetserve/jetserve/services/router"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
)

// Options say what a dev fleet serves.
type Options struct {
	// Name is the command shown in usage and messages (default "jetserve dev").
	Name string
	// Config is the default of --config: the serve config deployed once the
	// fleet is up ("" deploys nothing unless --config is given).
	Config string
	// Try lists example commands printed once the fleet is up; "{ingress}"
	// is replaced by the ingress's base URL.
	Try []string
	// Args are Main's command-line arguments; nil means os.Args[1:].
	Args []string
	// Environ is what process-runtime children inherit (Main: the
	// process's environment).
	Environ []string
}

// Main is the main function of a dev-fleet binary: it runs Run with the
// process's arguments, stops gracefully on the first SIGINT or SIGTERM
// (saying how long draining may take) and at once on the second, and exits
// 0 after a stop asked for by a signal, 1 after an error.
func Main(reg *serve.Registry, o Options) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	drain := make(chan time.Duration, 1)
	go func() {
		s := <-sigs
		d := 30 * time.Second
		select {
		case d = <-drain:
		default:
		}
		fmt.Fprintf(os.Stderr, "\n%v: draining — requests and jobs in flight get up to %s to finish; press Ctrl-C again to stop at once\n", s, d)
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "second signal: stopping at once (jobs in flight resume from their last checkpoint on the next start)")
		os.Exit(0)
	}()
	args := o.Args
	if args == nil {
		args = os.Args[1:]
	}
	if o.Environ == nil {
		o.Environ = os.Environ()
	}
	err := run(ctx, reg, o, args, os.Stdout, os.Stderr, drain)
	signal.Stop(sigs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", o.name(), err)
		os.Exit(1)
	}
}

func (o Options) name() string {
	if o.Name == "" {
		return "jetserve dev"
	}
	return o.Name
}

// Run runs the dev fleet with the command-line args (flags below) until ctx
// ends. It returns nil after a stop by ctx, once every service drained.
//
//	--data-dir DIR        JetStream data (default .data)
//	--nats-port N         NATS client port (default 4222; -1: any free port)
//	--nats-http-port N    NATS monitoring port (default 8222; 0: off)
//	--http-addr ADDR      HTTP ingress (default 127.0.0.1:8000)
//	--admin-addr ADDR     admin API (default 127.0.0.1:8265)
//	--open                let those two bind beyond loopback with no auth
//	--config FILE         serve config to deploy once up (default Options.Config)
//	--log-format F        console or json (default console)
//	--log-level L         trace, debug, info, warn, error (default info)
//	--ops                 serve each service's /metrics and /healthz on 127.0.0.1:9100-9104 (default true)
func Run(ctx context.Context, reg *serve.Registry, o Options, args []string, stdout, stderr io.Writer) error {
	return run(ctx, reg, o, args, stdout, stderr, nil)
}

// flags are the dev fleet's command-line options.
type flags struct {
	dataDir    string
	natsPort   int
	natsHTTP   int
	httpAddr   string
	adminAddr  string
	open       bool
	config     string
	logFormat  string
	logLevel   string
	opsEnabled bool
}

func run(ctx context.Context, reg *serve.Registry, o Options, args []string, stdout, stderr io.Writer, drain chan<- time.Duration) error {
	if reg == nil {
		return errors.New("a serve.Registry is required")
	}
	var f flags
	fs := pflag.NewFlagSet(o.name(), pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.dataDir, "data-dir", ".data", "where the embedded NATS keeps JetStream data")
	fs.IntVar(&f.natsPort, "nats-port", 4222, "NATS client port (-1: any free port)")
	fs.IntVar(&f.natsHTTP, "nats-http-port", 8222, "NATS monitoring port (0: off)")
	fs.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:8000", "HTTP ingress address (loopback: the dev fleet has no auth)")
	fs.StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:8265", "admin API address (loopback: the dev fleet has no auth)")
	fs.BoolVar(&f.open, "open", false, "let --http-addr/--admin-addr bind beyond loopback with no auth: anyone who reaches them may use all of it")
	fs.StringVar(&f.config, "config", o.Config, "serve config to deploy once up (\"\" deploys nothing)")
	fs.StringVar(&f.logFormat, "log-format", "console", "json or console")
	fs.StringVar(&f.logLevel, "log-level", "info", "trace, debug, info, warn, error")
	fs.BoolVar(&f.opsEnabled, "ops", true, "serve each service's /metrics and /healthz on 127.0.0.1:9100-9104")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (see --help)", fs.Args())
	}
	var deployBody []byte
	grace := config.DefaultGracefulShutdownTimeout.D()
	if f.config != "" {
		b, err := os.ReadFile(f.config)
		if err != nil {
			return fmt.Errorf("read %s: %w (run from the directory that holds it, or pass --config)", f.config, err)
		}
		sc, err := config.Parse(b)
		if err != nil {
			return fmt.Errorf("%s: %w", f.config, err)
		}
		deployBody = b
		for _, a := range sc.Applications {
			for _, d := range a.Deployments {
				grace = max(grace, d.GracefulShutdownTimeout.D())
			}
		}
	}
	dir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	unlock, err := lockDataDir(dir)
	if err != nil {
		return err
	}
	defer unlock()
	cfgs, err := serviceConfigs(f, stderr)
	if err != nil {
		return err
	}
	cfgs.worker.ChildEnv = o.Environ // what process-runtime children inherit
	if drain != nil {
		drain <- max(grace, cfgs.ingress.DrainTimeout)
	}
	ns, err := natsembed.Start(natsembed.Options{Port: f.natsPort, HTTPPort: f.natsHTTP, StoreDir: dir})
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	url := ns.ClientURL()
	// The addresses the ingress and the admin API bound (port 0 picks
	// one): what the URLs printed below say.
	httpBound, adminBound := make(chan net.Addr, 1), make(chan net.Addr, 1)
	cfgs.ingress.HTTPReady = func(a net.Addr) { httpBound <- a }
	cfgs.scheduler.AdminReady = func(a net.Addr) { adminBound <- a }
	deps := func(name string) service.Deps {
		return service.Deps{Log: service.NewLogger(service.LogConfig{Level: f.logLevel, Format: f.logFormat}, stderr, name)}
	}
	cfgs.setNATS(url)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return scheduler.Run(gctx, cfgs.scheduler, deps("scheduler")) })
	g.Go(func() error { return router.Run(gctx, cfgs.router, deps("router")) })
	g.Go(func() error { return worker.Run(gctx, cfgs.worker, deps("worker"), reg) })
	g.Go(func() error { return ingress.Run(gctx, cfgs.ingress, deps("ingress")) })
	g.Go(func() error { return autoscaler.Run(gctx, cfgs.autoscaler, deps("autoscaler")) })
	g.Go(func() error {
		var admin, ingressURL string
		for _, b := range []struct {
			ch  <-chan net.Addr
			url *string
		}{{adminBound, &admin}, {httpBound, &ingressURL}} {
			select {
			case a := <-b.ch:
				*b.url = "http://" + localAddr(a)
			case <-gctx.Done():
				return nil
			}
		}
		if err := waitHTTP(gctx, admin+"/api/serve/applications"); err != nil {
			return err
		}
		if deployBody != nil {
			if err := put(gctx, admin+"/api/serve/applications", deployBody); err != nil {
				return fmt.Errorf("deploy %s: %w", f.config, err)
			}
		}
		var try strings.Builder
		for _, t := range o.Try {
			fmt.Fprintf(&try, "  %s\n", strings.ReplaceAll(t, "{ingress}", ingressURL))
		}
		if try.Len() > 0 {
			try.WriteString("\n")
		}
		cli := cliExports(ingressURL, admin, url)
		deployed := "nothing deployed (pass --config FILE)"
		if deployBody != nil {
			deployed = "deployed " + f.config
		}
		fmt.Fprintf(stdout, `
%s is up: %s.
  %s
  HTTP ingress   %s        (routes: %s/-/routes)
  admin API      %s        (status: %s/api/serve/applications)
  dashboard      %s/dashboard/
  NATS           %s         (go tool nats --server %s stream ls)
  data           %s
%s
%sCtrl-C drains and stops everything; a second Ctrl-C stops at once.
`, o.name(), deployed, openNotice(f), ingressURL, ingressURL, admin, admin, admin, url, url, dir, cli, try.String())
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// configs are the five services' configurations.
type configs struct {
	ingress    ingress.Config
	router     router.Config
	worker     worker.Config
	scheduler  scheduler.Config
	autoscaler autoscaler.Config
}

// serviceConfigs loads each service's configuration from its defaults and
// the dev fleet's flags (the NATS URL is set once the server runs).
func serviceConfigs(f flags, stderr io.Writer) (configs, error) {
	c := configs{ingress.DefaultConfig(), router.DefaultConfig(), worker.DefaultConfig(), scheduler.DefaultConfig(), autoscaler.DefaultConfig()}
	common := []string{"--log.format", f.logFormat, "--log.level", f.logLevel}
	ops := func(addr string) []string {
		if !f.opsEnabled {
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
	return c, errors.Join(
		load(&c.ingress, "ingress", append(ops("127.0.0.1:9100"), "--http_addr", f.httpAddr, "--auth.anonymous", fmt.Sprint(f.open))...),
		load(&c.router, "router", ops("127.0.0.1:9101")...),
		load(&c.worker, "worker", ops("127.0.0.1:9102")...),
		load(&c.scheduler, "scheduler", append(ops("127.0.0.1:9103"), "--admin_addr", f.adminAddr, "--auth.anonymous", fmt.Sprint(f.open))...),
		load(&c.autoscaler, "autoscaler", ops("127.0.0.1:9104")...),
	)
}

func (c *configs) setNATS(url string) {
	c.ingress.NATS.URL = url
	c.router.NATS.URL = url
	c.worker.NATS.URL = url
	c.scheduler.NATS.URL = url
	c.autoscaler.NATS.URL = url
}

// The addresses the jetserve CLI talks to unless told otherwise.
const (
	cliIngress = "http://127.0.0.1:8000"
	cliAdmin   = "http://127.0.0.1:8265"
	cliNATS    = "nats://127.0.0.1:4222"
)

// cliExports is the banner's line for a fleet on other ports than the
// CLI's defaults (another fleet holds them): the variables that point
// the CLI's commands at this one. "" when every port is the default.
func cliExports(ingressURL, adminURL, natsURL string) string {
	if ingressURL == cliIngress && adminURL == cliAdmin && natsURL == cliNATS {
		return ""
	}
	return fmt.Sprintf("  CLI            export JETSERVE_URL=%s JETSERVE_ADMIN=%s JETSERVE_NATS_URL=%s\n"+
		"                 (not the CLI's default ports; go tool nats takes --server %s)\n", ingressURL, adminURL, natsURL, natsURL)
}

// openNotice says who can reach the dev fleet: it has no auth.
func openNotice(f flags) string {
	if f.open {
		return "OPEN: no auth, and --open lets anyone who reaches " + f.httpAddr + " and " + f.adminAddr + " use all of it"
	}
	return "open (no auth) on localhost only: the ingress, the admin API and NATS listen on loopback"
}

// localAddr is a listener's address as a local client dials it: one
// bound to every interface (":8000") is 127.0.0.1:8000.
func localAddr(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok && (t.IP == nil || t.IP.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(t.Port))
	}
	return a.String()
}

// waitHTTP polls url until it answers below 500, for at most 30 s.
func waitHTTP(ctx context.Context, url string) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	deadline := time.After(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("wait for %s: %w", url, err)
		}
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

// put applies a serve config through the admin API.
func put(ctx context.Context, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(string(body)))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("PUT %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}
