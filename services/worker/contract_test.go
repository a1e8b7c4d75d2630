package worker_test

import (
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/natstest"
	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve/servetest"
	"github.com/jetserve/jetserve/pkg/wire"
)

// TestCallersKeepTheContract runs the serve.Caller contract
// (pkg/serve/servetest; serve.Local runs it there) through the fleet:
// real replicas run by a worker, a router on the route subjects as the
// router service runs it, and both fleet Callers — wire.Caller through
// that router's route subjects, routing's Caller through it in-process
// (as the ingress embeds one).
func TestCallersKeepTheContract(t *testing.T) {
	f := startFleet(t, nil)
	if err := servetest.Register(f.d.reg); err != nil {
		t.Fatal(err)
	}
	app := servetest.App()
	natstest.PutConfig(t, f.b, config.ServeConfig{Applications: []config.Application{app}})
	var specs []protocol.ReplicaSpec
	for _, d := range app.Deployments {
		specs = append(specs, protocol.ReplicaSpec{ID: "contract-" + d.Name, App: app.Name, Deployment: d.Name,
			Handler: d.Handler, Version: "v1", MaxOngoingRequests: 32})
	}
	f.assign(specs...)
	for _, s := range specs {
		f.waitState(s, protocol.ReplicaRunning)
	}
	// One router, as the router service runs it: wire.Caller reaches it on
	// the route subjects, routing's Caller dispatches to it in-process.
	r := startRouter(t, f, f.nc)
	t.Run("wire.Caller through the router service", func(t *testing.T) {
		servetest.Run(t, wire.NewCaller(f.nc, f.names))
	})
	t.Run("routing.Caller through an embedded router", func(t *testing.T) {
		servetest.Run(t, r.NewCaller())
	})
}
