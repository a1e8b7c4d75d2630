// Command jetserve-autoscaler runs the autoscaler service.
package main

import (
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler"
)

func main() {
	service.Exec("jetserve-autoscaler", service.Command("autoscaler", autoscaler.DefaultConfig, autoscaler.Run))
}
