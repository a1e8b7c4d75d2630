// Package training is the example application's long-running async method,
// in the spirit of the async-request RFC's fine-tuning example: the
// text.Trainer deployment trains a logistic-regression sentiment classifier
// with mini-batch SGD, epoch by epoch, as a durable job ("train").
//
// Features are the sentiment model's features (nlp.SentimentFeatures: stems
// with negation marking) plus adjacent-feature bigrams, hashed into a
// vector of `features` dimensions. The data set is either the shipped
// labelled corpus (dataset=sentiment, 380 sentences) or a generated one
// (dataset=synthetic, `size` review-like sentences built from a lexicon,
// with negations and 5% label noise), split 80/20 into training and
// held-out examples with a fixed seed.
//
// The job reads its last checkpoint at start and resumes at the next epoch;
// it checkpoints the weights after every epoch and reports progress. Epoch
// order is shuffled with a seed derived from the epoch number, so a resumed
// run computes exactly what an uninterrupted one would. It honours
// cancellation between mini-batches.
//
// Cost: featurising takes about 10 µs per example and an epoch about
// 0.7 µs per example, so dataset=synthetic size=1000000 num_epochs=200 runs
// for a few minutes (about 90% held-out accuracy after a few epochs; the
// generator's label noise caps it near 95%), while the tests' runs on the
// shipped corpus take well under a second. A Trainer is safe for concurrent use: every job has its own data.
package training

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jetserve/jetserve/examples/textpipeline/nlp"
	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/serve"
)

// HandlerTrainer is the Trainer deployment's handler name.
const HandlerTrainer = "text.Trainer"

// MethodTrain is the async method's name.
const MethodTrain = "train"

// Method returns the train method's SDK defaults.
func Method() config.AsyncMethod {
	prio := 1
	return config.AsyncMethod{
		Name:           MethodTrain,
		MaxQueued:      100,
		MaxRunning:     2,
		Priority:       &prio,
		IdempotencyKey: "request_id",
		MaxAttempts:    3,
		Timeout:        config.Duration(2 * 3600e9),
		RequiredArgs:   []string{"num_epochs"},
	}
}

// Register adds the Trainer deployment (with its async method and the
// retrain workflow) to reg.
func Register(reg *serve.Registry) error {
	return reg.Register(HandlerTrainer, New, serve.WithAsync(Method()), serve.WithWorkflows(Retrain()))
}

// New builds a Trainer replica.
func New(context.Context, serve.Init) (serve.Handler, error) { return &Trainer{}, nil }

// Trainer trains sentiment classifiers as jobs. Its sync endpoint only
// describes the async method.
type Trainer struct{}

// ServeRequest answers GET / with how to submit a training job; other
// paths are 404 (the job endpoints are served by the platform).
func (*Trainer) ServeRequest(_ context.Context, req *serve.Request) (*serve.Response, error) {
	if p := strings.Trim(req.Path, "/"); p != "" || req.Call != "" {
		return nil, serve.Errorf(http.StatusNotFound, "Trainer has no sync method %q; %s is an async method", p+req.Call, MethodTrain)
	}
	return serve.JSON(map[string]any{
		"async_method": MethodTrain,
		"submit":       "POST /{route_prefix}/train?num_epochs=N[&dataset=sentiment|synthetic&size=N&learning_rate=F&features=N&batch_size=N&seed=N]",
	})
}

// Params are the train job's arguments (query parameters or JSON body
// fields; numbers may be given as strings).
type Params struct {
	NumEpochs    int     `json:"num_epochs"`
	Dataset      string  `json:"dataset"`       // "sentiment" (default) or "synthetic"
	Size         int     `json:"size"`          // synthetic examples (default 20000)
	LearningRate float64 `json:"learning_rate"` // default 0.5
	Features     int     `json:"features"`      // hashing dimension (default 65536)
	BatchSize    int     `json:"batch_size"`    // default 16
	L2           float64 `json:"l2"`            // L2 penalty per example (default 1e-5)
	Seed         uint64  `json:"seed"`          // data split, generation and shuffling (default 1)
}

// Limits of the arguments.
const (
	MaxEpochs   = 10000
	MaxSize     = 20_000_000
	MaxFeatures = 1 << 24
)

