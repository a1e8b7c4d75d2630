package replica

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPoolReusesGoroutinesAndStops: work runs once each; a goroutine that
// finished is reused for the next piece of work; idle ones exit after
// idle, and stop ends the rest and waits.
func TestPoolReusesGoroutinesAndStops(t *testing.T) {
	p := newPool(time.Hour)
	var ran atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 8 { // 8 at once: 8 goroutines
		wg.Add(1)
		p.run(func() { defer wg.Done(); ran.Add(1); <-release })
	}
	close(release)
	wg.Wait()
	// Every goroutine now waits for work: the next 100, one at a time, reuse them.
	started := goroutines(p)
	for range 100 {
		wg.Add(1)
		done := make(chan struct{})
		p.run(func() { defer wg.Done(); ran.Add(1); close(done) })
		<-done
	}
	wg.Wait()
	if ran.Load() != 108 {
		t.Fatalf("ran %d pieces of work, want 108", ran.Load())
	}
	if n := goroutines(p); n > started {
		t.Errorf("goroutines after 100 sequential runs = %d, want ≤ %d (reused)", n, started)
	}
	p.stop()
	if n := goroutines(p); n != 0 {
		t.Errorf("goroutines after stop = %d, want 0", n)
	}

	idle := newPool(10 * time.Millisecond)
	idle.run(func() {})
	deadline := time.Now().Add(10 * time.Second)
	for goroutines(idle) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle goroutine did not exit after its idle time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	idle.stop()
}

// goroutines is how many goroutines p runs now.
func goroutines(p *pool) int { return int(p.live.Load()) }
