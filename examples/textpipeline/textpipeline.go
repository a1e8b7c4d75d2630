// Package textpipeline is jetserve's example application: a multi-model
// text-understanding pipeline in the spirit of Ray Serve's
// content-understanding example. The ingress deployment (Pipeline)
// preprocesses the text and detects its language (Preprocess), then chooses
// the models to run at run time — sentiment only for English, keywords and
// an extractive summary for every language — calls them in parallel through
// handles and combines their answers.
//
// Every deployment is safe for concurrent use: models are immutable once
// built, and the Pipeline's tunables (user_config) are swapped atomically
// by Reconfigure.
package textpipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/jetserve/jetserve/examples/textpipeline/nlp"
	"github.com/jetserve/jetserve/pkg/serve"
	"golang.org/x/sync/errgroup"
)

// Handler names, as the config's `handler` field names them.
const (
	HandlerPipeline   = "text.Pipeline"
	HandlerPreprocess = "text.Preprocess"
	HandlerSentiment  = "text.Sentiment"
	HandlerKeywords   = "text.Keywords"
	HandlerSummarizer = "text.Summarizer"
)

// Register adds the pipeline's deployments to reg.
func Register(reg *serve.Registry) error {
	for name, ctor := range map[string]serve.Constructor{
		HandlerPipeline:   NewPipeline,
		HandlerPreprocess: newModel(preprocess),
		HandlerSentiment:  newModel(sentiment),
		HandlerKeywords:   newModel(keywords),
		HandlerSummarizer: newModel(summarize),
	} {
		if err := reg.Register(name, ctor); err != nil {
			return err
		}
	}
	return nil
}

// TextInput is what every model takes.
type TextInput struct {
	Text string `json:"text"`
	// N is how many keywords or summary sentences to return.
	N int `json:"n,omitempty"`
}

// Language is Preprocess's answer.
type Language struct {
	Language   string  `json:"language"`
	Confidence float64 `json:"confidence"`
	Sentences  int     `json:"sentences"`
	Terms      int     `json:"terms"`
}

// Sentiment is the sentiment model's answer.
type Sentiment struct {
	Label         string             `json:"label"`
	Probabilities map[string]float64 `json:"probabilities"`
}

// Keywords is the keyword model's answer.
type Keywords struct {
	Keywords []nlp.Keyword `json:"keywords"`
}

// Summary is the summarizer's answer.
type Summary struct {
	Sentences []string `json:"sentences"`
}

// Analysis is the pipeline's combined answer.
type Analysis struct {
	Language  Language      `json:"language"`
	Models    []string      `json:"models"`
	Sentiment *Sentiment    `json:"sentiment,omitempty"`
	Keywords  []nlp.Keyword `json:"keywords"`
	Summary   []string      `json:"summary"`
	// ConfigVersion is user_config's "version", to show in-place updates.
	ConfigVersion string `json:"config_version,omitempty"`
}

// model runs one nlp model on a preprocessed document.
type model func(m *nlp.Models, doc nlp.Doc, n int) any

func preprocess(m *nlp.Models, doc nlp.Doc, _ int) any {
	lang, conf := m.DetectLanguage(doc)
	return Language{Language: lang, Confidence: conf, Sentences: len(doc.Sentences), Terms: len(doc.Terms)}
}

func sentiment(m *nlp.Models, doc nlp.Doc, _ int) any {
	label, probs := m.Sentiment(doc)
	return Sentiment{Label: label, Probabilities: probs}
}

func keywords(m *nlp.Models, doc nlp.Doc, n int) any {
	if n <= 0 {
		n = 5
	}
	return Keywords{Keywords: m.Keywords(doc, n)}
}

func summarize(m *nlp.Models, doc nlp.Doc, n int) any {
	if n <= 0 {
		n = 2
	}
	return Summary{Sentences: m.Summarize(doc, n)}
}

// newModel makes a deployment serving one model: it builds (trains) the
// models once per replica and answers {"text": …} with the model's output.
func newModel(run model) serve.Constructor {
	return func(_ context.Context, init serve.Init) (serve.Handler, error) {
		models, err := nlp.NewModels()
		if err != nil {
			return nil, fmt.Errorf("build models: %w", err)
		}
		return serve.HandlerFunc(func(_ context.Context, req *serve.Request) (*serve.Response, error) {
			var in TextInput
			if err := req.Decode(&in); err != nil {
				return nil, err
			}
			if in.Text == "" {
				return nil, serve.Errorf(http.StatusBadRequest, "text is required")
			}
			return serve.JSON(run(models, nlp.Preprocess(in.Text), in.N))
		}), nil
	}
}

// PipelineConfig is the Pipeline's user_config.
type PipelineConfig struct {
	SummarySentences int    `json:"summary_sentences"`
	Keywords         int    `json:"keywords"`
	Version          string `json:"version"`
}

// Pipeline is the ingress deployment.
type Pipeline struct {
	cfg        atomic.Pointer[PipelineConfig]
	preprocess *serve.Handle
	models     map[string]*serve.Handle
	methods    serve.Methods
}

