// Command jetserve-worker is the stock worker: worker.Main with the example
// deployments (examples.Register) compiled in. A worker of your own
// deployments is the same few lines with your registry (see
// examples/quickstart).
package main

import (
	"github.com/jetserve/jetserve/examples"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/services/worker"
)

func main() { worker.Main(registry()) }

func registry() *serve.Registry {
	reg := serve.NewRegistry()
	if err := examples.Register(reg); err != nil {
		panic(err) // the examples' names are fixed: only a programming error gets here
	}
	return reg
}
