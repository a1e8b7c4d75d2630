// Package backoff is the exponential backoff every retry loop of jetserve
// uses: the first wait, doubled after each failure up to a cap, reset
// after a success, and waited for on a context.
//
// A Backoff is not safe for concurrent use; each retry loop owns its own.
package backoff

import (
	"context"
	"time"
)

// Backoff hands out the waits of one retry loop: First, then twice the
// previous, never more than Max.
type Backoff struct {
	First, Max time.Duration
	next       time.Duration
}

// New returns a Backoff from first to limit (limit < first: first every
// time).
func New(first, limit time.Duration) *Backoff {
	return &Backoff{First: first, Max: limit}
}

// Next returns the wait before the next attempt and doubles the one
// after it (up to Max).
func (b *Backoff) Next() time.Duration {
	d := b.next
	if d <= 0 {
		d = b.First
	}
	b.next = min(2*d, max(b.Max, b.First))
	return min(d, max(b.Max, b.First))
}

// Reset makes the next wait First again (after a success).
func (b *Backoff) Reset() { b.next = 0 }

// Wait waits Next() and reports true, or false as soon as ctx ends.
func (b *Backoff) Wait(ctx context.Context) bool {
	return Sleep(ctx, b.Next())
}

// Sleep waits d and reports true, or false as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Nth is the wait before retry n (0-based) of a backoff from first to
// limit: first·2ⁿ, capped.
func Nth(first, limit time.Duration, n int) time.Duration {
	limit = max(limit, first)
	d := first
	for ; n > 0; n-- {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}
