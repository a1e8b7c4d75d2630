package nlp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
)

// Example is one labelled training text.
type Example struct {
	Label string
	Text  string
}

// ReadExamples parses labelled examples in TSV form: one "label<TAB>text"
// per line. Blank lines and lines starting with '#' are skipped.
func ReadExamples(r io.Reader) ([]Example, error) {
	var out []Example
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		label, text, ok := strings.Cut(s, "\t")
		label, text = strings.TrimSpace(label), strings.TrimSpace(text)
		if !ok || label == "" || text == "" {
			return nil, fmt.Errorf("read examples: line %d: want label<TAB>text", line)
		}
		out = append(out, Example{Label: label, Text: text})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read examples: %w", err)
	}
	return out, nil
}

// negationScope is the number of content words after a negator that are
// marked as negated.
const negationScope = 3

// isNegator reports whether a normalised word negates what follows it.
func isNegator(w string) bool {
	switch w {
	case "not", "no", "never", "nor", "cannot", "without", "hardly",
		"barely", "nobody", "nothing", "none", "neither":
		return true
	}
	return false
}

// SentimentFeatures returns the features the sentiment model sees for doc:
// the stems of its content words, where up to three content words after a
// negator ("not", "never", "no", … and the "not" of expanded "n't"
// contractions) within the same sentence, and before any "but", are
// prefixed with "not_". So "it was not good" gives [not not_good]. Negation
// marking lets a bag-of-words model tell "good" from "not good".
func SentimentFeatures(doc Doc) []string {
	var feats []string
	for _, s := range doc.Sentences {
		scope := 0
		for _, t := range s.Tokens {
			switch {
			case isNegator(t.Word):
				scope = negationScope
				if !t.Stop {
					feats = append(feats, t.Stem)
				}
			case t.Word == "but":
				scope = 0
			case t.Stop:
			case scope > 0:
				feats = append(feats, "not_"+t.Stem)
				scope--
			default:
				feats = append(feats, t.Stem)
			}
		}
	}
	return feats
}

// SentimentModel is a multinomial naive Bayes text classifier over
// [SentimentFeatures] with Laplace (add-one) smoothing, computed in log
// space. Features never seen in training are ignored at prediction time.
//
// A SentimentModel is immutable once trained and safe for concurrent use.
type SentimentModel struct {
	labels   []string       // sorted
	logPrior []float64      // logPrior[c] = log P(c)
	vocab    map[string]int // feature → column of logLik
	logLik   [][]float64    // logLik[c][f] = log P(f | c)
}

// TrainSentiment trains a [SentimentModel] on examples. Every example is
// preprocessed with [Preprocess]. It needs at least two distinct labels.
//
// With N examples, N_c of them labelled c, V distinct features and
// count(f, c) occurrences of feature f in examples labelled c:
//
//	P(c)     = N_c / N
//	P(f | c) = (count(f, c) + 1) / (Σ_f' count(f', c) + V)
func TrainSentiment(examples []Example) (*SentimentModel, error) {
	if len(examples) == 0 {
		return nil, errors.New("train sentiment: no examples")
	}
	labelIndex := make(map[string]int)
	for i, ex := range examples {
		if ex.Label == "" {
			return nil, fmt.Errorf("train sentiment: example %d has an empty label", i)
		}
		labelIndex[ex.Label] = 0
	}
	if len(labelIndex) < 2 {
		return nil, fmt.Errorf("train sentiment: need at least 2 labels, have %d", len(labelIndex))
	}
	m := &SentimentModel{vocab: make(map[string]int)}
	for l := range labelIndex {
		m.labels = append(m.labels, l)
	}
	sort.Strings(m.labels)
	for i, l := range m.labels {
		labelIndex[l] = i
	}

	nc := len(m.labels)
	counts := make([]int, nc)
	featCounts := make([]map[int]int, nc)
	totals := make([]int, nc)
	for c := range featCounts {
		featCounts[c] = make(map[int]int)
	}
	for _, ex := range examples {
		c := labelIndex[ex.Label]
		counts[c]++
		for _, f := range SentimentFeatures(Preprocess(ex.Text)) {
			id, ok := m.vocab[f]
			if !ok {
				id = len(m.vocab)
				m.vocab[f] = id
			}
			featCounts[c][id]++
			totals[c]++
		}
	}

	v := float64(len(m.vocab))
	m.logPrior = make([]float64, nc)
	m.logLik = make([][]float64, nc)
	for c := range m.labels {
		m.logPrior[c] = math.Log(float64(counts[c]) / float64(len(examples)))
		denom := math.Log(float64(totals[c]) + v)
		row := make([]float64, len(m.vocab))
		for id := range row {
			row[id] = math.Log(float64(featCounts[c][id]+1)) - denom
		}
		m.logLik[c] = row
	}
	return m, nil
}

// Labels returns the labels the model was trained on, sorted.
func (m *SentimentModel) Labels() []string {
	return append([]string(nil), m.labels...)
}

// VocabularySize returns the number of distinct features seen in training.
func (m *SentimentModel) VocabularySize() int {
	return len(m.vocab)
}

// Predict returns the most probable label for doc and the posterior
// probability of every label (summing to 1). Ties go to the label that sorts
// first; a document with no known features gets the prior.
func (m *SentimentModel) Predict(doc Doc) (label string, probs map[string]float64) {
	scores := append([]float64(nil), m.logPrior...)
	for _, f := range SentimentFeatures(doc) {
		id, ok := m.vocab[f]
		if !ok {
			continue
		}
		for c := range scores {
			scores[c] += m.logLik[c][id]
		}
	}
	best := 0
	for c := range scores {
		if scores[c] > scores[best] {
			best = c
		}
	}
	// Normalise with log-sum-exp relative to the maximum.
	sum := 0.0
	for _, s := range scores {
		sum += math.Exp(s - scores[best])
	}
	probs = make(map[string]float64, len(m.labels))
	for c, l := range m.labels {
		probs[l] = math.Exp(scores[c]-scores[best]) / sum
	}
	return m.labels[best], probs
}
