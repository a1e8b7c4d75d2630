package fleet

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/waitfor"
)

// PollInterval is how often Eventually re-checks its condition.
const PollInterval = 50 * time.Millisecond

// Eventually polls cond until it returns nil and returns how long that
// took; if it still fails after timeout the test fails with what, the
// last error and the time waited.
func Eventually(tb testing.TB, timeout time.Duration, what string, cond func() error) time.Duration {
	tb.Helper()
	return waitfor.Poll(tb, timeout, PollInterval, "e2e: "+what, cond)
}

// Client is the HTTP client the helpers use: no proxy, bounded time.
var Client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 128, MaxConnsPerHost: 0, IdleConnTimeout: 30 * time.Second},
}

// Response is a fully read HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r Response) String() string {
	b := r.Body
	if len(b) > 512 {
		b = append(b[:512:512], "…"...)
	}
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(b))
}

// Do sends one request and reads the whole answer.
func Do(ctx context.Context, method, url string, body []byte, header http.Header) (Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return Response{}, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	return send(req)
}

// send sends req with Client and reads the whole answer.
func send(req *http.Request) (Response, error) {
	resp, err := Client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, fmt.Errorf("%s %s: read body: %w", req.Method, req.URL, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// MustDo is Do with a 30 s timeout that fails the test on a transport error.
func MustDo(tb testing.TB, method, url string, body []byte, header http.Header) Response {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Do(ctx, method, url, body, header)
	if err != nil {
		tb.Fatalf("e2e: %s %s: %v", method, url, err)
	}
	return r
}

// WaitHTTP200 waits until GET url answers 200.
func WaitHTTP200(tb testing.TB, timeout time.Duration, url string) {
	tb.Helper()
	Eventually(tb, timeout, "GET "+url+" = 200", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := Do(ctx, http.MethodGet, url, nil, nil)
		if err != nil {
			return err
		}
		if r.Status != http.StatusOK {
			return fmt.Errorf("answered %v", r)
		}
		return nil
	})
}

// PostSized POSTs a body of n zero bytes (streamed, never held in memory)
// with its Content-Length set, and reads the answer. A server that answers
// before reading the whole body may close the connection mid-upload; the
// answer it sent is still returned.
func PostSized(url string, n int64) (Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, io.LimitReader(zeros{}, n))
	if err != nil {
		return Response{}, err
	}
	req.ContentLength = n
	req.Header.Set("Content-Type", "application/octet-stream")
	return send(req)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
