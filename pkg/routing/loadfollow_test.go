package routing_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/fleetstate"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/routing"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/pkg/waitfor"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// A router hears the load reports of the deployments it routes to, and no
// others: a worker's embedded router is not sent every busy replica's
// reports of the whole fleet (one per 20 ms each), only those of its
// handles' deployments. A name no one deployed (404) subscribes to
// nothing, and a deployment removed from the config is unfollowed.
func TestLoadReportsOnlyOfDeploymentsRoutedTo(t *testing.T) {
	f := natstest.NewFleet(t)
	nc, err := nats.Connect(f.NS.ClientURL(), nats.Name("router-under-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg, _ := json.Marshal(config.ServeConfig{Applications: []config.Application{{Name: "app", RoutePrefix: "/app",
		Deployments: []config.Deployment{{Name: "called", Handler: "h"}, {Name: "idle", Handler: "h"}}}}})
	if _, err := f.Buckets.Apps.Put(context.Background(), fleetstate.ConfigKey, cfg); err != nil {
		t.Fatal(err)
	}
	e, err := routing.NewEmbedded(routing.EmbeddedOptions{
		Options:  routing.Options{NC: nc, Names: f.Names, Log: zerolog.New(zerolog.NewTestWriter(t))},
		Registry: prometheus.NewRegistry(), Buckets: f.Buckets, ID: "test-embedded",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; e.Close() })
	waitfor.NoError(t, 10*time.Second, "embedded router loaded", e.Ready)

	loadSubs := func() []string {
		t.Helper()
		cz, err := f.NS.Connz(&server.ConnzOptions{Subscriptions: true})
		if err != nil {
			t.Fatal(err)
		}
		var subs []string
		for _, c := range cz.Conns {
			if c.Name != "router-under-test" {
				continue
			}
			for _, s := range c.Subs {
				if strings.HasPrefix(s, f.Names.Prefix()+".load.") {
					subs = append(subs, s)
				}
			}
		}
		slices.Sort(subs)
		return subs
	}
	if got := loadSubs(); len(got) != 0 {
		t.Fatalf("load subscriptions before any request = %v, want none", got)
	}
	call := func(dep string) {
		cctx, ccancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer ccancel()
		_, _ = e.NewCaller().Call(cctx, "app", dep, &serve.Request{}) // no replica: it waits, then times out
	}
	call("nobody-deployed")
	if got := loadSubs(); len(got) != 0 {
		t.Fatalf("load subscriptions after a 404 = %v, want none", got)
	}
	call("called")
	call("called")
	want := []string{f.Names.LoadSubject("app", "called"), f.Names.RouteLoadSubject("app", "called")}
	waitfor.True(t, 5*time.Second, "the load subscriptions of the deployment called only", func() bool {
		return slices.Equal(loadSubs(), want)
	})
	// The deployment leaves the config: its reports are no longer
	// heard; back in it, the next request follows them again.
	put := func(deps ...config.Deployment) {
		t.Helper()
		cfg, _ := json.Marshal(config.ServeConfig{Applications: []config.Application{{Name: "app", RoutePrefix: "/app", Deployments: deps}}})
		if _, err := f.Buckets.Apps.Put(context.Background(), fleetstate.ConfigKey, cfg); err != nil {
			t.Fatal(err)
		}
	}
	put(config.Deployment{Name: "idle", Handler: "h"})
	waitfor.True(t, 5*time.Second, "no load subscription once the deployment left the config", func() bool { return len(loadSubs()) == 0 })
	put(config.Deployment{Name: "called", Handler: "h"}, config.Deployment{Name: "idle", Handler: "h"})
	waitfor.True(t, 5*time.Second, "the deployment back in the config", func() bool {
		call("called")
		return slices.Equal(loadSubs(), want)
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	done <- nil // for the cleanup's receive
	waitfor.True(t, 5*time.Second, "no load subscription once Run returned", func() bool { return len(loadSubs()) == 0 })
}
