package e2e

import (
	"reflect"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	const out = `Running 5s test @ http://127.0.0.1:8000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.30ms  802.11us  15.52ms   88.44%
    Req/Sec    49.59k     2.03k   52.31k    76.00%
  Latency Distribution
     50%    1.08ms
     75%    1.45ms
     90%    2.04ms
     99%  689.00us
  246743 requests in 5.00s, 30.12MB read
Requests/sec:  49345.50
Transfer/sec:      6.02MB
`
	rps, p50, p99, err := parseWrk(out)
	if err != nil {
		t.Fatalf("parseWrk: %v", err)
	}
	if rps != 49345.50 || p50 != 1080*time.Microsecond || p99 != 689*time.Microsecond {
		t.Errorf("parseWrk = %v, %v, %v; want 49345.5, 1.08ms, 689µs", rps, p50, p99)
	}
	if _, _, _, err := parseWrk("garbage"); err == nil {
		t.Errorf("parseWrk(garbage) = nil error, want one")
	}
}

func TestParseWrkRun(t *testing.T) {
	const out = `Running 2s test @ http://127.0.0.1:8000/sweepq/
  1 threads and 512 connections
  Latency Distribution
     50%    3.08ms
     75%    4.45ms
     90%    6.04ms
     99%   12.00ms
  24674 requests in 2.00s, 3.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 1674
Requests/sec:  12337.00
`
	r, err := parseWrkRun(out)
	if err != nil {
		t.Fatalf("parseWrkRun: %v", err)
	}
	want := wrkRun{total: 24674, non2xx: 1674, timeouts: 3, errs: 2, secs: 2, p50: 3080 * time.Microsecond, p99: 12 * time.Millisecond}
	if !reflect.DeepEqual(r, want) {
		t.Errorf("parseWrkRun = %+v, want %+v", r, want)
	}
	if g := r.good(); g != 11500 {
		t.Errorf("good() = %v, want 11500", g)
	}
	if _, err := parseWrkRun("garbage"); err == nil {
		t.Errorf("parseWrkRun(garbage) = nil error, want one")
	}
}
