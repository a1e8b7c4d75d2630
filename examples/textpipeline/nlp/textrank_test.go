package nlp

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestTextRankClosedForm(t *testing.T) {
	// A and B share all their terms, C shares none: C is dangling and its
	// score is spread evenly. With d = 0.85 and n = 3 the fixed point is
	// c = ((1-d)/3) / (1 - d/3) and a = b = (1 - c) / 2.
	doc := Preprocess("Red apples grow here. Red apples grow here too. Blue whales swim.")
	got := TextRank(doc)
	c := ((1 - Damping) / 3) / (1 - Damping/3)
	a := (1 - c) / 2
	want := []float64{a, a, c}
	if len(got) != 3 {
		t.Fatalf("TextRank(%q) = %v, want %v", doc.Text, got, want)
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-5 {
			t.Errorf("TextRank(%q) = %v, want %v", doc.Text, got, want)
			break
		}
	}
}

func TestTextRankSumsToOne(t *testing.T) {
	tests := []string{
		"One sentence only.",
		"Cats purr. Dogs bark. Birds sing.",
		strings.Repeat("Cats and dogs play. Dogs chase cats. Birds watch dogs. ", 10),
	}
	for _, in := range tests {
		doc := Preprocess(in)
		got := TextRank(doc)
		if len(got) != len(doc.Sentences) {
			t.Errorf("TextRank(%.30q) has %d scores, want %d", in, len(got), len(doc.Sentences))
		}
		sum := 0.0
		for _, s := range got {
			sum += s
		}
		if math.Abs(sum-1) > 1e-6 {
			t.Errorf("TextRank(%.30q) sums to %v, want 1", in, sum)
		}
	}
	if got := TextRank(Preprocess("")); got != nil {
		t.Errorf("TextRank(empty) = %v, want nil", got)
	}
}

func TestTextRankCentralSentenceWins(t *testing.T) {
	// The first sentence shares terms with every other; the others share
	// terms only with it.
	doc := Preprocess("Solar wind turbines and batteries power homes. " +
		"Solar panels cover the roof. " +
		"Wind farms stand on the hill. " +
		"Batteries store energy overnight. " +
		"Homes need heat in winter.")
	scores := TextRank(doc)
	for i := 1; i < len(scores); i++ {
		if scores[0] <= scores[i] {
			t.Errorf("TextRank scores = %v, want sentence 0 highest", scores)
			break
		}
	}
}

func TestSummarize(t *testing.T) {
	text := "Solar wind turbines and batteries power homes. " +
		"Solar panels cover the roof. " +
		"Wind farms stand on the hill. " +
		"Batteries store energy overnight. " +
		"The cat slept."
	doc := Preprocess(text)
	tests := []struct {
		n    int
		want []string
	}{
		{-1, nil},
		{0, nil},
		{1, []string{"Solar wind turbines and batteries power homes."}},
		// The unrelated "The cat slept." is dropped first; order is kept.
		{4, []string{
			"Solar wind turbines and batteries power homes.",
			"Solar panels cover the roof.",
			"Wind farms stand on the hill.",
			"Batteries store energy overnight.",
		}},
		{5, sentenceTexts(doc)},
		{50, sentenceTexts(doc)},
	}
	for _, tt := range tests {
		if got := Summarize(doc, tt.n); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Summarize(doc, %d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	if got := Summarize(Preprocess(""), 3); got != nil {
		t.Errorf("Summarize(empty, 3) = %q, want nil", got)
	}
}

func TestCosine(t *testing.T) {
	vecs := sentenceVectors(Preprocess("apple apple banana. apple banana banana. cherry. the."))
	tests := []struct {
		i, j int
		want float64
	}{
		{0, 0, 1},
		{0, 1, 4.0 / 5}, // (2·1 + 1·2) / (√5 · √5)
		{0, 2, 0},
		{2, 3, 0}, // "the." has no content terms
	}
	for _, tt := range tests {
		if got := cosine(vecs[tt.i], vecs[tt.j]); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("cosine(s%d, s%d) = %v, want %v", tt.i, tt.j, got, tt.want)
		}
	}
}
