package nlp

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strings"
)

// data holds the corpora the models are built from:
//
//   - data/sentiment.tsv: hand-written labelled review sentences;
//   - data/lang/<code>.txt: hand-written sample prose per language.
//
//go:embed data/sentiment.tsv data/lang/*.txt
var data embed.FS

// SentimentCorpus returns the embedded labelled sentiment corpus
// (data/sentiment.tsv), in file order.
func SentimentCorpus() ([]Example, error) {
	b, err := data.ReadFile("data/sentiment.tsv")
	if err != nil {
		return nil, fmt.Errorf("sentiment corpus: %w", err)
	}
	ex, err := ReadExamples(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("sentiment corpus: %w", err)
	}
	return ex, nil
}

// LanguageSamples returns the embedded sample text of every language, keyed
// by language code (the base name of data/lang/<code>.txt).
func LanguageSamples() (map[string]string, error) {
	entries, err := fs.ReadDir(data, "data/lang")
	if err != nil {
		return nil, fmt.Errorf("language samples: %w", err)
	}
	out := make(map[string]string, len(entries))
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".txt" {
			continue
		}
		b, err := data.ReadFile(path.Join("data/lang", name))
		if err != nil {
			return nil, fmt.Errorf("language samples: %w", err)
		}
		out[strings.TrimSuffix(name, ".txt")] = string(b)
	}
	return out, nil
}

// Models holds every trained model of the pipeline. Build it once with
// [NewModels] and share it: it is immutable, so all of its methods are safe
// for concurrent use.
type Models struct {
	language  *LanguageDetector
	sentiment *SentimentModel
	keywords  *KeywordExtractor
}

// NewModels builds all models from the embedded data:
//
//   - the language detector from data/lang/*.txt with [DefaultProfileSize]
//     trigrams per language;
//   - the sentiment model trained on all of data/sentiment.tsv;
//   - the keyword extractor's IDF table from every sentiment example and
//     every paragraph of the English sample text, each taken as a document.
//
// It takes about ten milliseconds.
func NewModels() (*Models, error) {
	samples, err := LanguageSamples()
	if err != nil {
		return nil, fmt.Errorf("new models: %w", err)
	}
	lang, err := NewLanguageDetector(samples, DefaultProfileSize)
	if err != nil {
		return nil, fmt.Errorf("new models: %w", err)
	}
	examples, err := SentimentCorpus()
	if err != nil {
		return nil, fmt.Errorf("new models: %w", err)
	}
	sentiment, err := TrainSentiment(examples)
	if err != nil {
		return nil, fmt.Errorf("new models: %w", err)
	}
	corpus := make([]Doc, 0, len(examples)+8)
	for _, ex := range examples {
		corpus = append(corpus, Preprocess(ex.Text))
	}
	for _, para := range strings.Split(samples["en"], "\n\n") {
		if strings.TrimSpace(para) != "" {
			corpus = append(corpus, Preprocess(para))
		}
	}
	keywords, err := NewKeywordExtractor(corpus)
	if err != nil {
		return nil, fmt.Errorf("new models: %w", err)
	}
	return &Models{language: lang, sentiment: sentiment, keywords: keywords}, nil
}

// Languages returns the codes of the languages DetectLanguage knows, sorted.
func (m *Models) Languages() []string {
	return m.language.Languages()
}

// DetectLanguage returns the language of doc and a confidence in [0, 1]; see
// [LanguageDetector.Detect].
func (m *Models) DetectLanguage(doc Doc) (lang string, confidence float64) {
	return m.language.Detect(doc)
}

// Sentiment returns "positive" or "negative" for doc, with the posterior
// probability of each; see [SentimentModel.Predict].
func (m *Models) Sentiment(doc Doc) (label string, probs map[string]float64) {
	return m.sentiment.Predict(doc)
}

// Keywords returns the k best TF-IDF keywords of doc; see
// [KeywordExtractor.Keywords].
func (m *Models) Keywords(doc Doc, k int) []Keyword {
	return m.keywords.Keywords(doc, k)
}

// Summarize returns the n most central sentences of doc in original order;
// see [Summarize].
func (m *Models) Summarize(doc Doc, n int) []string {
	return Summarize(doc, n)
}
