package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/jetserve/jetserve/e2e/internal/fleet"
)

// TestOIPInferExample deploys the example Go OIP model (examples/iris)
// through the admin API and calls it as an Open Inference Protocol v2
// client through the real ingress binary: server and model endpoints,
// inference, and the refusals that name what is wrong.
func TestOIPInferExample(t *testing.T) {
	f := startFleet(t, fleet.Options{})
	f.RequireHandlers(handlerIris)
	_, cfg := readExample(t)
	app, ok := cfg.App(exampleIris)
	if !ok {
		t.Fatalf("%s has no app %q", exampleConfig, exampleIris)
	}
	f.Deploy(serveConfig(t, app))
	f.WaitApp(deployTimeout, exampleIris, replicas(app), nil)
	model := "/v2/models/" + exampleModel
	f.Eventually(deployTimeout, "model ready", func() error {
		r, err := f.Call(http.MethodGet, model+"/ready", nil)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"ready":true`) {
			return fmt.Errorf("GET %s/ready = %v", model, r)
		}
		return nil
	})

	r := f.MustCall(http.MethodPost, model+"/infer", []byte(irisInfer))
	var out struct {
		ModelName string `json:"model_name"`
		ID        string `json:"id"`
		Outputs   []struct {
			Name     string          `json:"name"`
			Datatype string          `json:"datatype"`
			Shape    []int           `json:"shape"`
			Data     json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		t.Fatalf("POST %s/infer = %s: %v", model, r.Body, err)
	}
	if out.ModelName != exampleModel || out.ID != "e2e" || len(out.Outputs) != 3 {
		t.Fatalf("POST %s/infer = %s, want model %s, id e2e, three outputs", model, r.Body, exampleModel)
	}
	for _, o := range out.Outputs {
		switch o.Name {
		case "label":
			if string(o.Data) != `["setosa","versicolor","virginica"]` {
				t.Errorf("labels = %s, want setosa, versicolor, virginica", o.Data)
			}
		case "probabilities":
			if o.Datatype != "FP32" || fmt.Sprint(o.Shape) != "[3 3]" {
				t.Errorf("probabilities %s %v, want FP32 [3 3]", o.Datatype, o.Shape)
			}
		}
	}

	t.Run("metadata and health", func(t *testing.T) {
		r := f.MustCall(http.MethodGet, model, nil)
		if !strings.Contains(string(r.Body), `"name":"features","datatype":"FP32","shape":[-1,4]`) {
			t.Errorf("GET %s = %s, want the features input declared", model, r.Body)
		}
		for _, p := range []string{"/v2", "/v2/health/live", "/v2/health/ready"} {
			f.MustCall(http.MethodGet, p, nil)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, c := range []struct {
			path, body string
			status     int
			want       string
		}{
			{model + "/infer", `{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4]}]}`, 400, `input \"features\": shape [1 4] × FP32 needs 4 elements, data has 3`},
			{model + "/infer", `{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP31","data":[5.1,3.5,1.4,0.2]}]}`, 400, `unknown datatype \"FP31\"`},
			{model + "/infer", `{"inputs":[{"name":"petals","shape":[1,2],"datatype":"FP32","data":[1.4,0.2]}]}`, 400, `input \"features\": missing`},
			{model + "/infer", `{"inputs":[{"name":"features","shape":[1,3],"datatype":"FP32","data":[5.1,3.5,1.4]}]}`, 400, `input \"features\": shape [1 3] does not fit`},
			{"/v2/models/rose/infer", irisInfer, 404, `unknown model \"rose\"`},
		} {
			r, err := f.Call(http.MethodPost, c.path, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != c.status || !strings.Contains(string(r.Body), c.want) || !strings.Contains(string(r.Body), `"error":`) {
				t.Errorf("POST %s %s = %v, want %d with {\"error\"} containing %s", c.path, c.body, r, c.status, c.want)
			}
		}
	})
}
