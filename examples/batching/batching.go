// Package batching is the dynamic-batching example: Scorer scores texts
// with a model whose cost is per call, not per input — as a GPU kernel
// launch is — so that serving requests one by one wastes it and a
// serve.Batcher gathers concurrent requests into one call.
//
// The model is a hashed bag-of-words linear scorer (weights derived from
// the feature hash) on a simulated accelerator: one call at a time, each
// costing call_cost of device time whatever the batch size (the device is
// simulated by waiting; the scoring itself is real). With batched: false
// every request is its own call: the unbatched baseline of `make bench`.
//
// user_config (every field optional; a change is applied in place):
//
//	{"batched": true, "call_cost": "2ms",
//	 "batch": {"max_batch_size": 32, "batch_wait_timeout": "2ms", "max_concurrent_batches": 1}}
package batching

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/serve"
)

// HandlerScorer is the Scorer deployment's handler name.
const HandlerScorer = "batch.Scorer"

// Register adds the batching example to reg.
func Register(reg *serve.Registry) error {
	return reg.Register(HandlerScorer, NewScorer)
}

// Config is the Scorer's user_config.
type Config struct {
	// Batched gathers concurrent requests into batches (default true).
	Batched bool `json:"batched"`
	// CallCost is the device time of one model call, whatever its size.
	CallCost string `json:"call_cost"`
	// Batch are the batcher's options (Ray's @serve.batch parameters).
	Batch serve.BatchOptions `json:"batch"`
}

func defaultConfig() Config {
	return Config{Batched: true, CallCost: "2ms", Batch: serve.BatchOptions{
		MaxBatchSize: 32, BatchWaitTimeout: 2 * time.Millisecond, MaxConcurrentBatches: 1}}
}

// parse decodes a user_config over the defaults and validates it.
func parse(raw json.RawMessage) (Config, time.Duration, error) {
	c := defaultConfig()
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &c); err != nil {
			return c, 0, fmt.Errorf("user_config: %w", err)
		}
	}
	cost, err := time.ParseDuration(c.CallCost)
	if err != nil || cost < 0 {
		return c, 0, fmt.Errorf("user_config: call_cost: want a duration such as \"2ms\", got %q", c.CallCost)
	}
	if err := c.Batch.Validate(); err != nil {
		return c, 0, fmt.Errorf("user_config: batch: %w", err)
	}
	return c, cost, nil
}

// Input is a request body.
type Input struct {
	Text string `json:"text"`
}

// Output is an answer.
type Output struct {
	Score float64 `json:"score"`
	Label string  `json:"label"`
	// BatchSize is how many requests shared the model call.
	BatchSize int `json:"batch_size"`
}

// Scorer serves the model, batched or not. Safe for concurrent use.
type Scorer struct {
	batcher *serve.Batcher[string, Output]
	device  sync.Mutex // the accelerator runs one call at a time

	mu      sync.Mutex
	batched bool          // guarded by mu
	cost    time.Duration // guarded by mu
}

// NewScorer builds a Scorer from its user_config.
func NewScorer(_ context.Context, init serve.Init) (serve.Handler, error) {
	c, cost, err := parse(init.UserConfig)
	if err != nil {
		return nil, err
	}
	s := &Scorer{batched: c.Batched, cost: cost}
	s.batcher, err = serve.NewBatcher(s.predict, c.Batch, serve.WithBatchMetrics(init.Metrics, "predict"))
	if err != nil {
		return nil, err
	}
	return s, nil
}

// ServeRequest scores one text.
func (s *Scorer) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	var in Input
	if err := req.Decode(&in); err != nil {
		return nil, err
	}
	s.mu.Lock()
	batched := s.batched
	s.mu.Unlock()
	var out Output
	if batched {
		var err error
		if out, err = s.batcher.Do(ctx, in.Text); err != nil {
			return nil, err
		}
	} else {
		outs, err := s.predict(ctx, []string{in.Text})
		if err != nil {
			return nil, err
		}
		out = outs[0]
	}
	return serve.JSON(out)
}

// predict is one model call: the device's fixed cost, then the scores.
func (s *Scorer) predict(ctx context.Context, texts []string) ([]Output, error) {
	s.mu.Lock()
	cost := s.cost
	s.mu.Unlock()
	s.device.Lock()
	defer s.device.Unlock()
	if cost > 0 {
		t := time.NewTimer(cost)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	out := make([]Output, len(texts))
	for i, text := range texts {
		z := score(text)
		label := "negative"
		if z >= 0.5 {
			label = "positive"
		}
		out[i] = Output{Score: z, Label: label, BatchSize: len(texts)}
	}
	return out, nil
}

// score is a hashed bag-of-words logistic model: each word's weight is
// derived from its hash, in [-1, 1].
func score(text string) float64 {
	sum := 0.0
	for _, w := range strings.Fields(strings.ToLower(text)) {
		h := fnv.New64a()
		h.Write([]byte(w))
		sum += float64(h.Sum64()%2001)/1000 - 1
	}
	return 1 / (1 + math.Exp(-sum))
}

// Reconfigure applies a new user_config in place: batching on or off, the
// call cost and the batch options (the batcher's SetOptions).
func (s *Scorer) Reconfigure(_ context.Context, raw json.RawMessage) error {
	c, cost, err := parse(raw)
	if err != nil {
		return err
	}
	if err := s.batcher.SetOptions(c.Batch); err != nil {
		return err
	}
	s.mu.Lock()
	s.batched, s.cost = c.Batched, cost
	s.mu.Unlock()
	return nil
}

// Close stops the batcher after the batches in flight.
func (s *Scorer) Close(context.Context) error {
	s.batcher.Close()
	return nil
}
