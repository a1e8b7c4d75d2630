package voicesearch

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// The "speech" of this example is a tone code in the spirit of DTMF: each
// character of the alphabet is a symbol of two simultaneous tones, one of
// six low frequencies (its row) and one of seven high ones (its column),
// played for SymbolDuration and followed by GapDuration of silence, at
// SampleRate. Speech-to-text finds each symbol by its energy and tells
// its two tones with a Goertzel filter per frequency; text-to-speech
// synthesises them. Both are real signal processing on real waveforms
// (16-bit PCM), robust to noise and to where the signal starts.
const (
	SampleRate = 8000
	// Alphabet holds the characters the code can say, 6 × 7 symbols.
	Alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ?.,'-"

	symbolSamples = SampleRate * 40 / 1000 // 40 ms of tones
	gapSamples    = SampleRate * 20 / 1000 // 20 ms of silence
	// MaxSeconds bounds a waveform (a request of 8,000 samples a second).
	MaxSeconds = 120
)

var (
	lowFreqs  = [6]float64{697, 770, 852, 941, 1040, 1150}
	highFreqs = [7]float64{1209, 1336, 1477, 1633, 1805, 1995, 2205}
)

// Audio is a waveform as it travels in JSON: 16-bit little-endian PCM,
// mono, base64.
type Audio struct {
	SampleRate int    `json:"sample_rate"`
	PCM16      string `json:"pcm16"`
}

// NewAudio encodes samples.
func NewAudio(samples []int16) Audio {
	b := make([]byte, 2*len(samples))
	for i, s := range samples {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(s))
	}
	return Audio{SampleRate: SampleRate, PCM16: base64.StdEncoding.EncodeToString(b)}
}

// Samples decodes the waveform; a rate other than SampleRate, bad base64,
// an odd byte count or a waveform over MaxSeconds is an error saying so.
func (a Audio) Samples() ([]int16, error) {
	if a.SampleRate != SampleRate {
		return nil, fmt.Errorf("sample_rate must be %d, got %d", SampleRate, a.SampleRate)
	}
	b, err := base64.StdEncoding.DecodeString(a.PCM16)
	if err != nil {
		return nil, fmt.Errorf("pcm16 is not base64: %w", err)
	}
	if len(b)%2 != 0 {
		return nil, fmt.Errorf("pcm16 has %d bytes: 16-bit samples take two each", len(b))
	}
	if len(b)/2 > MaxSeconds*SampleRate {
		return nil, fmt.Errorf("the waveform is %.1f s long, at most %d s are taken", float64(len(b)/2)/SampleRate, MaxSeconds)
	}
	s := make([]int16, len(b)/2)
	for i := range s {
		s[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return s, nil
}

// Speakable is text as the code can say it: lower case, every character
// outside the alphabet a space, runs of spaces one.
func Speakable(text string) string {
	var b strings.Builder
	space := true // drop leading spaces
	for _, r := range strings.ToLower(text) {
		if r == ' ' || !strings.ContainsRune(Alphabet, r) {
			if !space {
				b.WriteByte(' ')
				space = true
			}
			continue
		}
		b.WriteRune(r)
		space = false
	}
	return strings.TrimRight(b.String(), " ")
}

// Synthesize says text (Speakable first): the waveform of its symbols.
func Synthesize(text string) []int16 {
	text = Speakable(text)
	out := make([]int16, 0, len(text)*(symbolSamples+gapSamples))
	for _, r := range text {
		i := strings.IndexRune(Alphabet, r)
		lo, hi := lowFreqs[i/len(highFreqs)], highFreqs[i%len(highFreqs)]
		for n := range symbolSamples {
			t := float64(n) / SampleRate
			v := 0.35*math.Sin(2*math.Pi*lo*t) + 0.35*math.Sin(2*math.Pi*hi*t)
			out = append(out, int16(v*math.MaxInt16))
		}
		out = append(out, make([]int16, gapSamples)...)
	}
	return out
}

// errNoSpeech: the waveform holds no symbol.
var errNoSpeech = errors.New("no speech in the waveform")

// Recognize turns a waveform back into text: it finds each symbol where
// the signal's energy rises, measures the energy at every code frequency
// in the symbol's middle with a Goertzel filter, and takes the strongest
// row and column, which must be within 10 dB of each other. Where the signal rises is judged against the
// recording's own noise floor. A symbol whose tones are not clear (the strongest
// frequency of a group less than twice the next) is an error naming
// where it is.
func Recognize(samples []int16) (string, error) {
	const window = SampleRate / 200 // 5 ms
	x := make([]float64, len(samples))
	for i, s := range samples {
		x[i] = float64(s) / math.MaxInt16
	}
	rms := func(from int) float64 {
		var e float64
		for _, v := range x[from : from+window] {
			e += v * v
		}
		return math.Sqrt(e / window)
	}
	// The threshold adapts to the recording: halfway between the noise
	// floor (the quietest tenth of 5 ms windows) and the signal (the
	// loudest tenth). Without windows clearly above the floor there is
	// no speech.
	var levels []float64
	for i := 0; i+window <= len(x); i += window {
		levels = append(levels, rms(i))
	}
	if len(levels) == 0 {
		return "", errNoSpeech
	}
	slices.Sort(levels)
	floor, loud := levels[len(levels)/10], levels[len(levels)*9/10]
	if loud < 0.01 || loud < 2*floor {
		return "", errNoSpeech
	}
	threshold := (floor + loud) / 2
	var b strings.Builder
	for i := 0; i+symbolSamples <= len(x); {
		if rms(i) < threshold {
			i += window
			continue
		}
		// The symbol starts within this window; measure its middle.
		mid := x[i+symbolSamples/8 : i+symbolSamples*7/8]
		row, rowPower, rowOK := strongest(mid, lowFreqs[:])
		col, colPower, colOK := strongest(mid, highFreqs[:])
		// DTMF's "twist" rule: the two tones within 10 dB of each other.
		if !rowOK || !colOK || rowPower > 10*colPower || colPower > 10*rowPower {
			return "", fmt.Errorf("unclear symbol at %.3f s", float64(i)/SampleRate)
		}
		b.WriteByte(Alphabet[row*len(highFreqs)+col])
		i += symbolSamples + gapSamples/2
	}
	if b.Len() == 0 {
		return "", errNoSpeech
	}
	return b.String(), nil
}

// strongest returns the index of the frequency with the most energy in x,
// that energy, and whether it clearly dominates (at least twice the next).
func strongest(x []float64, freqs []float64) (int, float64, bool) {
	best, second := -1.0, -1.0
	at := 0
	for i, f := range freqs {
		p := goertzel(x, f)
		switch {
		case p > best:
			second, best, at = best, p, i
		case p > second:
			second = p
		}
	}
	return at, best, best > 2*second
}

// goertzel is the power of x at frequency f (Hz) at SampleRate.
func goertzel(x []float64, f float64) float64 {
	w := 2 * math.Pi * f / SampleRate
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range x {
		s0 := v + c*s1 - s2
		s2, s1 = s1, s0
	}
	return s1*s1 + s2*s2 - c*s1*s2
}
