// Package multiplex is the model-multiplexing example: Classifier serves
// many per-tenant text classifiers from few replicas. Each request names
// its model in the serve_multiplexed_model_id header (or, through the
// ingress's Open Inference Protocol endpoints, by the model name); a
// replica keeps at most max_models_per_replica of them loaded (a
// serve.Multiplexer, least recently used evicted), and the routers send a
// request to a replica that already holds its model.
//
// A model is a hashed bag-of-words logistic classifier whose weights are
// generated from the model id (standing in for weights read from object
// storage); loading takes load_delay, as reading weights would.
//
// user_config: {"load_delay": "200ms"}.
package multiplex

import (
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
)

// HandlerClassifier is the Classifier deployment's handler name.
const HandlerClassifier = "mux.Classifier"

// Register adds the multiplexing example to reg.
func Register(reg *serve.Registry) error {
	return reg.Register(HandlerClassifier, NewClassifier)
}

// features is the size of a model's hashed feature space.
const features = 4096

// Model is one tenant's classifier.
type Model struct {
	ID      string
	weights []float64
}

// load builds model id's weights (deterministic in the id).
func load(ctx context.Context, id string, delay time.Duration) (*Model, error) {
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	h := fnv.New64a()
	h.Write([]byte(id))
	rng := rand.New(rand.NewPCG(h.Sum64(), 0x6a657473657276))
	m := &Model{ID: id, weights: make([]float64, features)}
	for i := range m.weights {
		m.weights[i] = rng.NormFloat64()
	}
	return m, nil
}

// Predict returns the probability that text is in the model's class.
func (m *Model) Predict(text string) float64 {
	sum := 0.0
	for _, w := range strings.Fields(strings.ToLower(text)) {
		h := fnv.New32a()
		h.Write([]byte(w))
		sum += m.weights[h.Sum32()%features]
	}
	return 1 / (1 + math.Exp(-sum))
}

// Classifier serves the per-tenant models. Safe for concurrent use.
type Classifier struct {
	replica string
	models  *serve.Multiplexer[*Model]
}

// Input is a request body.
type Input struct {
	Text string `json:"text"`
}

// Output is an answer.
type Output struct {
	Model       string  `json:"model"`
	Probability float64 `json:"probability"`
	Replica     string  `json:"replica"`
}

// NewClassifier builds a Classifier from its user_config.
func NewClassifier(_ context.Context, init serve.Init) (serve.Handler, error) {
	var c struct {
		LoadDelay string `json:"load_delay"`
	}
	c.LoadDelay = "200ms"
	if err := init.DecodeUserConfig(&c); err != nil {
		return nil, err
	}
	delay, err := time.ParseDuration(c.LoadDelay)
	if err != nil || delay < 0 {
		return nil, fmt.Errorf("user_config: load_delay: want a duration such as \"200ms\", got %q", c.LoadDelay)
	}
	return &Classifier{replica: init.ReplicaID, models: serve.NewMultiplexer(init, func(ctx context.Context, id string) (*Model, error) {
		return load(ctx, id, delay)
	})}, nil
}

// ServeRequest classifies the text with the request's model.
func (c *Classifier) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	var in Input
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	m, release, err := c.models.Get(ctx, serve.ModelID(req))
	if err != nil {
		return nil, err
	}
	defer release()
	return serve.JSON(Output{Model: m.ID, Probability: m.Predict(in.Text), Replica: c.replica})
}

// Close unloads every model.
func (c *Classifier) Close(ctx context.Context) error { return c.models.Close(ctx) }
