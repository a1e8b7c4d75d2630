package workpool

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestPoolReusesGoroutinesAndStops: work runs once each; a goroutine that
// finished is reused for the next piece of work; idle ones exit after
// idle, and stop ends the rest and waits.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPoolReusesGoroutinesAndStops(t *testing.T) {
	p := New(time.Hour)
	var ran atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 8 { // 8 at once: 8 goroutines
		wg.Add(1)
		p.Run(func() { defer wg.Done(); ran.Add(1); <-release })
	}
	close(release)
	wg.Wait()
	// Every goroutine now waits for work: the next 100, one at a time, reuse them.
	started := goroutines(p)
	for range 100 {
		wg.Add(1)
		done := make(chan struct{})
		p.Run(func() { defer wg.Done(); ran.Add(1); close(done) })
		<-done
	}
	wg.Wait()
	if ran.Load() != 108 {
		t.Fatalf("ran %d pieces of work, want 108", ran.Load())
	}
	if n := goroutines(p); n > started {
		t.Errorf("goroutines after 100 sequential runs = %d, want ≤ %d (reused)", n, started)
	}
	p.Stop()
	if n := goroutines(p); n != 0 {
		t.Errorf("goroutines after stop = %d, want 0", n)
	}

	idle := New(10 * time.Millisecond)
	idle.Run(func() {})
	deadline := time.Now().Add(10 * time.Second)
	for goroutines(idle) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("an idle goroutine did not exit after its idle time")
		}
		time.Sleep(5 * time.Millisecond)
	}
	idle.Stop()
}

func goroutines(p *Pool) int { return p.Live() }

// BenchmarkRun: one piece of work at a time on a kept goroutine (a
// replica's requests at concurrency 1).
func BenchmarkRun(b *testing.B) {
	p := New(time.Hour)
	defer p.Stop()
	done := make(chan struct{})
	f := func() { done <- struct{}{} }
	for b.Loop() {
		p.Run(f)
		<-done
	}
}
