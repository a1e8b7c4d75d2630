package voicesearch

import (
	"bufio"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/jetserve/jetserve/examples/textpipeline/nlp"
)

// index ranks texts by the cosine of their TF-IDF vectors (stemmed
// content words, smoothed IDF) with a query's. Immutable once built, safe
// for concurrent use.
type index struct {
	idf  map[string]float64
	docs []indexed
}

type indexed struct {
	title, text string
	vec         map[string]float64 // unit length
}

// hit is a ranked document.
type hit struct {
	Title string  `json:"title,omitempty"`
	Text  string  `json:"text"`
	Score float64 `json:"score"`
}

func newIndex(titles, texts []string) (*index, error) {
	if len(texts) == 0 {
		return nil, fmt.Errorf("new index: no documents")
	}
	terms := make([][]string, len(texts))
	df := map[string]int{}
	for i, t := range texts {
		terms[i] = nlp.Preprocess(titles[i] + ". " + t).Terms
		seen := map[string]bool{}
		for _, s := range terms[i] {
			if !seen[s] {
				seen[s] = true
				df[s]++
			}
		}
	}
	x := &index{idf: make(map[string]float64, len(df))}
	for s, n := range df {
		x.idf[s] = math.Log(float64(1+len(texts))/float64(1+n)) + 1
	}
	for i, t := range texts {
		x.docs = append(x.docs, indexed{title: titles[i], text: t, vec: x.vector(terms[i])})
	}
	return x, nil
}

// vector is the unit TF-IDF vector of terms (terms the corpus never saw
// count nothing: they match no document).
func (x *index) vector(terms []string) map[string]float64 {
	v := map[string]float64{}
	for _, s := range terms {
		if idf, ok := x.idf[s]; ok {
			v[s] += idf
		}
	}
	var n float64
	for _, w := range v {
		n += w * w
	}
	n = math.Sqrt(n)
	for s := range v {
		v[s] /= n
	}
	return v
}

// search returns the k documents most similar to query with a score > 0,
// best first (ties by order in the corpus).
func (x *index) search(query string, k int) []hit {
	q := x.vector(nlp.Preprocess(query).Terms)
	var hits []hit
	for _, d := range x.docs {
		var s float64
		for t, w := range q {
			s += w * d.vec[t]
		}
		if s > 0 {
			hits = append(hits, hit{Title: d.title, Text: d.text, Score: math.Round(s*1000) / 1000})
		}
	}
	sort.SliceStable(hits, func(i, j int) bool { return hits[i].Score > hits[j].Score })
	if len(hits) > k {
		hits = hits[:k]
	}
	return hits
}

// readLines reads the non-blank lines of data that do not start with '#'.
func readLines(data string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
