package nlp

import (
	"strings"
	"testing"
)

// benchText is a review of about 120 words in six sentences.
const benchText = `I bought these headphones for my daily commute and I have used them every day for two months. ` +
	`The sound is clear and detailed, with deep bass that never becomes boomy. ` +
	`Noise cancelling works well on the train, although it struggles a little with wind. ` +
	`The battery easily lasts a week of commuting, and charging is quick. ` +
	`The case feels cheap and the hinge creaks, which is disappointing at this price. ` +
	`Overall they are comfortable, reliable headphones and I would buy them again.`

func benchModels(b *testing.B) (*Models, Doc) {
	b.Helper()
	m, err := NewModels()
	if err != nil {
		b.Fatalf("NewModels() error = %v", err)
	}
	return m, Preprocess(benchText)
}

func BenchmarkPreprocess(b *testing.B) {
	b.SetBytes(int64(len(benchText)))
	for b.Loop() {
		Preprocess(benchText)
	}
}

func BenchmarkStem(b *testing.B) {
	words := strings.Fields("generalizations connections hopping relational sensibiliti running movies wonderful")
	for b.Loop() {
		for _, w := range words {
			Stem(w)
		}
	}
}

func BenchmarkDetectLanguage(b *testing.B) {
	m, doc := benchModels(b)
	for b.Loop() {
		m.DetectLanguage(doc)
	}
}

func BenchmarkSentiment(b *testing.B) {
	m, doc := benchModels(b)
	for b.Loop() {
		m.Sentiment(doc)
	}
}

func BenchmarkKeywords(b *testing.B) {
	m, doc := benchModels(b)
	for b.Loop() {
		m.Keywords(doc, 5)
	}
}

func BenchmarkSummarize(b *testing.B) {
	m, doc := benchModels(b)
	for b.Loop() {
		m.Summarize(doc, 2)
	}
}

// BenchmarkSummarizeLong summarises a 60-sentence document, where the
// quadratic similarity graph dominates.
func BenchmarkSummarizeLong(b *testing.B) {
	doc := Preprocess(strings.Repeat(benchText+" ", 10))
	for b.Loop() {
		Summarize(doc, 3)
	}
}

// BenchmarkPipeline is one request through the whole pipeline: preprocess,
// then every model.
func BenchmarkPipeline(b *testing.B) {
	m, _ := benchModels(b)
	for b.Loop() {
		doc := Preprocess(benchText)
		m.DetectLanguage(doc)
		m.Sentiment(doc)
		m.Keywords(doc, 5)
		m.Summarize(doc, 2)
	}
}

func BenchmarkNewModels(b *testing.B) {
	for b.Loop() {
		if _, err := NewModels(); err != nil {
			b.Fatalf("NewModels() error = %v", err)
		}
	}
}
