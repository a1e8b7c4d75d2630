package nlp

import (
	"reflect"
	"strings"
	"testing"
)

func words(d Doc) []string {
	var out []string
	for _, s := range d.Sentences {
		for _, t := range s.Tokens {
			out = append(out, t.Word)
		}
	}
	return out
}

func sentenceTexts(d Doc) []string {
	var out []string
	for _, s := range d.Sentences {
		out = append(out, s.Text)
	}
	return out
}

func TestPreprocessWords(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"lower-case and punctuation", "Hello, WORLD!!! (really)", []string{"hello", "world", "really"}},
		{"hyphen and slash separate", "state-of-the-art and/or", []string{"state", "of", "the", "art", "and", "or"}},
		{"digits kept", "Version 2.5 costs $30", []string{"version", "2", "5", "costs", "30"}},
		{"n't expands", "I don't know", []string{"i", "do", "not", "know"}},
		{"can't and won't", "can't won't shan't", []string{"can", "not", "will", "not", "shall", "not"}},
		{"typographic apostrophe", "It isn\u2019t", []string{"it", "is", "not"}},
		{"clitics dropped", "She's here, we're off, they'll see, I'd go, I'm in, we've won", []string{"she", "here", "we", "off", "they", "see", "i", "go", "i", "in", "we", "won"}},
		{"possessive dropped", "The movie's ending", []string{"the", "movie", "ending"}},
		{"elision splits", "L'homme qu'il aime", []string{"l", "homme", "qu", "il", "aime"}},
		{"decomposed accent composed", "Cafe\u0301 nai\u0308ve", []string{"café", "naïve"}},
		{"upper-case decomposed accent", "E\u0301TE\u0301", []string{"été"}},
		{"precomposed kept", "Ärger Straße", []string{"ärger", "straße"}},
		{"zero-width removed", "foo\u200bbar", []string{"foobar"}},
		{"non-latin scripts", "Привет, мир! 東京", []string{"привет", "мир", "東京"}},
		{"empty", "", nil},
		{"only punctuation", "... !!! ---", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := words(Preprocess(tt.in)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("words of Preprocess(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestPreprocessSentences(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"simple", "One. Two! Three? Four", []string{"One.", "Two!", "Three?", "Four"}},
		{"lower-case after period still splits", "great movie. loved it.", []string{"great movie.", "loved it."}},
		{"title abbreviation", "Dr. Smith arrived. He sat down.", []string{"Dr. Smith arrived.", "He sat down."}},
		{"e.g. before lower case", "Use fruit, e.g. apples. Then eat.", []string{"Use fruit, e.g. apples.", "Then eat."}},
		{"etc. before upper case ends", "Apples, pears etc. Then more.", []string{"Apples, pears etc.", "Then more."}},
		{"initials", "J. R. R. Tolkien wrote it. Yes.", []string{"J. R. R. Tolkien wrote it.", "Yes."}},
		{"decimal", "It costs 3.50 euros. Cheap.", []string{"It costs 3.50 euros.", "Cheap."}},
		{"url-like", "See example.com now. Ok.", []string{"See example.com now.", "Ok."}},
		{"ellipsis before lower case", "Well... maybe not. Fine.", []string{"Well... maybe not.", "Fine."}},
		{"ellipsis before upper case", "Wait… What happened?", []string{"Wait…", "What happened?"}},
		{"closing quote", `He said "stop." Then left.`, []string{`He said "stop."`, "Then left."}},
		{"repeated terminators", "Really?! Yes!!", []string{"Really?!", "Yes!!"}},
		{"blank line", "A heading\n\nThe body text", []string{"A heading", "The body text"}},
		{"single newline joins", "first line\nsecond line.", []string{"first line\nsecond line."}},
		{"empty sentences dropped", "Hi. ... !! Bye.", []string{"Hi.", "Bye."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sentenceTexts(Preprocess(tt.in)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("sentences of Preprocess(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestPreprocessTerms(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"The cats were running in the gardens", []string{"cat", "run", "garden"}},
		{"It is not a good movie, and I didn't like it", []string{"not", "good", "movi", "not", "like"}},
		{"I loved these wonderful connections", []string{"love", "wonder", "connect"}},
		{"a b c x y z", nil},
		{"Le café est très bon", []string{"le", "café", "est", "très", "bon"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Preprocess(tt.in).Terms; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Preprocess(%q).Terms = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestPreprocessConsistency(t *testing.T) {
	in := "The quick brown fox jumps. It didn't stop! Le café? Über alles."
	d := Preprocess(in)
	if d.Text != in {
		t.Errorf("Preprocess(%q).Text = %q, want the input", in, d.Text)
	}
	if got, want := d.Normalized, strings.Join(words(d), " "); got != want {
		t.Errorf("Preprocess(%q).Normalized = %q, want %q", in, got, want)
	}
	var terms []string
	for _, s := range d.Sentences {
		terms = append(terms, s.Terms()...)
		for _, tok := range s.Tokens {
			if tok.Stop != (tok.Stem == "") {
				t.Errorf("token %+v: Stop = %v but Stem = %q", tok, tok.Stop, tok.Stem)
			}
			if !tok.Stop && tok.Stem != Stem(tok.Word) {
				t.Errorf("token %+v: Stem = %q, want Stem(%q) = %q", tok, tok.Stem, tok.Word, Stem(tok.Word))
			}
		}
	}
	if !reflect.DeepEqual(terms, d.Terms) {
		t.Errorf("concatenated Sentence.Terms() = %q, want Doc.Terms %q", terms, d.Terms)
	}
	if again := Preprocess(in); !reflect.DeepEqual(again, d) {
		t.Errorf("Preprocess(%q) is not deterministic: %+v then %+v", in, d, again)
	}
}

func TestIsStopWord(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"the", true},
		{"and", true},
		{"yourselves", true},
		{"not", false},
		{"no", false},
		{"never", false},
		{"movie", false},
		{"The", false}, // input must be normalised
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := IsStopWord(tt.in); got != tt.want {
				t.Errorf("IsStopWord(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzPreprocess checks invariants that hold for any input: no panic,
// Normalized is the words joined by spaces, and Terms are the stems of the
// non-stop words.
func FuzzPreprocess(f *testing.F) {
	for _, s := range []string{"", ".", "a.", "Dr. X. y", "don't'", "'t", "e\u0301\u0301", "\n\n\n", "…", "l'", "x'y'z", "\xff\xfe"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		d := Preprocess(in)
		if got, want := d.Normalized, strings.Join(words(d), " "); got != want {
			t.Errorf("Preprocess(%q).Normalized = %q, want %q", in, got, want)
		}
		var terms []string
		for _, s := range d.Sentences {
			if len(s.Tokens) == 0 {
				t.Errorf("Preprocess(%q) has a sentence without tokens: %+v", in, s)
			}
			for _, tok := range s.Tokens {
				if tok.Word == "" || strings.ContainsFunc(tok.Word, func(r rune) bool { return !isWordRune(r) }) {
					t.Errorf("Preprocess(%q) token word = %q, want letters, digits and marks only", in, tok.Word)
				}
			}
			terms = append(terms, s.Terms()...)
		}
		if len(terms) != len(d.Terms) {
			t.Errorf("Preprocess(%q).Terms = %q, want %q", in, d.Terms, terms)
		}
	})
}
