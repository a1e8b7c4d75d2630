package serve_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

type frontConfig struct {
	Greeting string `json:"greeting"`
	Times    int    `json:"times"`
}

// declared registers Front (which takes handles to the names in its
// user_config's "calls", default Back) and Back, and declares app "app".
func declared(t *testing.T, front ...serve.DeploymentOption) *serve.Registry {
	t.Helper()
	reg := serve.NewRegistry()
	register(t, reg, "app.Front", func(_ context.Context, in serve.Init) (serve.Handler, error) {
		var c struct{ Calls []string }
		if err := in.DecodeUserConfig(&c); err != nil {
			return nil, err
		}
		if c.Calls == nil {
			c.Calls = []string{"Back"}
		}
		hs := make([]*serve.Handle, len(c.Calls))
		for i, n := range c.Calls {
			hs[i] = in.Handle(n)
		}
		return serve.HandlerFunc(func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
			return hs[0].Call(ctx, req)
		}), nil
	})
	one := 1
	register(t, reg, "app.Back", func(context.Context, serve.Init) (serve.Handler, error) {
		return back{}, nil
	}, serve.WithAsync(config.AsyncMethod{Name: "train", MaxRunning: 2, Priority: &one, RequiredArgs: []string{"epochs"}}))
	err := reg.DeclareApp(serve.App{Name: "app", RoutePrefix: "/app", Ingress: "Front", Comment: "The app.",
		Deployments: []serve.Deployment{
			serve.Deploy("Front", "app.Front", append([]serve.DeploymentOption{serve.NumReplicas(2), serve.MaxOngoingRequests(32),
				serve.CPU(0.25), serve.Memory("64Mi"), serve.UserConfig(frontConfig{Greeting: "hi", Times: 2}),
				serve.Uses("Back"), serve.RequestTimeout(90 * time.Second), serve.Comment("The ingress."),
				serve.FieldComment("num_replicas", "two to start")}, front...)...),
			serve.Deploy("Back", "app.Back", serve.Autoscaling(config.AutoscalingConfig{MaxReplicas: 4}), serve.GPU(0.5),
				serve.Labels(map[string]string{"gpu.type": "h100"}), serve.GracefulShutdownTimeout(30*time.Second),
				serve.HealthCheck(2*time.Second, 5*time.Second), serve.MaxQueuedRequests(100)),
		}})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// back answers "back:" and the body; its async method returns nothing.
type back struct{}

func (back) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	return &serve.Response{Status: 200, Body: append([]byte("back:"), req.Body...)}, nil
}

func (back) RunJob(serve.JobContext, *serve.Job) (any, error) { return nil, nil }

// TestBuildRoundTrip: the YAML of a declared application parses back to
// the declaration (with its defaults), comments and async methods in it.
func TestBuildRoundTrip(t *testing.T) {
	reg := declared(t)
	want, err := reg.Build()
	if err != nil {
		t.Fatalf("Build = %v", err)
	}
	y, err := reg.BuildYAML()
	if err != nil {
		t.Fatalf("BuildYAML = %v", err)
	}
	got, err := config.Parse(y)
	if err != nil {
		t.Fatalf("Parse(BuildYAML) = %v\n%s", err, y)
	}
	want.ApplyDefaults()
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("Parse(BuildYAML()) =\n%s\nwant the declaration with defaults\n%s\nYAML:\n%s", gj, wj, y)
	}
	for _, s := range []string{"# The app.", "# The ingress.", "num_replicas: 2 # two to start", "uses: [Back]",
		"user_config: {greeting: hi, times: 2}", "memory: 64Mi", "request_timeout: 1m30s",
		"- name: train", "max_running: 2", "required_args: [epochs]", "jetserve deploy FILE"} {
		if !strings.Contains(string(y), s) {
			t.Errorf("BuildYAML lacks %q:\n%s", s, y)
		}
	}
	front := got.Applications[0].Deployments[0]
	if front.Replicas() != 2 || front.MaxOngoingRequests != 32 || front.MaxQueuedRequests != -1 {
		t.Errorf("Front = %d replicas, %d ongoing, %d queued; want 2, 32, -1 (the default)", front.Replicas(), front.MaxOngoingRequests, front.MaxQueuedRequests)
	}
}

