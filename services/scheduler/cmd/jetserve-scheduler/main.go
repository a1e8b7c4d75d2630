// Command jetserve-scheduler runs the jetserve scheduler (controller and
// admin API).
package main

import (
	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/scheduler"
)

func main() {
	service.Exec("jetserve-scheduler", service.Command("scheduler", scheduler.DefaultConfig, scheduler.Run))
}
