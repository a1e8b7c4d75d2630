package fleet

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LoadOptions configure a Load.
type LoadOptions struct {
	// Ingresses returns the base URLs to send to (asked before each
	// request, so a test may kill and restart ingresses); requests go
	// round-robin over them.
	Ingresses func() []string
	// Path and Body of every request (Body is sent with POSTs).
	Path string
	Body []byte
	// Methods to send, each from its own Clients goroutines: GET
	// (idempotent) and POST (sent with an Idempotency-Key, as a careful
	// client does, so that the fleet may retry it on another replica).
	Methods []string
	Clients int
	// PerRequest bounds one request, its retries included.
	PerRequest time.Duration
	// Attempts is how many ingresses one request may try (default 3): a
	// careful client — or a load balancer in front of the ingresses —
	// sends a request that is safe to repeat again, to the next ingress,
	// after a transport error (an ingress killed or stopped) or a 503.
	// 1 = never retried.
	Attempts int
}

// Sample is one request of a Load: its kind (method), when it started
// and ended, its final answer and how many ingresses it tried.
type Sample struct {
	Kind       string
	Start, End time.Time
	Status     int    // 0: a transport error
	Err        string // the transport error or the X-Jetserve-Error code
	Attempts   int
	// Ingress is the base URL of the last ingress tried, and RequestID
	// the request's X-Request-Id (sent by the load: "load-<n>"), to find
	// it in the services' logs.
	Ingress, RequestID string
	Msg                string // the start of a failed answer's body
}

// OK reports whether the request succeeded (200).
func (s Sample) OK() bool { return s.Status == http.StatusOK }

// Latency is how long the request took, retries included.
func (s Sample) Latency() time.Duration { return s.End.Sub(s.Start) }

// Load is steady sync traffic recorded request by request. It owns its
// goroutines; Stop waits for them.
type Load struct {
	opt    LoadOptions
	cancel context.CancelFunc
	wg     sync.WaitGroup
	next   atomic.Uint64 // round-robin counter and idempotency-key sequence

	mu      sync.Mutex
	samples []Sample // guarded by mu
}

// StartLoad starts opt.Clients goroutines per method; each sends one
// request at a time until Stop.
func StartLoad(tb testing.TB, opt LoadOptions) *Load {
	tb.Helper()
	if opt.Attempts == 0 {
		opt.Attempts = 3
	}
	if opt.PerRequest == 0 {
		opt.PerRequest = 30 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Load{opt: opt, cancel: cancel}
	for _, m := range opt.Methods {
		for range opt.Clients {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for ctx.Err() == nil {
					s := l.one(ctx, m)
					if ctx.Err() != nil && !s.OK() {
						return // stopped mid-request: not a failure of the fleet
					}
					l.mu.Lock()
					l.samples = append(l.samples, s)
					l.mu.Unlock()
				}
			}()
		}
	}
	tb.Cleanup(l.Stop)
	return l
}

// one sends one request, retried on the next ingress while that is safe.
func (l *Load) one(ctx context.Context, method string) Sample {
	rctx, cancel := context.WithTimeout(ctx, l.opt.PerRequest)
	defer cancel()
	n := l.next.Add(1)
	h := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"load-" + strconv.FormatUint(n, 10)}}
	var body []byte
	if method == http.MethodPost {
		body = l.opt.Body
		h.Set("Idempotency-Key", "load-"+strconv.FormatUint(n, 10))
	}
	s := Sample{Kind: method, Start: time.Now(), RequestID: h.Get("X-Request-Id")}
	for attempt := range l.opt.Attempts {
		urls := l.opt.Ingresses()
		if len(urls) == 0 {
			s.Err = "no ingress"
			break
		}
		url := urls[(int(n)+attempt)%len(urls)] + l.opt.Path
		s.Attempts, s.Ingress = attempt+1, urls[(int(n)+attempt)%len(urls)]
		r, err := Do(rctx, method, url, body, h)
		s.Status, s.Err, s.Msg = r.Status, "", ""
		if err != nil {
			s.Err = err.Error()
		} else if r.Status != http.StatusOK {
			s.Err = r.Header.Get("X-Jetserve-Error")
			s.Msg = string(r.Body[:min(len(r.Body), 200)])
		}
		if err == nil && r.Status != http.StatusServiceUnavailable || rctx.Err() != nil {
			break
		}
	}
	s.End = time.Now()
	return s
}

