package worker_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/jetserve/jetserve/services/worker"
)

// buildRegistry declares two applications, each of one deployment.
func buildRegistry(t *testing.T) *serve.Registry {
	t.Helper()
	reg := serve.NewRegistry()
	if err := reg.Register("b.Echo", func(context.Context, serve.Init) (serve.Handler, error) {
		return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
			return &serve.Response{Body: req.Body}, nil
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"one", "two"} {
		if err := reg.DeclareApp(serve.App{Name: name, RoutePrefix: "/" + name, Ingress: "E",
			Deployments: []serve.Deployment{serve.Deploy("E", "b.Echo", serve.NumReplicas(3))}}); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// TestBuild is a user's worker binary's `build` subcommand (worker.Main
// runs it): the declared applications' serve config on stdout, all of
// them or those named, or in the file -o names; an unknown name is an
// error naming the declared ones.
func TestBuild(t *testing.T) {
	reg := buildRegistry(t)
	var out, errs bytes.Buffer
	if err := worker.Build(reg, "mybinary", nil, &out, &errs); err != nil {
		t.Fatalf("build = %v (%s)", err, errs.String())
	}
	sc, err := config.Parse(out.Bytes())
	if err != nil || len(sc.Applications) != 2 || *sc.Applications[1].Deployments[0].NumReplicas != 3 {
		t.Fatalf("build wrote\n%s\nParse = %+v, %v; want apps one and two with 3 replicas of E", out.String(), sc, err)
	}

	file := filepath.Join(t.TempDir(), "two.yaml")
	out.Reset()
	if err := worker.Build(reg, "mybinary", []string{"two", "-o", file}, &out, &errs); err != nil || out.Len() != 0 {
		t.Fatalf("build two -o FILE = %v, stdout %q; want the file written, nothing on stdout", err, out.String())
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want, err := reg.BuildYAML("two")
	if err != nil || string(b) != string(want) {
		t.Errorf("build two -o FILE wrote\n%s\nwant (%v)\n%s", b, err, want)
	}

	err = worker.Build(reg, "mybinary", []string{"three"}, &out, &errs)
	if err == nil || !strings.Contains(err.Error(), `no application "three" is declared (declared: one, two)`) {
		t.Errorf("build three = %v, want an error naming three and the declared one, two", err)
	}

	errs.Reset()
	if err := worker.Build(reg, "mybinary", []string{"--help"}, &out, &errs); err != nil || !strings.Contains(errs.String(), "Usage: mybinary build") {
		t.Errorf("build --help = %v, %q; want the usage and no error", err, errs.String())
	}
}
