package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/waitfor"
)

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		name        string
		floor, live uint64
		base, want  int
	}{
		{"small live heap: goal = floor", 64 << 20, 8 << 20, 100, 700},
		{"before the first collection: the runtime's 4 MB", 64 << 20, 0, 100, 1500},
		{"live heap at the floor: GOGC", 64 << 20, 64 << 20, 100, 100},
		{"live heap above the floor: GOGC", 64 << 20, 1 << 30, 100, 100},
		{"floor barely above live: never below GOGC", 64 << 20, 60 << 20, 100, 100},
		{"a higher GOGC is kept", 64 << 20, 32 << 20, 300, 300},
		{"GC off stays off", 64 << 20, 8 << 20, -1, -1},
		{"no floor", 0, 8 << 20, 100, 100},
		{"a tiny live heap is capped", 1 << 40, 1, 100, maxPercent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.floor, tc.live, tc.base); got != tc.want {
				t.Errorf("Percent(%d, %d, %d) = %d, want %d", tc.floor, tc.live, tc.base, got, tc.want)
			}
		})
	}
}

// gcPercent reads the process's GC percent.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestSetFollowsCollections: after a collection the GC percent is the
// floor's for the live heap; stop restores the process's GOGC, and later
// collections leave it alone.
func TestSetFollowsCollections(t *testing.T) {
	base := gcPercent()
	if base != 100 {
		t.Skipf("GOGC=%d in the environment: the test expects the default", base)
	}
	stop := Set(1 << 30)
	keep := make([]byte, 16<<20) // a live heap of ~16 MB
	// floor 1 GiB over ~16 MB live: ~6300 (the test binary's own heap
	// adds a little). Cleanups run after the collection, on their own
	// goroutine: collect until one has.
	waitfor.True(t, 10*time.Second, "the GC percent of a 1 GiB floor over 16 MB live", func() bool {
		runtime.GC()
		p := gcPercent()
		return p >= 3000 && p <= 6400
	})
	runtime.KeepAlive(keep)
	stop()
	if got := gcPercent(); got != base {
		t.Errorf("GC percent after stop = %d, want %d", got, base)
	}
	runtime.GC()
	runtime.GC()
	if got := gcPercent(); got != base {
		t.Errorf("GC percent after stop and collections = %d, want %d (the floor no longer adjusts)", got, base)
	}
	stop() // a second stop is a no-op
}

func TestSetZeroChangesNothing(t *testing.T) {
	base := gcPercent()
	Set(0)()
	runtime.GC()
	if got := gcPercent(); got != base {
		t.Errorf("GC percent after Set(0) = %d, want %d", got, base)
	}
}
