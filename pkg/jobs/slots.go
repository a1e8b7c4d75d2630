package jobs

import "sync"

// Slots is the job capacity of one replica (its max_ongoing_requests),
// which successive Runners of the replica share: when the replica's async
// methods change, a new Runner starts pulling while the jobs of the one it
// replaces still run, and it pulls only for the slots those leave free.
// Resize applies a new max_ongoing_requests at once. Safe for concurrent
// use.
type Slots struct {
	mu   sync.Mutex
	size int // guarded by mu
	used int // guarded by mu
	// freed has a value when a slot was released or the size grew since
	// the runner pulling last looked (capacity 1: coalesces).
	freed chan struct{}
}

// NewSlots returns n slots (at least 1).
func NewSlots(n int) *Slots {
	return &Slots{size: max(1, n), freed: make(chan struct{}, 1)}
}

// Resize sets the number of slots (at least 1). Jobs running beyond a
// smaller size finish; no new one starts until they are under it.
func (s *Slots) Resize(n int) {
	s.mu.Lock()
	grew := max(1, n) > s.size
	s.size = max(1, n)
	s.mu.Unlock()
	if grew {
		s.notify()
	}
}

// Size is the number of slots.
func (s *Slots) Size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Free is the number of slots not taken.
func (s *Slots) Free() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(0, s.size-s.used)
}

// take claims a slot; false when none is free.
func (s *Slots) take() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used >= s.size {
		return false
	}
	s.used++
	return true
}

// release frees a slot taken with take.
func (s *Slots) release() {
	s.mu.Lock()
	s.used--
	s.mu.Unlock()
	s.notify()
}

func (s *Slots) notify() {
	select {
	case s.freed <- struct{}{}:
	default:
	}
}
