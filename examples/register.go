// Package examples registers every example deployment: the text pipeline
// (textpipeline), its async training method (training) and the diagnostic
// Echo (diag). The worker binary and
// `jetserve dev` call Register.
package examples

import (
	"github.com/jetserve/jetserve/examples/diag"
	"github.com/jetserve/jetserve/examples/textpipeline"
	"github.com/jetserve/jetserve/examples/training"
	"github.com/jetserve/jetserve/pkg/serve"
)

// Register adds every example deployment to reg.
func Register(reg *serve.Registry) error {
	if err := textpipeline.Register(reg); err != nil {
		return err
	}
	if err := training.Register(reg); err != nil {
		return err
	}
	return diag.Register(reg)
}
