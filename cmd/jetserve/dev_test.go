package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetserve/jetserve/pkg/waitfor"
)

// upURLs waits for dev's "is up" message and returns the ingress and
// admin URLs it printed: dev is given port 0 and says where it listens.
func upURLs(t *testing.T, out, errs *syncBuffer, timeout time.Duration) (ingress, admin string) {
	t.Helper()
	var m []string
	waitfor.NoError(t, timeout, "the URLs jetserve dev prints when it is up", func() error {
		if m = upRE.FindStringSubmatch(out.String()); m == nil {
			return fmt.Errorf("stdout %q, stderr %q", out.String(), errs.String())
		}
		return nil
	})
	return m[1], m[2]
}

var upRE = regexp.MustCompile(`HTTP ingress\s+(http://\S+)[\s\S]*admin API\s+(http://\S+)`)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDevServesTheExample runs `jetserve dev` — embedded NATS, the five
// services and the example app in one process — and calls the example
// through the HTTP ingress, then stops it with a cancelled context.
func TestDevServesTheExample(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	out, errs := &syncBuffer{}, &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--data-dir", t.TempDir(), "--nats-port", "-1", "--nats-http-port", "0",
			"--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--ops=false", "--log-level", "warn",
			"--config", "../../examples/config.yaml"}, nil, strings.NewReader(""), out, errs)
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("dev returned %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("dev did not stop within 30s of cancel")
		}
	}()
	base, _ := upURLs(t, out, errs, 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	body := `{"text":"The new phone is wonderful and the battery lasts for days. I love it."}`
	for {
		resp, err := http.Post(base+"/text/analyze", "application/json", strings.NewReader(body))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if !strings.Contains(string(b), `"label":"positive"`) {
					t.Fatalf("analyze = %s, want a positive sentiment", b)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the example never answered 200; last err %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The example's Go OIP model, through the ingress's /v2 endpoints.
	infer := `{"inputs":[{"name":"features","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}`
	for {
		resp, err := http.Post(base+"/v2/models/iris/infer", "application/json", strings.NewReader(infer))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if !strings.Contains(string(b), `"data":["setosa"]`) {
					t.Fatalf("iris infer = %s, want label setosa", b)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the iris model never answered 200; last err %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "jetserve dev is up") {
		t.Errorf("dev printed %q, want the URLs", out.String())
	}
}