func TestBuildRefuses(t *testing.T) {
	tests := []struct {
		name string
		reg  func(t *testing.T) *serve.Registry
		app  string
		want []string
	}{
		{"an edge to a deployment absent from the app", func(t *testing.T) *serve.Registry {
			return declared(t, serve.Uses("Bakc"))
		}, "", []string{"uses[1]", `deployment Front uses "Bakc"`, "not a deployment of application app"}},
		{"an unregistered handler", func(t *testing.T) *serve.Registry {
			reg := declared(t)
			if err := reg.DeclareApp(serve.App{Name: "other", RoutePrefix: "/o", Ingress: "X",
				Deployments: []serve.Deployment{serve.Deploy("X", "nope.X")}}); err != nil {
				t.Fatal(err)
			}
			return reg
		}, "other", []string{`deployment X: handler "nope.X" is not registered`, "app.Back, app.Front"}},
		{"a bad memory quantity", func(t *testing.T) *serve.Registry {
			return declared(t, serve.Memory("lots"))
		}, "", []string{"deployment Front: memory", `"lots"`}},
		{"a user_config that is no JSON", func(t *testing.T) *serve.Registry {
			return declared(t, serve.UserConfig(func() {}))
		}, "", []string{"deployment Front: user_config"}},
		{"an unknown application", func(t *testing.T) *serve.Registry { return declared(t) }, "nope", []string{`no application "nope" is declared (declared: app)`}},
		{"num_replicas with autoscaling", func(t *testing.T) *serve.Registry {
			return declared(t, serve.Autoscaling(config.AutoscalingConfig{MaxReplicas: 3}))
		}, "", []string{"num_replicas: must not be a number when autoscaling_config is set"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			if tc.app != "" {
				names = []string{tc.app}
			}
			_, err := tc.reg(t).Build(names...)
			if err == nil {
				t.Fatalf("Build(%v) = nil, want an error", names)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Build(%v) = %v, want it to say %q", names, err, w)
				}
			}
		})
	}
	if _, err := serve.NewRegistry().Build(); err == nil || !strings.Contains(err.Error(), "no application is declared") {
		t.Errorf("Build() of an empty registry = %v, want an error saying none is declared", err)
	}
	reg := declared(t)
	if err := reg.DeclareApp(serve.App{Name: "app"}); err == nil || !strings.Contains(err.Error(), "already declared") {
		t.Errorf("DeclareApp(app) twice = %v, want an error", err)
	}
}

// TestUsesAreCrossCheckedInProcess: a constructor that takes a handle to
// a deployment its uses do not list fails NewLocal naming both; one that
// takes only declared handles runs.
func TestUsesAreCrossCheckedInProcess(t *testing.T) {
	reg := declared(t, serve.UserConfig(map[string]any{"calls": []string{"Back", "Front"}}))
	app, err := reg.BuildApp("app")
	if err != nil {
		t.Fatal(err)
	}
	_, err = serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), `handle to "Front", which deployment Front does not declare`) || !strings.Contains(err.Error(), "now: Back") {
		t.Fatalf("NewLocal(a handle outside uses) = %v, want an error naming Front and its uses", err)
	}

	reg = declared(t)
	app, err = reg.BuildApp("app")
	if err != nil {
		t.Fatal(err)
	}
	l, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatalf("NewLocal = %v", err)
	}
	defer l.Close(context.Background())
	resp, err := l.Ingress().Call(context.Background(), &serve.Request{Body: []byte("x")})
	if err != nil || string(resp.Body) != "back:x" {
		t.Fatalf("call = %v, %v; want back:x", resp, err)
	}

	// Without uses, any deployment of the app may be called.
	app.Deployments[0].Uses = nil
	app.Deployments[0].UserConfig = json.RawMessage(`{"calls":["Back","Front"]}`)
	l2, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatalf("NewLocal without uses = %v", err)
	}
	_ = l2.Close(context.Background())
}
