package nlp

import (
	"math"
	"sort"
)

const (
	// Damping is the PageRank damping factor used by [TextRank].
	Damping = 0.85
	// Tolerance is the convergence threshold of [TextRank]: iteration stops
	// once the L1 norm of the change in scores falls below it.
	Tolerance = 1e-6
	// MaxIterations bounds the number of power iterations of [TextRank].
	MaxIterations = 200
)

// termVector is a sparse term-frequency vector, sorted by term id.
type termVector struct {
	ids    []int
	counts []float64
	norm   float64
}

// sentenceVectors maps each sentence of doc to its term-frequency vector
// over the document's content stems.
func sentenceVectors(doc Doc) []termVector {
	ids := make(map[string]int)
	vecs := make([]termVector, len(doc.Sentences))
	for i, s := range doc.Sentences {
		counts := make(map[int]float64)
		for _, t := range s.Tokens {
			if t.Stop {
				continue
			}
			id, ok := ids[t.Stem]
			if !ok {
				id = len(ids)
				ids[t.Stem] = id
			}
			counts[id]++
		}
		v := termVector{ids: make([]int, 0, len(counts))}
		for id := range counts {
			v.ids = append(v.ids, id)
		}
		sort.Ints(v.ids)
		v.counts = make([]float64, len(v.ids))
		sq := 0.0
		for j, id := range v.ids {
			v.counts[j] = counts[id]
			sq += counts[id] * counts[id]
		}
		v.norm = math.Sqrt(sq)
		vecs[i] = v
	}
	return vecs
}

// cosine returns the cosine similarity of two term vectors, 0 if either is
// empty.
func cosine(a, b termVector) float64 {
	if a.norm == 0 || b.norm == 0 {
		return 0
	}
	dot := 0.0
	for i, j := 0, 0; i < len(a.ids) && j < len(b.ids); {
		switch {
		case a.ids[i] < b.ids[j]:
			i++
		case a.ids[i] > b.ids[j]:
			j++
		default:
			dot += a.counts[i] * b.counts[j]
			i++
			j++
		}
	}
	return dot / (a.norm * b.norm)
}

// TextRank scores the sentences of doc with TextRank (Mihalcea and Tarau,
// 2004): sentences are the nodes of a graph whose edge weights are the
// cosine similarities of the sentences' term-frequency vectors (content
// stems only), and the scores are the weighted PageRank of that graph,
//
//	PR(i) = (1-d)/n + d · Σ_j PR(j) · w(j,i) / Σ_k w(j,k)
//
// with d = [Damping], computed by power iteration from the uniform vector
// until the L1 change is below [Tolerance] (or after [MaxIterations]). A
// sentence similar to no other spreads its score evenly over all sentences.
// The scores sum to 1; the result has one score per sentence of doc.
func TextRank(doc Doc) []float64 {
	n := len(doc.Sentences)
	if n == 0 {
		return nil
	}
	vecs := sentenceVectors(doc)
	w := make([][]float64, n)
	out := make([]float64, n) // out[j] = Σ_k w(j,k)
	for i := range w {
		w[i] = make([]float64, n)
	}
	for i := 0; i < n; i++ {
		for j := i + 1; j < n; j++ {
			s := cosine(vecs[i], vecs[j])
			w[i][j], w[j][i] = s, s
			out[i] += s
			out[j] += s
		}
	}

	pr := make([]float64, n)
	next := make([]float64, n)
	for i := range pr {
		pr[i] = 1 / float64(n)
	}
	for iter := 0; iter < MaxIterations; iter++ {
		dangling := 0.0
		for j := range pr {
			if out[j] == 0 {
				dangling += pr[j]
			}
		}
		base := (1-Damping)/float64(n) + Damping*dangling/float64(n)
		delta := 0.0
		for i := range next {
			sum := 0.0
			for j := range pr {
				if w[j][i] != 0 {
					sum += pr[j] * w[j][i] / out[j]
				}
			}
			next[i] = base + Damping*sum
			delta += math.Abs(next[i] - pr[i])
		}
		pr, next = next, pr
		if delta < Tolerance {
			break
		}
	}
	return pr
}

// Summarize returns an extractive summary of doc: the text of its n
// highest-scoring sentences by [TextRank], in their original order. Ties go
// to the earlier sentence. If doc has at most n sentences they are all
// returned; n <= 0 gives nil.
func Summarize(doc Doc, n int) []string {
	if n <= 0 || len(doc.Sentences) == 0 {
		return nil
	}
	scores := TextRank(doc)
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return scores[order[a]] > scores[order[b]]
	})
	if n < len(order) {
		order = order[:n]
	}
	sort.Ints(order)
	out := make([]string, len(order))
	for i, idx := range order {
		out[i] = doc.Sentences[idx].Text
	}
	return out
}
