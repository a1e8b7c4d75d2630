// Package quickstart is a jetserve application as it looks in a repository
// of its own: one deployment (Greeter), a worker main that serves it
// (cmd/worker), a one-process dev fleet (cmd/dev), its serve config
// (config.yaml), a FROM-scratch Dockerfile and a compose override that adds
// the worker to a running fleet.
package quickstart

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/jetserve/jetserve/pkg/serve"
)

// Register adds the quickstart's deployments to reg and declares its
// application (App): `go run ./cmd/worker build > config.yaml` writes the
// serve config from it.
func Register(reg *serve.Registry) error {
	if err := reg.Register("quickstart.Greeter", NewGreeter); err != nil {
		return err
	}
	return reg.DeclareApp(App())
}

// App declares the greet application with Greeter's code defaults;
// operators change them in config.yaml and deploy it without a rebuild.
func App() serve.App {
	return serve.App{
		Name: "greet", RoutePrefix: "/greet", Ingress: "Greeter",
		Deployments: []serve.Deployment{
			serve.Deploy("Greeter", "quickstart.Greeter", serve.NumReplicas(2), serve.MaxOngoingRequests(16), serve.CPU(0.1),
				serve.UserConfig(Options{Greeting: "Hello"}),
				serve.FieldComment("handler", "the name Register uses"),
				serve.FieldComment("user_config", "change it and redeploy: applied in place")),
		},
	}
}

// Options are Greeter's user_config: operators change them in config.yaml
// and `jetserve deploy` applies them in place (Reconfigure), no restart.
type Options struct {
	Greeting string `json:"greeting"`
	Shout    bool   `json:"shout"`
}

// Greeter greets whoever it is asked to.
type Greeter struct {
	replica string
	opts    atomic.Pointer[Options]
}

// NewGreeter is the deployment's constructor: it runs once per replica.
func NewGreeter(_ context.Context, init serve.Init) (serve.Handler, error) {
	opts := Options{Greeting: "Hello"}
	if err := init.DecodeUserConfig(&opts); err != nil {
		return nil, err
	}
	g := &Greeter{replica: init.ReplicaID}
	g.opts.Store(&opts)
	return g, nil
}

// Request and Reply are the JSON of POST /{route_prefix}/.
type (
	Request struct {
		Name string `json:"name"`
	}
	Reply struct {
		Message string `json:"message"`
		Replica string `json:"replica"`
	}
)

// ServeRequest answers one request; replicas call it concurrently.
func (g *Greeter) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	var in Request
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	if in.Name == "" {
		return nil, serve.Errorf(http.StatusBadRequest, "name is required")
	}
	o := g.opts.Load()
	msg := fmt.Sprintf("%s, %s!", o.Greeting, in.Name)
	if o.Shout {
		msg = strings.ToUpper(msg)
	}
	return serve.JSON(Reply{Message: msg, Replica: g.replica})
}

// Reconfigure applies a changed user_config in place.
func (g *Greeter) Reconfigure(_ context.Context, userConfig json.RawMessage) error {
	opts := Options{Greeting: "Hello"}
	if err := json.Unmarshal(userConfig, &opts); err != nil {
		return fmt.Errorf("user_config: %w", err)
	}
	g.opts.Store(&opts)
	return nil
}
