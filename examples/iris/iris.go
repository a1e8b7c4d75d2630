// Package iris is the example Go deployment that speaks the Open Inference
// Protocol v2: an Iris flower classifier — multinomial logistic regression
// on Fisher's Iris data (150 flowers, 4 measurements in cm, 3 species;
// iris.csv as scikit-learn ships it) — trained by full-batch gradient
// descent on standardised features when a replica starts (a few
// milliseconds), then served through serve.OIP with typed tensors:
//
//	input  "features"      FP32 [-1, 4]  sepal length, sepal width, petal length, petal width
//	output "probabilities" FP32 [-1, 3]  setosa, versicolor, virginica
//	output "label"         BYTES [-1]    the most probable species
//	output "class"         INT64 [-1]    its index
//
// With the config's `protocol: oip` and `oip_models: [iris]` the ingress
// serves it at POST /v2/models/iris/infer. A Classifier is read-only after
// training and safe for concurrent use.
package iris

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/csv"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/jetserve/jetserve/pkg/config"
	"github.com/jetserve/jetserve/pkg/oip"
	"github.com/jetserve/jetserve/pkg/serve"
)

// HandlerClassifier is the deployment's handler name.
const HandlerClassifier = "iris.Classifier"

// Features and classes of the data set.
const (
	Features = 4
	Classes  = 3
)

//go:embed iris.csv
var irisCSV []byte

// Register adds the Iris classifier deployment to reg.
func Register(reg *serve.Registry) error {
	return reg.Register(HandlerClassifier, New)
}

// Config is the deployment's user_config.
type Config struct {
	// Iterations of gradient descent (default 500).
	Iterations int `json:"iterations"`
	// LearningRate of gradient descent (default 0.5).
	LearningRate float64 `json:"learning_rate"`
	// L2 is the weight decay (default 1e-3).
	L2 float64 `json:"l2"`
}

// New trains a classifier on the whole data set and serves it over OIP.
func New(_ context.Context, init serve.Init) (serve.Handler, error) {
	cfg := Config{Iterations: 500, LearningRate: 0.5, L2: 1e-3}
	if err := init.DecodeUserConfig(&cfg); err != nil {
		return nil, err
	}
	if cfg.Iterations < 1 || cfg.LearningRate <= 0 || cfg.L2 < 0 {
		return nil, fmt.Errorf("user_config: iterations must be >= 1, learning_rate > 0 and l2 >= 0, got %+v", cfg)
	}
	ds, err := Load()
	if err != nil {
		return nil, err
	}
	c := Train(ds, cfg)
	init.Logger.Info().Float64("training_accuracy", c.Accuracy(ds)).Int("examples", len(ds.Y)).Msg("iris classifier trained")
	return serve.OIP(c), nil
}

// Dataset is the Iris data: X[i] are a flower's measurements, Y[i] its
// species index in Names.
type Dataset struct {
	X     [][Features]float64
	Y     []int
	Names []string
}

// Load parses the embedded iris.csv (header: n, features, class names…).
func Load() (*Dataset, error) {
	rows, err := csv.NewReader(bytes.NewReader(irisCSV)).ReadAll()
	if err != nil || len(rows) < 2 || len(rows[0]) != 2+Classes {
		return nil, fmt.Errorf("iris.csv: want a header of n, features and %d class names: %v", Classes, err)
	}
	ds := &Dataset{Names: rows[0][2:]}
	for i, r := range rows[1:] {
		if len(r) != Features+1 {
			return nil, fmt.Errorf("iris.csv row %d: %d fields, want %d", i+2, len(r), Features+1)
		}
		var x [Features]float64
		for j := range Features {
			if x[j], err = strconv.ParseFloat(r[j], 64); err != nil {
				return nil, fmt.Errorf("iris.csv row %d: %w", i+2, err)
			}
		}
		y, err := strconv.Atoi(r[Features])
		if err != nil || y < 0 || y >= Classes {
			return nil, fmt.Errorf("iris.csv row %d: class %q", i+2, r[Features])
		}
		ds.X, ds.Y = append(ds.X, x), append(ds.Y, y)
	}
	return ds, nil
}

// Classifier is a trained softmax regression: scores = W·z + b on the
// standardised features z = (x - mean) / std.
type Classifier struct {
	mean, std [Features]float64
	w         [Classes][Features]float64
	b         [Classes]float64
	names     []string
}

