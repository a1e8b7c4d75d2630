package quickstart

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// The application runs in-process in a plain go test: no NATS, no fleet.
func TestGreeterInProcess(t *testing.T) {
	b, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(b)
	if err != nil {
		t.Fatalf("config.yaml: %v", err)
	}
	reg := serve.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	app, err := serve.NewLocal(context.Background(), reg, cfg.Applications[0], zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(context.Background())

	got, err := serve.CallJSON[Reply](context.Background(), app.Ingress(), "", Request{Name: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Message != "Hello, Ada!" {
		t.Errorf("greet Ada = %q, want %q (config.yaml's greeting)", got.Message, "Hello, Ada!")
	}

	_, err = serve.CallJSON[Reply](context.Background(), app.Ingress(), "", Request{})
	var se *serve.Error
	if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
		t.Errorf("greet nobody = %v, want a 400", err)
	}
}

func TestGreeterReconfigure(t *testing.T) {
	h, err := NewGreeter(context.Background(), serve.Init{ReplicaID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	g := h.(*Greeter)
	uc, _ := json.Marshal(Options{Greeting: "Bonjour", Shout: true})
	if err := g.Reconfigure(context.Background(), uc); err != nil {
		t.Fatal(err)
	}
	resp, err := g.ServeRequest(context.Background(), &serve.Request{Body: []byte(`{"name":"Ada"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var r Reply
	if err := resp.Decode(&r); err != nil {
		t.Fatal(err)
	}
	if r.Message != "BONJOUR, ADA!" || r.Replica != "r1" {
		t.Errorf("after Reconfigure = %+v, want BONJOUR, ADA! from r1", r)
	}
	if err := g.Reconfigure(context.Background(), json.RawMessage(`{"greeting": 5}`)); err == nil {
		t.Error("Reconfigure with a bad user_config = nil, want an error")
	}
}

// config.yaml is what `go run ./cmd/worker build` writes from App: the
// code's defaults, which operators then edit.
func TestConfigYAMLIsBuilt(t *testing.T) {
	reg := serve.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	built, err := reg.BuildYAML()
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(built) != string(file) {
		t.Errorf("config.yaml differs from `go run ./cmd/worker build` (rewrite it with: go run ./cmd/worker build -o config.yaml):\n--- built\n%s\n--- config.yaml\n%s", built, file)
	}
}
