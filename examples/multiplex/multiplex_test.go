package multiplex_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/jetserve/jetserve/examples/multiplex"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

func TestClassifierServesTheRequestedModel(t *testing.T) {
	reg := serve.NewRegistry()
	if err := multiplex.Register(reg); err != nil {
		t.Fatal(err)
	}
	app := config.Application{Name: "m", RoutePrefix: "/m", Ingress: "C", Deployments: []config.Deployment{
		{Name: "C", Handler: multiplex.HandlerClassifier, MaxModelsPerReplica: 2, UserConfig: json.RawMessage(`{"load_delay":"1ms"}`)}}}
	l, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background()) //nolint:errcheck
	ask := func(model string) multiplex.Output {
		t.Helper()
		out, err := serve.CallJSON[multiplex.Output](context.Background(), l.Ingress().WithModel(model), "", multiplex.Input{Text: "refund my order please"})
		if err != nil {
			t.Fatalf("call model %s: %v", model, err)
		}
		if out.Model != model || out.Probability <= 0 || out.Probability >= 1 {
			t.Fatalf("call model %s = %+v", model, out)
		}
		return out
	}
	a, b := ask("tenant-a"), ask("tenant-b")
	if a.Probability == b.Probability {
		t.Errorf("tenant-a and tenant-b give the same probability %v: the models are not distinct", a.Probability)
	}
	ask("tenant-c") // evicts tenant-a (capacity 2)
	if again := ask("tenant-a"); again.Probability != a.Probability {
		t.Errorf("tenant-a reloaded = %v, want %v (weights are deterministic in the id)", again.Probability, a.Probability)
	}
	_, err = l.Ingress().Call(context.Background(), &serve.Request{Body: []byte(`{"text":"x"}`)})
	if se := serve.AsError(err); se == nil || se.Status != http.StatusBadRequest {
		t.Errorf("call without a model id = %v, want 400", err)
	}
}
