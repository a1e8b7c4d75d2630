// Package examples registers every example deployment: the text pipeline
// (textpipeline), its async training method (training), the Iris
// classifier served over the Open Inference Protocol (iris), the diagnostic
// Echo (diag), a batched model (batching) and multiplexed per-tenant models
// (multiplex). The worker binary and
// `jetserve dev` call Register.
package examples

import (
	"github.com/jetserve/jetserve/examples/batching"
	"github.com/jetserve/jetserve/examples/diag"
	"github.com/jetserve/jetserve/examples/iris"
	"github.com/jetserve/jetserve/examples/multiplex"
	"github.com/jetserve/jetserve/examples/textpipeline"
	"github.com/jetserve/jetserve/examples/training"
	"github.com/jetserve/jetserve/pkg/serve"
)

// Register adds every example deployment to reg and declares the example
// applications (Apps).
func Register(reg *serve.Registry) error {
	if err := register(reg); err != nil {
		return err
	}
	return reg.DeclareApp(Apps()...)
}

// Apps are the example applications of examples/config.yaml, in its
// order: `jetserve build` writes the file from them.
func Apps() []serve.App {
	return []serve.App{textpipeline.App(training.Deployment()), iris.App(), diag.App()}
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
	return diag.Register(reg)
}
