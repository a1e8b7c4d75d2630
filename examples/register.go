// Package examples registers every example deployment: the text pipeline
// (textpipeline), its async training method (training), the Iris
// classifier served over the Open Inference Protocol (iris), the diagnostic
// Echo (diag), a batched model (batching), multiplexed per-tenant models
// (multiplex), the voice search of the distributed-coroutines RFC
// (voicesearch) and its trip booking saga as a durable workflow (trips),
// and declares the example applications. The worker binary and
// `jetserve dev` call Register.
package examples

import (
	"github.com/jetserve/jetserve/examples/batching"
	"github.com/jetserve/jetserve/examples/diag"
	"github.com/jetserve/jetserve/examples/iris"
	"github.com/jetserve/jetserve/examples/multiplex"
	"github.com/jetserve/jetserve/examples/textpipeline"
	"github.com/jetserve/jetserve/examples/training"
	"github.com/jetserve/jetserve/examples/trips"
	"github.com/jetserve/jetserve/examples/voicesearch"
	"github.com/jetserve/jetserve/pkg/serve"
)

// Register adds every example deployment to reg and declares the example
// applications: those of examples/config.yaml (Apps) and the voice search
// ones (examples/voicesearch/config.yaml).
func Register(reg *serve.Registry) error {
	if err := register(reg); err != nil {
		return err
	}
	if err := reg.DeclareApp(Apps()...); err != nil {
		return err
	}
	return reg.DeclareApp(voicesearch.Apps()...)
}

// AppNames are the names of Apps, in order.
func AppNames() []string {
	var names []string
	for _, a := range Apps() {
		names = append(names, a.Name)
	}
	return names
}

// Apps are the example applications of examples/config.yaml, in its
// order: `jetserve build` writes the file from them.
func Apps() []serve.App {
	return []serve.App{textpipeline.App(training.Deployment()), iris.App(), diag.App(), trips.App()}
}

func register(reg *serve.Registry) error {
	if err := textpipeline.Register(reg); err != nil {
		return err
	}
	if err := training.Register(reg); err != nil {
		return err
	}
	if err := batching.Register(reg); err != nil {
		return err
	}
	if err := multiplex.Register(reg); err != nil {
		return err
	}
	if err := iris.Register(reg); err != nil {
		return err
	}
	if err := voicesearch.Register(reg); err != nil {
		return err
	}
	if err := trips.Register(reg); err != nil {
		return err
	}
	return diag.Register(reg)
}
