package p2c

import (
	"math/rand/v2"
	"testing"
)

// seq returns an intn that yields the given values in turn (mod n).
func seq(vals ...int) func(int) int {
	i := 0
	return func(n int) int {
		v := vals[i%len(vals)] % n
		i++
		return v
	}
}

func TestPick(t *testing.T) {
	tests := []struct {
		name  string
		loads []int
		intn  func(int) int
		want  int
	}{
		{"empty", nil, seq(0), -1},
		{"all ineligible", []int{-1, -1}, seq(0), -1},
		{"single eligible", []int{-1, 3, -1}, seq(0), 1},
		{"two, second less loaded", []int{4, 1}, seq(0, 0), 1},
		{"two, first less loaded", []int{1, 4}, seq(0, 0), 0},
		{"tie keeps first sample", []int{2, 2}, seq(1, 0), 1},
		{"skips ineligible when sampling", []int{-1, 5, -1, 0, 9}, seq(0, 0), 3},
		{"samples third and first", []int{3, 7, 1}, seq(2, 0), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Pick(tt.loads, tt.intn); got != tt.want {
				t.Errorf("Pick(%v) = %d, want %d", tt.loads, got, tt.want)
			}
		})
	}
}

// TestPickPrefersLessLoaded checks the statistical property: over many
// picks among loads {0, 5}, the idle replica always wins (two candidates are
// always both sampled), and among {0, 5, 5} the idle one wins 2/3 of the time.
func TestPickPrefersLessLoaded(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, 3)
	const n = 30000
	for range n {
		counts[Pick([]int{0, 5, 5}, r.IntN)]++
	}
	if frac := float64(counts[0]) / n; frac < 0.63 || frac > 0.70 {
		t.Errorf("Pick({0,5,5}) chose the idle replica %.3f of the time, want ≈ 2/3", frac)
	}
	for range 1000 {
		if got := Pick([]int{5, 0}, r.IntN); got != 1 {
			t.Fatalf("Pick({5,0}) = %d, want 1", got)
		}
	}
}

func TestPickNeverChoosesIneligible(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	loads := []int{-1, 2, -1, 2, -1}
	for range 1000 {
		if got := Pick(loads, r.IntN); loads[got] < 0 {
			t.Fatalf("Pick(%v) = %d, an ineligible candidate", loads, got)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	loads := []int{3, 1, 4, 1, 5, 9, 2, 6}
	r := rand.New(rand.NewPCG(1, 1))
	b.ReportAllocs()
	for b.Loop() {
		Pick(loads, r.IntN)
	}
}
