package e2e

// What the suite assumes about the example deployments compiled into
// jetserve-worker (examples.Register) and the example application
// (examples/config.yaml). Everything handler-specific lives here, so that a
// renamed example changes one file. Tests check at run time that the
// workers advertise the handlers they need, and fail with the list the
// workers do advertise when they do not.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/config"
)

const (
	// exampleConfig is the example application, relative to e2e/; it holds
	// the apps "text" (the pipeline) and "echo" (diag.Echo).
	exampleConfig = "../examples/config.yaml"

	// handlerEcho (examples/diag) answers 200 with the request body and
	// an X-Replica header, after ?delay_ms=N if asked; the rolling update,
	// failover, queue-full and benchmark tests use it.
	handlerEcho = "diag.Echo"
	// handlerSlow is the handler that can be asked to wait: diag.Echo with
	// slowQuery.
	handlerSlow = handlerEcho
	slowQuery   = "?delay_ms=1500"

	// The example pipeline: its ingress deployment reconfigures in place
	// and shows user_config's "version" in GET <prefix>/ ("config") and in
	// POST <prefix>/analyze ("config_version").
	exampleApp        = "text"
	examplePrefix     = "/text"
	examplePipeline   = "Pipeline"
	handlerPipeline   = "text.Pipeline"
	exampleEchoPrefix = "/echo"

	// handlerScorer (examples/batching) scores {"text"} with a model whose
	// cost is per call (user_config call_cost), batched unless
	// user_config says batched: false; answers report batch_size.
	handlerScorer = "batch.Scorer"
	// handlerClassifier (examples/multiplex) serves the per-tenant model
	// named by the serve_multiplexed_model_id header; answers report
	// model and replica.
	handlerClassifier = "mux.Classifier"
	// The example Go OIP model (examples/iris): app "iris", served by the
	// ingress at /v2/models/iris/... (protocol oip, oip_models [iris]).
	handlerIris = "iris.Classifier"
	// Two builds of one deployment (examples/diag versions.go): switching
	// a deployment from one to the other is a rolling update to other
	// code. Both have the workflows "greet" (pinned) and "greet-auto"
	// (auto_upgrade), which await the signal "go" and return
	// {"started_on", "finished_on"}: "v1" or "v2", the code that ran.
	handlerVersionsV1 = "diag.VersionsV1"
	handlerVersionsV2 = "diag.VersionsV2"
	exampleIris       = "iris"
	exampleModel      = "iris"
)

// irisInfer asks the Iris model about a setosa, a versicolor and a
// virginica from Fisher's data; the answer's "label" output names them.
const irisInfer = `{"id":"e2e","inputs":[{"name":"features","shape":[3,4],"datatype":"FP32",` +
	`"data":[[5.1,3.5,1.4,0.2],[6.4,3.2,4.5,1.5],[6.7,3.0,5.2,2.3]]}]}`

// echoBody is what the tests send to the echo handler.
var echoBody = []byte(`{"text":"hello jetserve"}`)

const review = "The new phone is wonderful. The screen is bright and sharp, and the battery lasts for days. " +
	"I love how fast the camera is, and the speakers are excellent."

// exampleCall is a request to the example app and substrings of its 200
// answer that show real work was done.
type exampleCall struct {
	method, path string
	body         []byte
	want         []string
}

var exampleCalls = []exampleCall{
	{"POST", "/text/sentiment", []byte(`{"text":"I love this wonderful product, it is excellent"}`), []string{`"label":"positive"`}},
	{"POST", "/text/analyze", []byte(`{"text":"` + review + `"}`), []string{`"language":"en"`, `"sentiment"`, `"keywords"`, `"summary"`, `"config_version":"v1"`}},
	{"GET", "/text/", nil, []string{`"methods"`}},
	{"POST", "/echo/", echoBody, []string{string(echoBody)}},
	{"POST", "/v2/models/" + exampleModel + "/infer", []byte(irisInfer), []string{`"data":["setosa","versicolor","virginica"]`}},
}

// exampleUnknownMethod is a path of the example app that names no method
// (the Pipeline dispatches on the first path segment).
const exampleUnknownMethod = "/text/no-such-method-e2e"

// readExample reads and parses the example config.
func readExample(tb testing.TB) ([]byte, config.ServeConfig) {
	tb.Helper()
	b, err := os.ReadFile(filepath.FromSlash(exampleConfig))
	if err != nil {
		tb.Fatalf("e2e: example config: %v", err)
	}
	cfg, err := config.Parse(b)
	if err != nil {
		tb.Fatalf("e2e: example config %s: %v", exampleConfig, err)
	}
	return b, cfg
}

// replicas is the total replica count of app in cfg.
func replicas(app config.Application) int {
	n := 0
	for _, d := range app.Deployments {
		n += d.Replicas()
	}
	return n
}

// deployment is one app with one deployment, as the tests use: short
// health checks and drains so that failures are noticed within seconds.
type deployment struct {
	app, handler       string
	replicas           int
	cpu                float64
	maxOngoing         int
	maxQueued          int
	userConfig         json.RawMessage
	gracefulShutdown   time.Duration
	healthCheckPeriod  time.Duration
	healthCheckTimeout time.Duration
}

func (d deployment) application() config.Application {
	n := d.replicas
	cpu := d.cpu
	if cpu == 0 {
		cpu = 0.5
	}
	dep := config.Deployment{
		Name:                    d.app,
		Handler:                 d.handler,
		NumReplicas:             &n,
		MaxOngoingRequests:      d.maxOngoing,
		MaxQueuedRequests:       d.maxQueued,
		Resources:               config.Resources{CPU: &cpu},
		UserConfig:              d.userConfig,
		HealthCheckPeriod:       config.Duration(or(d.healthCheckPeriod, time.Second)),
		HealthCheckTimeout:      config.Duration(or(d.healthCheckTimeout, 2*time.Second)),
		GracefulShutdownTimeout: config.Duration(or(d.gracefulShutdown, 5*time.Second)),
	}
	return config.Application{Name: d.app, RoutePrefix: "/" + d.app, Ingress: d.app, Deployments: []config.Deployment{dep}}
}

func or(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// serveConfig renders apps as the JSON body of a PUT, checking it with
// config.Parse first so that a mistake in a test shows as such.
func serveConfig(tb testing.TB, apps ...config.Application) []byte {
	tb.Helper()
	b, err := json.Marshal(config.ServeConfig{Applications: apps})
	if err != nil {
		tb.Fatalf("e2e: encode config: %v", err)
	}
	if _, err := config.Parse(b); err != nil {
		tb.Fatalf("e2e: the test's own config is invalid: %v\n%s", err, b)
	}
	return b
}
