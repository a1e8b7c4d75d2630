// Command worker serves the quickstart's deployments in a jetserve fleet:
// the stock worker's flags, JETSERVE_* environment and --config file, with
// this repository's deployments compiled in.
package main

import (
	"example.com/quickstart"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/services/worker"
)

func main() {
	reg := serve.NewRegistry()
	if err := quickstart.Register(reg); err != nil {
		panic(err)
	}
	worker.Main(reg)
}
