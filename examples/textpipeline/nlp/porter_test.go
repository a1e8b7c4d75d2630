package nlp

import "testing"

func TestStem(t *testing.T) {
	// Expected stems are those of Martin Porter's reference implementation.
	tests := []struct{ in, want string }{
		// Step 1a.
		{"caresses", "caress"},
		{"ponies", "poni"},
		{"ties", "ti"},
		{"caress", "caress"},
		{"cats", "cat"},
		// Step 1b.
		{"feed", "feed"},
		{"agreed", "agre"},
		{"plastered", "plaster"},
		{"bled", "bled"},
		{"motoring", "motor"},
		{"sing", "sing"},
		{"conflated", "conflat"},
		{"troubled", "troubl"},
		{"sized", "size"},
		{"hopping", "hop"},
		{"tanned", "tan"},
		{"falling", "fall"},
		{"hissing", "hiss"},
		{"fizzed", "fizz"},
		{"failing", "fail"},
		{"filing", "file"},
		// Step 1c.
		{"happy", "happi"},
		{"sky", "sky"},
		// Step 2.
		{"relational", "relat"},
		{"conditional", "condit"},
		{"rational", "ration"},
		{"valenci", "valenc"},
		{"hesitanci", "hesit"},
		{"digitizer", "digit"},
		{"conformabli", "conform"},
		{"radicalli", "radic"},
		{"differentli", "differ"},
		{"vileli", "vile"},
		{"analogousli", "analog"},
		{"vietnamization", "vietnam"},
		{"predication", "predic"},
		{"operator", "oper"},
		{"feudalism", "feudal"},
		{"decisiveness", "decis"},
		{"hopefulness", "hope"},
		{"callousness", "callous"},
		{"formaliti", "formal"},
		{"sensitiviti", "sensit"},
		{"sensibiliti", "sensibl"},
		// Step 3.
		{"triplicate", "triplic"},
		{"formative", "form"},
		{"formalize", "formal"},
		{"electriciti", "electr"},
		{"electrical", "electr"},
		{"hopeful", "hope"},
		{"goodness", "good"},
		// Step 4.
		{"revival", "reviv"},
		{"allowance", "allow"},
		{"inference", "infer"},
		{"airliner", "airlin"},
		{"gyroscopic", "gyroscop"},
		{"adjustable", "adjust"},
		{"defensible", "defens"},
		{"irritant", "irrit"},
		{"replacement", "replac"},
		{"adjustment", "adjust"},
		{"dependent", "depend"},
		{"adoption", "adopt"},
		{"homologou", "homolog"},
		{"communism", "commun"},
		{"activate", "activ"},
		{"angulariti", "angular"},
		{"homologous", "homolog"},
		{"effective", "effect"},
		{"bowdlerize", "bowdler"},
		// Step 5.
		{"probate", "probat"},
		{"rate", "rate"},
		{"cease", "ceas"},
		{"controll", "control"},
		{"roll", "roll"},
		// Whole words through several steps.
		{"generalizations", "gener"},
		{"oscillators", "oscil"},
		{"connection", "connect"},
		{"connections", "connect"},
		{"connective", "connect"},
		{"connected", "connect"},
		{"connecting", "connect"},
		{"abilities", "abil"},
		{"absolutely", "absolut"},
		{"relativity", "rel"},
		{"running", "run"},
		{"movies", "movi"},
		{"loved", "love"},
		{"wonderful", "wonder"},
		{"terrible", "terribl"},
		// Departures of the reference implementation from the paper.
		{"horribly", "horribl"},
		{"analogy", "analog"},
		{"apologies", "apolog"},
		// Words the stemmer leaves alone.
		{"", ""},
		{"a", "a"},
		{"is", "is"},
		{"as", "as"},
		{"café", "café"},
		{"Running", "Running"},
		{"mp3", "mp3"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Stem(tt.in); got != tt.want {
				t.Errorf("Stem(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzStem checks that Stem never panics, never returns an empty stem for a
// non-empty word and never lengthens a word.
func FuzzStem(f *testing.F) {
	for _, s := range []string{"ies", "sses", "eed", "ying", "yyy", "bbing", "ational", "eing"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := Stem(in)
		if in != "" && got == "" {
			t.Errorf("Stem(%q) = %q, want a non-empty stem", in, got)
		}
		if len(got) > len(in) {
			t.Errorf("Stem(%q) = %q, want at most %d bytes", in, got, len(in))
		}
	})
}
