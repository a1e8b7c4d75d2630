package protocol_test

import (
	"testing"

	"github.com/jetserve/jetserve/pkg/protocol"
)

func TestLatencyQuantile(t *testing.T) {
	b := func(pairs ...float64) []uint64 {
		c := make([]uint64, len(protocol.LatencyBoundsMS)+1)
		for i := 0; i < len(pairs); i += 2 {
			c[protocol.LatencyBucket(pairs[i])] += uint64(pairs[i+1])
		}
		return c
	}
	for _, tc := range []struct {
		name   string
		counts []uint64
		q      float64
		lo, hi float64
	}{
		{"empty", b(), 0.5, 0, 0},
		{"all in (1,2]", b(1.5, 10), 0.5, 1, 2},
		{"median in the lower bucket", b(3, 60, 40, 40), 0.5, 2, 5},
		{"p95 in the upper bucket", b(3, 60, 40, 40), 0.95, 20, 50},
		{"overflow answers the last bound", b(1e6, 5), 0.99, 60000, 60000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := protocol.LatencyQuantile(tc.counts, tc.q)
			if got < tc.lo || got > tc.hi {
				t.Errorf("LatencyQuantile(%v, %v) = %v, want in [%v, %v]", tc.counts, tc.q, got, tc.lo, tc.hi)
			}
		})
	}
}