// Train fits a classifier to ds by full-batch gradient descent on the
// cross-entropy with L2 weight decay.
func Train(ds *Dataset, cfg Config) *Classifier {
	c := &Classifier{names: ds.Names}
	n := float64(len(ds.X))
	for _, x := range ds.X {
		for j := range Features {
			c.mean[j] += x[j] / n
		}
	}
	for _, x := range ds.X {
		for j := range Features {
			c.std[j] += (x[j] - c.mean[j]) * (x[j] - c.mean[j]) / n
		}
	}
	for j := range Features {
		c.std[j] = math.Sqrt(c.std[j])
		if c.std[j] == 0 {
			c.std[j] = 1
		}
	}
	z := make([][Features]float64, len(ds.X))
	for i, x := range ds.X {
		z[i] = c.standardise(x)
	}
	for range cfg.Iterations {
		var gw [Classes][Features]float64
		var gb [Classes]float64
		for i := range z {
			p := c.softmax(z[i])
			for k := range Classes {
				d := p[k]
				if ds.Y[i] == k {
					d--
				}
				gb[k] += d / n
				for j := range Features {
					gw[k][j] += d * z[i][j] / n
				}
			}
		}
		for k := range Classes {
			c.b[k] -= cfg.LearningRate * gb[k]
			for j := range Features {
				c.w[k][j] -= cfg.LearningRate * (gw[k][j] + cfg.L2*c.w[k][j])
			}
		}
	}
	return c
}

func (c *Classifier) standardise(x [Features]float64) [Features]float64 {
	var z [Features]float64
	for j := range Features {
		z[j] = (x[j] - c.mean[j]) / c.std[j]
	}
	return z
}

// softmax returns the class probabilities of standardised features z.
func (c *Classifier) softmax(z [Features]float64) [Classes]float64 {
	var s [Classes]float64
	top := math.Inf(-1)
	for k := range Classes {
		s[k] = c.b[k]
		for j := range Features {
			s[k] += c.w[k][j] * z[j]
		}
		top = max(top, s[k])
	}
	sum := 0.0
	for k := range Classes {
		s[k] = math.Exp(s[k] - top)
		sum += s[k]
	}
	for k := range Classes {
		s[k] /= sum
	}
	return s
}

// Predict returns the class probabilities of measurements x.
func (c *Classifier) Predict(x [Features]float64) [Classes]float64 {
	return c.softmax(c.standardise(x))
}

// Accuracy is the share of ds that c classifies right.
func (c *Classifier) Accuracy(ds *Dataset) float64 {
	right := 0
	for i, x := range ds.X {
		if argmax(c.Predict(x)) == ds.Y[i] {
			right++
		}
	}
	return float64(right) / float64(len(ds.X))
}

func argmax(p [Classes]float64) int {
	best := 0
	for k := range Classes {
		if p[k] > p[best] {
			best = k
		}
	}
	return best
}

// ModelMetadata describes the model's tensors (serve.ModelDescriber).
func (c *Classifier) ModelMetadata(_ context.Context, model string) (*serve.ModelMetadata, error) {
	return &serve.ModelMetadata{Name: model,
		Inputs: []serve.TensorMetadata{{Name: "features", Datatype: oip.FP32, Shape: []int64{-1, Features}}},
		Outputs: []serve.TensorMetadata{
			{Name: "probabilities", Datatype: oip.FP32, Shape: []int64{-1, Classes}},
			{Name: "label", Datatype: oip.BYTES, Shape: []int64{-1}},
			{Name: "class", Datatype: oip.INT64, Shape: []int64{-1}},
		}}, nil
}

// Infer classifies a batch of flowers (serve.Inferer). The adapter has
// already checked the input against the metadata.
func (c *Classifier) Infer(_ context.Context, req *serve.InferRequest) (*serve.InferResponse, error) {
	x, err := req.Input("features").Float32s()
	if err != nil {
		return nil, serve.Errorf(http.StatusBadRequest, "%v", err)
	}
	n := len(x) / Features
	probs := make([]float32, 0, n*Classes)
	labels := make([]string, n)
	classes := make([]int64, n)
	for i := range n {
		var f [Features]float64
		for j := range Features {
			f[j] = float64(x[i*Features+j])
		}
		p := c.Predict(f)
		for _, v := range p {
			probs = append(probs, float32(v))
		}
		k := argmax(p)
		labels[i], classes[i] = c.names[k], int64(k)
	}
	pt, err := oip.NewTensor("probabilities", []int64{int64(n), Classes}, probs)
	if err != nil {
		return nil, err
	}
	lt, err := oip.NewTensor("label", []int64{int64(n)}, labels)
	if err != nil {
		return nil, err
	}
	ct, err := oip.NewTensor("class", []int64{int64(n)}, classes)
	if err != nil {
		return nil, err
	}
	return &serve.InferResponse{Outputs: []*serve.Tensor{pt, lt, ct}}, nil
}

// App declares the iris application: the classifier served over the Open
// Inference Protocol v2 as model "iris".
func App() serve.App {
	return serve.App{
		Name: "iris", RoutePrefix: "/iris", Ingress: "Iris",
		Comment: "A Go model speaking the Open Inference Protocol v2: the ingress serves it at\n" +
			"POST /v2/models/iris/infer (and GET /v2/models/iris, …/ready); see examples/iris.",
		Deployments: []serve.Deployment{
			serve.Deploy("Iris", HandlerClassifier, serve.Configure(func(d *config.Deployment) {
				d.Protocol, d.OIPModels = config.ProtocolOIP, []string{"iris"}
			}), serve.MaxOngoingRequests(32), serve.CPU(0.1), serve.Memory("32Mi")),
		},
	}
}