// ParseParams reads and validates the arguments (a 400 *serve.Error when
// they are wrong: the job fails at once, without retries).
func ParseParams(args serve.Args) (Params, error) {
	p := Params{Dataset: "sentiment", Size: 20000, LearningRate: 0.5, Features: 1 << 16, BatchSize: 16, L2: 1e-5, Seed: 1}
	var err error
	num := func(key string, set func(float64)) {
		raw, ok := args[key]
		if !ok || err != nil {
			return
		}
		var f float64
		if e := json.Unmarshal(raw, &f); e != nil {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				err = serve.Errorf(http.StatusBadRequest, "argument %s: want a number, got %s", key, raw)
				return
			}
			if f, e = strconv.ParseFloat(strings.TrimSpace(s), 64); e != nil {
				err = serve.Errorf(http.StatusBadRequest, "argument %s: want a number, got %q", key, s)
				return
			}
		}
		set(f)
	}
	num("num_epochs", func(f float64) { p.NumEpochs = int(f) })
	num("size", func(f float64) { p.Size = int(f) })
	num("learning_rate", func(f float64) { p.LearningRate = f })
	num("features", func(f float64) { p.Features = int(f) })
	num("batch_size", func(f float64) { p.BatchSize = int(f) })
	num("l2", func(f float64) { p.L2 = f })
	num("seed", func(f float64) { p.Seed = uint64(f) })
	if raw, ok := args["dataset"]; ok && err == nil {
		if json.Unmarshal(raw, &p.Dataset) != nil {
			err = serve.Errorf(http.StatusBadRequest, "argument dataset: want a string, got %s", raw)
		}
	}
	if err != nil {
		return p, err
	}
	switch {
	case p.NumEpochs < 1 || p.NumEpochs > MaxEpochs:
		return p, serve.Errorf(http.StatusBadRequest, "argument num_epochs: want 1..%d, got %d", MaxEpochs, p.NumEpochs)
	case p.Dataset != "sentiment" && p.Dataset != "synthetic":
		return p, serve.Errorf(http.StatusBadRequest, "argument dataset: want sentiment or synthetic, got %q", p.Dataset)
	case p.Dataset == "synthetic" && (p.Size < 10 || p.Size > MaxSize):
		return p, serve.Errorf(http.StatusBadRequest, "argument size: want 10..%d, got %d", MaxSize, p.Size)
	case p.LearningRate <= 0 || p.LearningRate > 100 || math.IsNaN(p.LearningRate):
		return p, serve.Errorf(http.StatusBadRequest, "argument learning_rate: want > 0 and <= 100, got %v", p.LearningRate)
	case p.Features < 16 || p.Features > MaxFeatures:
		return p, serve.Errorf(http.StatusBadRequest, "argument features: want 16..%d, got %d", MaxFeatures, p.Features)
	case p.BatchSize < 1:
		return p, serve.Errorf(http.StatusBadRequest, "argument batch_size: want >= 1, got %d", p.BatchSize)
	case p.L2 < 0:
		return p, serve.Errorf(http.StatusBadRequest, "argument l2: want >= 0, got %v", p.L2)
	}
	return p, nil
}

// Result is the train job's result.
type Result struct {
	Epochs           int       `json:"epochs"`
	TrainAccuracy    float64   `json:"train_accuracy"`
	HeldoutAccuracy  float64   `json:"heldout_accuracy"`
	LossHistory      []float64 `json:"loss_history"`
	HeldoutHistory   []float64 `json:"heldout_history"`
	ResumedFromEpoch int       `json:"resumed_from_epoch"`
	Attempt          int       `json:"attempt"`
	Dataset          string    `json:"dataset"`
	TrainExamples    int       `json:"train_examples"`
	HeldoutExamples  int       `json:"heldout_examples"`
	Features         int       `json:"features"`
}

// Checkpoint is the state saved after every epoch (gob-encoded).
type Checkpoint struct {
	// Params fingerprint: a checkpoint of other arguments is ignored.
	Params         Params
	Epoch          int // epochs completed
	Weights        []float64
	Bias           float64
	LossHistory    []float64
	HeldoutHistory []float64
}

