// Command jetserve-router runs the router service.
package main

import (
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/router"
)

func main() {
	service.Exec("jetserve-router", service.Command("router", router.DefaultConfig, router.Run))
}
