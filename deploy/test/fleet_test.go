package test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/deploy/auth"
	"github.com/jetserve/jetserve/deploy/auth/authtest"
	"github.com/jetserve/jetserve/examples"
	"github.com/jetserve/jetserve/pkg/natsembed"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler"
	"github.com/jetserve/jetserve/services/ingress"
	"github.com/jetserve/jetserve/services/router"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/jetserve/jetserve/services/worker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// fleet is the five services in this process on an embedded NATS, each
// with its own connection, registry and ops server on a free port.
type fleet struct {
	ingress, admin string            // base URLs
	ops            map[string]string // service → ops base URL
	// apiKey and adminKey are sent with every request to the ingress and
	// the admin API (secure fleets).
	apiKey, adminKey string
	// violations are the permission violations the NATS server logged
	// (secure fleets).
	violations *authtest.Log
	// gen is what deploy/auth generated (secure fleets); natsURL the
	// server's client URL.
	gen     *auth.Generated
	natsURL string
}

// waitServing waits until testdata/fleet.yaml's echo deployment and a
// multiplexed model answer.
func (f *fleet) waitServing(t *testing.T) {
	t.Helper()
	f.waitFor(t, 90*time.Second, "the echo deployment", func() error {
		_, err := f.do(http.MethodPost, f.ingress+"/echo/", "hi", nil)
		return err
	})
	f.waitFor(t, 60*time.Second, "a multiplexed model", func() error {
		_, err := f.do(http.MethodPost, f.ingress+"/mux/", `{"text":"hello"}`, map[string]string{"serve_multiplexed_model_id": "tenant-a"})
		return err
	})
}

// trainJob submits a one-epoch job id of the example's text/train and
// waits until it SUCCEEDED.
func (f *fleet) trainJob(t *testing.T, id string) {
	t.Helper()
	f.asyncToEnd(t, "/text/train", id, "&num_epochs=1", "")
}

// asyncToEnd submits a job (or workflow run) id to the async method at
// path (/app/method), with more query parameters (query: "&k=v…") and
// body, and waits until it SUCCEEDED.
func (f *fleet) asyncToEnd(t *testing.T, path, id, query, body string) {
	t.Helper()
	if _, err := f.do(http.MethodPost, f.ingress+path+"?request_id="+id+query, body, nil); err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, 60*time.Second, "job "+id+" SUCCEEDED", func() error {
		b, err := f.do(http.MethodGet, f.ingress+path+"/status?request_id="+id, "", nil)
		if err == nil && !strings.Contains(b, `"SUCCEEDED"`) {
			err = errors.New(b)
		}
		return err
	})
}

// startFleet runs the fleet until the test ends and deploys config.
func startFleet(t *testing.T, configFile string) *fleet {
	t.Helper()
	return startFleetWith(t, configFile, fleetOptions{})
}

// fleetOptions vary the fleet startFleetWith runs.
type fleetOptions struct {
	// secure runs it as the compose profile does: NATS with deploy/auth's
	// accounts, each service with its own user, the ingress and the admin
	// API with the generated keys.
	secure bool
	// otlpEndpoint, if set, is every service's tracing.otlp_endpoint.
	otlpEndpoint string
}

