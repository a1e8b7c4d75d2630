// Command jetserve-ingress runs the ingress service.
package main

import (
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/ingress"
)

func main() {
	service.Exec("jetserve-ingress", service.Command("ingress", ingress.DefaultConfig, ingress.Run))
}
