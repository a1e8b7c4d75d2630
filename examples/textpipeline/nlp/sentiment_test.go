package nlp

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

// splitCorpus holds out every fifth example of the embedded corpus. The
// corpus alternates positive and negative lines, so both halves stay
// balanced.
func splitCorpus(t testing.TB) (train, test []Example) {
	t.Helper()
	ex, err := SentimentCorpus()
	if err != nil {
		t.Fatalf("SentimentCorpus() error = %v", err)
	}
	for i, e := range ex {
		if i%5 == 4 {
			test = append(test, e)
		} else {
			train = append(train, e)
		}
	}
	return train, test
}

func TestSentimentCorpus(t *testing.T) {
	ex, err := SentimentCorpus()
	if err != nil {
		t.Fatalf("SentimentCorpus() error = %v", err)
	}
	if len(ex) < 150 {
		t.Errorf("SentimentCorpus() has %d examples, want at least 150", len(ex))
	}
	counts := map[string]int{}
	for _, e := range ex {
		counts[e.Label]++
	}
	if len(counts) != 2 || counts["positive"] != counts["negative"] {
		t.Errorf("SentimentCorpus() label counts = %v, want equal positive and negative only", counts)
	}
}

func TestSentimentHeldOutAccuracy(t *testing.T) {
	train, test := splitCorpus(t)
	m, err := TrainSentiment(train)
	if err != nil {
		t.Fatalf("TrainSentiment() error = %v", err)
	}
	correct := 0
	for _, e := range test {
		if got, _ := m.Predict(Preprocess(e.Text)); got == e.Label {
			correct++
		} else {
			t.Logf("misclassified: Predict(%q) = %q, want %q", e.Text, got, e.Label)
		}
	}
	acc := float64(correct) / float64(len(test))
	t.Logf("held-out accuracy %d/%d = %.3f", correct, len(test), acc)
	if acc < 0.8 {
		t.Errorf("held-out accuracy = %.3f, want >= 0.8", acc)
	}
}

func TestSentimentObviousSentences(t *testing.T) {
	m, err := NewModels()
	if err != nil {
		t.Fatalf("NewModels() error = %v", err)
	}
	tests := []struct {
		in   string
		want string
	}{
		{"I loved it, what a wonderful film!", "positive"},
		{"Absolutely fantastic, highly recommended.", "positive"},
		{"Great quality and very comfortable.", "positive"},
		{"The staff were friendly and the food was delicious.", "positive"},
		{"Excellent product, works perfectly.", "positive"},
		{"Terrible, it broke after a day.", "negative"},
		{"Boring and far too long.", "negative"},
		{"The worst movie I have ever seen.", "negative"},
		{"The staff were rude and the room was dirty.", "negative"},
		{"It was not good.", "negative"},
		{"I didn't like it at all.", "negative"},
		{"Cheap, flimsy and a waste of money.", "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, probs := m.Sentiment(Preprocess(tt.in))
			if got != tt.want {
				t.Errorf("Sentiment(%q) = %q (%v), want %q", tt.in, got, probs, tt.want)
			}
			if probs[tt.want] <= 0.5 {
				t.Errorf("Sentiment(%q) probs = %v, want P(%s) > 0.5", tt.in, probs, tt.want)
			}
		})
	}
}

