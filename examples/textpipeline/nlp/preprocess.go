package nlp

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Token is one word of a sentence.
type Token struct {
	// Word is the normalised surface form: lower case, without punctuation.
	Word string
	// Stem is the Porter stem of Word, or "" when Stop is true.
	Stem string
	// Stop reports whether the word is a stop word (see [IsStopWord]) or a
	// single letter, and so carries no content.
	Stop bool
}

// Sentence is one sentence of a document.
type Sentence struct {
	// Text is the sentence as it appeared in the input (after canonical
	// composition of accents), with surrounding white space removed.
	Text string
	// Tokens holds every word of the sentence in order, stop words included.
	Tokens []Token
}

// Terms returns the stems of the sentence's content words (those that are
// not stop words), in order.
func (s Sentence) Terms() []string {
	terms := make([]string, 0, len(s.Tokens))
	for _, t := range s.Tokens {
		if !t.Stop {
			terms = append(terms, t.Stem)
		}
	}
	return terms
}

// Doc is a preprocessed document, the common input of every model.
type Doc struct {
	// Text is the input exactly as given to [Preprocess].
	Text string
	// Normalized is every word of the document, stop words included,
	// lower-cased and joined by single spaces.
	Normalized string
	// Sentences holds the sentences that contain at least one word.
	Sentences []Sentence
	// Terms holds the stems of all content words of the document in order.
	Terms []string
}

// Preprocess normalises, splits and tokenises text:
//
//  1. Unicode normalisation: a base letter followed by a combining accent is
//     composed into the precomposed letter (the NFC form for Latin letters
//     with grave, acute, circumflex, tilde, diaeresis, ring, cedilla and
//     caron; other combining marks are kept as part of their word);
//     invisible format characters are dropped; typographic apostrophes
//     become ASCII ones.
//  2. Sentence splitting at '.', '!', '?' and '…' followed by white space,
//     except after common abbreviations ("Dr.", "e.g.") and initials, and
//     at blank lines.
//  3. Word tokenisation: a word is a run of letters and digits, lower-cased;
//     all other characters (punctuation, symbols, hyphens) separate words.
//     English contractions are expanded: "don't" → "do not",
//     "can't" → "can not", "won't" → "will not"; the clitics 's, 're, 've,
//     'll, 'd and 'm are dropped. Any other apostrophe (as in the French
//     "l'homme") separates words.
//  4. Stop-word removal and Porter stemming of the remaining words.
func Preprocess(text string) Doc {
	runes := composeRunes(text)
	doc := Doc{Text: text}
	var norm strings.Builder
	for _, span := range splitSentences(runes) {
		toks := tokenize(runes[span[0]:span[1]])
		if len(toks) == 0 {
			continue
		}
		doc.Sentences = append(doc.Sentences, Sentence{
			Text:   strings.TrimSpace(string(runes[span[0]:span[1]])),
			Tokens: toks,
		})
		for _, t := range toks {
			if norm.Len() > 0 {
				norm.WriteByte(' ')
			}
			norm.WriteString(t.Word)
			if !t.Stop {
				doc.Terms = append(doc.Terms, t.Stem)
			}
		}
	}
	doc.Normalized = norm.String()
	return doc
}

// composeRunes decodes text into runes, composing base letters with
// following combining accents, dropping invisible format characters, and
// mapping typographic apostrophes to '\”.
func composeRunes(text string) []rune {
	out := make([]rune, 0, utf8.RuneCountInString(text))
	for _, r := range text {
		if r < utf8.RuneSelf {
			out = append(out, r)
			continue
		}
		switch {
		case r == '\u2019' || r == '\u2018' || r == '\u02bc' || r == '\u2032':
			out = append(out, '\'')
		case unicode.Is(unicode.Mn, r):
			if n := len(out); n > 0 {
				if c, ok := composeAccent(out[n-1], r); ok {
					out[n-1] = c
					continue
				}
			}
			out = append(out, r)
		case unicode.Is(unicode.Cf, r):
			// Zero-width spaces, joiners, byte-order marks: drop.
		default:
			out = append(out, r)
		}
	}
	return out
}

// composeAccent returns the precomposed form of base followed by the
// combining mark, if there is one in the Latin repertoire handled here.
func composeAccent(base, mark rune) (rune, bool) {
	var bases, composed string
	switch mark {
	case '\u0300': // grave
		bases, composed = "aeiou", "àèìòù"
	case '\u0301': // acute
		bases, composed = "aeiouycnszl", "áéíóúýćńśźĺ"
	case '\u0302': // circumflex
		bases, composed = "aeiou", "âêîôû"
	case '\u0303': // tilde
		bases, composed = "ano", "ãñõ"
	case '\u0308': // diaeresis
		bases, composed = "aeiouy", "äëïöüÿ"
	case '\u030a': // ring above
		bases, composed = "au", "åů"
	case '\u0327': // cedilla
		bases, composed = "cs", "çş"
	case '\u030c': // caron
		bases, composed = "cszenr", "čšžěňř"
	default:
		return 0, false
	}
	lower := unicode.ToLower(base)
	i := strings.IndexRune(bases, lower)
	if i < 0 {
		return 0, false
	}
	// bases is ASCII, so i is also the rune index into composed.
	c := []rune(composed)[i]
	if lower != base {
		c = unicode.ToUpper(c)
	}
	return c, true
}

// isSentenceTerminator reports whether r ends a sentence.
func isSentenceTerminator(r rune) bool {
	return r == '.' || r == '!' || r == '?' || r == '…'
}

// isCloser reports whether r may follow a sentence terminator and still
// belong to the sentence, such as a closing quote or bracket.
func isCloser(r rune) bool {
	switch r {
	case '"', '\'', ')', ']', '}', '»', '”', '’':
		return true
	}
	return false
}

