package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/jetserve/jetserve/pkg/protocol"
	"github.com/jetserve/jetserve/pkg/serve"
)

// streamChunk is the largest piece of a streamed answer sent as one chunk.
const streamChunk = 32 << 10

// hopByHop are the headers that belong to one connection, not to the
// request or response (RFC 9110 §7.6.1), and are not forwarded.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Proxy-Connection": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// ServeRequest proxies req to the child and returns its answer: status,
// headers (less hop-by-hop ones) and body, whatever the status.
func (c *Child) ServeRequest(ctx context.Context, req *serve.Request) (*serve.Response, error) {
	resp, err := c.send(ctx, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, c.brokenError(ctx, err)
	}
	return &serve.Response{Status: resp.StatusCode, Header: responseHeader(resp.Header, true), Body: body}, nil
}

// ServeStream proxies req to the child and sends its answer on as it
// comes: the head, then every piece of the body as soon as it is read
// (a chunked answer chunk by chunk).
func (c *Child) ServeStream(ctx context.Context, req *serve.Request, w serve.StreamWriter) error {
	resp, err := c.send(ctx, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := w.WriteHead(resp.StatusCode, responseHeader(resp.Header, false)); err != nil {
		return err
	}
	buf := make([]byte, streamChunk)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if werr := w.Write(bytes.Clone(buf[:n])); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return c.brokenError(ctx, err)
		}
	}
}

// CheckHealth asks the child's health path; anything but 2xx is an error.
func (c *Child) CheckHealth(ctx context.Context) error {
	if !c.running() {
		st, msg, _ := c.State()
		return &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable,
			Msg: fmt.Sprintf("child process is %s: %s", st, msg)}
	}
	return c.probe(ctx, 0)
}

// probe sends GET HealthPath, bounded by timeout (0: by ctx only).
func (c *Child) probe(ctx context.Context, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+c.o.HealthPath, nil)
	if err != nil {
		return fmt.Errorf("health request: %w", err)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", c.o.HealthPath, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s answered %d: %s", c.o.HealthPath, resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}

// send forwards req to the child and returns its response head. Errors
// are *serve.Error: retryable (draining) when the child did not get the
// request, 503 unavailable when it broke off, or the context's.
func (c *Child) send(ctx context.Context, req *serve.Request) (*http.Response, error) {
	if !c.running() {
		return nil, c.notRunning()
	}
	path := req.Path
	if path == "" || path == "/" {
		path = "/" + req.Call // a handle call's method is the first path segment
	}
	u := url.URL{Scheme: "http", Host: strings.TrimPrefix(c.base, "http://"), Path: path}
	if len(req.Query) > 0 {
		u.RawQuery = req.Query.Encode()
	}
	method := req.Method
	if method == "" {
		method = http.MethodPost
	}
	hreq, err := http.NewRequestWithContext(ctx, method, c.base, bytes.NewReader(req.Body))
	if err != nil {
		return nil, &serve.Error{Status: http.StatusBadRequest, Code: protocol.ErrBadRequest, Msg: "proxy request: " + err.Error()}
	}
	hreq.URL = &u
	for k, vs := range req.Header {
		if !hopByHop[k] && k != "Host" && k != "Content-Length" {
			hreq.Header[k] = vs
		}
	}
	if req.RequestID != "" {
		hreq.Header.Set(protocol.HdrRequestID, req.RequestID)
	}
	resp, err := c.client.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("proxy to child process: %w", ctx.Err())
		}
		if notSent(err) {
			return nil, c.notRunning()
		}
		return nil, c.brokenError(ctx, err)
	}
	return resp, nil
}

// notRunning is the answer while the child is down: the request never
// reached it, so the router may try another replica.
func (c *Child) notRunning() error {
	st, msg, _ := c.State()
	if msg == "" {
		msg = "its child process does not accept connections"
	}
	return &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrDraining,
		Msg: fmt.Sprintf("replica %s is %s: %s", c.o.ReplicaID, st, msg)}
}

// brokenError is the answer when the child took the request and then the
// connection broke (it died or closed it): 503, to be retried later.
func (c *Child) brokenError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("proxy to child process: %w", ctx.Err())
	}
	return &serve.Error{Status: http.StatusServiceUnavailable, Code: protocol.ErrUnavailable,
		Msg: fmt.Sprintf("replica %s: child process broke off the request: %v", c.o.ReplicaID, err)}
}

// notSent reports errors that mean the child never saw the request: the
// connection could not be made.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// responseHeader copies the child's headers less hop-by-hop ones (and,
// for a streamed answer, its Content-Length: the stream is re-framed).
func responseHeader(h http.Header, keepLength bool) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		if hopByHop[k] || (!keepLength && k == "Content-Length") {
			continue
		}
		out[k] = vs
	}
	return out
}
