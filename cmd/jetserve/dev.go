package main

import (
	"context"
	"fmt"
	"io"

	"github.com/jetserve/jetserve/devfleet"
	"github.com/jetserve/jetserve/examples"
	"github.com/jetserve/jetserve/pkg/serve"
)

// devOptions are what `jetserve dev` serves: the example deployments and
// examples/config.yaml (run from the repository root).
func devOptions(args, environ []string) devfleet.Options {
	return devfleet.Options{
		Name:    "jetserve dev",
		Config:  "examples/config.yaml",
		Args:    args,
		Environ: environ,
		Try: []string{
			`curl -s -X POST {ingress}/text/analyze -d '{"text":"The new phone is wonderful, fast and the battery lasts for days."}'`,
			`curl -s -X POST {ingress}/v2/models/iris/infer -d '{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'`,
			`go run ./cmd/jetserve status`,
		},
	}
}

func exampleRegistry() (*serve.Registry, error) {
	reg := serve.NewRegistry()
	if err := examples.Register(reg); err != nil {
		return nil, fmt.Errorf("register example deployments: %w", err)
	}
	return reg, nil
}

// runDev runs `jetserve dev` until ctx ends (main calls devfleet.Main
// instead, for its two-stage Ctrl-C).
func runDev(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	reg, err := exampleRegistry()
	if err != nil {
		return err
	}
	return devfleet.Run(ctx, reg, devOptions(args, environ), args, stdout, stderr)
}