func TestSentimentPredictHandComputed(t *testing.T) {
	// Two documents, one per label. Features: pos {great, fun}, neg {bad}.
	// V = 3; totals: pos 2, neg 1; priors 1/2 each.
	m, err := TrainSentiment([]Example{
		{Label: "pos", Text: "great fun"},
		{Label: "neg", Text: "bad"},
	})
	if err != nil {
		t.Fatalf("TrainSentiment() error = %v", err)
	}
	if got := m.VocabularySize(); got != 3 {
		t.Errorf("VocabularySize() = %d, want 3", got)
	}
	if got, want := m.Labels(), []string{"neg", "pos"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Labels() = %q, want %q", got, want)
	}
	// P(great|pos) = (1+1)/(2+3) = 2/5; P(great|neg) = (0+1)/(1+3) = 1/4.
	// P(pos|great) = (2/5) / (2/5 + 1/4) = 8/13.
	label, probs := m.Predict(Preprocess("great"))
	if label != "pos" || math.Abs(probs["pos"]-8.0/13) > 1e-12 || math.Abs(probs["neg"]-5.0/13) > 1e-12 {
		t.Errorf("Predict(great) = %q, %v, want pos, {pos: 8/13, neg: 5/13}", label, probs)
	}
	// Unknown words are ignored: the prior (a tie) decides, and ties go to
	// the first label.
	label, probs = m.Predict(Preprocess("zebra"))
	if label != "neg" || probs["neg"] != 0.5 || probs["pos"] != 0.5 {
		t.Errorf("Predict(zebra) = %q, %v, want neg, {neg: 0.5, pos: 0.5}", label, probs)
	}
}

func TestSentimentProbabilitiesSumToOne(t *testing.T) {
	m, err := NewModels()
	if err != nil {
		t.Fatalf("NewModels() error = %v", err)
	}
	long := strings.Repeat("An excellent, wonderful and brilliant film. ", 200)
	for _, in := range []string{"", "great", "awful awful awful", long} {
		_, probs := m.Sentiment(Preprocess(in))
		sum := 0.0
		for _, p := range probs {
			if p < 0 || p > 1 || math.IsNaN(p) {
				t.Errorf("Sentiment(%.20q) probs = %v, want each in [0, 1]", in, probs)
			}
			sum += p
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("Sentiment(%.20q) probs sum = %v, want 1", in, sum)
		}
	}
}

func TestSentimentFeatures(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"It was good", []string{"good"}},
		{"It was not good", []string{"not", "not_good"}},
		{"I didn't like the plot or the acting, really", []string{"not", "not_like", "not_plot", "not_act", "realli"}},
		{"Not good but fun", []string{"not", "not_good", "fun"}},
		{"Never boring. Great film", []string{"never", "not_bore", "great", "film"}},
		{"Without doubt brilliant", []string{"without", "not_doubt", "not_brilliant"}},
		{"No plot, no jokes, no point, no fun", []string{"no", "not_plot", "no", "not_joke", "no", "not_point", "no", "not_fun"}},
		{"Not one bit good, nor cheap, nor quick, nor nice", []string{"not", "not_bit", "not_good", "nor", "not_cheap", "nor", "not_quick", "nor", "not_nice"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := SentimentFeatures(Preprocess(tt.in)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("SentimentFeatures(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestReadExamples(t *testing.T) {
	in := "# comment\n\npositive\tGood stuff\nnegative\t  Bad stuff  \n"
	got, err := ReadExamples(strings.NewReader(in))
	if err != nil {
		t.Fatalf("ReadExamples(%q) error = %v", in, err)
	}
	want := []Example{{"positive", "Good stuff"}, {"negative", "Bad stuff"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadExamples(%q) = %v, want %v", in, got, want)
	}

	for _, bad := range []string{"no tab here\n", "\tmissing label\n", "label\t\n"} {
		t.Run(bad, func(t *testing.T) {
			if got, err := ReadExamples(strings.NewReader(bad)); err == nil {
				t.Errorf("ReadExamples(%q) = %v, nil, want an error", bad, got)
			}
		})
	}
}

func TestTrainSentimentErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []Example
	}{
		{"none", nil},
		{"one label", []Example{{"pos", "good"}, {"pos", "great"}}},
		{"empty label", []Example{{"pos", "good"}, {"", "bad"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m, err := TrainSentiment(tt.in); err == nil {
				t.Errorf("TrainSentiment(%v) = %v, nil, want an error", tt.in, m)
			}
		})
	}
}