// splitSentences returns the [start, end) rune spans of the sentences of r.
func splitSentences(r []rune) [][2]int {
	var spans [][2]int
	start := 0
	for i := 0; i < len(r); i++ {
		c := r[i]
		if c == '\n' {
			// A blank line (newline, optional blanks, newline) is a hard break.
			j := i + 1
			for j < len(r) && r[j] != '\n' && unicode.IsSpace(r[j]) {
				j++
			}
			if j < len(r) && r[j] == '\n' {
				spans = append(spans, [2]int{start, i})
				start = j + 1
				i = j
			}
			continue
		}
		if !isSentenceTerminator(c) {
			continue
		}
		end := i
		for end+1 < len(r) && isSentenceTerminator(r[end+1]) {
			end++
		}
		for end+1 < len(r) && isCloser(r[end+1]) {
			end++
		}
		if end+1 < len(r) && !unicode.IsSpace(r[end+1]) {
			// "3.5", "example.com", "e.g.x": not a boundary.
			i = end
			continue
		}
		if !isBoundary(r, i, end) {
			i = end
			continue
		}
		spans = append(spans, [2]int{start, end + 1})
		start = end + 1
		i = end
	}
	if start < len(r) {
		spans = append(spans, [2]int{start, len(r)})
	}
	return spans
}

// isBoundary decides whether the terminator run r[i..end], followed by
// white space or the end of input, ends a sentence.
func isBoundary(r []rune, i, end int) bool {
	next := nextNonSpace(r, end+1)
	if next == 0 {
		return true
	}
	single := i == end || !isSentenceTerminator(r[i+1])
	if r[i] == '.' && single {
		// The word just before the period, with inner periods ("e.g").
		ws := i
		for ws > 0 && (unicode.IsLetter(r[ws-1]) || r[ws-1] == '.') {
			ws--
		}
		word := strings.ToLower(strings.ReplaceAll(string(r[ws:i]), ".", ""))
		if utf8.RuneCountInString(word) == 1 && unicode.IsUpper(r[i-1]) && unicode.IsUpper(next) {
			return false // an initial, as in "J. R. Tolkien"
		}
		switch abbreviationKind(word) {
		case abbrevTitle:
			return false
		case abbrevOther:
			return unicode.IsUpper(next)
		}
		return true
	}
	if r[i] == '.' || r[i] == '…' {
		// An ellipsis continues the sentence when lower case follows.
		return !unicode.IsLower(next)
	}
	return true
}

// nextNonSpace returns the first rune of r at or after i that is not white
// space, or 0 if there is none.
func nextNonSpace(r []rune, i int) rune {
	for ; i < len(r); i++ {
		if !unicode.IsSpace(r[i]) {
			return r[i]
		}
	}
	return 0
}

type abbrevKind int

const (
	abbrevNone abbrevKind = iota
	// abbrevTitle abbreviations precede a name and never end a sentence.
	abbrevTitle
	// abbrevOther abbreviations end a sentence only if upper case follows.
	abbrevOther
)

// abbreviationKind classifies a lower-case word, inner periods removed, that
// was followed by a period.
func abbreviationKind(w string) abbrevKind {
	switch w {
	case "mr", "mrs", "ms", "dr", "prof", "st", "mt", "rev", "col",
		"capt", "lt", "sgt", "gov", "sen", "hon", "mme", "mlle", "sra",
		"sr", "hr", "fr":
		return abbrevTitle
	case "eg", "ie", "etc", "vs", "cf", "al", "approx", "inc", "ltd", "co",
		"corp", "jr", "no", "nos", "vol", "pp", "fig", "dept", "est",
		"jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
		"nov", "dec", "usw", "bzw", "ca", "evtl", "ggf", "zb", "dh":
		return abbrevOther
	}
	return abbrevNone
}

// isWordRune reports whether r belongs to a word.
func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

// tokenize splits one sentence into tokens.
func tokenize(r []rune) []Token {
	var toks []Token
	var cur []rune
	emit := func(w string) {
		if w == "" {
			return
		}
		t := Token{Word: w}
		if IsStopWord(w) || (utf8.RuneCountInString(w) == 1 && !unicode.IsDigit([]rune(w)[0])) {
			t.Stop = true
		} else {
			t.Stem = Stem(w)
		}
		toks = append(toks, t)
	}
	flush := func() {
		emit(string(cur))
		cur = cur[:0]
	}
	for i := 0; i < len(r); i++ {
		c := r[i]
		if isWordRune(c) {
			cur = append(cur, unicode.ToLower(c))
			continue
		}
		if c == '\'' && len(cur) > 0 && unicode.IsLetter(r[i-1]) && i+1 < len(r) && unicode.IsLetter(r[i+1]) {
			j := i + 1
			for j < len(r) && isWordRune(r[j]) {
				j++
			}
			suffix := strings.ToLower(string(r[i+1 : j]))
			switch {
			case suffix == "t" && cur[len(cur)-1] == 'n':
				emit(negatedAuxiliary(string(cur)))
				emit("not")
				cur = cur[:0]
				i = j - 1
				continue
			case suffix == "s" || suffix == "re" || suffix == "ve" || suffix == "ll" || suffix == "d" || suffix == "m":
				flush()
				i = j - 1
				continue
			}
		}
		flush()
	}
	flush()
	return toks
}

// negatedAuxiliary returns the auxiliary of an "n't" contraction, given the
// part before the apostrophe ("don" for "don't").
func negatedAuxiliary(w string) string {
	switch w {
	case "can":
		return "can"
	case "won":
		return "will"
	case "shan":
		return "shall"
	case "ain":
		return "is"
	}
	return strings.TrimSuffix(w, "n")
}
