package main

import (
	"bytes"
	"runtime/trace"
	"strings"
	"testing"
)

// handOff sends n values to a goroutine of its own, one at a time, each
// answered before the next: n wake-ups of the receiver by send.
func handOff(n int) {
	in, out := make(chan int), make(chan int)
	go receiver(in, out)
	for i := range n {
		in <- i
		<-out
	}
	close(in)
}

func receiver(in <-chan int, out chan<- int) {
	for v := range in {
		out <- v
	}
}

func TestSummarizeCountsWakeUps(t *testing.T) {
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	handOff(200)
	trace.Stop()
	kinds, err := summarize(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var recv *kind
	for _, k := range kinds {
		if strings.HasSuffix(k.root, ".receiver") {
			recv = k
		}
	}
	if recv == nil {
		t.Fatalf("no goroutine started in receiver among %d kinds", len(kinds))
	}
	// Woken by each of the 200 sends (a few may find it still running, a
	// few more wake-ups follow a preemption or a GC pause: CI saw 203).
	if recv.wakes < 150 || recv.wakes > 230 {
		t.Errorf("receiver woken %d times, want ~200", recv.wakes)
	}
	if by, n := recv.topWaker(); !strings.HasSuffix(by, ".handOff") || n < 150 {
		t.Errorf("receiver woken mostly by %q (%d), want handOff", by, n)
	}
	var out bytes.Buffer
	print(&out, kinds, 200, 0)
	if !strings.Contains(out.String(), "receiver") || !strings.Contains(out.String(), "woken mostly by") {
		t.Errorf("table:\n%s", out.String())
	}
}
