package nlp

import (
	"fmt"
	"reflect"
	"sync"
	"testing"
)

func TestNewModels(t *testing.T) {
	m, err := NewModels()
	if err != nil {
		t.Fatalf("NewModels() error = %v", err)
	}
	if got, want := m.Languages(), []string{"de", "en", "es", "fr"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Languages() = %q, want %q", got, want)
	}
	doc := Preprocess("What a wonderful, beautiful film. The actors are superb and the story is moving.")
	if lang, _ := m.DetectLanguage(doc); lang != "en" {
		t.Errorf("DetectLanguage(%q) = %q, want %q", doc.Text, lang, "en")
	}
	if label, _ := m.Sentiment(doc); label != "positive" {
		t.Errorf("Sentiment(%q) = %q, want %q", doc.Text, label, "positive")
	}
	if got := m.Keywords(doc, 2); len(got) != 2 {
		t.Errorf("Keywords(%q, 2) = %v, want 2 keywords", doc.Text, got)
	}
	if got := m.Summarize(doc, 1); len(got) != 1 {
		t.Errorf("Summarize(%q, 1) = %q, want 1 sentence", doc.Text, got)
	}
}

// result gathers every model's output for one document.
type result struct {
	lang      string
	conf      float64
	label     string
	probs     map[string]float64
	keywords  []Keyword
	summary   []string
	textRank  []float64
	processed Doc
}

func runAll(m *Models, text string) result {
	doc := Preprocess(text)
	var r result
	r.processed = doc
	r.lang, r.conf = m.DetectLanguage(doc)
	r.label, r.probs = m.Sentiment(doc)
	r.keywords = m.Keywords(doc, 5)
	r.summary = m.Summarize(doc, 2)
	r.textRank = TextRank(doc)
	return r
}

// TestModelsConcurrentUse runs every model from many goroutines at once on
// one shared Models (run with -race) and checks each result equals the one
// computed sequentially.
func TestModelsConcurrentUse(t *testing.T) {
	m, err := NewModels()
	if err != nil {
		t.Fatalf("NewModels() error = %v", err)
	}
	texts := []string{
		"The battery died after two days. The screen is dim. I regret buying it.",
		"Le film était magnifique. Les acteurs sont excellents.",
		"Das Essen war kalt und der Kellner war unfreundlich.",
		"La comida estaba deliciosa y el servicio fue excelente.",
		"Great headphones! The sound is clear and the fit is comfortable. Highly recommended.",
	}
	want := make([]result, len(texts))
	for i, s := range texts {
		want[i] = runAll(m, s)
	}
	// One shared Doc read by every goroutine as well.
	shared := Preprocess(texts[0])

	const goroutines = 16
	const rounds = 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*rounds*len(texts))
	for g := 0; g < goroutines; g++ {
		wg.Go(func() {
			for r := 0; r < rounds; r++ {
				i := (g + r) % len(texts)
				if got := runAll(m, texts[i]); !reflect.DeepEqual(got, want[i]) {
					errs <- fmt.Errorf("goroutine %d: results for %q = %+v, want %+v", g, texts[i], got, want[i])
				}
				if label, _ := m.Sentiment(shared); label != want[0].label {
					errs <- fmt.Errorf("goroutine %d: Sentiment(shared) = %q, want %q", g, label, want[0].label)
				}
				_ = m.Keywords(shared, 3)
				_ = m.Summarize(shared, 1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