// startFleetWith is startFleet with o.
func startFleetWith(t *testing.T, configFile string, o fleetOptions) *fleet {
	secure := o.secure
	t.Helper()
	var ns *server.Server
	var gen *auth.Generated
	var err error
	f := &fleet{ops: map[string]string{}}
	if secure {
		srv := authtest.Start(t, fleetWorker)
		ns, gen, f.violations = srv.NS, srv.Gen, srv.Log
		env, err := os.ReadFile(filepath.Join(filepath.Dir(gen.Creds[auth.Ingress]), "..", auth.HTTPKeysEnv))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(env), "\n") {
			if v, ok := strings.CutPrefix(line, "JETSERVE_API_KEY="); ok {
				f.apiKey = v
			}
			if v, ok := strings.CutPrefix(line, "JETSERVE_ADMIN_KEY="); ok {
				f.adminKey = v
			}
		}
	} else if ns, err = natsembed.Start(natsembed.Options{Port: -1, StoreDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	url := ns.ClientURL()
	f.gen, f.natsURL = gen, url
	reg := serve.NewRegistry()
	if err := examples.Register(reg); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	addrs := make(chan struct{}, 16)
	got := func(set func(string)) func(net.Addr) {
		return func(a net.Addr) {
			mu.Lock()
			set("http://" + a.String())
			mu.Unlock()
			addrs <- struct{}{}
		}
	}
	deps := func(name string) service.Deps {
		return service.Deps{Log: zerolog.Nop(), OpsReady: got(func(u string) { f.ops[name] = u })}
	}
	const local = "127.0.0.1:0"
	creds := func(role string) string {
		if gen == nil {
			return ""
		}
		return gen.Creds[role]
	}
	common := func(c *service.Common, role string) {
		c.NATS.URL, c.OpsAddr, c.NATS.Creds = url, local, creds(role)
		c.Tracing.OTLPEndpoint, c.Tracing.BatchTimeout = o.otlpEndpoint, 100*time.Millisecond
	}
	ic := ingress.DefaultConfig()
	common(&ic.Common, auth.Ingress)
	ic.HTTPAddr, ic.HTTPReady = local, got(func(u string) { f.ingress = u })
	rc := router.DefaultConfig()
	common(&rc.Common, auth.Router)
	wc := worker.DefaultConfig()
	common(&wc.Common, auth.Worker)
	if gen != nil {
		wc.NATS.Creds = gen.Workers[fleetWorker] // its id comes from the user's JWT
	}
	wc.DeploymentCreds = creds(auth.Deployment)
	wc.GPUDetect = "off"
	sc := scheduler.DefaultConfig()
	common(&sc.Common, auth.Scheduler)
	sc.AdminAddr, sc.AdminReady = local, got(func(u string) { f.admin = u })
	ac := autoscaler.DefaultConfig()
	common(&ac.Common, auth.Autoscaler)
	if gen != nil {
		dir := filepath.Dir(filepath.Dir(gen.Creds[auth.Ingress]))
		ic.Auth.KeysFile = filepath.Join(dir, auth.IngressKeys)
		sc.Auth.KeysFile = filepath.Join(dir, auth.AdminKeys)
	}

	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return scheduler.Run(gctx, sc, deps("scheduler")) })
	g.Go(func() error { return router.Run(gctx, rc, deps("router")) })
	g.Go(func() error { return worker.Run(gctx, wc, deps("worker"), reg) })
	g.Go(func() error { return ingress.Run(gctx, ic, deps("ingress")) })
	g.Go(func() error { return autoscaler.Run(gctx, ac, deps("autoscaler")) })
	t.Cleanup(func() {
		cancel()
		if err := g.Wait(); err != nil && ctx.Err() == nil {
			t.Errorf("fleet: %v", err)
		}
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	// 5 ops servers, the ingress and the admin API.
	for range 7 {
		select {
		case <-addrs:
		case <-time.After(60 * time.Second):
			t.Fatal("the services did not all listen within 60 s")
		}
	}
	body, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, 60*time.Second, "the config applied", func() error {
		_, err := f.do(http.MethodPut, f.admin+"/api/serve/applications", string(body), nil)
		return err
	})
	return f
}

// do sends one request and returns the body of a 2xx answer.
func (f *fleet) do(method, url, body string, hdr map[string]string) (string, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	switch {
	case f.apiKey != "" && strings.HasPrefix(url, f.ingress):
		req.Header.Set("Authorization", "Bearer "+f.apiKey)
	case f.adminKey != "" && strings.HasPrefix(url, f.admin):
		req.Header.Set("Authorization", "Bearer "+f.adminKey)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode/100 != 2 {
		return string(b), fmt.Errorf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return string(b), nil
}

// waitFor retries check until it returns nil or within passes.
func (f *fleet) waitFor(t *testing.T, within time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", within, what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
