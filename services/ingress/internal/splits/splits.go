// Package splits counts, at one ingress, the choices of the splitters of
// the applications' graphs over a sliding window (the last minute, by
// second) and publishes them (Publisher) as protocol.GraphStats for the status's live
// traffic split.
//
// A Counter is safe for concurrent use (one short lock per counted
// request); a Publisher's Run runs until its context ends.
package splits

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
)

// Window is how far back the counts go.
const Window = time.Minute

const slots = int(Window / time.Second)

type key struct{ app, node, step string }

// ring is one branch's counts per second over the window: slot i holds
// second sec[i] (unix), reused when that second is past the window.
type ring struct {
	sec [slots]int64
	n   [slots]uint64
}

// Counter counts splitter choices.
type Counter struct {
	now func() time.Time

	mu     sync.Mutex
	counts map[key]*ring // guarded by mu
}

// NewCounter returns a Counter reading the time from now (time.Now when
// nil).
func NewCounter(now func() time.Time) *Counter {
	if now == nil {
		now = time.Now
	}
	return &Counter{now: now, counts: map[key]*ring{}}
}

// Add counts one request that node of app's graph sent to step.
func (c *Counter) Add(app, node, step string) {
	s := c.now().Unix()
	i := int(s % int64(slots))
	k := key{app, node, step}
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.counts[k]
	if r == nil {
		r = &ring{}
		c.counts[k] = r
	}
	if r.sec[i] != s {
		r.sec[i], r.n[i] = s, 0
	}
	r.n[i]++
}

// Counts returns the requests per application, splitter node and step
// over the window; branches with none in it are left out (and forgotten).
func (c *Counter) Counts() map[string]map[string]map[string]uint64 {
	oldest := c.now().Unix() - int64(slots) + 1
	out := map[string]map[string]map[string]uint64{}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, r := range c.counts {
		var n uint64
		for i := range slots {
			if r.sec[i] >= oldest {
				n += r.n[i]
			}
		}
		if n == 0 {
			delete(c.counts, k)
			continue
		}
		if out[k.app] == nil {
			out[k.app] = map[string]map[string]uint64{}
		}
		if out[k.app][k.node] == nil {
			out[k.app][k.node] = map[string]uint64{}
		}
		out[k.app][k.node][k.step] = n
	}
	return out
}

// Publisher sends a Counter's counts as protocol.GraphStats.
type Publisher struct {
	NC        *nats.Conn
	Subject   string
	IngressID string
	Counter   *Counter
	Log       zerolog.Logger

	sentNonZero bool // owned by the goroutine calling Run (or Tick)
}

// Run publishes every interval until ctx ends (Tick).
func (p *Publisher) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := p.Tick(); err != nil {
			return err
		}
	}
}

// Tick publishes the counts if any is not zero, or if the last report had
// some (so that readers see them fall to zero); it reports whether it
// published. A failed publish is logged: the next report replaces it.
func (p *Publisher) Tick() (bool, error) {
	counts := p.Counter.Counts()
	if len(counts) == 0 && !p.sentNonZero {
		return false, nil
	}
	p.sentNonZero = len(counts) > 0
	b, err := json.Marshal(protocol.GraphStats{IngressID: p.IngressID, Splits: counts, WindowSeconds: slots, At: p.Counter.now()})
	if err != nil {
		return false, fmt.Errorf("encode graph stats: %w", err)
	}
	if err := p.NC.Publish(p.Subject, b); err != nil {
		p.Log.Warn().Err(err).Msg("publish graph stats")
	}
	return true, nil
}
