// Package workpool runs pieces of work on goroutines that are kept for
// the next piece a while after they finished one. Work that runs deep (a
// handler calling another deployment through a handle, the router and the
// NATS client; a job's record writes through JetStream) grows a new
// goroutine's stack, which is copied each time it doubles, on every piece
// of work; a kept goroutine's stack has grown already.
//
// A Pool is safe for concurrent use. Every goroutine it starts exits after
// one to two idle times without work, or at Stop, which waits for all of
// them.
package workpool

import (
	"sync"
	"sync/atomic"
	"time"
)

// Pool runs work on kept goroutines; build it with New.
type Pool struct {
	work chan func() // unbuffered: taken only by a goroutine waiting for it
	quit chan struct{}
	idle time.Duration
	wg   sync.WaitGroup
	once sync.Once
	live atomic.Int32 // goroutines running
}

// New returns a pool whose goroutines wait idle for the next piece of
// work, and exit after between idle and twice idle without any.
func New(idle time.Duration) *Pool {
	return &Pool{work: make(chan func()), quit: make(chan struct{}), idle: idle}
}

// Run runs f on a waiting goroutine, or on a new one. It never blocks.
// Run must not be called after Stop.
func (p *Pool) Run(f func()) {
	select {
	case p.work <- f:
	default:
		p.wg.Add(1)
		go p.loop(f)
	}
}

func (p *Pool) loop(f func()) {
	p.live.Add(1)
	defer p.wg.Done()
	defer p.live.Add(-1)
	// The timer is not reset per piece of work (a reset takes the timer
	// heap's lock, on every request): when it fires, a goroutine that
	// worked since the last time waits one more idle period. An idle
	// goroutine so exits after between idle and twice idle.
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		worked := true
		for f = nil; f == nil; {
			select {
			case f = <-p.work:
			case <-t.C:
				if !worked {
					return
				}
				worked = false
				t.Reset(p.idle)
			case <-p.quit:
				return
			}
		}
	}
}

// Live returns how many goroutines the pool runs now.
func (p *Pool) Live() int { return int(p.live.Load()) }

// Stop ends the waiting goroutines and waits until every goroutine has
// returned (call it once nothing more is run).
func (p *Pool) Stop() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
}
