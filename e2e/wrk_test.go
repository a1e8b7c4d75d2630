package e2e

import (
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