// NewPipeline builds the ingress deployment.
func NewPipeline(_ context.Context, init serve.Init) (serve.Handler, error) {
	p := &Pipeline{
		preprocess: init.Handle("Preprocess"),
		models: map[string]*serve.Handle{
			"sentiment": init.Handle("Sentiment"),
			"keywords":  init.Handle("Keywords"),
			"summary":   init.Handle("Summarizer"),
		},
	}
	if err := p.Reconfigure(context.Background(), init.UserConfig); err != nil {
		return nil, err
	}
	p.methods = serve.Methods{
		"":          p.describe,
		"analyze":   p.analyze,
		"sentiment": p.single("sentiment"),
		"keywords":  p.single("keywords"),
		"summary":   p.single("summary"),
	}
	return p, nil
}

// Reconfigure applies a new user_config in place.
func (p *Pipeline) Reconfigure(_ context.Context, raw json.RawMessage) error {
	c := PipelineConfig{SummarySentences: 2, Keywords: 5}
	if len(raw) > 0 && string(raw) != "null" {
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("user_config: %w", err)
		}
	}
	if c.SummarySentences < 1 || c.Keywords < 1 {
		return fmt.Errorf("user_config: summary_sentences and keywords must be >= 1")
	}
	p.cfg.Store(&c)
	return nil
}

// ServeRequest dispatches on the method (path segment).
func (p *Pipeline) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	return p.methods.ServeRequest(ctx, req)
}

// ServeStream streams the summary, one sentence per chunk (newline
// delimited JSON), as each is ready.
func (p *Pipeline) ServeStream(ctx context.Context, req *serve.Request, w serve.StreamWriter) error {
	in, err := decodeText(req)
	if err != nil {
		return err
	}
	cfg := p.cfg.Load()
	sum, err := serve.CallJSON[Summary](ctx, p.models["summary"], "", TextInput{Text: in.Text, N: cfg.SummarySentences})
	if err != nil {
		return err
	}
	if err := w.WriteHead(http.StatusOK, http.Header{"Content-Type": {"application/x-ndjson"}}); err != nil {
		return err
	}
	for i, s := range sum.Sentences {
		b, _ := json.Marshal(map[string]any{"index": i, "sentence": s})
		if err := w.Write(append(b, '\n')); err != nil {
			return err
		}
	}
	return nil
}

func decodeText(req *serve.Request) (TextInput, error) {
	var in TextInput
	if t := req.Query.Get("text"); t != "" && len(req.Body) == 0 {
		in.Text = t
	} else if err := req.Decode(&in); err != nil {
		return in, err
	}
	if in.Text == "" {
		return in, serve.Errorf(http.StatusBadRequest, `"text" is required`)
	}
	return in, nil
}

func (p *Pipeline) describe(context.Context, *serve.Request) (*serve.Response, error) {
	return serve.JSON(map[string]any{
		"application": "text-understanding pipeline",
		"methods": map[string]string{
			"POST /analyze":   `{"text": "..."} → language, then sentiment (English only), keywords and summary in parallel`,
			"POST /sentiment": `{"text": "..."} → one model, chosen by name at run time`,
			"POST /keywords":  `{"text": "...", "n": 5}`,
			"POST /summary":   `{"text": "...", "n": 2}; add ?stream=1 to /analyze to stream the summary`,
		},
		"config": p.cfg.Load(),
	})
}

// single calls one model chosen by name at run time.
func (p *Pipeline) single(name string) serve.HandlerFunc {
	return func(ctx context.Context, req *serve.Request) (*serve.Response, error) {
		in, err := decodeText(req)
		if err != nil {
			return nil, err
		}
		resp, err := p.models[name].Call(ctx, &serve.Request{Body: mustJSON(in), Header: http.Header{"Content-Type": {"application/json"}}})
		if err != nil {
			return nil, err
		}
		return resp, nil
	}
}

func (p *Pipeline) analyze(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	in, err := decodeText(req)
	if err != nil {
		return nil, err
	}
	cfg := p.cfg.Load()
	lang, err := serve.CallJSON[Language](ctx, p.preprocess, "", in)
	if err != nil {
		return nil, err
	}
	out := Analysis{Language: lang, ConfigVersion: cfg.Version}
	g, gctx := errgroup.WithContext(ctx)
	if lang.Language == "en" { // the sentiment model is trained on English only
		out.Models = append(out.Models, "sentiment")
		g.Go(func() error {
			s, err := serve.CallJSON[Sentiment](gctx, p.models["sentiment"], "", in)
			out.Sentiment = &s
			return err
		})
	}
	out.Models = append(out.Models, "keywords", "summary")
	g.Go(func() error {
		k, err := serve.CallJSON[Keywords](gctx, p.models["keywords"], "", TextInput{Text: in.Text, N: cfg.Keywords})
		out.Keywords = k.Keywords
		return err
	})
	g.Go(func() error {
		s, err := serve.CallJSON[Summary](gctx, p.models["summary"], "", TextInput{Text: in.Text, N: cfg.SummarySentences})
		out.Summary = s.Sentences
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return serve.JSON(out)
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}