// RunJob trains the model: it resumes from the last checkpoint, runs the
// remaining epochs, checkpointing and reporting progress after each.
func (*Trainer) RunJob(ctx serve.JobContext, job *serve.Job) (any, error) {
	if job.Method != MethodTrain {
		return nil, serve.Errorf(http.StatusNotFound, "unknown async method %q", job.Method)
	}
	p, err := ParseParams(job.Args)
	if err != nil {
		return nil, err
	}
	log := ctx.Logger()
	cp := Checkpoint{Params: p, Weights: make([]float64, p.Features)}
	resumed := 0
	if b, ok, err := ctx.LastCheckpoint(); err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	} else if ok {
		var last Checkpoint
		switch err := gob.NewDecoder(bytes.NewReader(b)).Decode(&last); {
		case err != nil:
			log.Warn().Err(err).Msg("unreadable checkpoint; starting over")
		case last.Params != p || len(last.Weights) != p.Features:
			log.Warn().Msg("checkpoint of other arguments; starting over")
		default:
			cp, resumed = last, last.Epoch
			log.Info().Int("epoch", resumed).Msg("resuming from checkpoint")
		}
	}

	train, heldout, err := dataset(ctx, p)
	if err != nil {
		return nil, err
	}
	m := &model{w: cp.Weights, b: cp.Bias}
	for epoch := cp.Epoch + 1; epoch <= p.NumEpochs; epoch++ {
		loss, err := m.epoch(ctx, train, p, epoch)
		if err != nil {
			return nil, err
		}
		acc, held := m.accuracy(train), m.accuracy(heldout)
		cp.Epoch, cp.Bias = epoch, m.b
		cp.LossHistory = append(cp.LossHistory, loss)
		cp.HeldoutHistory = append(cp.HeldoutHistory, held)
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(&cp); err != nil {
			return nil, fmt.Errorf("encode checkpoint: %w", err)
		}
		if err := ctx.Checkpoint(buf.Bytes()); err != nil {
			return nil, fmt.Errorf("checkpoint epoch %d: %w", epoch, err)
		}
		msg := fmt.Sprintf("epoch %d/%d: loss %.4f acc %.3f heldout %.3f", epoch, p.NumEpochs, loss, acc, held)
		if err := ctx.Progress(float64(epoch)/float64(p.NumEpochs), msg); err != nil {
			log.Warn().Err(err).Msg("report progress")
		}
	}
	return Result{
		Epochs:           p.NumEpochs,
		TrainAccuracy:    m.accuracy(train),
		HeldoutAccuracy:  m.accuracy(heldout),
		LossHistory:      cp.LossHistory,
		HeldoutHistory:   cp.HeldoutHistory,
		ResumedFromEpoch: resumed,
		Attempt:          job.Attempt,
		Dataset:          p.Dataset,
		TrainExamples:    len(train),
		HeldoutExamples:  len(heldout),
		Features:         p.Features,
	}, nil
}

// example is one featurised example: hashed feature indices (with
// repetitions) and the label (1 positive, 0 negative).
type example struct {
	feats []int32
	y     float64
}

// model is a logistic regression over hashed binary features.
type model struct {
	w []float64
	b float64
}

func (m *model) score(x example) float64 {
	z := m.b
	for _, f := range x.feats {
		z += m.w[f]
	}
	return z
}

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// epoch runs one epoch of mini-batch SGD over train in an order fixed by
// (seed, epoch) and returns the mean log loss of the epoch's predictions.
func (m *model) epoch(ctx context.Context, train []example, p Params, epoch int) (float64, error) {
	order := rand.New(rand.NewPCG(p.Seed, uint64(epoch))).Perm(len(train))
	// Learning rate decays as 1/sqrt(epoch).
	lr := p.LearningRate / math.Sqrt(float64(epoch))
	var loss float64
	grads := make([]float64, 0, p.BatchSize)
	for start := 0; start < len(order); start += p.BatchSize {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		batch := order[start:min(start+p.BatchSize, len(order))]
		grads = grads[:0]
		for _, i := range batch {
			pr := sigmoid(m.score(train[i]))
			loss -= train[i].y*math.Log(max(pr, 1e-12)) + (1-train[i].y)*math.Log(max(1-pr, 1e-12))
			grads = append(grads, pr-train[i].y)
		}
		step := lr / float64(len(batch))
		for k, i := range batch {
			for _, f := range train[i].feats {
				m.w[f] -= step * (grads[k] + p.L2*m.w[f])
			}
			m.b -= step * grads[k]
		}
	}
	return loss / float64(len(train)), nil
}

func (m *model) accuracy(xs []example) float64 {
	if len(xs) == 0 {
		return 0
	}
	right := 0
	for _, x := range xs {
		if (m.score(x) > 0) == (x.y == 1) {
			right++
		}
	}
	return float64(right) / float64(len(xs))
}

