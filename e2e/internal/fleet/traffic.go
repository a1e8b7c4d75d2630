package fleet

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Traffic sends requests continuously from several goroutines until
// Stop, counting successes (HTTP 200) and failures (anything else,
// transport errors included) and keeping the first failures for the
// report. It owns its goroutines; Stop waits for them.
type Traffic struct {
	ok, failed atomic.Int64
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu       sync.Mutex
	failures []string      // guarded by mu; the first maxKept failures
	byStatus map[int]int64 // guarded by mu; failures per status (0 = transport)
}

const maxKept = 20

// StartTraffic starts n goroutines each sending method url body in a loop,
// one request at a time, every request bounded by perRequest.
func StartTraffic(tb testing.TB, n int, method, url string, body []byte, perRequest time.Duration) *Traffic {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &Traffic{cancel: cancel, byStatus: map[int]int64{}}
	for i := range n {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for ctx.Err() == nil {
				rctx, rcancel := context.WithTimeout(ctx, perRequest)
				start := time.Now()
				r, err := Do(rctx, method, url, body, http.Header{"Content-Type": {"application/json"}})
				rcancel()
				if ctx.Err() != nil {
					return // stopped mid-request: not a failure of the fleet
				}
				switch {
				case err != nil:
					tr.fail(0, fmt.Sprintf("%s g%d: %v (after %v)", time.Now().Format("15:04:05.000"), i, err, time.Since(start).Round(time.Millisecond)))
				case r.Status != http.StatusOK:
					tr.fail(r.Status, fmt.Sprintf("%s g%d: %v", time.Now().Format("15:04:05.000"), i, r))
				default:
					tr.ok.Add(1)
				}
			}
		}()
	}
	tb.Cleanup(tr.halt)
	return tr
}

func (tr *Traffic) fail(status int, msg string) {
	tr.failed.Add(1)
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.byStatus[status]++
	if len(tr.failures) < maxKept {
		tr.failures = append(tr.failures, msg)
	}
}

func (tr *Traffic) halt() {
	tr.cancel()
	tr.wg.Wait()
}

// OK and Failed are the counts so far.
func (tr *Traffic) OK() int64     { return tr.ok.Load() }
func (tr *Traffic) Failed() int64 { return tr.failed.Load() }

// Result is what a stopped Traffic saw.
type Result struct {
	OK, Failed int64
	ByStatus   map[int]int64
	Failures   []string
}

func (r Result) String() string {
	return fmt.Sprintf("%d ok, %d failed (by status, 0 = transport error: %v)", r.OK, r.Failed, r.ByStatus)
}

// Stop stops the goroutines, waits for them and returns the counts.
func (tr *Traffic) Stop() Result {
	tr.halt()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	by := make(map[int]int64, len(tr.byStatus))
	for k, v := range tr.byStatus {
		by[k] = v
	}
	return Result{OK: tr.ok.Load(), Failed: tr.failed.Load(), ByStatus: by, Failures: append([]string(nil), tr.failures...)}
}

// WaitOK waits until at least n more requests have succeeded than when it
// was called (proof that traffic flows now, not only before).
func (tr *Traffic) WaitOK(tb testing.TB, n int64, timeout time.Duration) {
	tb.Helper()
	base := tr.ok.Load()
	Eventually(tb, timeout, fmt.Sprintf("%d more successful requests", n), func() error {
		if got := tr.ok.Load() - base; got < n {
			return fmt.Errorf("%d so far (%d failed in all)", got, tr.failed.Load())
		}
		return nil
	})
}
