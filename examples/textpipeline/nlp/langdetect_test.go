package nlp

import (
	"math"
	"reflect"
	"testing"
)

func newTestDetector(t testing.TB) *LanguageDetector {
	t.Helper()
	samples, err := LanguageSamples()
	if err != nil {
		t.Fatalf("LanguageSamples() error = %v", err)
	}
	d, err := NewLanguageDetector(samples, DefaultProfileSize)
	if err != nil {
		t.Fatalf("NewLanguageDetector() error = %v", err)
	}
	return d
}

func TestDetectLanguage(t *testing.T) {
	d := newTestDetector(t)
	// None of these sentences occurs in the sample text.
	tests := []struct {
		in      string
		want    string
		minConf float64
	}{
		{"The weather is lovely today and we are going to the beach with our friends.", "en", 0.99},
		{"Please remember to switch off the lights when you leave the office.", "en", 0.99},
		{"This product is great", "en", 0.8},
		{"Le chat dort sur le canapé pendant que nous préparons le dîner.", "fr", 0.99},
		{"Nous avons visité le musée hier et c'était magnifique.", "fr", 0.99},
		{"Bonjour", "fr", 0.5},
		{"Der Hund schläft auf dem Sofa, während wir das Abendessen kochen.", "de", 0.99},
		{"Können Sie mir bitte sagen, wie spät es ist?", "de", 0.99},
		{"Ich bin müde.", "de", 0.5},
		{"El perro duerme en el sofá mientras preparamos la cena.", "es", 0.99},
		{"¿Dónde está la estación de tren más cercana?", "es", 0.95},
		{"Gracias", "es", 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, conf := d.Detect(Preprocess(tt.in))
			if got != tt.want {
				t.Errorf("Detect(%q) = %q (confidence %.3f), want %q", tt.in, got, conf, tt.want)
			}
			if conf < tt.minConf || conf > 1 {
				t.Errorf("Detect(%q) confidence = %v, want in [%v, 1]", tt.in, conf, tt.minConf)
			}
		})
	}
}

func TestDetectLanguageConfidenceGrowsWithText(t *testing.T) {
	d := newTestDetector(t)
	_, short := d.Detect(Preprocess("Hello world"))
	_, long := d.Detect(Preprocess("Hello world, this is a much longer English sentence that leaves no doubt at all about the language it was written in."))
	if long <= short {
		t.Errorf("confidence for a long English text = %v, want more than %v for a short one", long, short)
	}
	if long < 0.999 {
		t.Errorf("confidence for a long English text = %v, want >= 0.99", long)
	}
}

func TestDetectLanguageNoEvidence(t *testing.T) {
	d := newTestDetector(t)
	// "ok" gives the trigrams "_ok" and "ok_", in no profile: every language
	// is equally distant, so the first code wins with confidence 1/4.
	lang, conf := d.Detect(Preprocess("ok"))
	if lang != "de" || math.Abs(conf-0.25) > 1e-12 {
		t.Errorf("Detect(%q) = (%q, %v), want (%q, 0.25)", "ok", lang, conf, "de")
	}
}

func TestDetectLanguageUnknown(t *testing.T) {
	d := newTestDetector(t)
	for _, in := range []string{"", "   ", "1234 5678", "?!"} {
		t.Run(in, func(t *testing.T) {
			lang, conf := d.Detect(Preprocess(in))
			if lang != UnknownLanguage || conf != 0 {
				t.Errorf("Detect(%q) = (%q, %v), want (%q, 0)", in, lang, conf, UnknownLanguage)
			}
		})
	}
}

func TestLanguageDistances(t *testing.T) {
	d := newTestDetector(t)
	if got, want := d.Languages(), []string{"de", "en", "es", "fr"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("Languages() = %q, want %q", got, want)
	}
	doc := Preprocess("Die Kinder spielen im Garten.")
	dist := d.Distances(doc)
	if len(dist) != 4 {
		t.Fatalf("Distances(%q) has %d entries, want 4", doc.Text, len(dist))
	}
	for lang, v := range dist {
		if v < 0 || v > 1 || math.IsNaN(v) {
			t.Errorf("Distances(%q)[%q] = %v, want in [0, 1]", doc.Text, lang, v)
		}
	}
	// A language's own sample is very close to its profile.
	samples, err := LanguageSamples()
	if err != nil {
		t.Fatalf("LanguageSamples() error = %v", err)
	}
	for lang, text := range samples {
		if got := d.Distances(Preprocess(text))[lang]; got > 0.05 {
			t.Errorf("Distances(sample %q)[%q] = %v, want <= 0.05", lang, lang, got)
		}
	}
}

func TestTrigramProfile(t *testing.T) {
	tests := []struct {
		in   string
		size int
		want []string
	}{
		// "_aa_" gives _aa, aa_; "_ab_" gives _ab, ab_.
		{"aa ab aa", 10, []string{"_aa", "aa_", "_ab", "ab_"}},
		{"aa ab aa", 2, []string{"_aa", "aa_"}},
		{"a", 10, []string{"_a_"}},
		{"42 7", 10, []string{}},
		{"été", 10, []string{"_ét", "té_", "été"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := trigramProfile(tt.in, tt.size); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("trigramProfile(%q, %d) = %q, want %q", tt.in, tt.size, got, tt.want)
			}
		})
	}
}

func TestNewLanguageDetectorErrors(t *testing.T) {
	tests := []struct {
		name    string
		samples map[string]string
		size    int
	}{
		{"no samples", nil, 300},
		{"zero profile size", map[string]string{"en": "hello"}, 0},
		{"empty code", map[string]string{"": "hello"}, 300},
		{"no letters", map[string]string{"en": "hello", "xx": "123 ..."}, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d, err := NewLanguageDetector(tt.samples, tt.size); err == nil {
				t.Errorf("NewLanguageDetector(%v, %d) = %v, nil, want an error", tt.samples, tt.size, d)
			}
		})
	}
}