// Stop stops the goroutines and waits for them (idempotent).
func (l *Load) Stop() {
	l.cancel()
	l.wg.Wait()
}

// Samples returns every request so far, in the order they ended.
func (l *Load) Samples() []Sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.samples)
}

// Count is how many requests ended so far and how many of them failed.
func (l *Load) Count() (total, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.samples {
		if !s.OK() {
			failed++
		}
	}
	return len(l.samples), failed
}

// WaitOK waits until n more requests have succeeded than when it was
// called.
func (l *Load) WaitOK(tb testing.TB, n int, timeout time.Duration) {
	tb.Helper()
	ok := func() int {
		total, failed := l.Count()
		return total - failed
	}
	base := ok()
	Eventually(tb, timeout, fmt.Sprintf("%d more successful requests", n), func() error {
		if got := ok() - base; got < n {
			total, failed := l.Count()
			return fmt.Errorf("%d so far (%d of %d failed in all)", got, failed, total)
		}
		return nil
	})
}

// Window is what the samples that started within [from, to) saw.
type Window struct {
	Total, Failed int
	// FirstTry is how many succeeded at their first ingress.
	FirstTry int
	P50, P99 time.Duration
	// LongestGap is the longest time within the window in which no
	// request succeeded (measured between consecutive successful answers,
	// and from the window's start to the first).
	LongestGap time.Duration
	// ByError counts the failures by answer ("503 replica_lost",
	// "transport: …").
	ByError map[string]int
}

// SuccessRate is the share of requests that succeeded (1 when none ran).
func (w Window) SuccessRate() float64 {
	if w.Total == 0 {
		return 1
	}
	return float64(w.Total-w.Failed) / float64(w.Total)
}

// Summarize computes the Window of samples of kind ("" = every kind) that
// started in [from, to).
func Summarize(samples []Sample, kind string, from, to time.Time) Window {
	w := Window{ByError: map[string]int{}}
	var lat []time.Duration
	var okEnds []time.Time
	for _, s := range samples {
		if kind != "" && s.Kind != kind || s.Start.Before(from) || !s.Start.Before(to) {
			continue
		}
		w.Total++
		lat = append(lat, s.Latency())
		if s.OK() {
			okEnds = append(okEnds, s.End)
			if s.Attempts == 1 {
				w.FirstTry++
			}
			continue
		}
		w.Failed++
		key := fmt.Sprintf("%d %s", s.Status, s.Err)
		if s.Status == 0 {
			key = "transport error"
		}
		w.ByError[key]++
	}
	slices.Sort(lat)
	w.P50, w.P99 = Percentile(lat, 50), Percentile(lat, 99)
	slices.SortFunc(okEnds, func(a, b time.Time) int { return a.Compare(b) })
	prev := from
	for _, e := range okEnds {
		w.LongestGap = max(w.LongestGap, e.Sub(prev))
		prev = e
	}
	if len(okEnds) == 0 && w.Total > 0 {
		w.LongestGap = to.Sub(from)
	}
	return w
}

// Percentile is the p-th percentile of sorted durations (0 if empty).
func Percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// Disrupted returns how long after at requests of samples were still
// failing or slow: the latest end of a request that started after
// at-inFlight (so requests in flight at the fault count) and failed or
// took longer than slow; 0 when none did.
func Disrupted(samples []Sample, at time.Time, until time.Time, inFlight, slow time.Duration) time.Duration {
	var d time.Duration
	for _, s := range samples {
		if s.Start.Before(at.Add(-inFlight)) || !s.Start.Before(until) || s.End.Before(at) {
			continue
		}
		if !s.OK() || s.Latency() > slow {
			d = max(d, s.End.Sub(at))
		}
	}
	return d
}
