package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/exp/trace"
)

// kind is what the goroutines started in one function did, in total.
type kind struct {
	root            string // the function they started in
	wakes, syscalls int
	wait, run, sys  int64          // ns: runnable, running, in syscalls
	wakers          map[string]int // who made them runnable: wakes
}

// topWaker is the function that made kind's goroutines runnable most often.
func (k *kind) topWaker() (string, int) {
	best, n := "", 0
	for w, c := range k.wakers {
		if c > n || (c == n && w < best) {
			best, n = w, c
		}
	}
	return best, n
}

// summarize reads a trace and returns what each kind of goroutine did,
// the busiest (running time) first.
func summarize(r io.Reader) ([]*kind, error) {
	tr, err := trace.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	type gstate struct {
		root  string
		since trace.Time
		waker string
	}
	gs := map[trace.GoID]*gstate{}
	kinds := map[string]*kind{}
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read trace: %w", err)
		}
		if ev.Kind() != trace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != trace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		g := gs[id]
		if g == nil {
			g = &gstate{since: ev.Time()}
			gs[id] = g
		}
		if g.root == "" {
			// The goroutine's own stack (st.Stack) when it has one, or the
			// event's when the goroutine itself emitted it.
			g.root = outermost(st.Stack)
			if g.root == "" && from == trace.GoRunning {
				g.root = outermost(ev.Stack())
			}
		}
		k := kinds[g.root]
		if k == nil {
			k = &kind{root: g.root, wakers: map[string]int{}}
			kinds[g.root] = k
		}
		d := int64(ev.Time() - g.since)
		switch {
		case from == trace.GoRunnable && to == trace.GoRunning:
			k.wakes++
			k.wait += d
			k.wakers[g.waker]++
		case from == trace.GoRunning:
			k.run += d
		case from == trace.GoSyscall:
			k.syscalls++
			k.sys += d
		}
		if to == trace.GoRunnable {
			g.waker = "(preempted, yielded or new)"
			if from == trace.GoWaiting {
				if g.waker = innermostOwn(ev.Stack()); g.waker == "" {
					g.waker = "(runtime: network poller, timer)"
				}
			}
		}
		g.since = ev.Time()
	}
	out := make([]*kind, 0, len(kinds))
	for _, k := range kinds {
		if k.root == "" {
			k.root = "(unknown)"
		}
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b *kind) int {
		if a.run != b.run {
			if a.run > b.run {
				return -1
			}
			return 1
		}
		return strings.Compare(a.root, b.root)
	})
	return out, nil
}

// outermost is the function a stack started in.
func outermost(st trace.Stack) string {
	last := ""
	for f := range st.Frames() {
		last = f.Func
	}
	return last
}

// innermostOwn is the innermost function of a stack outside the runtime
// and sync: who woke a goroutine ("" when the runtime did, e.g. the
// network poller).
func innermostOwn(st trace.Stack) string {
	for f := range st.Frames() {
		if !strings.HasPrefix(f.Func, "runtime.") && !strings.HasPrefix(f.Func, "sync.") && !strings.HasPrefix(f.Func, "internal/") {
			return f.Func
		}
	}
	return ""
}
