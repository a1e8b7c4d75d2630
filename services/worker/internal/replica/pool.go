package replica

import (
	"sync"
	"sync/atomic"
	"time"
)

// pool runs a replica's requests on goroutines that are kept for the next
// request a while after they served one. A handler that calls another
// deployment runs deep (handle, router, NATS client): on a new goroutine
// its stack grows, and is copied, on every request; a kept goroutine's
// stack has grown already. Every goroutine exits after idle without work,
// or when stop is called; stop waits for them.
type pool struct {
	work chan func() // unbuffered: taken only by a goroutine waiting for it
	quit chan struct{}
	idle time.Duration
	wg   sync.WaitGroup
	once sync.Once
	live atomic.Int32 // goroutines running
}

// poolIdle is how long a kept goroutine waits for the next request.
const poolIdle = 10 * time.Second

func newPool(idle time.Duration) *pool {
	return &pool{work: make(chan func()), quit: make(chan struct{}), idle: idle}
}

// run runs f on a waiting goroutine, or on a new one.
func (p *pool) run(f func()) {
	select {
	case p.work <- f:
	default:
		p.wg.Add(1)
		go p.loop(f)
	}
}

func (p *pool) loop(f func()) {
	p.live.Add(1)
	defer p.wg.Done()
	defer p.live.Add(-1)
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		t.Reset(p.idle)
		select {
		case f = <-p.work:
		case <-t.C:
			return
		case <-p.quit:
			return
		}
	}
}

// stop ends the waiting goroutines and waits until every goroutine has
// returned (call it once nothing more is run).
func (p *pool) stop() {
	p.once.Do(func() { close(p.quit) })
	p.wg.Wait()
}
