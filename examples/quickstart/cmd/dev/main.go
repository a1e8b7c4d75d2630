// Command dev runs a whole jetserve fleet in one process — embedded NATS,
// the five services and a worker with the quickstart's deployments — and
// deploys config.yaml: `go run ./cmd/dev` (flags as `jetserve dev`).
package main

import (
	"example.com/quickstart"
	"github.com/jetserve/jetserve/devfleet"
	"github.com/jetserve/jetserve/pkg/serve"
)

func main() {
	reg := serve.NewRegistry()
	if err := quickstart.Register(reg); err != nil {
		panic(err)
	}
	devfleet.Main(reg, devfleet.Options{
		Name:   "quickstart dev",
		Config: "config.yaml",
		Try:    []string{`curl -s {ingress}/greet -d '{"name":"Ada"}'`},
	})
}
