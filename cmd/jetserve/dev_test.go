package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetserve/jetserve/devfleet/devfleettest"
)

// startDev runs `jetserve dev` with config on port 0 everywhere, until
// the test ends.
func startDev(t *testing.T, config string, within devfleettest.Timeouts) *devfleettest.Fleet {
	t.Helper()
	args := append(append([]string{"dev"}, devfleettest.Flags(t.TempDir())...), "--config", config)
	return devfleettest.Start(t, within, func(ctx context.Context, stdout, stderr io.Writer) error {
		return run(ctx, args, nil, strings.NewReader(""), stdout, stderr)
	})
}

// TestDevServesTheExample runs `jetserve dev` — embedded NATS, the five
// services and the example app in one process — and calls the example
// through the HTTP ingress, then stops it with a cancelled context.
func TestDevServesTheExample(t *testing.T) {
	fleet := startDev(t, "../../examples/config.yaml", devfleettest.Timeouts{Up: 60 * time.Second, Stop: 30 * time.Second})
	base, out, errs := fleet.Ingress, fleet.Out, fleet.Err
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
