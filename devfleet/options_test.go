package devfleet

import (
	"os"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/service"
	"github.com/jetserve/jetserve/services/autoscaler"
	"github.com/jetserve/jetserve/services/ingress"
	"github.com/jetserve/jetserve/services/router"
	"github.com/jetserve/jetserve/services/scheduler"
	"github.com/jetserve/jetserve/services/worker"
)

// Every option of every service has a help text (what -h prints) and a row
// in docs/options.md.
func TestEveryOptionIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/options.md")
	if err != nil {
		t.Fatal(err)
	}
	ic, rc, wc, sc, ac := ingress.DefaultConfig(), router.DefaultConfig(), worker.DefaultConfig(), scheduler.DefaultConfig(), autoscaler.DefaultConfig()
	for name, cfg := range map[string]any{"ingress": &ic, "router": &rc, "worker": &wc, "scheduler": &sc, "autoscaler": &ac} {
		for _, o := range service.Options(cfg) {
			if o.Help == "" {
				t.Errorf("%s option %s has no help tag: -h says nothing about it", name, o.Key)
			}
			if !strings.Contains(string(doc), "`"+o.Key+"`") {
				t.Errorf("%s option %s is missing from docs/options.md", name, o.Key)
			}
		}
	}
}