// dataset builds, featurises and splits the job's data set (80/20).
func dataset(ctx context.Context, p Params) (train, heldout []example, err error) {
	var raw []nlp.Example
	switch p.Dataset {
	case "synthetic":
		raw = Synthetic(p.Size, p.Seed)
	default:
		if raw, err = nlp.SentimentCorpus(); err != nil {
			return nil, nil, fmt.Errorf("load corpus: %w", err)
		}
	}
	xs := make([]example, 0, len(raw))
	for i, ex := range raw {
		if i%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
		}
		xs = append(xs, featurize(ex, p.Features))
	}
	r := rand.New(rand.NewPCG(p.Seed, 0xda7a))
	r.Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
	cut := len(xs) * 4 / 5
	if cut == 0 || cut == len(xs) {
		return nil, nil, errors.New("data set too small to split")
	}
	return xs[:cut], xs[cut:], nil
}

// featurize hashes an example's sentiment features and their bigrams.
func featurize(ex nlp.Example, dim int) example {
	fs := nlp.SentimentFeatures(nlp.Preprocess(ex.Text))
	x := example{feats: make([]int32, 0, 2*len(fs))}
	if ex.Label == "positive" {
		x.y = 1
	}
	h := func(s string) int32 {
		f := fnv.New32a()
		_, _ = f.Write([]byte(s))
		return int32(f.Sum32() % uint32(dim))
	}
	for i, f := range fs {
		x.feats = append(x.feats, h(f))
		if i > 0 {
			x.feats = append(x.feats, h(fs[i-1]+" "+f))
		}
	}
	return x
}

// Lexicon of the synthetic reviews.
var (
	synthSubjects = []string{"the film", "this phone", "the hotel", "our dinner", "the service", "the book", "this laptop",
		"the concert", "the staff", "the camera", "the plot", "the room", "the battery", "the soundtrack", "the app"}
	synthPositive = []string{"wonderful", "excellent", "great", "delightful", "brilliant", "superb", "lovely", "fantastic",
		"impressive", "enjoyable", "charming", "reliable", "beautiful", "friendly", "perfect"}
	synthNegative = []string{"terrible", "awful", "boring", "disappointing", "dreadful", "poor", "broken", "slow",
		"rude", "ugly", "horrible", "useless", "annoying", "bland", "noisy"}
	synthFillers = []string{"honestly", "overall", "to be fair", "in the end", "frankly", "as expected", "after a week",
		"compared to the last one", "for the price", "once again"}
	synthVerbs = []string{"was", "is", "felt", "seemed", "looked", "turned out"}
)

// Synthetic generates n labelled review-like sentences from seed: one to
// three clauses "<subject> <verb> [not] <adjective>" whose polarity
// (flipped by "not") votes for the label, with a filler word now and then
// and 5% of the labels flipped (noise), so no model reaches 100%.
func Synthetic(n int, seed uint64) []nlp.Example {
	r := rand.New(rand.NewPCG(seed, 0x5e17))
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	out := make([]nlp.Example, n)
	var sb strings.Builder
	for i := range out {
		sb.Reset()
		score := 0
		clauses := 1 + r.IntN(3)
		for c := range clauses {
			if c > 0 {
				sb.WriteString(pick([]string{" and ", ", but ", ", while "}))
			} else if r.IntN(4) == 0 {
				sb.WriteString(pick(synthFillers) + ", ")
			}
			pos := r.IntN(2) == 0
			neg := r.IntN(4) == 0
			adj := pick(synthNegative)
			if pos {
				adj = pick(synthPositive)
			}
			sb.WriteString(pick(synthSubjects) + " " + pick(synthVerbs) + " ")
			if neg {
				sb.WriteString("not ")
			}
			sb.WriteString(adj)
			w := 1
			if c == clauses-1 {
				w = 2 // the last clause weighs most
			}
			if pos != neg {
				score += w
			} else {
				score -= w
			}
		}
		sb.WriteString(".")
		label := "negative"
		if score > 0 || (score == 0 && r.IntN(2) == 0) {
			label = "positive"
		}
		if r.IntN(20) == 0 {
			if label == "positive" {
				label = "negative"
			} else {
				label = "positive"
			}
		}
		out[i] = nlp.Example{Label: label, Text: sb.String()}
	}
	return out
}

// Deployment declares the Trainer deployment with its code defaults (its
// async method comes from its registration, WithAsync).
func Deployment() serve.Deployment {
	return serve.Deploy("Trainer", HandlerTrainer, serve.NumReplicas(1), serve.MaxOngoingRequests(2),
		serve.CPU(0.25), serve.Memory("256Mi"), serve.GracefulShutdownTimeout(30*time.Second),
		serve.Comment("The async (job) method: POST /text/train?num_epochs=5 → 202 {request_id};\n"+
			"GET /text/train/status?request_id=… (see examples/training)."),
		serve.FieldComment("max_ongoing_requests", "jobs one replica runs at once"))
}
