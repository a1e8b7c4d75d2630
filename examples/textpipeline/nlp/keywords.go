package nlp

import (
	"cmp"
	"errors"
	"math"
	"slices"
	"strings"
)

// Keyword is a scored keyword of a document.
type Keyword struct {
	// Term is the most frequent surface form (normalised word) in the
	// document of the stem that was scored; ties go to the form that occurs
	// first.
	Term string `json:"term"`
	// Score is the TF-IDF weight of the stem in the document.
	Score float64 `json:"score"`
}

// KeywordExtractor ranks a document's content words by TF-IDF against an
// inverse document frequency table computed from a reference corpus.
//
// A KeywordExtractor is immutable and safe for concurrent use.
type KeywordExtractor struct {
	numDocs int
	df      map[string]int // stem → number of corpus documents containing it
}

// NewKeywordExtractor computes document frequencies from corpus, each Doc
// counting as one document.
func NewKeywordExtractor(corpus []Doc) (*KeywordExtractor, error) {
	if len(corpus) == 0 {
		return nil, errors.New("new keyword extractor: empty corpus")
	}
	x := &KeywordExtractor{numDocs: len(corpus), df: make(map[string]int)}
	for _, d := range corpus {
		seen := make(map[string]bool, len(d.Terms))
		for _, t := range d.Terms {
			if !seen[t] {
				seen[t] = true
				x.df[t]++
			}
		}
	}
	return x, nil
}

// IDF returns the smoothed inverse document frequency of a stem,
//
//	idf(t) = ln((1 + N) / (1 + df(t))) + 1
//
// where N is the corpus size and df(t) the number of corpus documents
// containing t. It is at least 1, and largest for stems the corpus never
// saw, which are treated as the most specific.
func (x *KeywordExtractor) IDF(stem string) float64 {
	return math.Log(float64(1+x.numDocs)/float64(1+x.df[stem])) + 1
}

// Keywords returns the k highest-scoring content words of doc, best first.
// A stem's score is its term frequency (occurrences over the number of
// content words in doc) times its [KeywordExtractor.IDF]. Ties go to the
// term that sorts first. It returns nil if k <= 0 or doc has no content
// words, and fewer than k keywords if doc has fewer distinct stems.
func (x *KeywordExtractor) Keywords(doc Doc, k int) []Keyword {
	if k <= 0 {
		return nil
	}
	type form struct {
		word  string
		count int
	}
	type stemInfo struct {
		stem  string
		count int
		forms []form // surface forms in order of first occurrence
	}
	var stems []stemInfo
	index := make(map[string]int) // stem → index into stems
	total := 0
	for _, s := range doc.Sentences {
		for _, t := range s.Tokens {
			if t.Stop {
				continue
			}
			total++
			i, ok := index[t.Stem]
			if !ok {
				i = len(stems)
				index[t.Stem] = i
				stems = append(stems, stemInfo{stem: t.Stem})
			}
			si := &stems[i]
			si.count++
			j := slices.IndexFunc(si.forms, func(f form) bool { return f.word == t.Word })
			if j < 0 {
				si.forms = append(si.forms, form{word: t.Word})
				j = len(si.forms) - 1
			}
			si.forms[j].count++
		}
	}
	if total == 0 {
		return nil
	}
	out := make([]Keyword, len(stems))
	for i, si := range stems {
		best := si.forms[0]
		for _, f := range si.forms[1:] {
			if f.count > best.count {
				best = f
			}
		}
		out[i] = Keyword{Term: best.word, Score: float64(si.count) / float64(total) * x.IDF(si.stem)}
	}
	slices.SortStableFunc(out, func(a, b Keyword) int {
		if a.Score != b.Score {
			return cmp.Compare(b.Score, a.Score)
		}
		return strings.Compare(a.Term, b.Term)
	})
	if len(out) > k {
		out = out[:k]
	}
	return out
}
