package voicesearch

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestSpeechRoundTrip(t *testing.T) {
	for _, text := range []string{"what is jetstream?", "find go tutorials", "a", "0123456789 ?.,'-", Alphabet} {
		got, err := Recognize(Synthesize(text))
		if err != nil || got != text {
			t.Errorf("Recognize(Synthesize(%q)) = %q, %v", text, got, err)
		}
	}
}

// TestRecognizeWithNoiseAndOffset: Gaussian noise at 10 dB below the
// signal, leading silence of an odd length and a gain change do not
// change what is heard.
func TestRecognizeWithNoiseAndOffset(t *testing.T) {
	const text = "what is the speed of light"
	clean := Synthesize(text)
	rng := rand.New(rand.NewPCG(7, 11))
	noisy := make([]int16, 1237, 1237+len(clean)) // 155 ms of silence (with noise) first
	noisy = append(noisy, clean...)
	const noiseRMS = 0.35 * 0.32 // ≈ −10 dB against the tones' 0.35
	for i := range noisy {
		v := 0.8*float64(noisy[i])/math.MaxInt16 + rng.NormFloat64()*noiseRMS
		noisy[i] = int16(max(-1, min(1, v)) * math.MaxInt16)
	}
	got, err := Recognize(noisy)
	if err != nil || got != text {
		t.Errorf("Recognize(noisy) = %q, %v; want %q", got, err, text)
	}
}

func TestRecognizeRefuses(t *testing.T) {
	if _, err := Recognize(make([]int16, SampleRate)); err == nil || !strings.Contains(err.Error(), "no speech") {
		t.Errorf("Recognize(silence) = %v, want no speech", err)
	}
	// One frequency alone, 80 ms into silence: the row is clear, the
	// column is not.
	tone := make([]int16, 3*symbolSamples+640)
	for n := 640; n < 640+symbolSamples; n++ {
		tone[n] = int16(0.5 * math.Sin(2*math.Pi*770*float64(n)/SampleRate) * math.MaxInt16)
	}
	if _, err := Recognize(tone); err == nil || !strings.Contains(err.Error(), "unclear symbol at 0.080 s") {
		t.Errorf("Recognize(one tone) = %v, want an unclear symbol at 0.080 s", err)
	}
}

func TestAudio(t *testing.T) {
	s := Synthesize("hi")
	got, err := NewAudio(s).Samples()
	if err != nil || len(got) != len(s) || got[100] != s[100] {
		t.Fatalf("Samples(NewAudio(s)) = %d samples, %v", len(got), err)
	}
	for _, tc := range []struct {
		a    Audio
		want string
	}{
		{Audio{SampleRate: 16000, PCM16: ""}, "sample_rate must be 8000"},
		{Audio{SampleRate: SampleRate, PCM16: "!!"}, "not base64"},
		{Audio{SampleRate: SampleRate, PCM16: "AA=="}, "16-bit samples"},
	} {
		if _, err := tc.a.Samples(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Samples(%+v) = %v, want %q", tc.a, err, tc.want)
		}
	}
}

func TestSpeakable(t *testing.T) {
	if got := Speakable("  Top result: Go Tutorials (2024)!  "); got != "top result go tutorials 2024" {
		t.Errorf("Speakable = %q", got)
	}
}
