package nlp

import (
	"math"
	"testing"
)

func newTestExtractor(t testing.TB, texts ...string) *KeywordExtractor {
	t.Helper()
	var corpus []Doc
	for _, s := range texts {
		corpus = append(corpus, Preprocess(s))
	}
	x, err := NewKeywordExtractor(corpus)
	if err != nil {
		t.Fatalf("NewKeywordExtractor() error = %v", err)
	}
	return x
}

func TestIDF(t *testing.T) {
	x := newTestExtractor(t, "apple banana", "apple cherry", "banana")
	tests := []struct {
		stem string
		want float64
	}{
		{"appl", math.Log(4.0/3) + 1},
		{"banana", math.Log(4.0/3) + 1},
		{"cherri", math.Log(4.0/2) + 1},
		{"durian", math.Log(4.0/1) + 1},
	}
	for _, tt := range tests {
		t.Run(tt.stem, func(t *testing.T) {
			if got := x.IDF(tt.stem); math.Abs(got-tt.want) > 1e-12 {
				t.Errorf("IDF(%q) = %v, want %v", tt.stem, got, tt.want)
			}
		})
	}
}

func TestKeywords(t *testing.T) {
	x := newTestExtractor(t, "apple banana", "apple cherry", "banana")
	doc := Preprocess("The apples and an apple, a cherry and a durian.")
	// Content terms: appl ×2, cherri, durian (4 in all).
	want := []Keyword{
		{"apples", 2.0 / 4 * (math.Log(4.0/3) + 1)},
		{"durian", 1.0 / 4 * (math.Log(4.0/1) + 1)},
		{"cherry", 1.0 / 4 * (math.Log(4.0/2) + 1)},
	}
	tests := []struct {
		k    int
		want []Keyword
	}{
		{-1, nil},
		{0, nil},
		{1, want[:1]},
		{2, want[:2]},
		{3, want},
		{10, want},
	}
	for _, tt := range tests {
		got := x.Keywords(doc, tt.k)
		if len(got) != len(tt.want) {
			t.Errorf("Keywords(doc, %d) = %v, want %v", tt.k, got, tt.want)
			continue
		}
		for i := range got {
			if got[i].Term != tt.want[i].Term || math.Abs(got[i].Score-tt.want[i].Score) > 1e-12 {
				t.Errorf("Keywords(doc, %d) = %v, want %v", tt.k, got, tt.want)
				break
			}
		}
	}
}

func TestKeywordsSurfaceFormAndTies(t *testing.T) {
	x := newTestExtractor(t, "unrelated text")
	tests := []struct {
		in   string
		want []string
	}{
		// Same stem "run": equal counts, the first form wins.
		{"running runs", []string{"running"}},
		// The most frequent form wins.
		{"runs running running", []string{"running"}},
		// Equal scores: alphabetical order.
		{"zebra yak xylophone", []string{"xylophone", "yak", "zebra"}},
		{"the and of", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := x.Keywords(Preprocess(tt.in), 5)
			var terms []string
			for _, k := range got {
				terms = append(terms, k.Term)
			}
			if len(terms) != len(tt.want) {
				t.Fatalf("Keywords(%q, 5) = %v, want terms %q", tt.in, got, tt.want)
			}
			for i := range terms {
				if terms[i] != tt.want[i] {
					t.Errorf("Keywords(%q, 5) = %v, want terms %q", tt.in, got, tt.want)
					break
				}
			}
		})
	}
}

func TestKeywordsEmbeddedIDF(t *testing.T) {
	m, err := NewModels()
	if err != nil {
		t.Fatalf("NewModels() error = %v", err)
	}
	doc := Preprocess(`The city council approved a new plan for public transport on Monday.
The plan adds three new bus lines and extends the tram network to the northern districts.
Council members said the transport plan would cut traffic in the city centre.
Critics argued that the cost of the tram extension was too high.`)
	got := m.Keywords(doc, 3)
	want := map[string]bool{"plan": true, "tram": true, "council": true, "transport": true, "city": true}
	if len(got) != 3 {
		t.Fatalf("Keywords(doc, 3) = %v, want 3 keywords", got)
	}
	for i, k := range got {
		if !want[k.Term] {
			t.Errorf("Keywords(doc, 3)[%d] = %v, want one of the repeated topic words %v", i, k, want)
		}
		if i > 0 && k.Score > got[i-1].Score {
			t.Errorf("Keywords(doc, 3) = %v, want scores in descending order", got)
		}
	}
}

func TestNewKeywordExtractorEmpty(t *testing.T) {
	if x, err := NewKeywordExtractor(nil); err == nil {
		t.Errorf("NewKeywordExtractor(nil) = %v, nil, want an error", x)
	}
}
