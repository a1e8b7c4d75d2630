package nlp

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// UnknownLanguage is the BCP 47 code for "undetermined", returned by
// [LanguageDetector.Detect] when a document has no letters to go on.
const UnknownLanguage = "und"

// DefaultProfileSize is the number of top-ranked trigrams kept in a
// language profile by [NewModels].
const DefaultProfileSize = 300

// LanguageDetector identifies the language of a document with the
// Cavnar–Trenkle N-gram method (Cavnar and Trenkle, "N-Gram-Based Text
// Categorization", 1994) restricted to character trigrams.
//
// Each word of the normalised text is padded with '_' on both sides and cut
// into overlapping three-letter windows ("_th", "the", "he_"). A profile is
// the list of trigrams ranked by frequency. The distance between a document
// profile and a language profile is the sum, over the document's trigrams,
// of the difference between the trigram's ranks in the two profiles, or the
// maximum penalty (the language profile size) if the language profile lacks
// the trigram; the language at the smallest distance wins.
//
// A LanguageDetector is immutable and safe for concurrent use.
type LanguageDetector struct {
	profileSize int
	langs       []string           // sorted language codes
	ranks       map[string][]int32 // ranks[trigram][i] = rank in langs[i]'s profile, or -1
}

// NewLanguageDetector builds one trigram profile of at most profileSize
// trigrams per language from samples, which maps a language code to sample
// text in that language. Samples are preprocessed with [Preprocess].
func NewLanguageDetector(samples map[string]string, profileSize int) (*LanguageDetector, error) {
	if len(samples) == 0 {
		return nil, errors.New("new language detector: no samples")
	}
	if profileSize <= 0 {
		return nil, fmt.Errorf("new language detector: profile size %d is not positive", profileSize)
	}
	d := &LanguageDetector{profileSize: profileSize, ranks: make(map[string][]int32)}
	for lang := range samples {
		d.langs = append(d.langs, lang)
	}
	slices.Sort(d.langs)
	for li, lang := range d.langs {
		if lang == "" {
			return nil, errors.New("new language detector: empty language code")
		}
		profile := trigramProfile(Preprocess(samples[lang]).Normalized, profileSize)
		if len(profile) == 0 {
			return nil, fmt.Errorf("new language detector: sample for %q has no letters", lang)
		}
		for rank, g := range profile {
			r := d.ranks[g]
			if r == nil {
				r = make([]int32, len(d.langs))
				for i := range r {
					r[i] = -1
				}
				d.ranks[g] = r
			}
			r[li] = int32(rank)
		}
	}
	return d, nil
}

// Languages returns the language codes the detector knows, sorted.
func (d *LanguageDetector) Languages() []string {
	return append([]string(nil), d.langs...)
}

// Distances returns, for every known language, the out-of-place distance
// between the document's trigram profile and the language's profile,
// normalised to [0, 1] by dividing by the largest possible distance (every
// document trigram missing from the language profile). It returns nil if
// the document has no letters.
func (d *LanguageDetector) Distances(doc Doc) map[string]float64 {
	raw, n := d.rawDistances(doc)
	if n == 0 {
		return nil
	}
	maxDist := float64(n * d.profileSize)
	out := make(map[string]float64, len(d.langs))
	for i, lang := range d.langs {
		out[lang] = float64(raw[i]) / maxDist
	}
	return out
}

// rawDistances returns the out-of-place distance to every language, in the
// order of d.langs, and the number of trigrams in the document profile.
func (d *LanguageDetector) rawDistances(doc Doc) (dist []int, n int) {
	profile := trigramProfile(doc.Normalized, d.profileSize)
	if len(profile) == 0 {
		return nil, 0
	}
	dist = make([]int, len(d.langs))
	for r, g := range profile {
		ranks := d.ranks[g] // nil: in no profile
		for li := range dist {
			lr := -1
			if ranks != nil {
				lr = int(ranks[li])
			}
			switch {
			case lr < 0:
				dist[li] += d.profileSize
			case lr > r:
				dist[li] += lr - r
			default:
				dist[li] += r - lr
			}
		}
	}
	return dist, len(profile)
}

// Detect returns the language whose profile is nearest to the document's
// (ties go to the code that sorts first) and a confidence in (0, 1].
//
// The confidence is the winner's softmax weight when each language l is
// weighted by exp(-D_l / L), D_l being the out-of-place distance and L the
// profile size; one unit is thus the cost of one trigram missing from a
// profile. The evidence grows with the length of the text: a sentence or
// more gives a confidence near 1, a single word typically 0.5 to 0.7, and a
// text whose trigrams no profile knows 1/(number of languages).
//
// A document without letters gives ([UnknownLanguage], 0).
func (d *LanguageDetector) Detect(doc Doc) (lang string, confidence float64) {
	dist, n := d.rawDistances(doc)
	if n == 0 {
		return UnknownLanguage, 0
	}
	best := 0
	for i := range dist {
		if dist[i] < dist[best] {
			best = i
		}
	}
	sum := 0.0
	for i := range dist {
		// Relative to the best distance, so every exponent is <= 0.
		sum += math.Exp(-float64(dist[i]-dist[best]) / float64(d.profileSize))
	}
	return d.langs[best], 1 / sum
}

// trigramProfile returns the at most size most frequent character trigrams
// of the space-separated words in normalized, most frequent first, ties in
// lexicographic order. Words without letters (numbers) are skipped.
func trigramProfile(normalized string, size int) []string {
	// A text of n bytes has fewer than n+1 distinct padded trigrams.
	counts := make(map[string]int, len(normalized)+1)
	var padded strings.Builder
	for _, w := range strings.Fields(normalized) {
		if strings.IndexFunc(w, unicode.IsLetter) < 0 {
			continue
		}
		padded.Reset()
		padded.WriteByte('_')
		padded.WriteString(w)
		padded.WriteByte('_')
		p := padded.String()
		// Slide a three-rune window over p by byte offsets, so each trigram
		// is a substring of p rather than a new allocation.
		var starts [3]int // byte offsets of the last three rune starts
		n := 0
		for off := range p {
			starts[n%3] = off
			n++
			if n >= 3 {
				from := starts[(n-3)%3]
				_, runeLen := utf8.DecodeRuneInString(p[off:])
				counts[p[from:off+runeLen]]++
			}
		}
	}
	type gramCount struct {
		gram  string
		count int
	}
	grams := make([]gramCount, 0, len(counts))
	for g, c := range counts {
		grams = append(grams, gramCount{g, c})
	}
	slices.SortFunc(grams, func(a, b gramCount) int {
		if a.count != b.count {
			return cmp.Compare(b.count, a.count)
		}
		return strings.Compare(a.gram, b.gram)
	})
	if len(grams) > size {
		grams = grams[:size]
	}
	out := make([]string, len(grams))
	for i, g := range grams {
		out[i] = g.gram
	}
	return out
}
