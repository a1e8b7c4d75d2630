package examples

import (
	"encoding/json"
	"flag"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/golden"
	"github.com/jetserve/jetserve/pkg/serve"
)

var update = flag.Bool("update", false, "rewrite config.yaml from the declarations (jetserve build)")

// TestBuildReproducesConfigYAML: `jetserve build text iris echo trips` (the
// example applications, Apps) writes examples/config.yaml byte for byte (comments are
// part of the declarations), so the file is the code's defaults as they
// are; and parsed, it is the declarations with their defaults.
func TestBuildReproducesConfigYAML(t *testing.T) {
	reg := serve.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	built, err := reg.BuildYAML(AppNames()...)
	if err != nil {
		t.Fatalf("BuildYAML = %v", err)
	}
	file := golden.Check(t, "config.yaml", built, *update, "go test ./examples -run TestBuildReproducesConfigYAML -update")
	parsed, err := config.Parse(file)
	if err != nil {
		t.Fatalf("Parse(config.yaml) = %v", err)
	}
	want, err := reg.Build(AppNames()...)
	if err != nil {
		t.Fatal(err)
	}
	want.ApplyDefaults()
	for i := range want.Applications {
		for j := range want.Applications[i].Deployments {
			d := &want.Applications[i].Deployments[j]
			if len(d.UserConfig) > 0 {
				var v any
				if err := json.Unmarshal(d.UserConfig, &v); err != nil {
					t.Fatal(err)
				}
				d.UserConfig, _ = json.Marshal(v) // Parse keeps the value, not the key order
			}
		}
	}
	pj, _ := json.Marshal(parsed)
	wj, _ := json.Marshal(want)
	if string(pj) != string(wj) {
		t.Errorf("Parse(config.yaml) =\n%s\nwant the declarations with defaults\n%s", pj, wj)
	}
}
