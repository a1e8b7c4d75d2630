package iris

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
	"github.com/rs/zerolog"
)

// TestHeldOutAccuracy trains on 80% of the flowers (every fifth one held
// out, so each species is in both parts) and classifies the rest.
func TestHeldOutAccuracy(t *testing.T) {
	ds, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.X) != 150 || len(ds.Names) != Classes || ds.Names[0] != "setosa" {
		t.Fatalf("Load() = %d flowers, classes %v; want 150 and setosa, versicolor, virginica", len(ds.X), ds.Names)
	}
	train, test := &Dataset{Names: ds.Names}, &Dataset{Names: ds.Names}
	for i := range ds.X {
		part := train
		if i%5 == 4 {
			part = test
		}
		part.X, part.Y = append(part.X, ds.X[i]), append(part.Y, ds.Y[i])
	}
	c := Train(train, Config{Iterations: 500, LearningRate: 0.5, L2: 1e-3})
	if acc := c.Accuracy(test); acc < 0.9 {
		t.Errorf("held-out accuracy = %.3f, want >= 0.9", acc)
	}
	if acc := c.Accuracy(train); acc < 0.93 {
		t.Errorf("training accuracy = %.3f, want >= 0.93", acc)
	}
}

// TestServedOverOIP runs the deployment in-process (serve.NewLocal, no
// NATS) and calls it as an OIP client would.
func TestServedOverOIP(t *testing.T) {
	reg := serve.NewRegistry()
	if err := Register(reg); err != nil {
		t.Fatal(err)
	}
	app := config.Application{Name: "iris", RoutePrefix: "/iris", Ingress: "Iris", Deployments: []config.Deployment{
		{Name: "Iris", Handler: HandlerClassifier, Protocol: config.ProtocolOIP, OIPModels: []string{"iris"}}}}
	local, err := serve.NewLocal(context.Background(), reg, app, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	h := local.Ingress()
	// A setosa, a versicolor and a virginica from Fisher's data.
	body := `{"id":"f","inputs":[{"name":"features","shape":[3,4],"datatype":"FP32",
	  "data":[[5.1,3.5,1.4,0.2],[6.4,3.2,4.5,1.5],[6.7,3.0,5.2,2.3]]}]}`
	resp, err := h.Call(context.Background(), &serve.Request{Method: "POST", Path: "/v2/models/iris/infer", Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		ModelName string `json:"model_name"`
		ID        string `json:"id"`
		Outputs   []struct {
			Name     string          `json:"name"`
			Shape    []int           `json:"shape"`
			Datatype string          `json:"datatype"`
			Data     json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil {
		t.Fatalf("infer = %d %s: %v", resp.Status, resp.Body, err)
	}
	if out.ModelName != "iris" || out.ID != "f" || len(out.Outputs) != 3 {
		t.Fatalf("infer = %s, want model iris, id f and three outputs", resp.Body)
	}
	if o := out.Outputs[1]; o.Name != "label" || string(o.Data) != `["setosa","versicolor","virginica"]` {
		t.Errorf("output %s = %s, want the three species in order", o.Name, o.Data)
	}
	var probs []float64
	_ = json.Unmarshal(out.Outputs[0].Data, &probs)
	for i := range 3 {
		if s := probs[3*i] + probs[3*i+1] + probs[3*i+2]; s < 0.999 || s > 1.001 {
			t.Errorf("probabilities of flower %d sum to %v, want 1", i, s)
		}
	}

	bad := `{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[5.1,3.5,1.4]}]}`
	resp, _ = h.Call(context.Background(), &serve.Request{Method: "POST", Path: "/v2/models/iris/infer", Body: []byte(bad)})
	if resp == nil || resp.Status != http.StatusBadRequest || !strings.Contains(string(resp.Body), `input \"features\": shape [1 3] does not fit`) {
		t.Errorf("infer with 3 measurements = %v, want 400 naming the input", resp)
	}
}
