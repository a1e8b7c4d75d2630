// Package gcfloor keeps the garbage collector of a process with a small
// heap from running over and over. Go collects when the heap has grown by
// GOGC percent (100) over what the last collection left live: a worker
// whose live heap is 5 MB and that allocates 50 MB/s serving requests
// collects ten times a second, and each collection costs the same fixed
// work (stacks, roots, sweeping) whatever it frees. With a floor, the
// collector waits until the heap reaches the floor while the live heap is
// well below it; once the live heap is large, GOGC applies unchanged, so
// a process holding a big model pays no more memory than without.
//
// After every collection the GC percent is set to
// max(GOGC, 100·floor/live − 100): the heap goal is then max(floor,
// live·(1+GOGC/100)). The GC percent is the process's, so a process sets
// one floor (its main does), never a library. The adjustment runs as a
// cleanup of an object dropped at each collection (runtime.AddCleanup, on
// the runtime's cleanup goroutine); Set's stop ends it and restores the
// GC percent.
package gcfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// maxPercent caps the GC percent the floor asks for (a live heap of a few
// KB would otherwise ask for an absurd one).
const maxPercent = 100_000

// liveMetric is the heap the last collection left live.
const liveMetric = "/gc/heap/live:bytes"

// minHeap is the live heap the runtime assumes before its first
// collection (its 4 MB minimum heap, at GOGC=100).
const minHeap = 4 << 20

// Percent is the GC percent that makes the heap goal floor for a live
// heap of live bytes (0: no collection yet), and never less than base
// (GOGC). A base < 0 (GC off) or a zero floor leave base.
func Percent(floor, live uint64, base int) int {
	if base < 0 || floor == 0 {
		return base
	}
	if live == 0 {
		live = minHeap
	}
	if live >= floor {
		return base
	}
	p := float64(floor)/float64(live)*100 - 100
	return int(math.Min(math.Max(p, float64(base)), maxPercent))
}

// Set raises the GC percent after each collection so that the heap goal
// is at least floor bytes (0: nothing is changed) and returns a function
// that stops doing so and restores the GC percent the process had. Call
// it once, from main.
func Set(floor uint64) (stop func()) {
	if floor == 0 {
		return func() {}
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	t := &tuner{floor: floor, base: base, sample: []metrics.Sample{{Name: liveMetric}}}
	t.adjust()
	t.arm()
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if !t.stopped {
			t.stopped = true
			debug.SetGCPercent(t.base)
		}
	}
}

type tuner struct {
	floor uint64
	base  int

	mu      sync.Mutex
	stopped bool             // guarded by mu
	sample  []metrics.Sample // guarded by mu
}

// arm drops an object whose cleanup, run after the next collection,
// adjusts the GC percent and arms again.
func (t *tuner) arm() {
	canary := new([64]byte) // not a tiny allocation: its cleanup runs at the next collection
	runtime.AddCleanup(canary, func(t *tuner) {
		if t.adjust() {
			t.arm()
		}
	}, t)
}

// adjust sets the GC percent for the live heap now; false once stopped.
func (t *tuner) adjust() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	var live uint64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	debug.SetGCPercent(Percent(t.floor, live, t.base))
	return true
}
